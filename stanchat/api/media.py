"""A `video_url` / `image_url` content part -> a local file the decoder can read, and its hash.

Accepted URLs: `data:<mime>;base64,...` (written to the server's spool folder under a name of its
own, recorded in its request's uploads, `stanchat.api.uploads`; its content hash keys the cache),
and a local path or `file://` URL, only inside `--allowed-local-media-path` (after resolving links,
so `..` and symlinks cannot leave it). Remote http(s) URLs are fetched only from the hosts of
--allowed-media-domains (`stanchat.api.remote`: checked addresses, redirects, a timeout and a byte
cap), streamed to a file of the request's own as a data URL is; without that flag the server makes
no outgoing requests.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from stanchat.api.errors import ApiError
from stanchat.api.remote import RemotePolicy, fetch
from stanchat.api.uploads import claim, record

SUFFIXES = {"mp4": ".mp4", "webm": ".webm", "quicktime": ".mov", "x-matroska": ".mkv", "x-msvideo": ".avi",
            "avi": ".avi", "mpeg": ".mpg", "ogg": ".ogv", "gif": ".gif", "png": ".png", "jpeg": ".jpg",
            "jpg": ".jpg", "webp": ".webp", "bmp": ".bmp"}


@dataclass(frozen=True)
class Media:
    path: str  # a local file to decode
    sha256: str  # of its bytes: the encoded-video cache key
    kind: str  # "video" or "image"
    label: str  # what errors call it: the client's own path or URL, or "the uploaded video" (never a server path)


def file_hash(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class MediaResolver:
    """Turns part URLs into `Media`, spooling data URLs under `spool`."""

    def __init__(self, spool: str | os.PathLike, allowed_local_media_path: str | None = None,
                 remote: RemotePolicy | None = None):
        self.spool = Path(spool)
        self.spool.mkdir(parents=True, exist_ok=True)
        self._owner = claim(self.spool)  # held while this resolver lives: the folder is not an orphan
        self.allowed = None if allowed_local_media_path is None else Path(allowed_local_media_path).resolve()
        self.remote = remote  # None: http(s) URLs are refused

    def resolve(self, url: str, kind: str, param: str, cancel: threading.Event | None = None) -> Media:
        if not isinstance(url, str) or not url:
            raise ApiError(400, f"{param} needs a url string", param=param)
        if "\0" in url:
            raise ApiError(400, f"{param}: the url contains a NUL character", param=param)
        if url.startswith("data:"):
            return self._data_url(url, kind, param)
        scheme = urlparse(url).scheme
        if scheme in ("http", "https") and self.remote is not None:
            return self._remote(url, kind, param, cancel)
        if scheme in ("http", "https"):
            raise ApiError(400, "remote URLs are not fetched (the server was started without "
                                "--allowed-media-domains); send the file as a data: URL (base64) or a local "
                                "path under the server's --allowed-local-media-path", param=param)
        if scheme == "file":
            path = unquote(urlparse(url).path)
        elif scheme and len(scheme) > 1:  # (one letter is a Windows drive)
            raise ApiError(400, f"unsupported URL scheme {scheme!r}; use data: or file://", param=param)
        else:
            path = url
        return self._local(path, kind, param)

    def _data_url(self, url: str, kind: str, param: str) -> Media:
        header, sep, payload = url[5:].partition(",")
        if not sep or not header.endswith(";base64"):
            raise ApiError(400, f"{param}: a data URL must look like data:{kind}/mp4;base64,...", param=param)
        mime = header[: -len(";base64")]
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as err:
            raise ApiError(400, f"{param}: the data URL is not valid base64 ({err})", param=param) from err
        if not data:
            raise ApiError(400, f"{param}: the data URL holds no bytes", param=param)
        path = self._upload(mime)
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            f.write(data)
        return Media(str(path), hashlib.sha256(data).hexdigest(), kind, f"the uploaded {kind}")

    def _remote(self, url: str, kind: str, param: str, cancel: threading.Event | None) -> Media:
        suffix = os.path.splitext(urlparse(url).path)[1].lower()
        path = self._upload("", suffix if suffix in SUFFIXES.values() else "")
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            fetched = fetch(url, self.remote, f, param, cancel)
        return Media(str(path), fetched.sha256, kind, url)

    def _upload(self, mime: str, suffix: str | None = None) -> Path:
        """A new file of this request's own in the spool (not named by the hash: a request's encoder
        deletes its file, and another request may be reading the same video); recorded, so that the
        request deletes it when it ends."""
        suffix = SUFFIXES.get(mime.partition("/")[2], "") if suffix is None else suffix
        path = self.spool / f"upload-{uuid.uuid4().hex}{suffix}"
        record(path)
        return path

    def _local(self, path: str, kind: str, param: str) -> Media:
        if self.allowed is None:
            raise ApiError(403, "local paths are refused: the server was started without "
                                "--allowed-local-media-path; send the file as a data: URL", param=param)
        resolved = Path(path).expanduser().resolve()
        if not resolved.is_relative_to(self.allowed):
            raise ApiError(403, f"{path} is outside the folder this server allows (--allowed-local-media-path)",
                           param=param)
        if not resolved.is_file():
            raise ApiError(400, f"no such file: {path}", param=param)
        return Media(str(resolved), file_hash(resolved), kind, path)
