"""Train Mug-STAN: `python -m training.train --config training/configs/X.yaml [section.key=value ...]`.

One process on CPU or one GPU as it is; several GPUs with `accelerate launch` or `torchrun`
(DDP, or FSDP with `run.strategy=fsdp`). `--resume` continues from the newest checkpoint in
`run.output_dir` exactly where it stopped (weights, optimizer, schedule, data position, RNG).

Everything a user can get wrong (config keys, paths, annotation columns, a data root without
videos) is checked before the first step and reported as one line; the exit code is then 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from contextlib import nullcontext
from pathlib import Path

from stanchat.errors import StanchatError
from training import checkpoint
from training.config import TrainConfig, dump_config, load_config
from training.run_state import TrainingRun, Window
from training.setup import build_run

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


def train(config: TrainConfig) -> dict:
    """Run the configured training to its end (or `run.stop_at_step`); returns the last metrics."""
    return fit(build_run(config))


def fit(job: TrainingRun) -> dict:
    """The optimisation loop: steps, logging, validation, checkpoints."""
    from tqdm.auto import tqdm

    config, state, acc = job.config, job.state, job.accelerator
    stop = min(job.total_steps, config.run.stop_at_step or job.total_steps)
    batches = micro_batches(job)
    bar = tqdm(total=job.total_steps, initial=state.step, desc=config.task, dynamic_ncols=True,
               disable=not (config.run.progress and acc.is_main_process))
    window = Window()
    last: dict = {}
    while state.step < stop:
        lr = lrs(job)  # the rates this step uses (the scheduler moves on inside train_step)
        loss, clips, skipped, grad_norm, terms = train_step(job, batches)
        state.step += 1
        state.clips += clips
        state.skipped += skipped
        window.add(loss, clips, skipped, grad_norm, terms)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr['lr_stan']:.2e}", clips_s=f"{window.rate():.1f}")
        final = state.step == stop
        if state.step % config.run.log_every == 0 or final:
            last = job.metrics.write({"step": state.step, "epoch": state.epoch, **window.summary(),
                                          "skipped_total": state.skipped, **lr})
            window = Window()
        if job.loaders.val is not None and config.run.val_every and (state.step % config.run.val_every == 0 or final):
            last = {**last, **validate(job)}
        if state.step % config.run.save_every == 0 or final:
            save(job)
    bar.close()
    acc.wait_for_everyone()
    acc.end_training()
    return last


def micro_batches(job: TrainingRun):
    """Training micro-batches forever, across epochs, advancing `state.epoch` / `state.batch`."""
    state, loaders = job.state, job.loaders
    if loaders.stream is not None:
        yield from stream_batches(job)
        return
    while True:
        loaders.sampler.set_position(state.epoch, state.batch)
        for batch in loaders.train:
            state.batch += 1
            yield batch
        state.epoch, state.batch = state.epoch + 1, 0


def stream_batches(job: TrainingRun):
    """Micro-batches from shards forever (`training.stream`): each epoch starts every reader where
    the stream state says, each consumed batch moves its reader's position on, and an epoch ends for
    every process as soon as one of them has no batch left."""
    state, loaders, acc = job.state, job.loaders, job.accelerator
    while True:
        loaders.stream.start(state.epoch, loaders.stream_state)
        batches, taken = iter(loaders.train), 0
        while everyone_has(acc, (batch := next(batches, None)) is not None):
            loaders.stream_state.consumed(*batch["stream"])
            state.batch, taken = state.batch + 1, taken + 1
            yield batch
        del batches  # stops this epoch's workers
        if taken == 0 and state.batch == 0:
            raise StanchatError(f"the shards gave no full batch of {job.config.data.batch_size} clips per process in an "
                                "epoch; lower data.batch_size or add shards")
        state.epoch, state.batch = state.epoch + 1, 0
        loaders.stream_state.new_epoch()


def everyone_has(acc, has: bool) -> bool:
    """True when every process has a batch (one tiny all-reduce with several processes)."""
    if acc.num_processes == 1:
        return has
    import torch
    import torch.distributed as dist

    flag = torch.tensor([int(has)], device=acc.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def train_step(job: TrainingRun, batches) -> tuple[float, int, int, float, dict[str, float]]:
    """One optimizer step over `accumulation_steps` micro-batches -> (mean loss, clips, skipped,
    gradient norm before clipping, the loss's terms: this process's mean over its micro-batches);
    clips and skipped are summed over processes."""
    import torch

    acc, optim = job.accelerator, job.config.optim
    job.forward.train()
    total = torch.zeros(3, device=acc.device)  # loss sum, clips, skipped
    terms: dict[str, list[float]] = {}
    keys: list[str] = []
    for micro in range(optim.accumulation_steps):
        batch = next(batches)
        keys += batch.get("videos", [])
        if batch["size"] == 0:
            raise StanchatError(f"every clip of a training batch failed to decode ({batch['skipped']} tries); "
                                "check the videos under data.root")
        batch = {k: v.to(acc.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        last = micro == optim.accumulation_steps - 1
        # only the last micro-batch all-reduces gradients across processes
        with acc.no_sync(job.forward) if not last else nullcontext():
            with acc.autocast():
                loss, parts = job.task.loss_terms(job.forward, batch)
            acc.backward(loss / optim.accumulation_steps)
            for name, value in parts.items():
                terms.setdefault(name, []).append(value)
        total += torch.tensor([loss.item(), batch["size"], batch["skipped"]], device=acc.device)
    # clip_grad_norm_ with an infinite bound only measures (and unscales fp16 gradients)
    grad_norm = acc.clip_grad_norm_(job.forward.parameters(), optim.grad_clip or float("inf"))
    job.optimizer.step()
    job.scheduler.step()
    job.optimizer.zero_grad(set_to_none=True)
    loss_sum, clips, skipped = acc.reduce(total, reduction="sum").tolist()
    job.samples.write({"step": job.state.step + 1, "keys": keys})
    means = {name: sum(values) / len(values) for name, values in terms.items()}
    return loss_sum / (optim.accumulation_steps * acc.num_processes), int(clips), int(skipped), float(grad_norm), means


def lrs(job: TrainingRun) -> dict[str, float]:
    """Current lr of each parameter group kind: `lr_stan` always (STAN always trains), `lr_clip`
    when CLIP trains."""
    out = {}
    for group in job.optimizer.param_groups:
        out.setdefault(f"lr_{group['name'].split('_')[0]}", group["lr"])
    return out


def validate(job: TrainingRun) -> dict[str, float]:
    """Run the task's metric on the validation split (every process runs all of it), log it."""
    job.forward.eval()
    metrics = job.task.validate(job.forward, job.loaders.val, job.accelerator.device)
    job.forward.train()
    metrics = {f"val_{k}": round(v, 4) for k, v in metrics.items()}
    logger.info("step %d validation: %s", job.state.step, ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()))
    return job.metrics.write({"step": job.state.step, **metrics})


