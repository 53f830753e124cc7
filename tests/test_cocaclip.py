"""CoCaVideoCLIP: open_clip CoCa towers + STAN give open_clip's own features, plus STAN's, exactly."""

import json

import pytest
import torch

open_clip = pytest.importorskip("open_clip")

from stanchat.architectures import ARCHITECTURES, load_video_model, video_model_class  # noqa: E402
from stanchat.cli import main  # noqa: E402
from stanchat.cocaclip import CoCaVideoCLIP, CoCaVideoCLIPConfig, OpenCLIPVisionTower, fuse_stan_tokens  # noqa: E402
from stanchat.convert import (  # noqa: E402
    clip_from_open_clip,
    cocaclip_from_coca,
    cocaclip_from_open_clip,
    encoder_layer_state_from_open_clip,
    is_coca_config,
    open_clip_block_to_hidden_state,
    video_model_from_open_clip,
)
from stanchat.errors import WeightsError  # noqa: E402
from stanchat.stan import STAN, STANConfig, run_video_tower  # noqa: E402
from stanchat.videoclip import VideoCLIP  # noqa: E402
from tests.floats import FLOAT32, FLOAT32_DEEP  # noqa: E402
from tests.tiny import TINY_COCA_CFG, TINY_OPEN_CLIP_CFG, randomise, tiny_clip  # noqa: E402

# CoCa(**COCA_CFG) builds what open_clip.create_model builds from TINY_COCA_CFG (4 blocks, 16 px, 2x2 patches)
COCA_CFG = {k: v for k, v in TINY_COCA_CFG.items() if k != "custom_text"}
CLS_POOLED_CFG = {**COCA_CFG, "vision_cfg": {**COCA_CFG["vision_cfg"], "attentional_pool": False}}  # as coca_base


