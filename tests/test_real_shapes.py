"""The whole chain at real shapes on the CPU (slow): random weights, real geometry, a real clip.

A random Mug-STAN L/14 checkpoint in the released layout (CLIP-L/14 vision tower at 224 px, 24
layers of width 1024, STAN K = 4; the text tower kept to 2 layers of width 768 to save time, it
plays no part in the graft) is written as a `.bin` and converted with `stanchat convert official`.
The converted STAN is grafted onto three LLaVAs with a 2-layer LLM of width 64:
- LLaVA-1.5 shape: the CLIP-L/14-336 tower (random), 576 video tokens for 8 and 16 frames;
- LLaVA v1 (the paper's tower): the 224 px tower (the checkpoint's own CLIP weights), its
  single-linear projector as `stanchat convert llava` builds it, 256 tokens for 8 and 16 frames;
- LLaVA-NeXT: the 336 tower (shared with the first), 576 + its image_newline = 577 tokens for 8 and
  16 frames.
Each tower is built once per module; answers are 2 new tokens. Where the CPU computes bfloat16
natively (AMX / AVX512-BF16: 3-4x faster than float32 here) the models run in bfloat16, as
`stanchat.load(dtype="bfloat16")` runs them; elsewhere in float32.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import (CLIPConfig, CLIPImageProcessor, CLIPTextConfig, CLIPVisionConfig, LlamaConfig,
                          LlavaConfig, LlavaForConditionalGeneration, LlavaNextConfig,
                          LlavaNextForConditionalGeneration, LlavaNextImageProcessor, LlavaNextProcessor,
                          LlavaProcessor)

from stanchat.chat import VideoChat
from stanchat.cli import main
from stanchat.convert import to_released_state_dict
from stanchat.convert.llava_v1 import llava_config, v1_processor
from stanchat.pretrained import LLAVA_15_CHAT_TEMPLATE
from stanchat.stan import STANConfig
from stanchat.videoclip import VideoCLIP
from tests.convert.test_convert_llava import v1_tokenizer
from tests.test_tiny_preset import REAL_CLIP
from tests.tiny import randomise
from tests.tiny_llava import tiny_tokenizer

pytestmark = pytest.mark.slow


def _native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


DTYPE = torch.bfloat16 if _native_bf16() else torch.float32

L14 = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, patch_size=14,
           hidden_act="quick_gelu", projection_dim=768)


def vision_config(image_size: int) -> CLIPVisionConfig:
    return CLIPVisionConfig(image_size=image_size, **L14)


def llm_config(tokenizer) -> LlamaConfig:
    return LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
                       bos_token_id=1, eos_token_id=2, pad_token_id=3)


def image_processor(size: int, cls=CLIPImageProcessor, **extra):
    return cls(size={"shortest_edge": size}, crop_size={"height": size, "width": size}, **extra)


@pytest.fixture(scope="module")
def stan(tmp_path_factory) -> VideoCLIP:
    """A random released-layout Mug-STAN L/14 checkpoint, converted with `stanchat convert official`."""
    root = tmp_path_factory.mktemp("real")
    text = CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=2, num_attention_heads=12,
                          projection_dim=768)
    config = CLIPConfig(text_config=text.to_dict(), vision_config=vision_config(224).to_dict(), projection_dim=768)
    config.save_pretrained(root / "clip-vit-large-patch14")
    torch.manual_seed(0)
    from transformers import CLIPModel

    model = VideoCLIP.from_clip(CLIPModel(config), STANConfig(depth=4))
    randomise(model.stan, seed=1, std=0.02)  # the zero-initialised temporal_fc too
    torch.save(to_released_state_dict(model), root / "Mug-StanL14.bin")
    del model
    assert main(["convert", "official", str(root / "Mug-StanL14.bin"), "--clip", str(root / "clip-vit-large-patch14"),
                 "--out", str(root / "mug-stan-l14")]) == 0
    (root / "Mug-StanL14.bin").unlink()
    converted = VideoCLIP.from_pretrained(root / "mug-stan-l14", dtype=DTYPE).eval()
    assert converted.config.stan.depth == 4 and converted.stan.time_embed.num_embeddings == 64
    return converted


@pytest.fixture(scope="module")
def tower_336() -> torch.nn.Module:
    config = LlavaConfig(vision_config=vision_config(336).to_dict(), text_config=llm_config(tiny_tokenizer()).to_dict())
    torch.manual_seed(2)
    return LlavaForConditionalGeneration(config).model.vision_tower.to(DTYPE).eval()


def llava_15(tower) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    tokenizer = tiny_tokenizer()
    config = LlavaConfig(vision_config=vision_config(336).to_dict(), text_config=llm_config(tokenizer).to_dict(),
                         image_token_index=tokenizer.convert_tokens_to_ids("<image>"))
    model = LlavaForConditionalGeneration(config)
    model.model.vision_tower = tower
    model.to(DTYPE)
    processor = LlavaProcessor(image_processor=image_processor(336), tokenizer=tokenizer, patch_size=14,
                               vision_feature_select_strategy="default", chat_template=LLAVA_15_CHAT_TEMPLATE)
    return model.eval(), processor


def llava_next(tower) -> tuple[LlavaNextForConditionalGeneration, LlavaNextProcessor]:
    tokenizer = tiny_tokenizer()
    config = LlavaNextConfig(vision_config=vision_config(336).to_dict(), text_config=llm_config(tokenizer).to_dict(),
                             image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
                             image_grid_pinpoints=[[336, 672], [672, 336], [672, 672]])
    model = LlavaNextForConditionalGeneration(config)
    model.model.vision_tower = tower
    model.to(DTYPE)
    processor = LlavaNextProcessor(image_processor=image_processor(336, LlavaNextImageProcessor,
                                                                   image_grid_pinpoints=config.image_grid_pinpoints),
                                   tokenizer=tokenizer, patch_size=14, vision_feature_select_strategy="default",
                                   chat_template=LLAVA_15_CHAT_TEMPLATE)
    return model.eval(), processor


def llava_v1(videoclip: VideoCLIP) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """LLaVA v1 as `stanchat convert llava` builds it, on the checkpoint's own 224 px CLIP-L/14 tower."""
    tokenizer = v1_tokenizer()
    original = {**llm_config(tokenizer).to_dict(), "mm_vision_select_layer": -2}
    model = LlavaForConditionalGeneration(llava_config(original, vision_config(224).to_dict(), tokenizer)).to(DTYPE)
    tower = model.model.vision_tower
    own = {k: v for k, v in videoclip.clip.vision_model.state_dict().items()}
    missing, unexpected = tower.load_state_dict(own, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    with torch.no_grad():
        model.model.multi_modal_projector.linear_2.weight.copy_(torch.eye(64, dtype=DTYPE))
        model.model.multi_modal_projector.linear_2.bias.zero_()
    return model.eval(), v1_processor(image_processor(224), tokenizer, patch_size=14, use_start_end=True)


@pytest.mark.parametrize("family, frames, tokens", [
    ("llava-1.5", 8, 576), ("llava-1.5", 16, 576), ("llava-v1", 8, 256), ("llava-v1", 16, 256), ("llava-next", 8, 577),
    ("llava-next", 16, 577),
])
def test_real_shapes_answer_about_a_real_clip(stan, tower_336, family, frames, tokens):
    build = {"llava-1.5": lambda: llava_15(tower_336), "llava-next": lambda: llava_next(tower_336),
             "llava-v1": lambda: llava_v1(stan)}[family]
    model, processor = build()
    chat = VideoChat(model, processor, stan, name=family)
    assert chat.graft.end == 22 and chat.graft.stan_config.depth == 4  # STAN pairs with tower layers 19..22
    answer = chat.ask(REAL_CLIP, "What is the woman doing?", frames=frames, max_new_tokens=2)
    assert (answer.frames, answer.video_tokens) == (frames, tokens)
    assert len(answer.timestamps) == frames and answer.timestamps == sorted(answer.timestamps)
    assert isinstance(answer.text, str) and answer.timings["vision"] > 0
