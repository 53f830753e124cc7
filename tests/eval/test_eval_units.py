"""The pieces of `stanchat eval` on their own: answer matching, judge replies, question ids, views,
the feature cache and the reversal measures, each on inputs worked out by hand."""

import json

import numpy as np
import pytest
import torch

from stanchat.errors import StanchatError
from stanchat.eval.features import Clip, VideoFeatures, cache_folder, load_cached, save_cached
from stanchat.eval.judge import make_judge, parse_verdict
from stanchat.eval.reverse import caption_flips, direction_cosines
from stanchat.eval.videoqa import check_resume, contains, exact_match, normalize_answer, question_ids
from tests.floats import FLOAT32_APPROX


@pytest.mark.parametrize("text, expected", [
    ("The Dog!", "dog"), ("  a  red   circle. ", "red circle"), ("an apple, the pear", "apple pear"),
    ("Theatre", "theatre"),  # articles only as whole words
])
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_exact_match_and_containment():
    assert exact_match("The left.", "left") and not exact_match("to the left", "left")
    assert contains("It moves to the left.", "left")
    assert not contains("leftover", "left")  # whole words only
    assert contains("a purple diamond", "Purple Diamond") and not contains("anything", "")


@pytest.mark.parametrize("reply, verdict", [
    ("Yes.", True), ("no, it is wrong", False), ("  YES", True), ("I think... no", False),
    ("yesterday", None), ("", None), ("Correct", None),
])
def test_parse_verdict(reply, verdict):
    assert parse_verdict(reply) is verdict


def test_judge_options_need_each_other():
    assert make_judge(None, None, None, None) is None  # no hidden default judge
    with pytest.raises(StanchatError, match="--judge-name"):
        make_judge(None, "http://127.0.0.1:9", None, None)
    with pytest.raises(StanchatError, match="not both"):
        make_judge("somewhere", "http://127.0.0.1:9", "x", None)
    with pytest.raises(StanchatError, match="http"):
        make_judge(None, "127.0.0.1:9", "x", None)
    with pytest.raises(StanchatError, match="config.json"):
        make_judge("/nonexistent/judge", None, None, None)


class _Rec:
    def __init__(self, video_id, question_id=None):
        self.video_id, self.question_id = video_id, question_id


def test_question_ids_are_unique_and_stable():
    records = [_Rec("v1"), _Rec("v1"), _Rec("v2"), _Rec("v9", "7"), _Rec("v9", "7"), _Rec("v3", "8")]
    assert question_ids(records) == ["v1/0", "v1/1", "v2/0", "7", "7#1", "8"]


def test_resume_refuses_other_settings(tmp_path):
    check_resume(tmp_path, {"frames": "8", "model": "m"})
    check_resume(tmp_path, {"frames": "8", "model": "m"})  # same settings: fine
    with pytest.raises(StanchatError, match="frames differ"):
        check_resume(tmp_path, {"frames": "16", "model": "m"})


def test_feature_cache_round_trip_and_key(tmp_path):
    parts = {"model": "abc", "frames": 4}
    folder = cache_folder(tmp_path, "msrvtt", parts)
    assert folder != cache_folder(tmp_path, "msrvtt", {**parts, "frames": 8})  # every part is in the key
    path = folder / "block-00000.safetensors"
    assert load_cached(path) is None
    feats = VideoFeatures(["a.mp4", "b.mp4@1.0-2.0"], torch.randn(2, 1, 4, 3), {"c.mp4": "corrupt"})
    save_cached(path, feats, parts)
    back = load_cached(path)
    assert back.keys == feats.keys and back.failed == feats.failed
    assert torch.equal(back.features, feats.features)
    path.write_bytes(b"not safetensors")  # a damaged cache is re-encoded, not fatal
    assert load_cached(path) is None


def test_clip_keys():
    assert Clip.of(type("R", (), {"video": "x.mp4", "start": None, "end": None, "member": None})()).key == "x.mp4"
    assert Clip("x.mp4", 1.5, 3.0).key == "x.mp4@1.5-3.0"
    assert Clip("00000.tar", member="k.mp4").key == "00000.tar#k.mp4"  # a shard's sample