def tiny_coca(cfg: dict = COCA_CFG, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return randomise(open_clip.CoCa(**cfg), seed, std=0.1).eval()  # LayerNorms and biases off their init too


def video(b: int, t: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, t, 3, 16, 16, generator=torch.Generator().manual_seed(seed))  # (B, T, 3, H, W)


def token_ids() -> torch.Tensor:
    """Three texts of 12 ids; open_clip pads with 0 after the last word."""
    ids = torch.randint(3, 99, (3, 12), generator=torch.Generator().manual_seed(0))
    ids[0, 5:] = 0
    ids[1, 9:] = 0
    return ids


@pytest.fixture
def coca():
    return tiny_coca()


@pytest.fixture
def model(coca):
    return cocaclip_from_coca(coca, COCA_CFG, STANConfig(depth=2)).eval()  # eval: no drop-path


def reference_video_features(coca, stan: STAN, pixel_values: torch.Tensor) -> torch.Tensor:
    """Frame features computed apart from CoCaVideoCLIP: STAN fed by open_clip's own
    forward_intermediates, frame tokens assembled one frame at a time, and CoCa's head written out in
    open_clip's order (attn_pool -> ln_post -> first query -> proj)."""
    b, t = pixel_values.shape[:2]
    visual = coca.visual
    blocks = len(visual.transformer.resblocks)
    indices = list(range(blocks - stan.config.depth, blocks))  # the paired blocks
    out = visual.forward_intermediates(pixel_values.flatten(0, 1), indices=indices, output_fmt="NLC",
                                       output_extra_tokens=True, intermediates_only=True)
    paired = [torch.cat(pair, dim=1) for pair in zip(out["image_intermediates_prefix"], out["image_intermediates"])]
    branch = stan(paired, t, visual.class_embedding, visual.positional_embedding)  # (B, 1+L*T, D)
    last = paired[-1].reshape(b, t, *paired[-1].shape[1:])  # (B, T, 1+L, D)
    features = torch.empty(b, t, visual.proj.shape[1])
    for i in range(b):
        for f in range(t):
            patches = branch[i, 1 + f :: t]  # (l t) layout: frame f of every patch position
            tokens = last[i, f] + torch.cat([branch[i, :1], patches])  # [CLS_f + STAN CLS, patch_l,f + STAN patch_l,f]
            features[i, f] = visual.ln_post(visual.attn_pool(tokens[None]))[0, 0] @ visual.proj
    return features


@pytest.mark.parametrize("t", [1, 3])
def test_without_stan_frames_are_open_clip_image_features(model, coca, t):
    frames = video(2, t)
    with torch.no_grad():
        ours = model.encode_video(frames, with_stan=False)
        theirs = coca.encode_image(frames.flatten(0, 1), normalize=False).reshape(2, t, -1)
    assert torch.equal(ours, theirs)  # exact: the same open_clip modules in the same order, on the same inputs


@pytest.mark.parametrize("t", [1, 3])
@pytest.mark.parametrize("fresh", [True, False])
def test_stan_fusion_matches_the_reference_and_changes_the_features(model, coca, t, fresh):
    if fresh:  # as built: temporal_fc at zero, spatial blocks copied from the paired resblocks
        fcs = [block.temporal_fc for block in model.stan.temporal_layers]
        assert all(torch.count_nonzero(p) == 0 for fc in fcs for p in fc.parameters())
    else:
        randomise(model.stan, seed=2, std=0.1)
    frames = video(2, t)
    with torch.no_grad():
        fused = model.encode_video(frames)
        plain = model.encode_video(frames, with_stan=False)
        torch.testing.assert_close(fused, reference_video_features(coca, model.stan, frames), **FLOAT32_DEEP)
    assert fused.shape == (2, t, 24)
    assert (fused - plain).abs().max() > 1e-2  # STAN's tokens do reach the head


def test_cls_pooled_coca_reduces_to_the_design_recipe():
    """Without an attentional pooler only the CLS reaches the head: post-LN(CLIP CLS + STAN CLS) @ proj."""
    coca = tiny_coca(CLS_POOLED_CFG)
    model = randomise(cocaclip_from_coca(coca, CLS_POOLED_CFG, STANConfig(depth=2)).eval(), seed=3, std=0.05)
    frames = video(2, 3)
    with torch.no_grad():
        last, branch = run_video_tower(model.tower, model.stan, frames, model.end)
        cls = last[:, 0].reshape(2, 3, -1) + branch[:, None, 0]  # (B, T, D)
        expected = model.coca.visual.ln_post(cls) @ model.coca.visual.proj
        torch.testing.assert_close(model.encode_video(frames), expected, **FLOAT32)


def test_fused_tokens_keep_each_frames_patches():
    last, branch = torch.randn(2 * 3, 1 + 4, 8), torch.randn(2, 1 + 4 * 3, 8)
    fused = fuse_stan_tokens(last, branch, 3).reshape(2, 3, 5, 8)  # one addition per element: exact anywhere
    assert torch.equal(fused[1, 2, 0], last[5, 0] + branch[1, 0])
    assert torch.equal(fused[1, 2, 3], last[5, 3] + branch[1, 1 + 2 * 3 + 2])  # patch l=2, frame t=2


def test_open_clip_tower_follows_hf_layer_semantics():
    """The same CLIP weights through the open_clip adapter and the HF tower: same layers, same STAN."""
    torch.manual_seed(0)
    oc = randomise(open_clip.model.CLIP(**TINY_OPEN_CLIP_CFG), seed=0, std=0.1).eval()
    hf = clip_from_open_clip(oc).vision_model
    tower, frames = OpenCLIPVisionTower(oc.visual), video(2, 3)
    stan = randomise(STAN(STANConfig(depth=2), hf.config), seed=1, std=0.1).eval()
    with torch.no_grad():
        hidden = hf(frames.flatten(0, 1), output_hidden_states=True).hidden_states
        for end in (0, 2, 3):
            ours, _ = run_video_tower(tower, None, frames, end)
            torch.testing.assert_close(ours, hidden[open_clip_block_to_hidden_state(end, 4)], **FLOAT32_DEEP)
        for a, b in zip(run_video_tower(tower, stan, frames, 3), run_video_tower(hf, stan, frames, 3)):
            torch.testing.assert_close(a, b, **FLOAT32_DEEP)
    for block, layer in zip(oc.visual.transformer.resblocks, hf.encoder.layers):
        assert all(torch.equal(v, layer.state_dict()[k]) for k, v in encoder_layer_state_from_open_clip(block).items())


def test_spatial_blocks_start_as_their_paired_resblocks(model):
    """With one frame a spatial block is a plain transformer block: it must compute its resblock."""
    x = torch.randn(3, 5, 32)  # (N, 1+L, D)
    with torch.no_grad():
        for block, resblock in zip(model.stan.spatial_layers, model.coca.visual.transformer.resblocks[2:]):
            torch.testing.assert_close(block(x, 1), resblock(x), **FLOAT32)


def test_encode_text_pooled_is_open_clip_encode_text(model, coca):
    ids = token_ids()
    with torch.no_grad():
        tokens, pooled = model.encode_text(ids, ids != 0)
        assert torch.equal(pooled, coca.encode_text(ids, normalize=False))  # exact: open_clip's own text forward
        _, raw = coca.text(ids)  # the last block's outputs at the input positions, appended CLS dropped
        torch.testing.assert_close(tokens, coca.text.ln_final(raw) @ coca.text.text_projection, **FLOAT32)
    assert tokens.shape == (3, 12, 24) and pooled.shape == (3, 24)


def test_text_mask_and_length_errors_are_clear(model):
    ids = token_ids()
    with pytest.raises(ValueError, match="attention_mask must equal input_ids != 0"):
        model.encode_text(ids, torch.ones_like(ids))
    with pytest.raises(ValueError, match="at most 15 tokens"):
        model.encode_text(torch.randint(3, 99, (1, 16)))


@pytest.mark.parametrize("t", [1, 2, 8])
@pytest.mark.parametrize("b", [1, 2])
def test_shapes_and_scoring(model, b, t):
    ids = token_ids()
    with torch.no_grad():
        frames = model.encode_video(video(b, t))
        text = model.encode_text(ids)
        assert frames.shape == (b, t, 24) and torch.isfinite(frames).all()
        for mode in ("mean", "mug", "mug-simple"):
            assert model.similarity(text, ids != 0, frames, mode=mode).shape == (3, b)


def test_wrong_image_size_and_end_layer_are_clear_errors(model):
    with pytest.raises(ValueError, match="takes 16x16 images"):
        model.encode_video(torch.randn(1, 2, 3, 24, 24))
    with pytest.raises(ValueError, match="last block's tokens"):
        cocaclip_from_coca(tiny_coca(), COCA_CFG, STANConfig(depth=2, end_layer=-2))


def test_save_load_round_trip_is_bit_exact(model, tmp_path):
    randomise(model.stan, seed=4, std=0.1)
    model.save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["architecture"] == "stanchat.CoCaVideoCLIP" and config["open_clip"] == {**COCA_CFG}
    assert config["stan"]["depth"] == 2
    loaded = CoCaVideoCLIP.from_pretrained(tmp_path / "m").eval()
    assert loaded.config == model.config
    assert loaded.state_dict().keys() == model.state_dict().keys()
    assert not any(k.startswith("coca.text_decoder") for k in loaded.state_dict())
    # a save/load round trip: the same weights through the same kernels, so exact
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    frames, ids = video(2, 3), token_ids()
    with torch.no_grad():
        assert torch.equal(model.encode_video(frames), loaded.encode_video(frames))
        for a, b in zip(model.encode_text(ids), loaded.encode_text(ids)):
            assert torch.equal(a, b)


def test_frozen_coca_trains_only_stan(model):
    randomise(model.stan, seed=5, std=0.1)
    model.freeze_clip()
    model.train()
    tokens, pooled = model.encode_text(token_ids())
    assert not tokens.requires_grad and not pooled.requires_grad
    model.encode_video(video(2, 3)).mean(1).mul(pooled[:2]).sum().backward()
    assert all(p.grad is None for p in model.coca.parameters())
    grads = [p.grad for p in model.stan.parameters()]
    assert all(g is not None for g in grads) and all(g.abs().sum() > 0 for g in grads[:4])


def test_gradient_checkpointing_gives_the_same_gradients():
    def grads(checkpointing: bool) -> list[torch.Tensor]:
        model = cocaclip_from_coca(tiny_coca(), COCA_CFG, STANConfig(depth=2, drop_path_rate=0.0))
        randomise(model.stan, seed=6, std=0.1)
        model.set_gradient_checkpointing(checkpointing)
        model.train()
        loss = model.encode_video(video(2, 3)).square().sum() + model.encode_text(token_ids())[0].square().sum()
        loss.backward()
        return [p.grad for p in model.parameters() if p.grad is not None]

    plain, checkpointed = grads(False), grads(True)
    assert len(plain) == len(checkpointed) > 0
    for a, b in zip(plain, checkpointed):
        torch.testing.assert_close(a, b, **FLOAT32)


def test_loader_dispatches_on_the_saved_architecture(model, tmp_path):
    model.save_pretrained(tmp_path / "coca")
    VideoCLIP.from_clip(tiny_clip(), STANConfig(depth=2)).save_pretrained(tmp_path / "clip")
    assert type(load_video_model(tmp_path / "coca")) is CoCaVideoCLIP
    assert type(load_video_model(tmp_path / "clip", dtype=torch.float64)) is VideoCLIP
    for architecture in ARCHITECTURES:  # each registered class writes the tag it is registered under
        assert video_model_class(architecture).config_class.architecture == architecture
    config = json.loads((tmp_path / "coca" / "config.json").read_text())
    (tmp_path / "coca" / "config.json").write_text(json.dumps({**config, "architecture": "stanchat.CoCa"}))
    with pytest.raises(WeightsError, match="unknown model architecture 'stanchat.CoCa'.*known: stanchat.VideoCLIP, "
                                           "stanchat.CoCaVideoCLIP") as err:
        load_video_model(tmp_path / "coca")
    assert "\n" not in str(err.value)
    with pytest.raises(WeightsError, match="not a stanchat CoCaVideoCLIP config"):
        CoCaVideoCLIP.from_pretrained(tmp_path / "clip")


def test_unsupported_coca_variants_are_named():
    parallel = {**COCA_CFG, "vision_cfg": {**COCA_CFG["vision_cfg"], "attentional_pool": "parallel"}}
    with pytest.raises(WeightsError, match="experimental 'parallel' attentional pooling"):
        cocaclip_from_coca(tiny_coca(parallel), parallel)
    with pytest.raises(WeightsError, match="does not build a CoCa"):
        cocaclip_from_coca(tiny_coca(), {**COCA_CFG, "custom_text": True})


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, "stanchat-tiny-coca", TINY_COCA_CFG)
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, "stanchat-tiny", TINY_OPEN_CLIP_CFG)


