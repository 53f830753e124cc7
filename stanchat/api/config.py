"""The API server's settings, each declared once: its default, its type and its `--help` line sit in
the `ApiConfig` field (`setting(...)`); `stanchat api`'s flags and the config built from them are
generated from these fields (stanchat/commands/api.py)."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field

from stanchat.engine.registry import ENGINE_NAMES as ENGINES
from stanchat.engine.vllm import CPU_KV_CACHE_GIB
from stanchat.errors import StanchatError
from stanchat.options import DEFAULTS, MAX_FRAME_PIXELS

DEFAULT_PORT = 8000
API_KEY_ENV = "STANCHAT_API_KEY"  # the key clients must send as `Authorization: Bearer KEY`


def setting(default, help: str, kind: type | None = None, **flag):
    """A dataclass field that is also a `stanchat api` flag: `help` is its help line ("(default X)" is
    added unless it speaks of its default), `kind` the flag's type (default: the default's), `flag`
    more argparse keywords (metavar, choices)."""
    return field(default=default, metadata={"help": help, "kind": kind or type(default), "flag": flag})


@dataclass(frozen=True)
class ApiConfig:
    engine: str = setting("transformers", "transformers: batched generate in this process; vllm: vLLM's LLaVA "
                                          "(pip install 'stanchat[vllm]')", choices=ENGINES)
    api_key: str | None = setting(None, f"require 'Authorization: Bearer KEY' (default: ${API_KEY_ENV} if set, "
                                        "else no key, fine on 127.0.0.1)", str, metavar="KEY")
    allowed_local_media_path: str | None = setting(
        None, "let requests name files under DIR by path or file:// URL (default: none)", str, metavar="DIR")
    allowed_media_domains: tuple[str, ...] | None = setting(
        None, "fetch http(s) media URLs from these hosts only, named exactly (an internal address such as "
              "127.0.0.1 only when it is listed itself; default: no remote fetching)", str, nargs="+",
        metavar="HOST")
    media_fetch_timeout: float = setting(10.0, "seconds a remote media URL may take to arrive in full; slower "
                                               "gets 400", metavar="S")
    max_media_bytes: int = setting(64 * 1024 * 1024, "largest remote media file fetched, in bytes; larger gets 400",
                                   metavar="BYTES")
    max_request_bytes: int = setting(64 * 1024 * 1024, "largest request body in bytes; more gets 413 "
                                                       "(a base64 video is ~4/3 its size)", metavar="BYTES")
    header_timeout: float = setting(10.0, "seconds a request's headers may take to arrive (on a new or kept-alive "
                                          "connection); slower gets 408 and the connection closed", metavar="S")
    body_timeout: float = setting(30.0, "seconds a request body may take to arrive; slower gets 408", metavar="S")
    request_timeout: float = setting(600.0, "seconds a request may last from its first byte to its answer's "
                                            "last (a stream included); longer is cut with a 503", metavar="S")
    max_video_seconds: float = setting(600.0, "longest video (or start/end window) accepted, in seconds", metavar="S")
    max_frame_pixels: int = setting(MAX_FRAME_PIXELS, "largest video frame accepted, in pixels (width x height); "
                                                      "larger is refused before decoding (default "
                                                      f"{MAX_FRAME_PIXELS}: 8K, 8192x4352)", metavar="PIXELS")
    max_receiving: int = setting(64, "requests whose body is still arriving at once; more get 429", metavar="N")
    max_pending: int = setting(64, "requests in the server at once once their body has arrived (decoding, "
                                   "waiting or generating); more get 429", metavar="N")
    max_batch: int = setting(DEFAULTS.batch_size, "requests batched into one generate (transformers engine; 1: one at a time)",
                             metavar="N")
    batch_wait_ms: float = setting(5.0, "how long a batch waits for more requests to join it", metavar="MS")
    cache_size: int = setting(32, "encoded videos kept for follow-up questions (LRU, keyed by content hash "
                                  "and video options)", metavar="N")
    tensor_parallel_size: int = setting(1, "GPUs vLLM splits the LLM over (--engine vllm)", metavar="N")
    kv_cache_gib: float | None = setting(None, "memory vLLM reserves for its KV cache (--engine vllm; default: "
                                               f"vLLM's choice on a GPU, {CPU_KV_CACHE_GIB:g} on the CPU)", float,
                                         metavar="GIB")
    gpu_memory_utilization: float | None = setting(
        None, "share of the GPU's memory vLLM may fill, 0-1 (--engine vllm; default: vLLM's, 0.9); leave room "
              "for the tower and STAN, which run in this process", float, metavar="FRACTION")

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise StanchatError(f"unknown engine {self.engine!r}; choose one of {', '.join(ENGINES)}")
        for name in ("max_request_bytes", "max_media_bytes", "max_receiving", "max_pending", "max_batch",
                     "tensor_parallel_size", "max_frame_pixels"):
            if getattr(self, name) < 1:
                raise StanchatError(f"{flag(name)} must be at least 1, got {getattr(self, name)}")
        for name in ("header_timeout", "body_timeout", "request_timeout", "max_video_seconds", "kv_cache_gib", "media_fetch_timeout"):
            value = getattr(self, name)
            if value is not None and not 0 < value < float("inf"):
                raise StanchatError(f"{flag(name)} must be a number > 0, got {value}")
        if self.cache_size < 0 or not 0 <= self.batch_wait_ms < float("inf"):
            raise StanchatError("--cache-size and --batch-wait-ms must be >= 0")
        if self.gpu_memory_utilization is not None and not 0 < self.gpu_memory_utilization <= 1:
            raise StanchatError(f"--gpu-memory-utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.allowed_local_media_path is not None and not os.path.isdir(self.allowed_local_media_path):
            raise StanchatError(f"--allowed-local-media-path {self.allowed_local_media_path} is not a folder")
        if self.api_key is not None:
            check_header_safe(self.api_key)
        if self.allowed_media_domains is not None:  # argparse gives a list: kept as a tuple, lower case
            object.__setattr__(self, "allowed_media_domains", check_hosts(self.allowed_media_domains))

    def engine_settings(self) -> dict:
        """The chosen engine's keywords (`stanchat.engine.create_engine`)."""
        if self.engine == "transformers":
            return {"max_batch": self.max_batch, "batch_wait_ms": self.batch_wait_ms}
        return {"tensor_parallel_size": self.tensor_parallel_size, "kv_cache_gib": self.kv_cache_gib,
                "gpu_memory_utilization": self.gpu_memory_utilization}


