"""The likelihood of an answer given the video and question (`stanchat.engine.likelihood`,
`stanchat.choice`) and `stanchat eval mcq`, on the bundled tiny model and the example clips."""

import dataclasses
import json
import math
from pathlib import Path

import pytest

from stanchat.errors import StanchatError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

LEFT = str(EXAMPLES / "blue-triangle-left.mp4")
SHRINK = str(EXAMPLES / "blue-triangle-shrink.mp4")
DIRECTION = "Which way does the blue triangle move?"
SIZE = "Does the blue triangle grow or shrink?"


@pytest.fixture(scope="module")
def chat():
    from stanchat.chat import load

    return load("tiny", device="cpu")


def _requests(options):
    return [{"video": video, "question": question, "answer": answer}
            for video, question, answers in options for answer in answers]


def test_batched_scores_equal_scores_alone(chat):
    from stanchat.choice import score_answers

    requests = _requests([(LEFT, DIRECTION, ["left", "right", "blue triangle"]), (SHRINK, SIZE, ["grow", "shrink"])])
    together = score_answers(chat, requests, batch_size=len(requests), defaults={"frames": 16})
    alone = [score_answers(chat, [r], batch_size=1, defaults={"frames": 16})[0] for r in requests]
    assert [s.tokens for s in together] == [1, 1, 2, 1, 1]  # rows of different lengths share a batch
    for a, b in zip(together, alone):
        assert math.isclose(a.logprob, b.logprob, rel_tol=1e-4, abs_tol=1e-4) and a.greedy == b.greedy
        assert a.logprob <= 0


def test_the_greedy_answer_is_the_likeliest_and_flagged_greedy(chat):
    from stanchat.choice import choose, score_answers

    for video, question, options in ((LEFT, DIRECTION, ["right", "left"]), (SHRINK, SIZE, ["grow", "shrink"])):
        generated = chat.ask(video, question, frames=16, max_new_tokens=4).text
        assert generated in options
        scores = score_answers(chat, _requests([(video, question, options)]), defaults={"frames": 16})
        assert options[choose(scores)] == generated
        assert [s.greedy for s in scores] == [o == generated for o in options]


def test_under_segments_an_answer_is_scored_on_generations_prompt(chat):
    """Scoring reads the video as generation does under temporal segments: the same prompt (a block
    per window, each after its time span) and blocks; `score_answers` scores that, not one block."""
    from stanchat.choice import score_answers
    from stanchat.engine.likelihood import make_score_job, score
    from stanchat.engine.prompt import make_job
    from stanchat.options import VideoOptions
    from stanchat.session import sampling_of

    options = {"frames": 8, "temporal": "segments", "segments": 2}
    encoded = chat.encode(LEFT, VideoOptions(**options))
    job, _ = make_job(chat.processor, chat.context_length, encoded.features, 8, "segments", [], DIRECTION,
                      sampling_of(), spans=encoded.spans)
    scored_job = make_score_job(chat.processor, chat.context_length, encoded.features, 8, "segments", DIRECTION,
                                "left", spans=encoded.spans)
    assert (scored_job.prompt_ids, scored_job.blocks) == (job.prompt_ids, job.block_sizes) and len(job.block_sizes) == 2
    one_block = make_score_job(chat.processor, chat.context_length, encoded.features, 8, "segments", DIRECTION, "left")
    scores = score_answers(chat, _requests([(LEFT, DIRECTION, ["left"])]), defaults=options)
    assert scores == score(chat.llava, [scored_job]) != score(chat.llava, [one_block])


def test_time_decides_the_choice_only_with_stan(chat):
    """The example clip moves left: STAN's tokens choose "left"; frame-mean tokens choose the same
    for the clip and for a clip of the opposite motion (played backwards), so they cannot tell."""
    from stanchat.choice import choose, score_answers
    from stanchat.video import load_video

    forwards = load_video(LEFT, frames=16)
    backwards = dataclasses.replace(forwards, frames=forwards.frames[::-1].copy())
    options = ["left", "right"]
    picks = {}
    for temporal in ("stan", "mean"):
        for name, clip in (("forwards", forwards), ("backwards", backwards)):
            requests = [{"video": clip, "question": DIRECTION, "answer": o, "temporal": temporal} for o in options]
            picks[temporal, name] = options[choose(score_answers(chat, requests, defaults={"frames": 16}))]
    assert picks["stan", "forwards"] == "left" and picks["stan", "backwards"] == "right"
    assert picks["mean", "forwards"] == picks["mean", "backwards"]


def test_answers_are_checked(chat):
    from stanchat.choice import choose, score_answers

    with pytest.raises(StanchatError, match="empty"):
        score_answers(chat, [{"video": LEFT, "question": DIRECTION, "answer": "  "}])
    with pytest.raises(StanchatError, match="unknown field"):
        score_answers(chat, [{"video": LEFT, "question": DIRECTION, "answer": "left", "stop": "x"}])
    with pytest.raises(StanchatError, match="at least one option"):
        choose([])


def test_a_question_selected_video_is_scored_on_the_frames_the_question_picks(chat):
    """Under select=question the scored frames are the ones the question selects, as an answer's are."""
    from stanchat.choice import score_answers

    options = {"select": "question", "candidates": 32, "frames": 8}
    from stanchat.engine.likelihood import make_score_job, score
    from stanchat.options import VideoOptions

    scored = score_answers(chat, [{"video": LEFT, "question": DIRECTION, "answer": "left", **options}])
    encoded = chat.encode(LEFT, VideoOptions(**options), question=DIRECTION)
    job = make_score_job(chat.processor, chat.context_length, encoded.features, encoded.frames, "stan", DIRECTION, "left")
    assert scored == score(chat.llava, [job])


def test_eval_mcq_command(tmp_path, capsys):
    from stanchat.cli import main

    questions = [{"id": "left", "video": LEFT, "question": DIRECTION, "options": ["left", "right"], "answer": 0,
                  "kind": "direction"},
                 {"id": "shrink", "video": SHRINK, "question": SIZE, "options": ["grow", "shrink"], "answer": "shrink",
                  "kind": "size"}]
    data = tmp_path / "questions.jsonl"
    data.write_text("".join(json.dumps(q) + "\n" for q in questions))
    out = tmp_path / "out"
    assert main(["eval", "mcq", "--data", str(data), "--model", "tiny", "--frames", "16", "--device", "cpu",
                 "--out", str(out)]) == 0
    assert "accuracy 100.00 (2 questions; direction 100.0 size 100.0)" in capsys.readouterr().out
    results = json.loads((out / "mcq.json").read_text())
    assert results["metrics"]["per_kind"]["size"] == {"accuracy": 100.0, "questions": 1}
    rows = [json.loads(line) for line in (out / "mcq_predictions.jsonl").read_text().splitlines()]
    assert [r["choice"] for r in rows] == [0, 1] and all(len(r["logprobs"]) == 2 for r in rows)


def test_eval_mcq_refuses_a_bad_answer(tmp_path):
    from stanchat.eval.mcq import read_questions

    data = tmp_path / "q.jsonl"
    data.write_text(json.dumps({"video": LEFT, "question": DIRECTION, "options": ["left", "right"], "answer": 2}) + "\n")
    with pytest.raises(StanchatError, match="answer must be an option's index"):
        read_questions(data)
