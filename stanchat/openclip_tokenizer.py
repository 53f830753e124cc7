"""open_clip's own text tokenizer, for a model `stanchat convert open-clip` wrote without one.

Such a model records its origin as `config.source = "open_clip:<model name>[:<pretrained tag>]"`.
Its text tower was trained on open_clip's tokenizer (the CLIP BPE, start and end tokens, padding
with id 0, which CoCa's text tower masks by), so that is the tokenizer it is read with.
`OpenCLIPTokenizer` is called the way eval, training and frame relevance call a transformers
tokenizer (`tokenizer(texts, padding="max_length", truncation=True, max_length=N,
return_tensors="pt")`) and returns `input_ids` and `attention_mask` (N, always padded to
`max_length`); `save_pretrained` writes `open_clip_tokenizer.json` naming the model, so a
training checkpoint carries its tokenizer like any other.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from stanchat.errors import WeightsError

SOURCE_PREFIX = "open_clip:"  # how `stanchat.convert.openclip_models` records a model's source
MARKER = "open_clip_tokenizer.json"  # {"open_clip": model name}: a saved OpenCLIPTokenizer


def open_clip_name(source: str) -> str | None:
    """The open_clip model name in a recorded `source`, or None when it is not an open_clip source."""
    if not source.startswith(SOURCE_PREFIX):
        return None
    return source[len(SOURCE_PREFIX):].split(":")[0]


class OpenCLIPTokenizer:
    """open_clip's tokenizer for `model_name`, with the call signature of a transformers one."""

    pad_token_id = 0  # open_clip's SimpleTokenizer pads with 0

    def __init__(self, model_name: str):
        import open_clip
        from open_clip.tokenizer import SimpleTokenizer

        self.model_name = model_name
        self.tokenizer = open_clip.get_tokenizer(model_name)
        if not isinstance(self.tokenizer, SimpleTokenizer):
            raise WeightsError(f"open_clip model {model_name} uses a {type(self.tokenizer).__name__}, not open_clip's "
                               f"own tokenizer; save its tokenizer beside the model (tokenizer.save_pretrained(DIR))")

    @classmethod
    def from_directory(cls, directory: str | os.PathLike) -> "OpenCLIPTokenizer":
        return cls(json.loads((Path(directory) / MARKER).read_text())["open_clip"])

    def __call__(self, texts: str | list[str], padding: bool | str = "max_length", truncation: bool = True,
                 max_length: int | None = None, return_tensors: str = "pt") -> dict:
        """Token ids (N, max_length) and their mask; like open_clip, the end token is kept when truncating."""
        if return_tensors != "pt":
            raise ValueError("OpenCLIPTokenizer returns torch tensors only (return_tensors='pt')")
        ids = self.tokenizer([texts] if isinstance(texts, str) else list(texts), context_length=max_length)
        return {"input_ids": ids, "attention_mask": (ids != self.pad_token_id).long()}

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / MARKER).write_text(json.dumps({"open_clip": self.model_name}) + "\n")
