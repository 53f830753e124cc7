import json

import pytest
import torch

from stanchat.errors import WeightsError
from stanchat.stan import STANConfig, fuse_frames, run_video_tower, split_tokens
from stanchat.videoclip import VideoCLIP
from tests.floats import FLOAT32
from tests.tiny import randomise, tiny_clip


@pytest.fixture
def model():
    return randomise(VideoCLIP.from_clip(tiny_clip(), STANConfig(depth=2, input_projection=True))).eval()


def test_save_load_round_trip_is_bit_exact(model, tmp_path):
    model.save_pretrained(tmp_path / "m")
    loaded = VideoCLIP.from_pretrained(tmp_path / "m").eval()
    assert loaded.config == model.config
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    video, ids = torch.randn(2, 3, 3, 16, 16), torch.randint(3, 99, (2, 6))
    with torch.no_grad():
        assert torch.equal(model.encode_video(video), loaded.encode_video(video))
        assert torch.equal(model.encode_text(ids)[1], loaded.encode_text(ids)[1])


def test_saved_config_records_architecture_and_stan(model, tmp_path):
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architecture"] == "stanchat.VideoCLIP"
    assert config["stan"]["depth"] == 2 and config["stan"]["input_projection"] is True


def test_encode_text_shapes(model):
    tokens, pooled = model.encode_text(torch.randint(3, 99, (3, 7)), torch.ones(3, 7, dtype=torch.long))
    assert tokens.shape == (3, 7, 24) and pooled.shape == (3, 24)


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        VideoCLIP.from_pretrained(tmp_path / "nope")
    with pytest.raises(WeightsError, match="no config.json"):
        VideoCLIP.from_pretrained(tmp_path)


def test_uncached_hub_id_offline_is_a_clear_error():
    with pytest.raises(WeightsError, match="not in the local cache"):
        VideoCLIP.from_pretrained("stanchat-test/does-not-exist")


def test_mismatched_weights_name_the_keys(model, tmp_path):
    model.save_pretrained(tmp_path)
    other = VideoCLIP.from_clip(tiny_clip(), STANConfig(depth=2))  # no input projections
    other.config = model.config.__class__(**{**model.config.__dict__, "stan": STANConfig(depth=2)})
    other.save_pretrained(tmp_path / "other")
    (tmp_path / "other" / "config.json").write_text((tmp_path / "config.json").read_text())
    with pytest.raises(WeightsError, match="missing: stan.input_projs"):
        VideoCLIP.from_pretrained(tmp_path / "other")


@pytest.mark.parametrize("mode", ["mean", "mug", "mug-simple"])
def test_similarity_scores_every_text_video_pair(model, mode):
    ids = torch.randint(3, 99, (3, 6))
    mask = torch.ones(3, 6, dtype=torch.long)
    mask[0, 4:] = 0
    with torch.no_grad():
        text = model.encode_text(ids, mask)
        video = model.encode_video(torch.randn(2, 4, 3, 16, 16))
        sims = model.similarity(text, mask, video, mode=mode, chunk_size=1)
    assert sims.shape == (3, 2)
    assert sims.abs().max() <= 1.0 + 1e-5


def test_unknown_scoring_mode_lists_valid_modes(model):
    with pytest.raises(ValueError, match="mean, mug, mug-simple"):
        model.similarity((torch.zeros(1, 2, 24), torch.zeros(1, 24)), torch.ones(1, 2), torch.zeros(1, 2, 24), mode="max")


@pytest.mark.parametrize("end_layer", [-1, -2])
def test_frame_features_without_stan_are_clips_image_features(end_layer):
    clip = tiny_clip()
    model = randomise(VideoCLIP.from_clip(clip, STANConfig(depth=2, end_layer=end_layer))).eval()
    video = torch.randn(2, 3, 3, 16, 16)
    with torch.no_grad():
        baseline = model.encode_video(video, with_stan=False)
        reference = model.clip.get_image_features(pixel_values=video.flatten(0, 1)).pooler_output
        torch.testing.assert_close(baseline, reference.reshape(2, 3, -1), **FLOAT32)
        assert not torch.allclose(model.encode_video(video), baseline)


def test_last_layer_stan_joins_at_the_cls_as_design_says():
    model = randomise(VideoCLIP.from_clip(tiny_clip(), STANConfig(depth=2))).eval()
    vision, video = model.clip.vision_model, torch.randn(2, 3, 3, 16, 16)
    with torch.no_grad():
        hidden, branch = run_video_tower(vision, model.stan, video, model.end)
        cls = hidden[:, 0].reshape(2, 3, -1) + branch[:, None, 0]
        reference = model.clip.visual_projection(vision.post_layernorm(cls))
        torch.testing.assert_close(model.encode_video(video), reference, **FLOAT32)


def test_graft_ready_stan_is_read_through_clips_remaining_layers_as_the_graft_fuses_it():
    model = randomise(VideoCLIP.from_clip(tiny_clip(), STANConfig(depth=2, end_layer=-2))).eval()
    vision, video = model.clip.vision_model, torch.randn(2, 3, 3, 16, 16)
    with torch.no_grad():
        hidden, branch = run_video_tower(vision, model.stan, video, model.end)
        cls, patches = split_tokens(branch, 3)  # (B, D), (B, T, L, D)
        frames = hidden.reshape(2, 3, *hidden.shape[1:])
        fused = torch.cat([(frames[:, :, :1] + cls[:, None, None]) / 2, (frames[:, :, 1:] + patches) / 2], dim=2)
        # the graft hands the LLM the mean over frames of exactly these tokens
        torch.testing.assert_close(fuse_frames(hidden, branch, 3), fused, **FLOAT32)
        x = vision.encoder.layers[-1](fused.flatten(0, 1), None)  # the layer after the STAN's end
        reference = model.clip.visual_projection(vision.post_layernorm(x[:, 0])).reshape(2, 3, -1)
        torch.testing.assert_close(model.encode_video(video), reference, **FLOAT32)


def test_text_tokenizer_is_found_beside_the_model_or_at_its_source(tmp_path):
    from stanchat.videomodel import load_text_tokenizer
    from training.tiny_backbone import write_tiny_backbone

    with pytest.raises(WeightsError, match="has no text tokenizer"):
        load_text_tokenizer(tmp_path)
    write_tiny_backbone(tmp_path / "clip")
    assert load_text_tokenizer(tmp_path / "clip").vocab_size > 0
    assert load_text_tokenizer(tmp_path, source=str(tmp_path / "clip")).vocab_size > 0
