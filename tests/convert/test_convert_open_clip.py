"""open_clip <-> HF CLIP: the same weights give the same image, text, hidden-state and video features."""

import pytest
import torch

open_clip = pytest.importorskip("open_clip")

from stanchat.cli import main  # noqa: E402
from stanchat.convert import (  # noqa: E402
    clip_from_open_clip,
    open_clip_block_to_hidden_state,
    open_clip_state_dict,
    videoclip_from_open_clip,
)
from stanchat.errors import WeightsError  # noqa: E402
from stanchat.stan import STANConfig  # noqa: E402
from stanchat.videoclip import VideoCLIP  # noqa: E402
from tests.floats import FLOAT32_DEEP  # noqa: E402
from tests.tiny import TINY_COCA_CFG, TINY_OPEN_CLIP_CFG, randomise, tiny_clip  # noqa: E402

TINY_CFG = TINY_OPEN_CLIP_CFG


def tiny_open_clip(quick_gelu: bool, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = open_clip.model.CLIP(**TINY_CFG, quick_gelu=quick_gelu)
    return randomise(model, seed, std=0.1).eval()  # LayerNorms and biases off their init values too


def token_ids(batch: int = 3, length: int = 16) -> torch.Tensor:
    """Random ids with the largest id (98, the EOT stand-in) at a different place in each row."""
    ids = torch.randint(3, 90, (batch, length), generator=torch.Generator().manual_seed(0))
    for row, position in enumerate((5, length - 1, 0)[:batch]):
        ids[row, position] = 98
        ids[row, position + 1:] = 0  # open_clip pads with 0 after the EOT
    return ids


@pytest.mark.parametrize("quick_gelu", [True, False])
def test_open_clip_and_hf_give_the_same_features(quick_gelu):
    oc = tiny_open_clip(quick_gelu)
    hf = clip_from_open_clip(oc)
    assert hf.config.vision_config.hidden_act == ("quick_gelu" if quick_gelu else "gelu")
    images, ids = torch.randn(3, 3, 16, 16), token_ids()
    with torch.no_grad():
        torch.testing.assert_close(hf.get_image_features(pixel_values=images).pooler_output, oc.encode_image(images),
                                   **FLOAT32_DEEP)
        torch.testing.assert_close(hf.get_text_features(input_ids=ids).pooler_output, oc.encode_text(ids),
                                   **FLOAT32_DEEP)
        assert hf.logit_scale.item() == oc.logit_scale.item()


def test_layer_indices_translate_one_to_one():
    oc = tiny_open_clip(quick_gelu=True)
    hf = clip_from_open_clip(oc)
    images = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        hidden = hf.vision_model(pixel_values=images, output_hidden_states=True).hidden_states
        out = oc.visual.forward_intermediates(images, indices=[0, 1, 2, 3], output_fmt="NLC",
                                              output_extra_tokens=True, intermediates_only=True)
    for block in (-4, -1, 0, 1, 2, 3):
        tokens = torch.cat([out["image_intermediates_prefix"][block], out["image_intermediates"][block]], dim=1)
        torch.testing.assert_close(hidden[open_clip_block_to_hidden_state(block, 4)], tokens, **FLOAT32_DEEP)
    with pytest.raises(ValueError):
        open_clip_block_to_hidden_state(4, 4)


def test_hf_weights_survive_a_trip_through_open_clip():
    hf = randomise(tiny_clip(), seed=3, std=0.1)
    oc = open_clip.model.CLIP(**TINY_CFG, quick_gelu=True).eval()  # tiny_clip's activation is quick_gelu
    oc.load_state_dict(open_clip_state_dict(hf), strict=True)
    back = clip_from_open_clip(oc)
    for (name, a), b in zip(hf.state_dict().items(), back.state_dict().values()):
        assert torch.equal(a, b), name
    images, ids = torch.randn(2, 3, 16, 16), token_ids(2)
    with torch.no_grad():
        torch.testing.assert_close(oc.encode_image(images), hf.get_image_features(pixel_values=images).pooler_output,
                                   **FLOAT32_DEEP)
        torch.testing.assert_close(oc.encode_text(ids), hf.get_text_features(input_ids=ids).pooler_output,
                                   **FLOAT32_DEEP)


def test_video_features_agree_whichever_tower_feeds_stan():
    """The STAN branch fed by open_clip's own blocks, embeddings and head gives VideoCLIP's features."""
    oc = tiny_open_clip(quick_gelu=False, seed=1)
    model = VideoCLIP.from_clip(clip_from_open_clip(oc), STANConfig(depth=2)).eval()  # no drop-path
    randomise(model.stan, seed=2, std=0.1)
    video = torch.randn(2, 3, 3, 16, 16)  # (B, T, 3, H, W)
    b, t = video.shape[:2]
    with torch.no_grad():
        out = oc.visual.forward_intermediates(video.flatten(0, 1), indices=[2, 3], output_fmt="NLC",
                                              output_extra_tokens=True, intermediates_only=True)
        paired = [torch.cat(pair, dim=1) for pair in zip(out["image_intermediates_prefix"], out["image_intermediates"])]
        branch = model.stan(paired, t, oc.visual.class_embedding, oc.visual.positional_embedding)
        cls = paired[-1][:, 0].reshape(b, t, -1) + branch[:, None, 0]  # CLIP last CLS + STAN CLS, (B, T, D)
        expected = oc.visual.ln_post(cls) @ oc.visual.proj
        torch.testing.assert_close(model.encode_video(video), expected, **FLOAT32_DEEP)


@pytest.fixture
def registered(monkeypatch):
    """Tiny open_clip configs registered under names, as open_clip's own JSON configs are."""
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, "stanchat-tiny", TINY_CFG)
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, "stanchat-tiny-coca", TINY_COCA_CFG)