def test_from_open_clip_dispatches_by_config(registered):
    coca = video_model_from_open_clip("stanchat-tiny-coca", stan=STANConfig(depth=2))
    assert type(coca) is CoCaVideoCLIP and coca.config.open_clip == {**COCA_CFG, "quick_gelu": False}
    assert type(video_model_from_open_clip("stanchat-tiny", stan=STANConfig(depth=2))) is VideoCLIP
    with pytest.raises(WeightsError, match="is not a CoCa; convert it with stanchat.convert.videoclip_from_open_clip"):
        cocaclip_from_open_clip("stanchat-tiny")
    with pytest.raises(WeightsError, match="unknown pretrained tag 'nope' for open_clip coca_ViT-B-32; .*laion2b_s13b"):
        video_model_from_open_clip("coca_ViT-B-32", pretrained="nope")  # refused before any download


BUNDLED_COCAS = [name for name in open_clip.list_models() if is_coca_config(open_clip.get_model_config(name))]


@pytest.mark.parametrize("name", BUNDLED_COCAS)
def test_every_bundled_coca_config_builds_or_is_refused_by_name(name):
    """open_clip's own CoCa configs, built on the meta device (shapes only, no memory, no init time)."""
    cfg = open_clip.get_model_config(name)
    if "hf_model_name" in cfg["text_cfg"]:
        with pytest.raises(WeightsError, match="Hugging Face text or timm image tower"):
            cocaclip_from_open_clip(name)
        return
    with torch.device("meta"):
        model = CoCaVideoCLIP(CoCaVideoCLIPConfig(open_clip={k: v for k, v in cfg.items() if k != "custom_text"}))
    assert model.end == len(model.coca.visual.transformer.resblocks) - 1 and model.coca.text_decoder is None


