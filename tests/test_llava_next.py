"""LLaVA-NeXT (v1.6) as a graft family: a video is one base-resolution image plus LLaVA-NeXT's
`image_newline`, as LLaVA-NeXT packs an image with only its base features, each frame squashed to
the base size as its processor makes the base image. Tiny model built here."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import (LlamaConfig, LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextImageProcessor,
                          LlavaNextProcessor)

from stanchat.cli import main
from stanchat.graft import Graft
from stanchat.pretrained import LLAVA_15_CHAT_TEMPLATE, get_preset
from tests.floats import FLOAT32
from tests.tiny import randomise, tiny_vision_config
from tests.tiny_llava import IMAGE_SIZE, PATCH_SIZE, VISION_LAYERS, tiny_tokenizer, tiny_videoclip, write_video

PINPOINTS = [[16, 32], [32, 16], [32, 32]]


def tiny_llava_next(strategy: str = "default") -> LlavaNextForConditionalGeneration:
    tokenizer = tiny_tokenizer()
    vision = tiny_vision_config(layers=VISION_LAYERS, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                       bos_token_id=1, eos_token_id=2, pad_token_id=3)
    config = LlavaNextConfig(vision_config=vision.to_dict(), text_config=text.to_dict(),
                             image_token_index=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_layer=-2,
                             vision_feature_select_strategy=strategy, image_grid_pinpoints=PINPOINTS)
    torch.manual_seed(0)
    model = LlavaNextForConditionalGeneration(config).eval()
    randomise(model.model.language_model, seed=1, std=0.3)
    randomise(model.lm_head, seed=2, std=0.3)
    return model


@pytest.fixture(scope="module")
def next_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("llava-next")
    image_processor = LlavaNextImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                              crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                                              image_grid_pinpoints=PINPOINTS)
    LlavaNextProcessor(image_processor=image_processor, tokenizer=tiny_tokenizer(), patch_size=PATCH_SIZE,
                       vision_feature_select_strategy="default",
                       chat_template=LLAVA_15_CHAT_TEMPLATE).save_pretrained(directory)
    tiny_llava_next().save_pretrained(directory)
    tiny_videoclip().save_pretrained(directory / "stan")
    write_video(directory / "clip.mp4", frames=24)
    return directory


@pytest.mark.parametrize("strategy", ["default", "full"])
def test_one_frame_mean_equals_llava_next_on_a_base_only_image(strategy):
    model = tiny_llava_next(strategy)
    graft = Graft(model, tiny_videoclip().stan)
    pixels = torch.randn(1, 1, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        hidden = model.model.vision_tower(pixels[:, 0], output_hidden_states=True).hidden_states[-2]
        selected = hidden[:, 1:] if strategy == "default" else hidden
        packed, _ = model.model.pack_image_features([model.model.multi_modal_projector(selected)],
                                                    torch.tensor([[IMAGE_SIZE, IMAGE_SIZE]]), strategy,
                                                    image_newline=model.model.image_newline)
    ours = graft.features(pixels, "mean")
    assert torch.equal(ours[0], packed[0])  # exact: at T = 1 the same layers, projector and packing on the same pixels
    assert torch.equal(ours[0, -1], model.model.image_newline)  # the newline closes the image
    assert ours.shape[1] == 4 + (strategy == "full") + 1


@pytest.mark.parametrize("temporal, frames, tokens", [("stan", 8, 5), ("stan", 16, 5), ("mean", 4, 5), ("concat", 3, 15)])
def test_ask_answers_with_llava_next(next_dir, capsys, temporal, frames, tokens):
    assert main(["ask", str(next_dir / "clip.mp4"), "What moves?", "--llava", str(next_dir), "--stan",
                 str(next_dir / "stan"), "--temporal", temporal, "--frames", str(frames), "--max-new-tokens", "3",
                 "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["video_tokens"] == tokens and answer["answer"] is not None


def test_concat_puts_a_newline_after_every_frame():
    model = tiny_llava_next()
    graft = Graft(model, None)
    features = graft.features(torch.randn(1, 3, 3, IMAGE_SIZE, IMAGE_SIZE), "concat")  # (1, 3 * (4 + 1), E)
    for frame in range(3):
        assert torch.equal(features[0, frame * 5 + 4], model.model.image_newline)


@pytest.mark.parametrize("height, width", [(24, 40), (40, 20)])
def test_frames_are_squashed_as_llava_next_makes_its_base_image(next_dir, height, width):
    """LLaVA-NeXT's base image is the whole frame resized to size x size (no crop): the frame
    preprocessing from its processor gives its pixel_values[0, 0] for a non-square frame."""
    import numpy as np

    from stanchat.video import Preprocessor

    processor = LlavaNextProcessor.from_pretrained(next_dir)
    frame = np.random.default_rng(height).integers(0, 256, (height, width, 3), dtype=np.uint8)
    expected = processor.image_processor(images=frame, return_tensors="pt")["pixel_values"][0, 0]  # (3, 16, 16)
    preprocessor = Preprocessor.from_image_processor(processor.image_processor)
    assert preprocessor.squash
    ours = preprocessor(frame[None])[0, 0]  # (1, 1, 3, 16, 16) -> (3, 16, 16)
    assert torch.allclose(ours, expected, **FLOAT32)  # the same uint8 resize kernel, then (x / 255 - mean) / std
    cropped = Preprocessor(size=IMAGE_SIZE, crop_size=IMAGE_SIZE)(frame[None])[0, 0]
    assert (cropped - expected).abs().max() > 0.5  # a centre crop of the frame is another picture


def test_the_next_presets_say_their_tower_was_tuned():
    for name in ("llava-next-vicuna-7b", "llava-next-mistral-7b"):
        preset = get_preset(name)
        assert preset.llava.startswith("llava-hf/llava-v1.6-") and "tuned its tower" in preset.note
        assert preset.pairing == "transfer"
