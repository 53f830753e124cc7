"""Train Mug-STAN: `python -m training.train --config training/configs/X.yaml [section.key=value ...]`.

One process on CPU or one GPU as it is; several GPUs with `accelerate launch` or `torchrun`
(DDP, or FSDP with `run.strategy=fsdp`). `--resume` continues from the newest checkpoint in
`run.output_dir` exactly where it stopped (weights, optimizer, schedule, data position, RNG).

Everything a user can get wrong (config keys, paths, annotation columns, a data root without
videos) is checked before the first step and reported as one line; the exit code is then 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from stanchat.errors import StanchatError
from training.config import TrainConfig, dump_config, load_config

logger = logging.getLogger("training")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="YAML config (see training/configs); defaults apply without one")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides, e.g. optim.stan_lr=1e-4")
    parser.add_argument("--resume", nargs="?", const="latest", default=None, metavar="CHECKPOINT",
                        help="continue from the newest checkpoint in run.output_dir, or from CHECKPOINT")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (0 done, 2 a user error reported as one line)."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        config = load_config(args.config, args.overrides)
        if args.resume is not None:
            config.run.resume = args.resume
        if args.print_config:
            print(dump_config(config), end="")
            return 0
        train(config)
    except StanchatError as err:
        if args.debug:
            raise
        print(f"training: error: {err}", file=sys.stderr)
        return 2
    return 0


@dataclass
class Session:
    """Everything the loop touches, built by `training.setup.build_session`."""

    config: TrainConfig
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


def train(config: TrainConfig) -> dict:
    """Run the configured training to its end (or `run.stop_at_step`); returns the last metrics."""
    from training.setup import build_session

    session = build_session(config)
    return fit(session)


def fit(session: Session) -> dict:
    """The optimisation loop: steps, logging, validation, checkpoints."""
    from tqdm.auto import tqdm

    config, state, acc = session.config, session.state, session.accelerator
    stop = min(session.total_steps, config.run.stop_at_step or session.total_steps)
    batches = micro_batches(session)
    bar = tqdm(total=session.total_steps, initial=state.step, desc=config.task, dynamic_ncols=True,
               disable=not (config.run.progress and acc.is_main_process))
    window = Window()
    last: dict = {}
    while state.step < stop:
        lr = lrs(session)  # the rates this step uses (the scheduler moves on inside train_step)
        loss, clips, skipped, grad_norm, terms = train_step(session, batches)
        state.step += 1
        state.clips += clips
        state.skipped += skipped
        window.add(loss, clips, skipped, grad_norm, terms)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr['lr_stan']:.2e}", clips_s=f"{window.rate():.1f}")
        final = state.step == stop
        if state.step % config.run.log_every == 0 or final:
            last = session.metrics.write({"step": state.step, "epoch": state.epoch, **window.summary(),
                                          "skipped_total": state.skipped, **lr})
            window = Window()
        if session.loaders.val is not None and config.run.val_every and (state.step % config.run.val_every == 0 or final):
            last = {**last, **validate(session)}
        if state.step % config.run.save_every == 0 or final:
            save(session)
    bar.close()
    acc.wait_for_everyone()
    acc.end_training()
    return last


def micro_batches(session: Session):
    """Training micro-batches forever, across epochs, advancing `state.epoch` / `state.batch`."""
    state, loaders = session.state, session.loaders
    while True:
        loaders.sampler.set_position(state.epoch, state.batch)
        for batch in loaders.train:
            state.batch += 1
            yield batch
        state.epoch, state.batch = state.epoch + 1, 0


def train_step(session: Session, batches) -> tuple[float, int, int, float, dict[str, float]]:
    """One optimizer step over `accumulation_steps` micro-batches -> (mean loss, clips, skipped,
    gradient norm before clipping, the loss's terms: this process's mean over its micro-batches);
    clips and skipped are summed over processes."""
    import torch

    acc, optim = session.accelerator, session.config.optim
    session.forward.train()
    total = torch.zeros(3, device=acc.device)  # loss sum, clips, skipped
    terms: dict[str, list[float]] = {}
    for micro in range(optim.accumulation_steps):
        batch = next(batches)
        if batch["size"] == 0:
            raise StanchatError(f"every clip of a training batch failed to decode ({batch['skipped']} tries); "
                                "check the videos under data.root")
        batch = {k: v.to(acc.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        last = micro == optim.accumulation_steps - 1
        # only the last micro-batch all-reduces gradients across processes
        with acc.no_sync(session.forward) if not last else nullcontext():
            with acc.autocast():
                loss, parts = session.task.loss_terms(session.forward, batch)
            acc.backward(loss / optim.accumulation_steps)
            for name, value in parts.items():
                terms.setdefault(name, []).append(value)
        total += torch.tensor([loss.item(), batch["size"], batch["skipped"]], device=acc.device)
    # clip_grad_norm_ with an infinite bound only measures (and unscales fp16 gradients)
    grad_norm = acc.clip_grad_norm_(session.forward.parameters(), optim.grad_clip or float("inf"))
    session.optimizer.step()
    session.scheduler.step()
    session.optimizer.zero_grad(set_to_none=True)
    loss_sum, clips, skipped = acc.reduce(total, reduction="sum").tolist()
    means = {name: sum(values) / len(values) for name, values in terms.items()}
    return loss_sum / (optim.accumulation_steps * acc.num_processes), int(clips), int(skipped), float(grad_norm), means


def lrs(session: Session) -> dict[str, float]:
    """Current lr of each parameter group kind: `lr_stan` always (STAN always trains), `lr_clip`
    when CLIP trains."""
    out = {}
    for group in session.optimizer.param_groups:
        out.setdefault(f"lr_{group['name'].split('_')[0]}", group["lr"])
    return out


def validate(session: Session) -> dict[str, float]:
    """Run the task's metric on the validation split (every process runs all of it), log it."""
    session.forward.eval()
    metrics = session.task.validate(session.forward, session.loaders.val, session.accelerator.device)
    session.forward.train()
    metrics = {f"val_{k}": round(v, 4) for k, v in metrics.items()}
    logger.info("step %d validation: %s", session.state.step, ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()))
    return session.metrics.write({"step": session.state.step, **metrics})


