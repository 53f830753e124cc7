"""The engine every front end answers through: batched greedy answers equal one-at-a-time answers."""

import pytest
import torch

from stanchat.engine.base import Job, Sampling
from stanchat.engine.text import TextTracker
from stanchat.errors import StanchatError
from stanchat.options import VideoOptions
from tests.api_helpers import LEFT, QUESTION, SHRINK

QUESTIONS = [QUESTION, "Which way does it move?", "What colour is the shape?", "What shape is it?"]


@pytest.fixture(scope="module")
def chat():
    from stanchat.chat import load

    return load("tiny", device="cpu")


@pytest.fixture(scope="module")
def engine(chat):
    from stanchat.engine.hf import TransformersEngine

    engine = TransformersEngine(chat.llava, chat.processor, max_batch=8, batch_wait_ms=5)
    yield engine
    engine.close()


def _jobs(chat, sampling=Sampling(max_tokens=24)):
    from stanchat.engine.prompt import prompt_ids

    jobs = []
    for video in (LEFT, SHRINK):
        features = chat.encode(video).features
        for question in QUESTIONS:
            history = [] if question == QUESTION else [(QUESTION, "a blue shape")]  # prompts of different lengths
            jobs.append(Job(prompt_ids(chat.processor, history, question), features, sampling))
    return jobs


def test_batched_greedy_answers_equal_one_at_a_time(chat, engine):
    jobs = _jobs(chat)
    alone = [engine.generate(job) for job in jobs]
    before = engine.batches
    together = engine.generate_many(_jobs(chat))
    assert engine.batches - before == 1  # all eight in one padded generate
    assert [r.text for r in together] == [r.text for r in alone]
    assert [r.completion_tokens for r in together] == [r.completion_tokens for r in alone]
    assert len({r.text for r in alone}) > 1  # the prompts really differ


def test_batched_answers_equal_the_library(chat, engine):
    results = engine.generate_many(_jobs(chat)[::4])  # QUESTION about each video
    for video, result in zip((LEFT, SHRINK), results):
        assert result.text == chat.ask(video, QUESTION, max_new_tokens=24).text
    assert [r.text for r in results] == ["a blue triangle moves left", "a blue triangle shrinks"]


def test_each_row_stops_on_its_own(chat, engine):
    jobs = _jobs(chat)[::4]  # "a blue triangle moves left", "a blue triangle shrinks"
    jobs[0].sampling = Sampling(max_tokens=2)
    jobs[1].sampling = Sampling(max_tokens=24, stop=("triangle",))
    short, stopped = engine.generate_many(jobs)
    assert (short.finish_reason, short.completion_tokens) == ("length", 2)
    assert (stopped.finish_reason, stopped.text) == ("stop", "a blue")


def test_streamed_pieces_join_to_the_answer(chat, engine):
    pieces = []
    job = _jobs(chat)[0]
    job.on_text = pieces.append
    result = engine.generate(job)
    assert len(pieces) > 1 and "".join(pieces) == result.text


def test_text_tracker_holds_back_a_possible_stop_string():
    sent = []
    tracker = TextTracker(lambda ids: "".join(chr(i) for i in ids), ("END",), sent.append)
    for ch in " ab E":
        assert not tracker.add(ord(ch))
    assert "".join(sent) == "ab"  # " E" might start "END"
    assert not tracker.add(ord("x"))
    assert tracker.finish() == "ab Ex" and "".join(sent) == "ab Ex"
    stopping = TextTracker(lambda ids: "".join(chr(i) for i in ids), ("END",), None)
    assert [stopping.add(ord(c)) for c in "hiEND"] == [False, False, False, False, True]
    assert stopping.finish() == "hi"


def test_sampling_batches_apart_from_greedy():
    from stanchat.engine.hf import batch_key

    greedy = Job([1], None, Sampling())
    hot = Job([1], None, Sampling(temperature=0.7))
    seeded, seeded2 = Job([1], None, Sampling(temperature=0.7, seed=1)), Job([1], None, Sampling(temperature=0.7, seed=1))
    assert batch_key(greedy) == batch_key(Job([2], None, Sampling(max_tokens=3)))
    assert batch_key(greedy) != batch_key(hot)
    assert batch_key(seeded) != batch_key(seeded2)  # a seeded job runs alone


def test_one_data_url_spooled_by_many_requests_at_once_is_a_file_per_request(tmp_path):
    """Each request's upload is its own file (one request's encoder deleting its file cannot take
    another's), recorded in its request's uploads and gone when they are removed; the hash is shared."""
    from concurrent.futures import ThreadPoolExecutor

    from stanchat.api.media import MediaResolver
    from stanchat.api.uploads import Uploads, within
    from tests.api_helpers import data_url

    resolver, url = MediaResolver(tmp_path), data_url(LEFT)
    requests = [Uploads() for _ in range(64)]
    with ThreadPoolExecutor(16) as pool:
        media = list(pool.map(lambda uploads: within(uploads, resolver.resolve, url, "video", "messages"), requests))
    assert len({m.sha256 for m in media}) == 1 and len({m.path for m in media}) == 64
    assert all(open(m.path, "rb").read() == LEFT.read_bytes() for m in media)
    for uploads in requests:
        uploads.remove()
    assert [p.name for p in tmp_path.iterdir()] == [".owner"]


