"""Fixtures for the chat app: tiny models with and without a text tokenizer, bad uploads, a running app.

The tiny VideoCLIP's text tower has 99 token ids and 16 positions; `tiny_text_tokenizer` is a
character-level tokenizer (lower-cased letters, digits, a little punctuation) that fits in them,
saved beside the STAN weights as `stanchat convert` saves CLIP's.
"""

from __future__ import annotations

import string
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from tests.tiny_llava import save_tiny_llava, save_tiny_stan, write_video

TEXT_SPECIALS = ["<|unk|>", "<|startoftext|>", "<|endoftext|>"]
TEXT_CHARS = string.ascii_lowercase + string.digits + "?!.,'-"


def tiny_text_tokenizer() -> PreTrainedTokenizerFast:
    """CLIP-like framing (start, characters, end) over a vocabulary of 45 ids."""
    vocab = {token: i for i, token in enumerate([*TEXT_SPECIALS, *TEXT_CHARS])}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<|unk|>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", 1), ("<|endoftext|>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                                   unk_token="<|unk|>", pad_token="<|endoftext|>")


def write_bad_uploads(root: Path) -> dict[str, str]:
    """Files a user might upload by mistake: text, a truncated video, random bytes named .mp4."""
    root.mkdir(parents=True, exist_ok=True)
    text = root / "notes.txt"
    text.write_text("this is not a video\n")
    good = write_video(root / "good.mp4", frames=48)
    truncated = root / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    noise = root / "noise.mp4"
    noise.write_bytes(bytes(range(256)) * 64)
    return {"text": str(text), "truncated": str(truncated), "noise": str(noise)}


@pytest.fixture(scope="session")
def app_models(tmp_path_factory) -> dict[str, str]:
    """A tiny LLaVA, a STAN with its text tokenizer and one without, and videos: a 3 s clip (24
    frames at 8 fps) and a 6 s one (longer than the tests' 5 s limit)."""
    root = tmp_path_factory.mktemp("app-models")
    stan = save_tiny_stan(root / "stan")
    tiny_text_tokenizer().save_pretrained(stan)
    return {
        "llava": str(save_tiny_llava(root / "llava")),
        "stan": str(stan),
        "stan_no_text": str(save_tiny_stan(root / "stan-no-text")),
        "video": str(write_video(root / "clip.mp4", frames=24)),
        "long": str(write_video(root / "long.mp4", frames=48)),
        **write_bad_uploads(root / "bad"),
    }