def save(session: Session) -> Path:
    """Write a checkpoint for the current step (all processes take part) and prune old ones."""
    from training import checkpoint

    acc, run = session.accelerator, session.config.run
    final = checkpoint.checkpoint_dir(run.output_dir, session.state.step)
    tmp = checkpoint.temp_dir(final)
    if acc.is_main_process:
        checkpoint.begin(final)
    acc.wait_for_everyone()
    checkpoint.write_rng(tmp, acc.process_index)
    model_state = {k.removeprefix("model."): v for k, v in acc.get_state_dict(session.forward).items()}
    optimizer_state = optimizer_state_dict(session)
    if acc.is_main_process:
        checkpoint.write_main(tmp, model_state, session.model.config.to_dict(), session.tokenizer,
                              dump_config(session.config), session.state, optimizer_state,
                              session.scheduler.state_dict())
    acc.wait_for_everyone()
    if acc.is_main_process:
        checkpoint.commit(tmp, final)
        checkpoint.prune(run.output_dir, run.keep_last)
        logger.info("saved %s", final)
    acc.wait_for_everyone()
    return final


def optimizer_state_dict(session: Session) -> dict:
    """The full optimizer state (gathered from shards under FSDP)."""
    from accelerate.utils import DistributedType

    if session.accelerator.distributed_type == DistributedType.FSDP:
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        return FSDP.optim_state_dict(session.forward, session.optimizer.optimizer)
    return session.optimizer.state_dict()


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


if __name__ == "__main__":
    sys.exit(main())
