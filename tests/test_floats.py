"""The tests' float comparisons follow tests/floats.py: no absolute-only tolerance on float32 math."""

import re
from pathlib import Path

# `rtol=0` with a non-zero `atol`: a fixed absolute bound that breaks as soon as values grow past ~1
ABSOLUTE_ONLY = re.compile(r"rtol=0(?![.\d])[^)\n]*atol=(?!0(?![.\d]))|atol=(?!0(?![.\d]))[^)\n]*rtol=0(?![.\d])")


def test_no_float_comparison_is_absolute_only():
    offenders = [f"{path.name}:{number}" for path in sorted(Path(__file__).parent.rglob("*.py"))
                 for number, line in enumerate(path.read_text().splitlines(), 1)
                 if ABSOLUTE_ONLY.search(line) and path.name != "test_floats.py"]
    assert offenders == [], f"use tests.floats.FLOAT32 (or atol=0, rtol=0 where exactness is the point): {offenders}"


def test_the_pattern_tells_absolute_only_from_exact_and_relative():
    assert ABSOLUTE_ONLY.search("assert_close(a, b, atol=1e-6, rtol=0)")
    assert ABSOLUTE_ONLY.search("assert_close(a, b, rtol=0, atol=1e-5)")
    assert not ABSOLUTE_ONLY.search("assert_close(a, b, rtol=0, atol=0)")
    assert not ABSOLUTE_ONLY.search("assert_close(a, b, atol=1e-5, rtol=1e-4)")
    assert not ABSOLUTE_ONLY.search("assert_close(a, b, rtol=0.01, atol=1e-5)")
