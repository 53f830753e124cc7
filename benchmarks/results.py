"""What a benchmark measured, as data: the figures, their targets and whether they were met.

Every benchmark's `measure(args)` returns a `Result`; its `main` prints it (and with `--json PATH`
writes it), and `python -m benchmarks` collects the results of all of them into docs/PERFORMANCE.md.
A ratio is a `Figure` with unit "x" whose `detail` holds the two measured values behind it.
"""

from __future__ import annotations

import json
import operator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# comparison name -> test; the targets read "at most", "at least" and "under"
COMPARISONS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}
STATUSES = ("ok", "skipped", "failed")


def format_value(value: float, unit: str) -> str:
    """A measured figure for people: whole numbers as they are, others to three significant digits
    (whole from 100 up), then the unit ("x" joined: 1.18x)."""
    if float(value).is_integer():
        number = f"{int(value):,}"
    else:
        number = f"{value:,.0f}" if abs(value) >= 100 else f"{value:#.3g}"
    return _with_unit(number, unit)


def _with_unit(number: str, unit: str) -> str:
    return f"{number}x" if unit == "x" else f"{number} {unit}".rstrip()


@dataclass(frozen=True)
class Target:
    """A bound a figure should meet, e.g. Target("<=", 1.25): the value is at most 1.25."""

    comparison: str  # one of COMPARISONS: value <comparison> bound means met
    bound: float  # in the unit of the figure it belongs to

    def __post_init__(self):
        if self.comparison not in COMPARISONS:
            raise ValueError(f"unknown comparison {self.comparison!r}; choose one of {', '.join(COMPARISONS)}")

    def met(self, value: float) -> bool:
        return COMPARISONS[self.comparison](value, self.bound)

    def text(self, unit: str) -> str:
        return f"{self.comparison} {_with_unit(f'{self.bound:g}', unit)}"


@dataclass
class Figure:
    """One measured number: a row of the results page."""

    label: str  # what was measured, e.g. "CLIP+STAN / CLIP time, T = 8"
    value: float  # the measured number, in `unit`
    unit: str  # "x" for a ratio; otherwise "s", "MiB", "clips/s", "tokens/s", "frames", ...
    target: Target | None = None  # the target for this figure, if it has one
    detail: str = ""  # what the number is made of, e.g. "7.9 s vs 6.6 s (medians of 3)"
    device: str = ""  # the machine an absolute GPU figure was measured on (empty: the page's machine)

    @property
    def met(self) -> bool | None:
        """Whether the target is met; None without a target."""
        return None if self.target is None else self.target.met(self.value)

    def text(self) -> str:
        return format_value(self.value, self.unit)


@dataclass
class Result:
    """Everything one benchmark run measured."""

    name: str  # the benchmark's module in benchmarks/, e.g. "stan_overhead"
    title: str  # its heading on the results page, e.g. "STAN overhead"
    setup: str = ""  # one line: sizes, device, repeats
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # sentences for the page: bounds, extrapolations, caveats
    data: dict[str, Any] = field(default_factory=dict)  # the raw measurements (JSON-able), for the printed report
    status: str = "ok"  # one of STATUSES
    reason: str = ""  # why it was skipped or failed (one line)

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}; choose one of {', '.join(STATUSES)}")

    def figure(self, label: str) -> Figure:
        """The figure called `label` (KeyError listing the labels otherwise)."""
        for figure in self.figures:
            if figure.label == label:
                return figure
        raise KeyError(f"{self.name} has no figure {label!r}; it has {[f.label for f in self.figures]}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Result":
        figures = [Figure(**{**f, "target": Target(**f["target"]) if f["target"] else None}) for f in data["figures"]]
        return cls(**{**data, "figures": figures})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "Result":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def print_figures(self) -> None:
        """The figures with their targets, one per line (every benchmark's printed summary)."""
        for figure in self.figures:
            target = "" if figure.target is None else (
                f"  target {figure.target.text(figure.unit)}: {'met' if figure.met else 'MISSED'}")
            detail = f" ({figure.detail})" if figure.detail else ""
            print(f"  {figure.label}: {figure.text()}{detail}{target}")
