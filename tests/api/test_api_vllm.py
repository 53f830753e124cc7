"""`stanchat api --engine vllm` (vLLM's CPU build, in .venv-vllm made by scripts/test), asked with
the official `openai` client: one server for the whole module. Its greedy answers must equal the
library's (and so the transformers engine's)."""

import pytest

from tests import api_checks as checks
from tests.api_helpers import KEY, LEFT, QUESTION, serve_subprocess, side_python

STARTUP = 600  # seconds vLLM may take to start on two shared CPU cores (about one minute when idle)

pytestmark = pytest.mark.slow


def _python() -> str:
    return side_python(".venv-vllm", "vLLM")


@pytest.fixture(scope="module")
def expected():
    from stanchat.chat import load

    return load("tiny", device="cpu").ask(LEFT, QUESTION, max_new_tokens=checks.MAX_TOKENS)


@pytest.fixture(scope="module")
def allowed(tmp_path_factory):
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module")
def server(allowed, tmp_path_factory):
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    args = ["--engine", "vllm", "--model", "tiny", "--device", "cpu", "--api-key", KEY,
            "--allowed-local-media-path", str(allowed), "--max-pending", "2"]
    with serve_subprocess(_python(), args, STARTUP, log) as (base, _):
        yield base


def test_models_and_health(server):
    checks.check_models_and_health(server)


def test_answer_equals_the_library_and_counts_video_tokens(server, expected):
    checks.check_answer_and_usage(server, expected.text, expected.video_tokens)


def test_stream(server, expected):
    checks.check_stream(server, expected.text)


def test_multi_turn_follow_up_hits_the_video_cache(server, expected):
    checks.check_multi_turn_hits_the_cache(server, expected.text)


def test_corrupt_video_is_400_with_a_message(server, tmp_path):
    checks.check_corrupt_video(server, tmp_path)


def test_wrong_or_missing_key_is_401(server):
    checks.check_keys(server)


def test_local_paths_only_inside_the_allowed_folder(server, allowed, tmp_path, expected):
    checks.check_local_paths(server, allowed, tmp_path, expected.text)


def test_slow_bodies_hold_no_place(server):
    checks.check_slow_bodies_hold_no_place(server, places=2)  # the server was started with --max-pending 2


def test_the_one_path_cases_give_the_librarys_answers(server):
    """The vLLM engine answers `tests.one_path.CASES` as `VideoChat.ask` does (frames, temporal mode,
    answer length and temperature honoured), as every in-process front end must (tests/test_one_path.py)."""
    from stanchat.chat import load
    from tests.one_path import CASES, api_answers

    chat = load("tiny", device="cpu")
    reference = [chat.ask(case.video, case.question, **case.options) for case in CASES]
    assert api_answers(server) == [(a.text, a.frames, a.video_tokens) for a in reference]