class _FakeVllm:
    """Stands in for vLLM's AsyncLLM: what the engine would be started with."""

    def __init__(self, args):
        self.args = args

    def shutdown(self):
        pass


def _engine_without_vllm(monkeypatch, tmp_path, chat, argv):
    """`stanchat api ARGV`'s vLLM engine around `chat`, with vLLM itself replaced by `_FakeVllm`."""
    from stanchat.cli import build_parser
    from stanchat.commands.api import api_config
    from stanchat.engine import create_engine, vllm

    async def start(self, args):
        return _FakeVllm(args)

    monkeypatch.setenv("STANCHAT_HOME", str(tmp_path))  # the vLLM-ready copy of the weights goes here
    monkeypatch.setattr(vllm, "check_available", lambda: None)
    monkeypatch.setattr(vllm.VllmEngine, "_start", start)
    config = api_config(build_parser().parse_args(["api", "--engine", "vllm", *argv]))
    return create_engine("vllm", chat.llava, chat.processor, **config.engine_settings())


def test_with_vllm_only_the_tower_stan_and_projector_stay_resident(monkeypatch, tmp_path):
    from stanchat.chat import load

    chat = load("tiny", device="cpu")
    pixel_values = chat.preprocess(chat.encode(LEFT).clip)
    before = chat.graft.features(pixel_values, "stan")
    llava = chat.llava
    stays = [*llava.model.vision_tower.parameters(), *llava.model.multi_modal_projector.parameters()]
    kept = sum(p.numel() for p in stays)
    engine = _engine_without_vllm(monkeypatch, tmp_path, chat, [])
    try:
        resident = [p for p in llava.parameters() if p.device.type != "meta"]
        assert sum(p.numel() for p in resident) == kept  # the LLM's layers, embeddings and head are freed
        freed = [*llava.model.language_model.parameters(), *llava.lm_head.parameters()]
        assert all(p.device.type == "meta" for p in freed)
        assert torch.equal(chat.graft.features(pixel_values, "stan"), before)  # what stanchat still runs
        assert engine.engine.args["dtype"] == "float32" and engine.engine.args["kv_cache_memory_bytes"] == 1 << 30
        with pytest.raises(StanchatError, match="--engine vllm"):
            chat.ask(LEFT, QUESTION)  # the freed LLM says so instead of failing on a meta tensor
    finally:
        engine.close()


def test_vllm_memory_options_reach_the_engine(monkeypatch, tmp_path, chat, capsys):
    from stanchat.chat import load
    from stanchat.cli import main

    engine = _engine_without_vllm(monkeypatch, tmp_path, load("tiny", device="cpu"),  # its own: the LLM is freed
                                  ["--kv-cache-gib", "2.5", "--gpu-memory-utilization", "0.6"])
    try:
        assert engine.engine.args["kv_cache_memory_bytes"] == int(2.5 * (1 << 30))
        assert engine.engine.args["gpu_memory_utilization"] == 0.6
    finally:
        engine.close()
    for bad in (["--gpu-memory-utilization", "1.5"], ["--kv-cache-gib", "0"]):
        assert main(["api", "--engine", "vllm", *bad]) == 2
        assert bad[0] in capsys.readouterr().err


def test_the_vllm_engine_frees_this_process_copy_of_the_llm_and_keeps_the_tower():
    """`--engine vllm` frees the language model and lm_head here (vLLM holds its own); the tower,
    STAN and projector still encode; running the freed LLM, or its embeddings alone, is one line."""
    from stanchat.engine.vllm import release_language_model
    from stanchat.chat import load

    chat = load("tiny", device="cpu")  # its own: this one is left without its LLM
    pixel_values = chat.preprocess(chat.encode(LEFT, VideoOptions(frames=4)).clip)
    features_before = chat.graft.features(pixel_values, "stan")
    release_language_model(chat.llava)
    language = [*chat.llava.get_submodule("model.language_model").parameters(), *chat.llava.lm_head.parameters()]
    assert language and all(p.device.type == "meta" for p in language)
    assert all(p.device.type == "cpu" for p in chat.llava.get_submodule("model.vision_tower").parameters())
    assert torch.equal(chat.graft.features(pixel_values, "stan"), features_before)
    with pytest.raises(StanchatError, match="freed for --engine vllm"):
        chat.ask(LEFT, QUESTION, frames=4)
    with pytest.raises(StanchatError, match="freed for --engine vllm"):
        chat.llava.get_input_embeddings()(torch.tensor([[1, 2]]))
