import pytest
import torch

from stanchat.errors import StanchatError, WeightsError
from stanchat.graft import Graft, video_token_count
from stanchat.stan import STAN, STANConfig, run_video_tower, split_tokens
from tests.floats import FLOAT32
from tests.tiny import tiny_vision_config
from tests.tiny_llava import IMAGE_SIZE, PATCH_SIZE, tiny_llava, tiny_videoclip

L = (IMAGE_SIZE // PATCH_SIZE) ** 2  # 4 patches per frame


@pytest.fixture(scope="module")
def grafts():
    stan = tiny_videoclip().stan
    return {s: Graft(tiny_llava(strategy=s), stan) for s in ("default", "full")}


def _pixels(t: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, t, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(seed))


def test_video_token_count_table():
    assert video_token_count("stan", 16, 576, "default") == 576
    assert video_token_count("stan", 16, 576, "full") == 577
    assert video_token_count("mean", 64, 256, "full") == 257
    assert video_token_count("concat", 8, 576, "default") == 8 * 576
    assert video_token_count("concat", 8, 576, "full") == 8 * 577
    with pytest.raises(StanchatError, match="stan, mean, concat"):
        video_token_count("pool", 8, 576, "default")
    with pytest.raises(ValueError, match="strategy"):
        video_token_count("stan", 8, 576, "cls")


@pytest.mark.parametrize("strategy", ["default", "full"])
def test_mean_one_frame_equals_stock_llava_image_features(grafts, strategy):
    graft = grafts[strategy]
    pixels = _pixels(1)
    ours = graft.features(pixels, "mean")
    stock = graft.llava.model.get_image_features(pixel_values=pixels[:, 0]).pooler_output[0]
    assert ours.shape == (1, L + (strategy == "full"), graft.llava.config.text_config.hidden_size)
    assert torch.equal(ours[0], stock)  # exact: at T = 1 the graft runs the same layers and projector on the same pixels


@pytest.mark.parametrize("strategy", ["default", "full"])
def test_token_counts_for_every_frame_count(grafts, strategy):
    graft, per_image = grafts[strategy], L + (strategy == "full")
    for t in range(1, 65):
        pixels = _pixels(t, seed=t)
        assert graft.features(pixels, "stan").shape[1] == per_image
        assert graft.features(pixels, "mean").shape[1] == per_image
        assert graft.features(pixels, "concat").shape[1] == t * per_image
        assert graft.token_count("concat", t, IMAGE_SIZE, IMAGE_SIZE) == t * per_image


def test_stan_tokens_follow_the_design_formula(grafts):
    graft, t = grafts["full"], 5
    pixels = _pixels(t)
    hidden, branch = run_video_tower(graft.vision, graft.stan, pixels, graft.end)
    cls, patches = split_tokens(branch, t)
    clip_mean = hidden.reshape(1, t, L + 1, -1).mean(1)
    expected = torch.cat([(clip_mean[:, :1] + cls[:, None]) / 2, (clip_mean[:, 1:] + patches.mean(1)) / 2], 1)
    torch.testing.assert_close(graft.vision_tokens(pixels, "stan"), expected, **FLOAT32)
    assert not torch.allclose(graft.vision_tokens(pixels, "stan"), graft.vision_tokens(pixels, "mean"))


def test_stan_sees_frame_order_mean_does_not(grafts):
    graft = grafts["default"]
    pixels = _pixels(6)
    reversed_ = pixels.flip(1)
    torch.testing.assert_close(graft.features(pixels, "mean"), graft.features(reversed_, "mean"), **FLOAT32)
    assert not torch.allclose(graft.features(pixels, "stan"), graft.features(reversed_, "stan"), atol=1e-4)


def test_concat_keeps_frames_in_time_order(grafts):
    graft = grafts["default"]
    pixels = _pixels(3)
    concat = graft.features(pixels, "concat")
    for f in range(3):
        single = graft.features(pixels[:, f:f + 1], "mean")  # one frame = stock image features
        torch.testing.assert_close(concat[:, f * L:(f + 1) * L], single, **FLOAT32)


def test_graft_pairs_stan_with_the_feature_layer(grafts):
    graft = grafts["default"]
    assert graft.end == graft.llava.config.vision_config.num_hidden_layers - 2
    assert graft.stan_config.end_layer == graft.end
    assert graft.stan.config.end_layer == -1  # the VideoCLIP's own config is left alone


def test_too_many_frames_is_refused(grafts):
    with pytest.raises(ValueError, match="1..64 frames"):
        grafts["default"].features(_pixels(65), "stan")


def test_mismatched_width_is_refused():
    wide = STAN(STANConfig(depth=2), tiny_vision_config(width=48))
    with pytest.raises(WeightsError, match="48 wide"):
        Graft(tiny_llava(), wide)


def test_too_deep_stan_is_refused():
    deep = STAN(STANConfig(depth=4), tiny_vision_config())  # feature layer 2 leaves room for 3
    with pytest.raises(WeightsError, match="does not fit"):
        Graft(tiny_llava(), deep)


def test_stan_mode_without_stan_is_refused():
    graft = Graft(tiny_llava(), None)
    assert graft.features(_pixels(2), "mean").shape[1] == L
    with pytest.raises(WeightsError, match="needs STAN weights"):
        graft.features(_pixels(2), "stan")


def test_multiple_feature_layers_are_refused():
    llava = tiny_llava()
    llava.config.vision_feature_layer = [-2, -1]
    with pytest.raises(WeightsError, match="several vision layers"):
        Graft(llava, None)


def test_placed_video_tokens_reach_llava_as_its_own_image_features(grafts):
    """`place_video` (the one way video tokens enter the LLM) of an image's projected features gives
    the logits LLaVA computes from that image's pixels; a row with the wrong placeholder count is refused."""
    from stanchat.graft import place_video

    llava, pixels = grafts["default"].llava, _pixels(1)[:, 0]  # (1, 3, H, W)
    image_token = llava.config.image_token_index
    ids = torch.tensor([[1, 5, *[image_token] * L, 6, 7]])
    with torch.no_grad():
        stock = llava(input_ids=ids, pixel_values=pixels).logits
        features = llava.model.get_image_features(pixel_values=pixels).pooler_output[0][None]  # (1, L, E)
        ours = llava(inputs_embeds=place_video(llava, ids, features)).logits
        blank = llava(inputs_embeds=place_video(llava, ids, features * 0)).logits
        with pytest.raises(RuntimeError, match="placeholders"):
            place_video(llava, ids[:, :-3], features)
    torch.testing.assert_close(ours, stock, **FLOAT32)
    assert not torch.allclose(blank, stock, atol=1e-3)  # the features do reach the LLM
