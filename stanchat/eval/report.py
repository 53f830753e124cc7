"""What every evaluation run leaves behind: `<task>.json`, `<task>.md` and `<task>.png` in `--out`.

The plot is the only part that needs matplotlib (the `eval` extra). Without it the JSON and the
Markdown are still written and the plot is skipped with one warning, so nothing computed is lost.

The JSON holds the metrics and everything needed to reproduce them (model, frames, tokens, prompts,
dataset counts, skipped videos) plus where they came from: the git commit of the stanchat checkout
("unknown" outside one), the date (UTC) and the library versions.
"""

from __future__ import annotations

import json
import logging
import platform
import subprocess
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Callable

from stanchat.outputs import make_out_dir

logger = logging.getLogger(__name__)


def git_commit() -> str:
    """The commit of the checkout stanchat runs from (with "+dirty" if it has local changes), or "unknown"."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}+dirty" if dirty else commit


def provenance() -> dict:
    """Commit, UTC date and versions of stanchat, Python and the libraries a number depends on."""
    from importlib.metadata import PackageNotFoundError, version

    from stanchat import __version__

    versions = {"stanchat": __version__, "python": platform.python_version()}
    for package in ("torch", "transformers", "accelerate", "numpy"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "commit": git_commit(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": versions,
    }


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A GitHub Markdown table; floats are written with two decimals."""
    def cell(value) -> str:
        return f"{value:.2f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_report(out_dir: str | Path, task: str, results: dict, markdown: str,
                 plot: Callable[["matplotlib.figure.Figure"], None]) -> dict[str, Path]:
    """Write `<task>.json` (results + provenance), `<task>.md` and `<task>.png` under `out_dir`.

    `plot(figure)` draws on a fresh matplotlib Figure (no pyplot, no global state); without
    matplotlib the plot is skipped (see the module docstring). Returns the paths written, by kind
    ("json", "md" and, with a plot, "png"). The provenance is added to `results` under "provenance".
    """
    out = make_out_dir(out_dir)
    results = jsonable({**results, "provenance": provenance()})
    paths = {"json": out / f"{task}.json", "md": out / f"{task}.md"}
    paths["json"].write_text(json.dumps(results, indent=2) + "\n")
    source = results["provenance"]
    footer = f"\nstanchat {source['versions']['stanchat']}, commit {source['commit']}, {source['date']}\n"
    paths["md"].write_text(markdown + footer)
    png = out / f"{task}.png"
    if can_plot():
        _save_plot(plot, png)
        paths["png"] = png
    else:
        png.unlink(missing_ok=True)  # a plot from an earlier run would not show these results
    logger.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return paths


@cache
def can_plot() -> bool:
    """Whether matplotlib is installed; warns once per process when it is not."""
    try:
        import matplotlib.figure  # noqa: F401
    except ImportError:
        logger.warning("matplotlib is not installed, so evaluation plots are skipped (results and tables are "
                       "written); pip install 'stanchat[eval]' for the plots")
        return False
    return True


def jsonable(value):
    """`value` with paths as strings and numpy scalars/arrays as Python numbers/lists."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy scalars and arrays, torch tensors
        return value.tolist()
    return value


def _save_plot(plot: Callable, path: Path) -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.2), dpi=100, layout="constrained")
    plot(figure)
    figure.savefig(path)
