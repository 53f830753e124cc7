"""The engines behind `stanchat api`: batched greedy answers equal one-at-a-time answers."""

import pytest

from stanchat.api.engines.base import Job, Sampling, TextTracker
from tests.api_helpers import LEFT, QUESTION, SHRINK

QUESTIONS = [QUESTION, "Which way does it move?", "What colour is the shape?", "What shape is it?"]


@pytest.fixture(scope="module")
def chat():
    from stanchat.chat import load

    return load("tiny", device="cpu")


@pytest.fixture(scope="module")
def engine(chat):
    from stanchat.api.engines.hf import TransformersEngine

    engine = TransformersEngine(chat, max_batch=8, batch_wait_ms=5)
    yield engine
    engine.close()


def _jobs(chat, sampling=Sampling(max_tokens=24)):
    from stanchat.api.prompt import prompt_ids

    jobs = []
    for video in (LEFT, SHRINK):
        decoded = chat.decode(video, 16)
        features, _ = chat.features(decoded.pixel_values, "stan")
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
    from stanchat.api.engines.hf import batch_key

    greedy = Job([1], None, Sampling())
    hot = Job([1], None, Sampling(temperature=0.7))
    seeded, seeded2 = Job([1], None, Sampling(temperature=0.7, seed=1)), Job([1], None, Sampling(temperature=0.7, seed=1))
    assert batch_key(greedy) == batch_key(Job([2], None, Sampling(max_tokens=3)))
    assert batch_key(greedy) != batch_key(hot)
    assert batch_key(seeded) != batch_key(seeded2)  # a seeded job runs alone


def test_one_data_url_spooled_by_many_threads_at_once(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from stanchat.api.media import MediaResolver
    from tests.api_helpers import data_url

    resolver, url = MediaResolver(tmp_path), data_url(LEFT)
    with ThreadPoolExecutor(16) as pool:
        media = list(pool.map(lambda _: resolver.resolve(url, "video", "messages"), range(64)))
    assert len({m.sha256 for m in media}) == 1 and sorted(p.name for p in tmp_path.iterdir()) == [
        media[0].sha256 + ".mp4"]
