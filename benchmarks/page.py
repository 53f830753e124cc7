"""docs/PERFORMANCE.md from the results of one suite run: a table per area (measured value, target,
met or missed, the command that re-measures the row), the targets in one summary, the machine."""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.results import Figure, Result


@dataclass
class Run:
    """One benchmark's result and how the suite ran it."""

    result: Result  # what it measured (status skipped or failed: why not)
    command: str  # the command that re-measures it, e.g. "python benchmarks/decode.py"
    seconds: float  # wall time of the whole benchmark
    load: tuple[float | None, float | None]  # 1-minute load average before and after it


def _cell(text: str) -> str:
    """Markdown table cell text: pipes escaped, one line."""
    return text.replace("|", "\\|").replace("\n", " ")


def _verdict(figure: Figure) -> str:
    return "" if figure.met is None else ("met" if figure.met else "**missed**")


def load_text(value: float | None) -> str:
    """A load average for the page ("?" where the OS gave none)."""
    return "?" if value is None else f"{value:.2f}"


def area(run: Run) -> list[str]:
    """The section of one benchmark: heading, how it ran, its table, its notes."""
    result = run.result
    lines = [f"## {result.title}", ""]
    if result.status != "ok":  # its notes name the targets it would have judged
        judged = f" Targets not judged: {'; '.join(result.notes)}." if result.notes else ""
        return lines + [f"Not measured ({result.status}): {result.reason}.{judged} Command: `{run.command}`", ""]
    lines += [f"{result.setup}. Took {run.seconds:.0f} s; load average {load_text(run.load[0])} before, "
              f"{load_text(run.load[1])} after.", ""]
    devices = any(figure.device for figure in result.figures)
    header = ["figure", "measured", "details", "target", "", *(["device"] if devices else []), "re-measure"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for figure in result.figures:
        target = "" if figure.target is None else figure.target.text(figure.unit)
        cells = [figure.label, f"**{figure.text()}**", figure.detail, target, _verdict(figure),
                 *([figure.device] if devices else []), f"`{run.command}`"]
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    lines.append("")
    lines += [note for text in result.notes for note in (text, "")]
    return lines


def targets(runs: list[Run]) -> list[str]:
    """Every figure that has a target, in one table, with the count of those met."""
    rows = [(run.result, figure) for run in runs for figure in run.result.figures if figure.target is not None]
    met = sum(1 for _, figure in rows if figure.met)
    lines = [f"## Targets: {met} of {len(rows)} met", "",
             "| area | figure | measured | target | |", "|---|---|---|---|---|"]
    for result, figure in rows:
        cells = [result.title, figure.label, figure.text(), figure.target.text(figure.unit), _verdict(figure)]
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    for result in (run.result for run in runs if run.result.status != "ok"):  # notes: the targets it judges
        for target in result.notes or ["(its figures)"]:
            lines.append(f"| {_cell(result.title)} | {_cell(target)} | not measured: {_cell(result.reason)} | | |")
    return lines + [""]


def machine_section(machine: dict[str, str]) -> list[str]:
    lines = ["## Machine", "", "| | |", "|---|---|"]
    lines += [f"| {name} | {_cell(value)} |" for name, value in machine.items()]
    return lines + [""]


def render(runs: list[Run], machine: dict[str, str], command: str, quick: bool) -> str:
    """The whole page."""
    intro = [
        "# Performance", "",
        f"Written by `{command}` on {machine['date']} at commit {machine['commit']}: every figure below comes from "
        "that one run on the machine described at the end. A ratio compares two figures measured in the same "
        "run, the variants taking turns where they are timed, so load from other work slows both alike; "
        "absolute times are this machine's. Each row names the command that re-measures it "
        "(`make bench` re-measures everything).", ""]
    if quick:
        intro += ["**Quick run** (`--quick`): sizes smaller than the issue's, so the figures are smoke-test "
                  "numbers and the targets are not judged at their proper sizes.", ""]
    gpu = [run.result for run in runs if run.result.name == "gpu"]
    if gpu and gpu[0].status != "ok":
        intro += [f"GPU figures: none, {gpu[0].reason}.", ""]
    lines = intro + targets(runs)
    for run in runs:
        lines += area(run)
    lines += machine_section(machine)
    return "\n".join(lines).rstrip() + "\n"