def test_view_loader_clips_crops_and_reversal(monkeypatch):
    """Frame k of the sampled T*C frames has red = 20 k and green = 10 x, so every view's frames and
    crops can be read back from its pixels (mean 0, std 1/255: no normalisation; 8 px tall frames
    need no resize)."""
    import stanchat.video
    from stanchat.eval.views import ViewLoader
    from stanchat.video import Preprocessor

    frames, clips = 3, 2
    video = np.zeros((frames * clips, 8, 16, 3), np.uint8)
    video[..., 0] = (20 * np.arange(frames * clips))[:, None, None]
    video[..., 1] = (10 * np.arange(16))[None, None, :]
    requested = {}

    def fake_load(path, frames, start=None, end=None):
        requested.update(frames=frames, start=start, end=end)
        return type("SampledFrames", (), {"frames": video})()

    monkeypatch.setattr(stanchat.video, "load_video", fake_load)
    pre = Preprocessor(size=8, crop_size=8, mean=(0.0, 0.0, 0.0), std=(1 / 255,) * 3)
    views = ViewLoader(pre, frames, clips, crops=3)(Clip("v.mp4", 2.0, 5.0)).round()  # (x / 255) / (1 / 255)
    assert requested == {"frames": 6, "start": 2.0, "end": 5.0}
    assert views.shape == (clips * 3, frames, 3, 8, 8)
    red = views[:, :, 0, 0, 0] / 20  # (views, T) frame numbers
    assert red[0].tolist() == [0, 2, 4] and red[3].tolist() == [1, 3, 5]  # clip 0 / clip 1 (first crop)
    left_edge = views[:3, 0, 1, 0, 0] / 10  # the three crops of clip 0: x of their first column
    assert left_edge.tolist() == [0, 4, 8]  # start, centre, end of the long side
    backwards = ViewLoader(pre, frames, clips, crops=1, reverse=True)(Clip("v.mp4")).round()
    assert (backwards[:, :, 0, 0, 0] / 20).tolist() == [[4, 2, 0], [5, 3, 1]]
    assert (backwards[0, 0, 1, 0, 0] / 10).item() == 4  # crops=1 is the Preprocessor's centre crop


def test_direction_cosines_blind_and_sensitive():
    forward = torch.randn(3, 4, 8)
    assert np.allclose(direction_cosines(forward, forward.flip(1)), 1.0, atol=1e-5)  # frame mean ignores order
    other = forward.clone()
    other[0] = -other[0]
    assert direction_cosines(forward, other)[0] == pytest.approx(-1.0, **FLOAT32_APPROX)


def test_caption_flips_by_hand():
    # columns: [caption, reversed caption]; rows: videos
    s_fwd = np.array([[0.9, 0.1], [0.4, 0.6], [0.5, 0.5], [0.7, 0.2]])
    s_rev = np.array([[0.1, 0.9], [0.3, 0.8], [0.2, 0.9], [0.8, 0.1]])
    # video 0 flips (caption -> twin), 1 does not (twin both times), 2 is a forward tie (no flip), 3 keeps
    out = caption_flips(s_fwd, s_rev)
    assert out == {"pairs": 4, "flip_fraction": 0.25, "forward_correct": 0.5, "reversed_correct": 0.75}


def test_config_scoring_modes_match_videoclip():
    from stanchat.eval import config
    from stanchat.eval import metrics
    from stanchat.options import SCORING_MODES

    assert config.SCORING_MODES == SCORING_MODES and metrics.TIE_RULES == config.TIE_RULES


def test_report_jsonable_and_markdown():
    from pathlib import Path

    from stanchat.eval.report import jsonable, markdown_table

    assert json.dumps(jsonable({"p": Path("/x"), "a": np.float32(1.5), "v": np.arange(2), 3: (1,)}))
    assert markdown_table(["a", "b"], [[1, 2.345]]) == "| a | b |\n|---|---|\n| 1 | 2.35 |\n"
