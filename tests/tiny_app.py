"""Fixtures for the chat app: tiny models with and without a text tokenizer, bad uploads, a running
app, and what a client sees of it (the outputs of opening a video, the chat's texts).

The tiny VideoCLIP's text tower has 99 token ids and 16 positions; `tiny_text_tokenizer` is a
character-level tokenizer (lower-cased letters, digits, a little punctuation) that fits in them,
saved beside the STAN weights as `stanchat convert` saves CLIP's.
"""

from __future__ import annotations

import html
import string
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from tests.tiny_llava import save_tiny_llava, save_tiny_stan, write_video

TEXT_SPECIALS = ["<|unk|>", "<|startoftext|>", "<|endoftext|>"]
TEXT_CHARS = string.ascii_lowercase + string.digits + "?!.,'-"
LOAD_OUTPUTS = ("frames", "video", "image", "strip", "messages", "plot", "info")  # /load_video's, in order


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


@pytest.fixture(scope="module")
def chat(app_models):
    """The app's tiny models, loaded once per test module."""
    from stanchat.chat import load

    return load(llava=app_models["llava"], stan=app_models["stan"], device="cpu")


@pytest.fixture
def client(url):
    """A fresh browser tab on the test module's app (its `url` fixture): its own session, so its
    own conversation."""
    from gradio_client import Client

    return Client(url, verbose=False)


def launched(chat, config):
    """For a module fixture: yields the address of the app built on `chat` with `config`, launched
    on a free port; closes it afterwards."""
    from stanchat.app.server import launch
    from stanchat.app.ui import build_app

    app = build_app(chat, config)
    yield launch(app, config, port=0, block=False, quiet=True)
    app.close()


def load_outputs(client, path, frames: int, temporal: str = "stan") -> dict:
    """Every output of opening `path` in the app through `client`, by name (LOAD_OUTPUTS)."""
    from gradio_client import handle_file

    return dict(zip(LOAD_OUTPUTS, client.predict(handle_file(str(path)), frames, temporal, api_name="/load_video")))


def texts(messages) -> list[tuple[str, str]]:
    """(role, text) of each chat message (the chat shows escaped plain text)."""
    return [(m["role"], html.unescape("".join(part["text"] for part in m["content"]))) for m in messages]


def moving_gif(path: Path, frames: int = 6, size: int = 24) -> Path:
    """An animated GIF of a white square (a third of the frame) moving right, 8 frames/s."""
    import numpy as np
    from PIL import Image

    side, step = size // 3, size // 8
    images = []
    for i in range(frames):
        pixels = np.zeros((size, size, 3), np.uint8)
        pixels[side:2 * side, step * i:step * i + side] = 255
        images.append(Image.fromarray(pixels))
    images[0].save(path, save_all=True, append_images=images[1:], duration=125, loop=0)
    return path