def test_from_open_clip_by_name(registered, tmp_path, capsys):
    model = videoclip_from_open_clip("stanchat-tiny", stan=STANConfig(depth=2))
    assert model.config.source == "open_clip:stanchat-tiny" and model.config.stan.depth == 2
    assert model.encode_video(torch.randn(1, 2, 3, 16, 16)).shape == (1, 2, 24)
    assert main(["convert", "open-clip", "stanchat-tiny", "--depth", "2", "--out", str(tmp_path / "m")]) == 0
    assert VideoCLIP.from_pretrained(tmp_path / "m").config.source == "open_clip:stanchat-tiny"


def test_unknown_open_clip_name_lists_the_valid_ones(registered):
    with pytest.raises(WeightsError, match="unknown open_clip model 'ViT-Q-99'; choose one of .*ViT-B-32"):
        videoclip_from_open_clip("ViT-Q-99")


def test_unknown_pretrained_tag_lists_the_valid_ones():
    with pytest.raises(WeightsError, match="unknown pretrained tag 'nope' for open_clip ViT-B-32; choose one of .*openai"):
        videoclip_from_open_clip("ViT-B-32", pretrained="nope")


def test_uncached_tag_offline_is_one_line(monkeypatch):
    def offline(*args, **kwargs):
        raise RuntimeError("Failed to download weights for tag 'x':\nWe couldn't connect to the hub\n")

    monkeypatch.setattr(open_clip, "create_model", offline)
    with pytest.raises(WeightsError, match="could not load open_clip ViT-B-32 weights 'openai'") as err:
        videoclip_from_open_clip("ViT-B-32", pretrained="openai")
    assert "\n" not in str(err.value)


def test_coca_is_refused_with_the_reason(registered):
    """HF CLIP cannot hold a CoCa; the refusal names the reason and CoCaVideoCLIP (tests/test_cocaclip.py)."""
    with pytest.raises(WeightsError, match="CoCa model.*attentional pooler.*CoCaVideoCLIP with "
                                           "stanchat.convert.video_model_from_open_clip"):
        videoclip_from_open_clip("stanchat-tiny-coca")
    coca = open_clip.create_model("stanchat-tiny-coca")  # a built CoCa is refused by the converter itself
    with pytest.raises(WeightsError, match="CoCa model"):
        clip_from_open_clip(coca)


def test_unsupported_open_clip_features_are_named():
    layer_scaled = open_clip.model.CLIP(**{**TINY_CFG, "vision_cfg": {**TINY_CFG["vision_cfg"], "ls_init_value": 0.1}})
    with pytest.raises(WeightsError, match="layer-scaled"):
        clip_from_open_clip(layer_scaled)
    mean_pooled = open_clip.model.CLIP(**{**TINY_CFG, "vision_cfg": {**TINY_CFG["vision_cfg"], "pool_type": "avg"}})
    with pytest.raises(WeightsError, match="pools images by 'avg'"):
        clip_from_open_clip(mean_pooled)
