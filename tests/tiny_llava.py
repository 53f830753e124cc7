"""A tiny LLaVA, processor, tokenizer and STAN built in code (never downloaded), plus tiny videos.

The tokenizer is byte-level over printable ASCII (other bytes map to <unk>), so every token decodes
to plain text and streaming is exact. The LLM is 64 wide because bitsandbytes' CPU 4-bit kernels
need in_features to be a multiple of their 64-element block.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (CLIPImageProcessor, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration,
                          LlavaProcessor, PreTrainedTokenizerFast)

from stanchat.pretrained import LLAVA_15_CHAT_TEMPLATE
from stanchat.stan import STANConfig
from stanchat.videoclip import VideoCLIP
from tests.tiny import randomise, tiny_clip, tiny_vision_config

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]
IMAGE_SIZE, PATCH_SIZE = 16, 8  # L = 4 patches per frame
VISION_LAYERS = 4  # feature layer -2 -> tower layer 2
STAN_DEPTH = 2  # pairs with tower layers 1..2 in the graft


def _byte_chars() -> dict[int, str]:
    """GPT-2's byte -> unicode map restricted to tab, newline and printable ASCII."""
    return {**{b: chr(b) for b in range(33, 127)}, 9: chr(256 + 9), 10: chr(256 + 10), 32: chr(256 + 32)}


def byte_tokenizer(**extra) -> PreTrainedTokenizerFast:
    """Byte-level tokenizer, no merges: ~100 tokens, `<s>` prepended like Llama; `extra` keywords
    (e.g. special tokens) go to PreTrainedTokenizerFast."""
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    vocab.update({char: len(SPECIAL_TOKENS) + i for i, char in enumerate(_byte_chars().values())})
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", **extra)


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """`byte_tokenizer` with `<image>` special, as LLaVA-1.5's."""
    return byte_tokenizer(extra_special_tokens={"image_token": "<image>"})


def tiny_processor() -> LlavaProcessor:
    tokenizer = tiny_tokenizer()
    image_processor = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                         crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH_SIZE,
                          vision_feature_select_strategy="default", chat_template=LLAVA_15_CHAT_TEMPLATE)


def tiny_llava(strategy: str = "default", seed: int = 0, context: int = 512) -> LlavaForConditionalGeneration:
    """A random LLaVA: tiny CLIP tower (width 32, 4 layers, 16 px, patch 8), 2-layer Llama of width 64."""
    tokenizer = tiny_tokenizer()
    vision = tiny_vision_config(layers=VISION_LAYERS, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=context,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id)
    config = LlavaConfig(vision_config=vision.to_dict(), text_config=text.to_dict(),
                         image_token_index=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_layer=-2,
                         vision_feature_select_strategy=strategy)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    # larger random LLM weights: greedy answers then vary token to token instead of repeating one
    randomise(model.model.language_model, seed=seed + 1, std=0.3)
    randomise(model.lm_head, seed=seed + 2, std=0.3)
    return model


def save_tiny_llava(directory: str | Path, strategy: str = "default", seed: int = 0, context: int = 512) -> Path:
    """Write a tiny LLaVA and its processor where `stanchat.load(llava=...)` can read them."""
    directory = Path(directory)
    processor = tiny_processor()
    processor.vision_feature_select_strategy = strategy
    processor.save_pretrained(directory)
    tiny_llava(strategy, seed, context).save_pretrained(directory)
    return directory


def tiny_videoclip(seed: int = 0) -> VideoCLIP:
    """A random VideoCLIP (width 32 like the tiny tower) whose STAN has no zero weights."""
    model = VideoCLIP.from_clip(tiny_clip(seed=seed, layers=VISION_LAYERS), STANConfig(depth=STAN_DEPTH))
    randomise(model.stan, seed=seed, std=0.2)
    return model.eval()


def save_tiny_stan(directory: str | Path, seed: int = 0) -> Path:
    return tiny_videoclip(seed).save_pretrained(directory)


def write_video(path: str | Path, frames: int = 24, size: int = 32, fps: int = 8) -> Path:
    """A tiny mpeg4 video of a bright square moving left to right over a gradient."""
    import av

    path = Path(path)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            image = np.zeros((size, size, 3), np.uint8)
            image[..., 2] = np.linspace(0, 255, size, dtype=np.uint8)[None]
            x = int(i * (size - 8) / max(frames - 1, 1))
            image[12:20, x:x + 8] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, str]:
    """Tiny LLaVAs (strategy default / full / a 128-token context), a STAN and two videos, on disk."""
    root = tmp_path_factory.mktemp("models")
    return {
        "default": str(save_tiny_llava(root / "llava")),
        "full": str(save_tiny_llava(root / "llava-full", strategy="full")),
        "short": str(save_tiny_llava(root / "llava-short", context=128)),
        "stan": str(save_tiny_stan(root / "stan")),
        "video": str(write_video(root / "clip.mp4", frames=72)),
        "other": str(write_video(root / "other.mp4", frames=20, size=24)),
    }


def error_line(stderr: str) -> str:
    """The CLI's one error line (model loading may draw progress bars above it); never a traceback."""
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.startswith("stanchat: error: ")]
    assert len(lines) == 1 and stderr.endswith(lines[0] + "\n"), stderr
    return lines[0]


def sessions_opened(monkeypatch) -> list:
    """The clips of the sessions `VideoChat.session` opens from now on."""
    from stanchat.chat import VideoChat

    clips, make_session = [], VideoChat.session

    def spy(self, *args, **kwargs):
        session = make_session(self, *args, **kwargs)
        clips.append(session.video)
        return session

    monkeypatch.setattr(VideoChat, "session", spy)
    return clips
