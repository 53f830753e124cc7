"""The chat-completions body checks (`stanchat.api.protocol.parse_request`), without a server."""

import pytest

from stanchat.api.errors import ApiError
from stanchat.api.protocol import MAX_SEED, parse_request

MESSAGES = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": "data:video/mp4;base64,AA=="}},
                                         {"type": "text", "text": "What happens?"}]}]


def _refused(**fields) -> ApiError:
    with pytest.raises(ApiError) as err:
        parse_request({"messages": MESSAGES, **fields})
    assert err.value.status == 400
    return err.value


def test_seed_is_an_int64_at_least_zero():
    assert parse_request({"messages": MESSAGES, "seed": MAX_SEED, "temperature": 1}).sampling.seed == MAX_SEED
    assert parse_request({"messages": MESSAGES, "seed": 0}).sampling.seed == 0
    for seed in (2**70, MAX_SEED + 1, -1):
        assert _refused(seed=seed, temperature=1).param == "seed"


def test_stream_and_include_usage_must_be_real_booleans():
    assert parse_request({"messages": MESSAGES, "stream": True}).stream
    assert not parse_request({"messages": MESSAGES, "stream": False}).stream
    assert not parse_request({"messages": MESSAGES}).stream
    for value in ("no", "false", 1, 0, [], {}):
        assert _refused(stream=value).param == "stream"
    usage = parse_request({"messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}})
    assert usage.include_usage
    assert _refused(stream=True, stream_options={"include_usage": "yes"}).param == "stream_options.include_usage"
    for options in ("include_usage", ["include_usage"], True):
        assert _refused(stream=True, stream_options=options).param == "stream_options"


@pytest.mark.parametrize("name, value", [
    ("tools", [{"type": "function", "function": {"name": "f", "parameters": {}}}]),
    ("tool_choice", "auto"),
    ("functions", [{"name": "f"}]),
    ("response_format", {"type": "json_object"}),
    ("logprobs", True),
    ("top_logprobs", 3),
    ("n", 2),
    ("logit_bias", {"42": 5}),
    ("frequency_penalty", 0.5),
    ("presence_penalty", 1),
    ("modalities", ["text", "audio"]),
    ("reasoning_effort", "high"),
    ("verbosity", "low"),
    ("web_search_options", {}),
])
def test_unsupported_fields_are_refused_by_name(name, value):
    err = _refused(**{name: value})
    assert err.param == name and f"{name}=" in err.message and "not supported" in err.message


def test_the_unused_values_of_unsupported_fields_are_accepted():
    parsed = parse_request({"messages": MESSAGES, "tools": [], "tool_choice": "none",
                            "response_format": {"type": "text"}, "logprobs": False, "top_logprobs": 0, "n": 1,
                            "logit_bias": {}, "frequency_penalty": 0.0, "presence_penalty": 0, "audio": None,
                            "modalities": ["text"], "reasoning_effort": None, "verbosity": "medium"})
    assert parsed.question == "What happens?"
    assert _refused(logprobs=0).param == "logprobs"  # false only as a boolean


def test_fields_that_do_not_change_the_answer_are_ignored():
    """The fields protocol.py's docstring lists as ignored (parallel_tool_calls: tools are refused)."""
    values = {"metadata": {"run": "a"}, "store": True, "user": "u-1", "safety_identifier": "s-1",
              "prompt_cache_key": "k", "service_tier": "auto", "parallel_tool_calls": False}
    assert parse_request({"messages": MESSAGES, **values}) == parse_request({"messages": MESSAGES})
