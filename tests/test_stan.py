import pytest
import torch

from stanchat.stan import (STAN, SpatialBlock, STANConfig, TemporalBlock, end_layer_for_feature_layer,
                           run_video_tower, split_tokens, video_tokens)
from stanchat.videoclip import VideoCLIP
from tests.floats import FLOAT32
from tests.tiny import randomise, tiny_clip, tiny_vision_config

CFG = tiny_vision_config()


def _reference_temporal(block: TemporalBlock, x: torch.Tensor, t: int) -> torch.Tensor:
    """Loop version: for each sample and patch position, attend over that patch's T frames."""
    out = x.clone()
    b, s, _ = x.shape
    for i in range(b):
        for l in range((s - 1) // t):
            idx = [1 + l * t + f for f in range(t)]  # (l t) layout
            seq = x[i, idx][None]
            out[i, idx] = (seq + block.temporal_fc(block.self_attn(block.layer_norm1(seq))))[0]
    return out


def _reference_spatial(block: SpatialBlock, x: torch.Tensor, t: int) -> torch.Tensor:
    """Loop version: each frame attends over [video CLS, its L patches]; CLS outputs averaged."""
    b, s, d = x.shape
    l = (s - 1) // t
    out = torch.empty_like(x)
    for i in range(b):
        cls_outs = []
        for f in range(t):
            idx = [1 + p * t + f for p in range(l)]
            seq = torch.cat([x[i, :1], x[i, idx]])[None]
            seq = seq + block.self_attn(block.layer_norm1(seq))
            cls_outs.append(seq[0, 0])
            out[i, idx] = seq[0, 1:]
        out[i, 0] = torch.stack(cls_outs).mean(0)
    return out + block.mlp(block.layer_norm2(out))


@pytest.mark.parametrize("t", [1, 3])
def test_blocks_match_loop_reference(t):
    torch.manual_seed(0)
    x = torch.randn(2, 1 + 4 * t, 32)
    temporal = randomise(TemporalBlock(CFG, 0.0)).eval()
    spatial = randomise(SpatialBlock(CFG)).eval()
    with torch.no_grad():
        torch.testing.assert_close(temporal(x, t), _reference_temporal(temporal, x, t), **FLOAT32)
        torch.testing.assert_close(spatial(x, t), _reference_spatial(spatial, x, t), **FLOAT32)


def test_fresh_temporal_block_is_identity():
    x = torch.randn(2, 1 + 4 * 5, 32)
    assert torch.equal(TemporalBlock(CFG, 0.1).eval()(x, 5), x)  # x + exactly 0 (zero temporal_fc) is x


@pytest.mark.parametrize("t", [1, 2, 8, 13])
@pytest.mark.parametrize("b", [1, 3])
def test_video_features_shapes(t, b):
    model = VideoCLIP.from_clip(tiny_clip(), STANConfig(depth=2)).eval()
    with torch.no_grad():
        feats = model.encode_video(torch.randn(b, t, 3, 16, 16))
    assert feats.shape == (b, t, 24)
    assert torch.isfinite(feats).all()


def test_other_image_sizes_use_interpolated_tower_positions():
    model = VideoCLIP.from_clip(tiny_clip(), STANConfig(depth=2)).eval()
    with torch.no_grad():
        last, branch = run_video_tower(model.clip.vision_model, model.stan, torch.randn(1, 3, 3, 32, 24), model.end)
    assert last.shape == (3, 1 + 4 * 3, 32)  # 32x24 px at patch 8: 4x3 patches
    assert branch.shape == (1, 1 + 12 * 3, 32)


def test_views_equal_running_the_rearranged_clips():
    model = randomise(VideoCLIP.from_clip(tiny_clip(), STANConfig(depth=2))).eval()
    frames = torch.randn(2, 3, 3, 16, 16)
    views = torch.tensor([[0, 1, 2], [2, 1, 0], [1, 1, 1]])  # forwards, backwards, frame 1 held
    with torch.no_grad():
        ours = run_video_tower(model.clip.vision_model, model.stan, frames, model.end, views)
        clips = torch.cat([frames[:, v] for v in views])  # (V*B, T', 3, H, W), view by view
        reference = run_video_tower(model.clip.vision_model, model.stan, clips, model.end)
        features = model.encode_video(frames, views=views[:2])
    for a, b in zip(ours, reference):  # (V*B*T', 1+L, D), (V*B, 1+L*T', D)
        torch.testing.assert_close(a, b, **FLOAT32)
    torch.testing.assert_close(features, model.encode_video(clips[:4]), **FLOAT32)


def test_batch_items_are_independent():
    model = randomise(VideoCLIP.from_clip(tiny_clip(), STANConfig(depth=2))).eval()
    video = torch.randn(3, 4, 3, 16, 16)
    with torch.no_grad():
        together = model.encode_video(video)
        alone = model.encode_video(video[1:2])
    torch.testing.assert_close(together[1:2], alone, **FLOAT32)


def test_stan_sees_frame_order_but_frame_mean_does_not():
    model = randomise(VideoCLIP.from_clip(tiny_clip(), STANConfig(depth=2))).eval()
    video = torch.randn(1, 6, 3, 16, 16)
    with torch.no_grad():
        forward = model.encode_video(video).mean(1)
        backward = model.encode_video(video.flip(1)).mean(1)
        clip_fwd, _ = run_video_tower(model.clip.vision_model, None, video, model.end)
        clip_bwd, _ = run_video_tower(model.clip.vision_model, None, video.flip(1), model.end)
    assert not torch.allclose(forward, backward, atol=1e-4)
    torch.testing.assert_close(clip_fwd.mean(0), clip_bwd.mean(0), **FLOAT32)


def test_clip_path_equals_tower_hidden_states():
    clip = tiny_clip()
    vision = clip.vision_model
    frames = torch.randn(2, 3, 3, 16, 16)
    with torch.no_grad():
        hidden, _ = run_video_tower(vision, None, frames, end=2)
        reference = vision(frames.flatten(0, 1), output_hidden_states=True).hidden_states[3]
    assert torch.equal(hidden, reference)  # exact: the tower's own layers, called in its order on the same inputs


def test_spatial_blocks_start_as_their_paired_clip_layers():
    clip = tiny_clip()
    model = VideoCLIP.from_clip(clip, STANConfig(depth=2, end_layer=-2))
    assert model.end == 2
    for block, layer in zip(model.stan.spatial_layers, clip.vision_model.encoder.layers[1:3]):
        for name, value in layer.state_dict().items():
            assert torch.equal(block.state_dict()[name], value), name


def test_frozen_clip_trains_only_stan():
    model = VideoCLIP.from_clip(tiny_clip(), STANConfig(depth=2))
    randomise(model.stan)
    model.freeze_clip()
    model.train()
    tokens, pooled = model.encode_text(torch.randint(3, 99, (2, 5)))
    loss = model.encode_video(torch.randn(2, 3, 3, 16, 16)).mean(1).mul(pooled.detach()).sum()
    loss.backward()
    assert all(p.grad is None for p in model.clip.parameters())
    stan_grads = [p.grad for p in model.stan.parameters()]
    assert all(g is not None for g in stan_grads) and any(g.abs().sum() > 0 for g in stan_grads)


def test_gradient_checkpointing_gives_the_same_gradients():
    def grads(checkpointing: bool) -> list[torch.Tensor]:
        model = randomise(VideoCLIP.from_clip(tiny_clip(), STANConfig(depth=2, drop_path_rate=0.0)))
        model.set_gradient_checkpointing(checkpointing)
        model.train()
        model.encode_video(torch.randn(2, 3, 3, 16, 16, generator=torch.Generator().manual_seed(1))).square().sum().backward()
        return [p.grad for p in model.parameters()]

    for a, b in zip(grads(False), grads(True)):
        torch.testing.assert_close(a, b, **FLOAT32)


def test_input_projection_starts_as_plain_sum():
    base = VideoCLIP.from_clip(tiny_clip(), STANConfig(depth=3)).eval()
    proj = VideoCLIP.from_clip(tiny_clip(), STANConfig(depth=3, input_projection=True)).eval()
    proj.stan.load_state_dict(base.stan.state_dict(), strict=False)
    video = torch.randn(1, 4, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(base.encode_video(video), proj.encode_video(video), **FLOAT32)
    assert len(proj.stan.input_projs) == 2


def test_token_helpers_round_trip():
    hidden = torch.randn(2 * 3, 1 + 4, 8)  # (B*T, 1+L, D)
    tokens = video_tokens(hidden, 3)
    cls, patches = split_tokens(tokens, 3)
    torch.testing.assert_close(cls, hidden[:, 0].reshape(2, 3, 8).mean(1), **FLOAT32)
    assert torch.equal(patches, hidden[:, 1:].reshape(2, 3, 4, 8))  # reshapes move values, compute nothing


def test_too_many_frames_and_wrong_rank_are_clear_errors():
    model = VideoCLIP.from_clip(tiny_clip(), STANConfig(depth=2, max_frames=4))
    with pytest.raises(ValueError, match="supports 1..4 frames"):
        model.encode_video(torch.randn(1, 5, 3, 16, 16))
    with pytest.raises(ValueError, match=r"\(B, T, 3, H, W\)"):
        model.encode_video(torch.randn(5, 3, 16, 16))


@pytest.mark.parametrize("feature_layer, expected", [(-1, 23), (-2, 22), (24, 23), (1, 0), (-24, 0)])
def test_feature_layer_translation(feature_layer, expected):
    assert end_layer_for_feature_layer(feature_layer, 24) == expected


@pytest.mark.parametrize("feature_layer", [0, 25, -25])
def test_feature_layer_translation_rejects_non_layers(feature_layer):
    with pytest.raises(ValueError, match="does not select a layer output"):
        end_layer_for_feature_layer(feature_layer, 24)


def test_end_layer_must_fit_depth():
    assert STANConfig(depth=4, end_layer=-2).resolve_end(24) == 22
    assert STANConfig(depth=4, end_layer=-2).paired_layers(24) == range(19, 23)
    assert STANConfig(depth=2, end_layer=1).paired_layers(4) == range(0, 2)  # the first layers, exactly
    with pytest.raises(ValueError, match="does not fit"):
        STANConfig(depth=4, end_layer=2).resolve_end(24)
    with pytest.raises(ValueError, match="does not fit"):
        STANConfig(depth=2, end_layer=24).resolve_end(24)


def test_stan_rejects_wrong_number_of_paired_layers():
    stan = STAN(STANConfig(depth=2), CFG)
    with pytest.raises(ValueError, match="expects 2 paired"):
        stan([torch.randn(2, 5, 32)], 2, torch.zeros(32), torch.zeros(5, 32))
