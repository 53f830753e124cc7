"""The video-text model an evaluation runs: which directory, its tokenizer, and text features.

`--model` is any directory stanchat writes (`save_pretrained`, `stanchat convert official` or
`open-clip`: a VideoCLIP or a CoCaVideoCLIP, read by `stanchat.architectures.load_video_model`, with
its tokenizer saved beside it) or the name of a preset in `stanchat.pretrained`, whose STAN
directory is such a model. What the evaluation needs to know (image size, text length) it asks the
model.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from stanchat.errors import WeightsError
from stanchat.eval.config import PROTOCOL_TOKENS

logger = logging.getLogger(__name__)


@dataclass
class TextFeatures:
    tokens: "torch.Tensor"  # (Nt, N, P) per-token projected features, for Mug
    pooled: "torch.Tensor"  # (Nt, P) EOS-token projected features, for mean scoring
    mask: "torch.Tensor"  # (Nt, N) bool, True on real tokens


@dataclass
class EvalModel:
    model: "stanchat.videomodel.VideoTextModel"  # VideoCLIP or CoCaVideoCLIP, in eval mode, on `device`
    tokenizer: "transformers.PreTrainedTokenizerBase"  # the text tower's tokenizer
    directory: Path  # where the weights were read from
    name: str  # what results report as the model: the preset name or the directory
    fingerprint: str  # content/mtime hash of the directory: part of every feature-cache key
    device: "torch.device"  # where the model runs


def resolve_model(name: str) -> tuple[Path, str]:
    """(model directory, name to report) for `--model`: an existing directory, else a preset."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path.resolve(), str(path.resolve())
    from stanchat import pretrained

    if name not in pretrained.PRESETS:
        raise WeightsError(f"--model {name}: neither a directory nor a preset; presets: "
                           f"{', '.join(pretrained.preset_names())}")
    return pretrained.resolve(name).require().stan, name  # missing weights: one line naming the convert command


def fingerprint(directory: Path) -> str:
    """A short hash of a model directory: every file's name, size and mtime, and config.json's content.
    Hashing multi-GB weights on every run would cost more than the evaluation it protects."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(directory)}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    config = directory / "config.json"
    if config.is_file():
        digest.update(config.read_bytes())
    return digest.hexdigest()[:16]


def load_eval_model(name: str, device: "torch.device | str | None" = None) -> EvalModel:
    """Load `--model` (directory or preset), whichever model class it saved, in eval mode with its tokenizer."""
    import torch

    from stanchat.architectures import load_video_model
    from stanchat.videomodel import load_text_tokenizer

    directory, shown = resolve_model(name)
    device = torch.device(device) if device is not None else _default_device()
    model = load_video_model(directory).eval().to(device)
    return EvalModel(model=model, tokenizer=load_text_tokenizer(directory, model.config.source), directory=directory, name=shown,
                     fingerprint=fingerprint(directory), device=device)


def _default_device() -> "torch.device":
    from stanchat.eval.features import process_state

    return process_state().device


def check_tokens(model, tokens: int | None) -> int:
    """The text length to pad/truncate to: `tokens` if the text tower has that many positions (else
    one line), and for None the protocol's PROTOCOL_TOKENS or the tower's length if it has fewer."""
    positions = model.text_length
    if tokens is None:
        return min(PROTOCOL_TOKENS, positions)
    if not 1 <= tokens <= positions:
        raise WeightsError(f"--tokens {tokens} does not fit the text tower's {positions} positions; "
                           f"use --tokens {positions} or fewer")
    return tokens


def encode_texts(evm: EvalModel, texts: list[str], tokens: int, batch_size: int = 256) -> TextFeatures:
    """Tokenise (pad/truncate to `tokens`) and encode texts: tokens (Nt, N, P), pooled (Nt, P), mask (Nt, N)."""
    import torch

    check_tokens(evm.model, tokens)
    parts: list[tuple] = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = evm.tokenizer(texts[start:start + batch_size], padding="max_length", truncation=True,
                                  max_length=tokens, return_tensors="pt")
            ids, mask = batch["input_ids"].to(evm.device), batch["attention_mask"].to(evm.device)
            token_feats, pooled = evm.model.encode_text(ids, mask)
            parts.append((token_feats.float().cpu(), pooled.float().cpu(), mask.bool().cpu()))
    return TextFeatures(*(torch.cat([p[i] for p in parts]) for i in range(3)))


def score(evm: EvalModel, text: TextFeatures, video_frames: "torch.Tensor", mode: str,
          chunk_size: int | None = None) -> "torch.Tensor":
    """`VideoCLIP.similarity` of texts against per-frame video features (Nv, T, P), on the model's
    device, without autograd: (Nt, Nv) float32 on the CPU."""
    import torch

    device = evm.device
    with torch.inference_mode():
        scores = evm.model.similarity((text.tokens.to(device), text.pooled.to(device)), text.mask.to(device),
                                      video_frames.to(device), mode=mode, chunk_size=chunk_size)
    return scores.float().cpu()


def describe(evm: EvalModel) -> dict:
    """What a results file records about the model."""
    config = evm.model.config
    return {"name": evm.name, "directory": str(evm.directory), "fingerprint": evm.fingerprint,
            "source": config.source, "stan": asdict(config.stan),
            "logit_scale": config.logit_scale}