def save(job: TrainingRun) -> Path:
    """Write a checkpoint for the current step (all processes take part) and prune old ones."""
    acc, run = job.accelerator, job.config.run
    final = checkpoint.checkpoint_dir(run.output_dir, job.state.step)
    tmp = checkpoint.temp_dir(final)
    if acc.is_main_process:
        checkpoint.begin(final)
    acc.wait_for_everyone()
    checkpoint.write_rng(tmp, acc.process_index)
    if job.loaders.stream_state is not None:
        checkpoint.write_stream(tmp, acc.process_index, job.loaders.stream_state.to_dict())
    model_state = {k.removeprefix("model."): v for k, v in acc.get_state_dict(job.forward).items()}
    optimizer_state = optimizer_state_dict(job)
    if acc.is_main_process:
        checkpoint.write_main(tmp, model_state, job.model.config.to_dict(), job.tokenizer,
                              dump_config(job.config), job.state, optimizer_state,
                              job.scheduler.state_dict())
    acc.wait_for_everyone()
    if acc.is_main_process:
        checkpoint.commit(tmp, final)
        checkpoint.prune(run.output_dir, run.keep_last)
        logger.info("saved %s", final)
    acc.wait_for_everyone()
    return final


def optimizer_state_dict(job: TrainingRun) -> dict:
    """The full optimizer state (gathered from shards under FSDP)."""
    from accelerate.utils import DistributedType

    if job.accelerator.distributed_type == DistributedType.FSDP:
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        return FSDP.optim_state_dict(job.forward, job.optimizer.optimizer)
    return job.optimizer.state_dict()


if __name__ == "__main__":
    sys.exit(main())
