"""The tests' float comparisons follow tests/floats.py: no absolute-only tolerance on float math.

An AST walk over every test file finds each comparison with a tolerance (pytest.approx,
torch.testing.assert_close, torch and numpy allclose/isclose, numpy's assert_allclose, math.isclose,
or any call given such keywords), however its arguments are spread over lines, and flags those whose
bound is absolute only: a non-zero absolute tolerance with a relative one of 0, or `pytest.approx`
given `abs` without `rel` (it then ignores the relative part altogether). A named tolerance from
tests/floats.py (`**FLOAT32`, `**MILLISECOND`) says there why it is what it is.
"""

import ast
from pathlib import Path

import tests.floats

RELATIVE_TO_ABSOLUTE = {"rtol": "atol", "rel": "abs", "rel_tol": "abs_tol"}  # every spelling of the pair
WITHOUT_RELATIVE_DEFAULT = {"approx"}  # pytest.approx(x, abs=a): no relative part at all
# where positional tolerances start: approx(expected, rel, abs); allclose(a, b, rtol, atol), ...
POSITIONAL = {"approx": (1, ("rel", "abs")), "allclose": (2, ("rtol", "atol")), "isclose": (2, ("rtol", "atol")),
              "assert_allclose": (2, ("rtol", "atol"))}


def _name(func: ast.expr) -> str | None:
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None


def _literal(node: ast.expr | None):
    try:
        return ast.literal_eval(node)
    except ValueError:  # a name or an expression: no literal value
        return None


def _is_zero(node: ast.expr) -> bool:
    return _literal(node) == 0


def _tolerances(call: ast.Call) -> dict[str, ast.expr] | None:
    """The call's tolerance arguments by keyword; None when it takes a named tolerance from tests/floats.py."""
    given = {k.arg: k.value for k in call.keywords if k.arg is not None}
    for unpacked in (k.value for k in call.keywords if k.arg is None):
        if isinstance(unpacked, ast.Name) and hasattr(tests.floats, unpacked.id):
            return None
        if isinstance(unpacked, ast.Dict):  # **{"abs": 1e-6}: read it like keywords
            given.update({_literal(k): v for k, v in zip(unpacked.keys, unpacked.values) if k is not None})
    if _name(call.func) in POSITIONAL:
        first, names = POSITIONAL[_name(call.func)]
        given.update(zip(names, call.args[first:]))
    return given


def absolute_only(call: ast.Call) -> bool:
    """True when the call bounds a difference by a non-zero absolute tolerance alone."""
    given = _tolerances(call)
    if not given:
        return False
    for relative, absolute in RELATIVE_TO_ABSOLUTE.items():
        if absolute in given and not _is_zero(given[absolute]):
            if relative in given:
                return _is_zero(given[relative])
            return _name(call.func) in WITHOUT_RELATIVE_DEFAULT
    return False


def offenders(path: Path) -> list[str]:
    calls = [node for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Call)]
    return [f"{path.name}:{call.lineno}: {ast.unparse(call)}" for call in calls if absolute_only(call)]


def test_no_float_comparison_is_absolute_only():
    found = [hit for path in sorted(Path(__file__).parent.rglob("*.py")) for hit in offenders(path)]
    assert found == [], ("use tests.floats.FLOAT32 / FLOAT32_APPROX (or a named bound there that says why; "
                         f"atol=0, rtol=0 where exactness is the point): {found}")


def _check(source: str) -> bool:
    return absolute_only(ast.parse(source).body[0].value)


def test_the_check_tells_absolute_only_from_exact_and_relative():
    assert _check("assert_close(a, b, atol=1e-6, rtol=0)")
    assert _check("assert_close(a, b,\n             rtol=0,\n             atol=1e-5)")  # spread over lines
    assert _check("pytest.approx(1.0, abs=1e-6)")  # approx with abs alone has no relative part
    assert _check("pytest.approx(1.0, 0, 1e-6)") and _check("np.allclose(a, b, 0, 1e-5)")  # positional
    assert _check("pytest.approx(x, **{'abs': 1e-6})") and _check("math.isclose(a, b, rel_tol=0, abs_tol=1e-9)")
    assert not _check("assert_close(a, b, rtol=0, atol=0)")
    assert not _check("assert_close(a, b, atol=1e-5, rtol=1e-4)")
    assert not _check("torch.allclose(a, b, atol=1e-4)")  # torch.allclose keeps its default rtol=1e-5
    assert not _check("pytest.approx(1.0, rel=1e-5, abs=1e-5)") and not _check("pytest.approx(1.0)")
    assert not _check("pytest.approx(1.0, **FLOAT32_APPROX)") and not _check("assert_close(a, b, **FLOAT32)")
