"""`--temporal segments`: S windows through STAN, S x N tokens in time order, each after its time
span in the prompt; the context refusal names the largest S; every front end takes the options."""

import argparse
import re

import pytest
import torch

from stanchat.api.errors import ApiError
from stanchat.api.protocol import parse_request
from stanchat.app.config import AppConfig
from stanchat.batch import OPTIONS
from stanchat.chat import load
from stanchat.commands._shared import add_generation_arguments, add_sampling_arguments, video_options
from stanchat.engine.hf import _expand
from stanchat.engine.prompt import make_job
from stanchat.engine.base import Sampling
from stanchat.errors import StanchatError
from stanchat.options import VideoOptions
from stanchat.segments import layout, window_bounds, window_spans
from stanchat.video import load_video
from tests.tiny_llava import tiny_models  # noqa: F401  (fixture)

L = 4  # tokens per image of the tiny LLaVA (4 patches, strategy default)


@pytest.fixture(scope="module")
def chat(tiny_models):
    return load(llava=tiny_models["default"], stan=tiny_models["stan"], device="cpu")


def test_windows_take_floor_and_ceil_shares_in_order():
    assert window_bounds(10, 4) == [(0, 3), (3, 6), (6, 8), (8, 10)]
    assert window_bounds(8, 4) == [(0, 2), (2, 4), (4, 6), (6, 8)]
    assert window_spans([0.0, 1.0, 2.0, 3.0], 2, end=4.0) == [(0.0, 2.0), (2.0, 4.0)]


def test_segments_are_each_windows_stan_tokens_in_time_order(chat, tiny_models):
    clip = load_video(tiny_models["video"], frames=10)
    encoded = chat.encode(clip, VideoOptions(frames=10, temporal="segments", segments=4))
    assert encoded.video_tokens == 4 * L
    pixels = chat.preprocess(clip)  # (1, 10, 3, H, W)
    expected = [chat.graft.features(pixels[:, a:z], "stan") for a, z in window_bounds(10, 4)]
    assert torch.allclose(encoded.features, torch.cat(expected, dim=1), atol=1e-6)
    assert not torch.allclose(expected[0], expected[-1])  # the windows differ: their order is visible
    spans = encoded.spans
    assert len(spans) == 4 and [a for a, _ in spans] == sorted(a for a, _ in spans) and spans[0][0] < spans[0][1]


def test_the_prompt_holds_each_block_after_its_span(chat, tiny_models):
    encoded = chat.encode(tiny_models["video"], VideoOptions(frames=8, temporal="segments", segments=4))
    job, prompt_tokens = make_job(chat.processor, chat.context_length, encoded.features, encoded.frames, "segments",
                                  [], "What happens?", Sampling(max_tokens=4), spans=encoded.spans)
    assert job.blocks == (L,) * 4
    text = chat.processor.tokenizer.decode(job.prompt_ids)
    lines = layout(encoded.spans, chat.processor.image_token).split("\n")
    positions = [text.index(line) for line in lines]
    assert positions == sorted(positions) and len(set(positions)) == 4  # spans in time order, each once
    ids = torch.tensor(job.prompt_ids)
    expanded = _expand(ids, ids == chat.image_token_id, job.blocks)
    assert len(expanded) == prompt_tokens and int((expanded == chat.image_token_id).sum()) == 4 * L
    answer = chat.ask(tiny_models["video"], "What happens?", frames=8, temporal="segments", segments=4,
                      max_new_tokens=3)
    assert answer.video_tokens == 4 * L and answer.spans == [list(s) for s in encoded.spans]


def test_the_context_refusal_names_the_largest_segments_that_fit(tiny_models):
    short = load(llava=tiny_models["short"], stan=tiny_models["stan"], device="cpu")  # a 128-token context
    with pytest.raises(StanchatError, match=r"--segments \d+ or fewer") as caught:
        short.check_prompt(VideoOptions(frames=32, temporal="segments", segments=32), "What happens?")
    assert "\n" not in str(caught.value) and caught.value.param == "segments"
    largest = int(re.search(r"--segments (\d+) or fewer", str(caught.value)).group(1))
    assert largest >= 1
    short.check_prompt(VideoOptions(frames=32, temporal="segments", segments=largest), "What happens?")  # fits
    with pytest.raises(StanchatError):
        short.check_prompt(VideoOptions(frames=32, temporal="segments", segments=largest + 1), "What happens?")


def test_segments_need_a_frame_per_window():
    with pytest.raises(StanchatError, match="--frames 8 or more") as caught:
        VideoOptions(frames=4, temporal="segments", segments=8)
    assert caught.value.param == "segments"


def test_every_front_end_takes_the_options():
    parser = argparse.ArgumentParser()
    add_generation_arguments(parser)
    add_sampling_arguments(parser)
    args = parser.parse_args(["--temporal", "segments", "--segments", "3", "--select", "question", "--candidates", "96"])
    assert video_options(args) == VideoOptions(temporal="segments", segments=3, select="question", candidates=96)
    assert {"segments", "select", "candidates"} <= set(OPTIONS)  # ask --batch fields and defaults
    body = {"messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": "file:///v.mp4"}},
                                                       {"type": "text", "text": "What happens?"}]}],
            "temporal": "segments", "segments": 2, "select": "question", "candidates": 32}
    assert parse_request(body).video == VideoOptions(temporal="segments", segments=2, select="question", candidates=32)
    for field, value in (("select", "best"), ("candidates", 0), ("candidates", 1000), ("segments", 0),
                         ("segments", 99)):
        with pytest.raises(ApiError) as caught:
            parse_request({**body, field: value})
        assert caught.value.param == field
    config = AppConfig(temporal="segments", segments=2, select="question", candidates=32)
    assert config.video_options(8, "segments") == VideoOptions(frames=8, temporal="segments", segments=2,
                                                               select="question", candidates=32)
    with pytest.raises(StanchatError):
        AppConfig(select="sometimes")
