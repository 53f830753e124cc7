"""`--select question`: the question picks the frames the graft sees.

The clip's events are known: four 16-frame events, each one solid colour. The text tower of the
tiny test models is random, so a stand-in scorer (`ColourRelevance`: a frame's weight is how close
its colour is to the colour the question names) takes `FrameRelevance`'s place; Mug's weights
themselves are tests/test_relevance.py's. What is tested here is everything around them: the
candidates, the rule, the frames handed to the graft, the cache, the session, the records.
"""

import json

import av
import numpy as np
import pytest
import torch

from stanchat.chat import load
from stanchat.cli import main
from stanchat.errors import StanchatError
from stanchat.options import VideoOptions
from stanchat.selection import choose, inverse, top, window, windows
from stanchat.video import Preprocessor
from tests.tiny_llava import tiny_models  # noqa: F401  (fixture)

COLOURS = {"red": (230, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 230), "white": (240, 240, 240)}
EVENT = 16  # frames per event


def write_events(path, fps: int = 8, size: int = 32):
    """A video of one 16-frame event per colour of COLOURS, in that order."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for colour in COLOURS.values():
            for _ in range(EVENT):
                image = np.zeros((size, size, 3), np.uint8)
                image[4:28, 4:28] = colour
                for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


class ColourRelevance:
    """Scores a frame by how close its mean colour is to the colour word in the question."""

    def __init__(self):
        self.preprocessor = Preprocessor(size=16, crop_size=16)
        self.scored = 0  # candidate frames scored (each video once per candidate set)

    def candidate_features(self, clip, scorer="tower"):
        self.scored += len(clip.timestamps)
        return torch.tensor(clip.frames.reshape(len(clip.frames), -1, 3).mean(axis=1), dtype=torch.float32)  # (C, 3)

    def weights(self, question, features):
        named = next(torch.tensor(rgb, dtype=torch.float32) for word, rgb in COLOURS.items() if word in question)
        return torch.softmax(-(features - named).norm(dim=1) / 10, dim=0)  # (C,)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_events(tmp_path_factory.mktemp("events") / "events.mp4")


@pytest.fixture()
def chat(tiny_models):
    chat = load(llava=tiny_models["default"], stan=tiny_models["stan"], device="cpu")
    chat.relevance = ColourRelevance()
    return chat


def event_of(index: int) -> str:
    return list(COLOURS)[index // EVENT]


@pytest.mark.parametrize("colour", list(COLOURS))
def test_selection_hands_the_graft_the_asked_events_frames(chat, video, colour):
    options = VideoOptions(frames=8, select="question", candidates=64)
    encoded = chat.encode(video, options, question=f"What does the {colour} square do?")
    assert [event_of(i) for i in encoded.clip.indices] == [colour] * 8
    assert encoded.frames == 8 and len(encoded.weights) == 8 and encoded.video_tokens == chat.token_count(options)
    assert encoded.clip.timestamps == sorted(encoded.clip.timestamps)
    uniform = chat.encode(video, VideoOptions(frames=8))  # the same count spread over every event
    assert {event_of(i) for i in uniform.clip.indices} == set(COLOURS)


def test_the_rules_on_known_weights():
    weights = [0.0] * 4 + [0.1, 0.3, 0.3, 0.1] + [0.0] * 4 + [0.2] + [0.0] * 3
    assert window(weights, 4) == [4, 5, 6, 7]
    assert top(weights, 3) == [5, 6, 12]
    assert windows(weights, 4) == [5, 6, 12, 13] or windows(weights, 4)[:2] == [5, 6]
    assert inverse(weights, 4) == sorted(inverse(weights, 4)) and set(inverse(weights, 4)) <= {4, 5, 6, 7, 12}
    with pytest.raises(StanchatError, match="window"):
        choose(weights, 4, "best")


def test_a_session_selects_again_for_each_question(chat, video):
    session = chat.session(video, frames=8, select="question", candidates=64)
    answers = [session.ask(f"Is the {colour} square big?", max_new_tokens=2) for colour in ("red", "blue", "red")]
    events = [{event_of(round(t * 8)) for t in answer.timestamps} for answer in answers]
    assert events == [{"red"}, {"blue"}, {"red"}]
    assert chat.relevance.scored == 64  # the candidates were decoded and scored once
    assert answers[2].timings["vision"] == 0.0 and answers[2].timestamps == answers[0].timestamps  # red again: cached
    assert answers[1].timings["vision"] > 0  # blue: another selection, encoded
    assert all(len(a.weights) == 8 and a.frames == 8 for a in answers) and len(session.history) == 3


def test_candidates_are_capped_by_the_videos_frames(chat, tmp_path):
    short = write_events(tmp_path / "short.mp4")  # 64 frames
    candidates, _, _ = chat.candidates(short, VideoOptions(frames=8, select="question", candidates=200))
    assert len(candidates.clip.indices) == 64 == len(set(candidates.clip.indices))
    assert candidates.clip.frames.shape[1:3] == (16, 16)  # decoded at the model's input size (shorter side)


def test_a_model_without_a_text_tower_refuses_select_question(chat, video, tiny_models, capsys):
    chat.relevance = None
    with pytest.raises(StanchatError, match="needs the text tower") as caught:
        chat.ask(video, "What is red?", select="question")
    assert "\n" not in str(caught.value) and caught.value.param == "select"
    argv = ["ask", video, "What is red?", "--llava", tiny_models["default"], "--stan", tiny_models["stan"],
            "--select", "question"]
    assert main(argv) == 2
    assert "--select uniform" in capsys.readouterr().err


def test_bad_values_are_one_line_naming_the_option():
    for options, param in ((dict(select="best"), "select"), (dict(select="question", candidates=4), "candidates"),
                           (dict(select="question", candidates=999), "candidates"),
                           (dict(select="question", strategy="random"), "strategy")):
        with pytest.raises(StanchatError) as caught:
            VideoOptions(**options)
        assert caught.value.param == param and "\n" not in str(caught.value)


def test_batch_records_say_which_frames_and_weights(chat, video, tmp_path):
    requests = [{"id": c, "video": video, "question": f"Is the {c} square big?", "select": "question",
                 "candidates": 64, "frames": 8, "max_new_tokens": 2} for c in ("green", "white")]
    records = list(chat.ask_many(requests))
    for record, colour in zip(records, ("green", "white")):
        assert "error" not in record, record
        assert {event_of(round(t * 8)) for t in record["timestamps"]} == {colour}
        assert len(record["weights"]) == 8 and record["video_tokens"] == 4
    json.dumps(records)