def test_cli_converts_a_registered_coca_name(registered, tmp_path, capsys):
    assert main(["convert", "open-clip", "stanchat-tiny-coca", "--depth", "2", "--out", str(tmp_path / "m")]) == 0
    assert capsys.readouterr().out.startswith("wrote ")
    model = load_video_model(tmp_path / "m").eval()
    assert type(model) is CoCaVideoCLIP and model.config.source == "open_clip:stanchat-tiny-coca"
    frames = video(1, 2)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_video(frames, with_stan=False)[0],
                                   model.coca.encode_image(frames[0], normalize=False), rtol=0, atol=0)  # same modules, same order


@pytest.mark.slow
def test_cli_converts_a_bundled_coca_config_offline(tmp_path, capsys):
    """open_clip's own coca_ViT-B-32 config, random weights (no --pretrained), read back by the loader.
    (Features are checked on the tiny CoCa above; a ViT-B/32 forward would only cost time here.)"""
    assert main(["convert", "open-clip", "coca_ViT-B-32", "--depth", "1", "--out", str(tmp_path / "m")]) == 0
    assert capsys.readouterr().out.startswith("wrote ")
    model = load_video_model(tmp_path / "m")
    assert type(model) is CoCaVideoCLIP and model.config.source == "open_clip:coca_ViT-B-32"
    assert model.coca.text_decoder is None and model.config.stan.depth == 1 and model.end == 11
    assert model.config.open_clip["vision_cfg"]["attentional_pool"] is True
    spatial, paired = model.stan.spatial_layers[0], model.coca.visual.transformer.resblocks[11]
    assert all(torch.equal(v, spatial.state_dict()[k]) for k, v in encoder_layer_state_from_open_clip(paired).items())


def test_views_equal_encoding_the_rearranged_clips(model):
    frames = video(2, 3)
    views = torch.tensor([[0, 1, 2], [2, 1, 0]])  # forwards, backwards
    with torch.no_grad():
        ours = model.encode_video(frames, views=views)  # (V*B, T', P)
        reference = model.encode_video(torch.cat([frames[:, v] for v in views]))
    torch.testing.assert_close(ours, reference, **FLOAT32)
