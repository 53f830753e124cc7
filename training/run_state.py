"""The types of one training run: `TrainingRun` (everything the loop touches), `MetricsLog`
(`metrics.jsonl`) and `Window` (running sums between two log lines).

A leaf module: `training.setup` builds a `TrainingRun` and `training.train` runs it, and neither
has to import the other's module to name these types.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

METRICS = "metrics.jsonl"
SAMPLES = "samples-{rank}.jsonl"  # run.log_samples: the clips each process trained on, per step


@dataclass
class TrainingRun:
    """Everything the loop touches, built by `training.setup.build_run`."""

    config: object  # training.config.TrainConfig
    accelerator: object  # accelerate.Accelerator
    model: object  # the VideoCLIP (unwrapped)
    forward: object  # VideoTextForward, wrapped by accelerate (DDP / FSDP)
    tokenizer: object
    task: object  # ContrastiveTask | RecognitionTask
    optimizer: object
    scheduler: object
    loaders: object  # training.data.Loaders
    total_steps: int
    state: object  # training.checkpoint.TrainerState
    metrics: "MetricsLog" = field(default=None)
    samples: "MetricsLog" = field(default=None)  # this process's samples-<rank>.jsonl (run.log_samples)


class Window:
    """Running sums between two log lines; the loss's terms as `loss_<term>`, each averaged over the
    steps that had it."""

    def __init__(self):
        self.start, self.steps, self.loss, self.clips, self.skipped, self.grad_norm = time.perf_counter(), 0, 0.0, 0, 0, 0.0
        self.terms: dict[str, list[float]] = {}

    def add(self, loss: float, clips: int, skipped: int, grad_norm: float, terms: dict[str, float]) -> None:
        self.steps, self.loss, self.grad_norm = self.steps + 1, self.loss + loss, self.grad_norm + grad_norm
        self.clips, self.skipped = self.clips + clips, self.skipped + skipped
        for name, value in terms.items():
            self.terms.setdefault(name, []).append(value)

    def rate(self) -> float:
        return self.clips / max(time.perf_counter() - self.start, 1e-9)

    def summary(self) -> dict:
        steps = max(self.steps, 1)
        terms = {f"loss_{name}": round(sum(values) / len(values), 6) for name, values in self.terms.items()}
        return {"loss": round(self.loss / steps, 6), **terms, "grad_norm": round(self.grad_norm / steps, 6),
                "clips_per_s": round(self.rate(), 2), "skipped": self.skipped}


class MetricsLog:
    """`metrics.jsonl` in the output directory, one JSON object per line (main process only)."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def write(self, record: dict) -> dict:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")
        return record

    def truncate_after(self, step: int) -> int:
        """Drop the lines of steps after `step` (those a killed run logged after its last checkpoint,
        which the resumed run logs again); returns how many were dropped. Lines without a step (events)
        stay. A last line cut short by the kill is dropped too."""
        if not self.enabled or not self.path.is_file():
            return 0
        kept, dropped = [], 0
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                dropped += 1
                continue
            if isinstance(record.get("step"), int) and record["step"] > step:
                dropped += 1
                continue
            kept.append(line)
        if dropped:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text("".join(f"{line}\n" for line in kept))
            tmp.replace(self.path)
        return dropped


def samples_log(config, rank: int, step: int) -> MetricsLog:
    """`samples-<rank>.jsonl` when `run.log_samples` (one line per step: the keys of the clips this
    process trained on); a resumed run first drops the lines after its checkpoint's `step`."""
    log = MetricsLog(Path(config.run.output_dir) / SAMPLES.format(rank=rank), enabled=config.run.log_samples)
    if config.run.resume:
        log.truncate_after(step)
    return log