def flag(name: str) -> str:
    """The command-line flag of field `name`."""
    return "--" + name.replace("_", "-")


def check_hosts(hosts) -> tuple[str, ...]:
    """--allowed-media-domains as lower-case names, refusing what is not a bare host name or address."""
    if isinstance(hosts, str) or not hosts:
        raise StanchatError("--allowed-media-domains takes one or more host names, e.g. --allowed-media-domains "
                            "example.com media.example.org")
    for host in hosts:
        if (not isinstance(host, str) or not host or any(c in host for c in "/@ \t?#") or host.startswith("[")
                or (":" in host and not _is_address(host))):  # a port: URLs are matched by host alone
            raise StanchatError(f"--allowed-media-domains takes bare host names or IP addresses (example.com, "
                                f"127.0.0.1, ::1), not URLs; got {host!r}")
    return tuple(host.lower() for host in hosts)


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def check_header_safe(key: str) -> str:
    """`key` if a client can send it in `Authorization: Bearer KEY` (visible ASCII, no spaces); else one line
    (the key itself is not shown)."""
    for i, char in enumerate(key):
        if not "!" <= char <= "~":
            what = "a space" if char == " " else "a control character" if char.isascii() else "not ASCII"
            raise StanchatError(f"the API key's character {i + 1} is {what}, which cannot be sent in an HTTP "
                                "header; use visible ASCII letters, digits and punctuation only")
    return key


def api_key_from_env(given: str | None) -> str | None:
    """The key from `--api-key`, else from STANCHAT_API_KEY, else None (no authentication)."""
    return given or os.environ.get(API_KEY_ENV) or None
