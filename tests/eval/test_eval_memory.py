"""benchmarks/eval_memory.py: its literal reference agrees with Mug, and one measurement runs."""

import json

import pytest
import torch

from benchmarks.eval_memory import literal_mug, main, make_inputs
from stanchat.mug import mug_similarity
from tests.floats import FLOAT32


@pytest.mark.parametrize("tau", [100.0, 3.0])
def test_literal_equations_match_mug(tau):
    # the literal form builds c_bar, v_bar, v~, c~ explicitly; mug_similarity never does
    text, mask, video = make_inputs(5, 4, n_tokens=6, n_frames=3, width=16, device="cpu")
    expected = literal_mug(text, mask, video, tau=tau)
    torch.testing.assert_close(mug_similarity(text, mask, video, tau=tau), expected, **FLOAT32)
    torch.testing.assert_close(mug_similarity(text, mask, video, tau=tau, chunk_size=3), expected, **FLOAT32)


def test_one_measurement_prints_json(capsys):
    argv = ["--measure", "chunked", "--n", "6", "--chunk", "4", "--tokens", "5", "--frames", "3", "--width", "8"]
    assert main(argv) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["variant"] == "chunked" and row["n"] == 6 and row["chunk"] == 4
    assert row["peak_bytes"] >= 0 and row["wall_s"] >= 0
