"""Build a training run: accelerator, data, model, task, optimizer, schedule, resumed state.

The order matters. Annotations are read and checked first, so a wrong path or column fails in
one line before any weights load. The global RNG is seeded identically on every process before
the model is built (identical initial weights), then per process for training (drop-path); a
resumed run restores each process's saved RNG state last of all.
"""

from __future__ import annotations

import logging
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from stanchat.errors import StanchatError
from training import checkpoint
from training.config import TrainConfig, dump_config
from training.data import build_loaders, read_inputs, tokenize_classes
from training.model import build_model, count_parameters
from training.optim import build_optimizer, build_scheduler
from training.run_state import METRICS, SAMPLES, MetricsLog, TrainingRun, samples_log
from training.stream import STREAM, StreamInputs, StreamState, build_stream_loaders, read_stream_inputs
from training.tasks import ContrastiveTask, RecognitionTask, VideoTextForward

logger = logging.getLogger("training")


def build_run(config: TrainConfig) -> TrainingRun:
    """Everything `training.train.fit` needs, with a resumed state when `run.resume` says so."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # weight loading bars would drown the training bar
    acc = make_accelerator(config)
    if not acc.is_main_process:  # one copy of each log line
        logger.setLevel(logging.WARNING)
    resume_dir = checkpoint.resolve_resume(config.run.resume, config.run.output_dir)
    check_output_dir(config, acc)
    streamed = config.data.dataset == STREAM
    # user errors in the data surface here, before the model loads
    inputs = read_stream_inputs(config) if streamed else read_inputs(config)
    seed_everything(config.run.seed)  # the same initial weights on every process
    with acc.main_process_first():  # one process writes the tiny backbone / fills the hub cache
        model, tokenizer = build_model(config, resume_dir)
    image_size = config.data.image_size or model.image_size
    build = build_stream_loaders if streamed else build_loaders
    loaders = build(config, inputs, tokenizer, image_size, acc.process_index, acc.num_processes)
    task = make_task(config, model, tokenizer, inputs.classes)
    total = total_steps(config, loaders, acc.num_processes)
    optimizer = build_optimizer(model, config.optim)
    scheduler = build_scheduler(optimizer, config.schedule, total)
    if isinstance(task, RecognitionTask):  # before sharding: FSDP would leave the text tower in pieces
        task.embed_classes()
    forward, optimizer = acc.prepare(VideoTextForward(model), optimizer)
    task.to(acc.device)
    state = checkpoint.TrainerState()
    seed_everything(config.run.seed + acc.process_index)  # per-process randomness: drop-path
    if resume_dir is not None:
        state = resume(resume_dir, acc, forward, optimizer, scheduler)
        if loaders.stream_state is not None:
            loaders.stream_state = StreamState.from_dict(checkpoint.read_stream(resume_dir, acc.process_index))
    metrics = start_output(config, acc, resume_dir)
    samples = samples_log(config, acc.process_index, state.step)
    counts = count_parameters(model)
    logger.info("%s: %s, %d steps, %d/%d parameters trainable, %d process(es) on %s",
                config.task, describe_data(inputs, loaders), total, counts["trainable"], counts["total"],
                acc.num_processes, f"{acc.device} ({acc.distributed_type.value})")
    return TrainingRun(config=config, accelerator=acc, model=model, forward=forward, tokenizer=tokenizer, task=task,
                       optimizer=optimizer, scheduler=scheduler, loaders=loaders, total_steps=total, state=state,
                       metrics=metrics, samples=samples)


def describe_data(inputs, loaders) -> str:
    """The training data in a few words for the start-up log line."""
    if isinstance(inputs, StreamInputs):
        count = f"{inputs.samples} samples" if inputs.samples is not None else "samples not counted"
        return f"{len(inputs.shards)} shards ({count})"
    return f"{loaders.train_size} training clips ({loaders.missing} missing)"


def make_accelerator(config: TrainConfig):
    """accelerate's Accelerator for this run: device, processes, mixed precision, DDP or FSDP."""
    from accelerate import Accelerator
    from accelerate.utils import FullyShardedDataParallelPlugin

    run = config.run
    fsdp = None
    if run.strategy == "fsdp":  # shard per transformer layer; use_orig_params keeps our param groups
        fsdp = FullyShardedDataParallelPlugin(
            use_orig_params=True, state_dict_type="FULL_STATE_DICT", auto_wrap_policy="transformer_based_wrap",
            transformer_cls_names_to_wrap=["CLIPEncoderLayer", "TemporalBlock", "SpatialBlock"],
        )
    try:
        acc = Accelerator(cpu=run.cpu, mixed_precision=run.mixed_precision, fsdp_plugin=fsdp)
    except ValueError as err:  # e.g. fp16 on a machine without a GPU
        raise StanchatError(f"run.mixed_precision={run.mixed_precision} is not available here ({err}); "
                            "use bf16 or no on CPU") from err
    if run.strategy == "fsdp" and acc.distributed_type.value != "FSDP":
        logger.warning("run.strategy=fsdp needs several GPU processes; running as %s", acc.distributed_type.value)
    return acc


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_task(config: TrainConfig, model, tokenizer, classes: list[str] | None):
    """The task object for `config.task`."""
    if config.task == "recognition":
        class_text = tokenize_classes(tokenizer, classes, config.data.prompt, config.data.max_tokens)
        return RecognitionTask(model, config.model.scoring, class_text)
    return ContrastiveTask(model, config.model.scoring, config.model.still_weight, config.model.reversed_negatives,
                           config.model.motion_still_weight)


def total_steps(config: TrainConfig, loaders, processes: int) -> int:
    """Optimizer steps of the whole schedule: `schedule.steps`, or epochs x full steps per epoch."""
    if config.schedule.steps:
        return config.schedule.steps
    if loaders.stream is not None:
        if loaders.train_size is None:
            raise StanchatError("schedule.epochs needs the number of training samples, which shards do not tell before "
                                "they are read: set schedule.steps, or keep video2dataset's NNNNN_stats.json beside each shard")
        batches = loaders.train_size // (processes * config.data.batch_size)  # about: each reader drops a partial batch
    else:
        batches = loaders.sampler.batches_per_epoch
    per_epoch = batches // config.optim.accumulation_steps
    if per_epoch == 0:
        raise StanchatError(
            f"{loaders.train_size} training clips make no full step of {config.data.batch_size} clips x "
            f"{config.optim.accumulation_steps} micro-batches x {processes} process(es); lower data.batch_size"
        )
    return config.schedule.epochs * per_epoch


def resume(directory: Path, acc, forward, optimizer, scheduler) -> checkpoint.TrainerState:
    """Load optimizer, scheduler, loop position and this process's RNG from a checkpoint."""
    from accelerate.utils import DistributedType

    saved = checkpoint.read_state(directory)
    if acc.distributed_type == DistributedType.FSDP:  # the saved state is whole; shard it like the model
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        saved["optimizer"] = FSDP.optim_state_dict_to_load(forward, optimizer.optimizer, saved["optimizer"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    if not checkpoint.restore_rng(directory, acc.process_index):
        logger.warning("%s has no RNG state for process %d; its randomness starts afresh", directory, acc.process_index)
    logger.info("resumed from %s at step %d", directory, saved["trainer"].step)
    return saved["trainer"]


def start_output(config: TrainConfig, acc, resume_dir: Path | None) -> MetricsLog:
    """Create the output directory, write the resolved config, open metrics.jsonl."""
    out = Path(config.run.output_dir)
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(dump_config(config))
    metrics = MetricsLog(out / METRICS, enabled=acc.is_main_process)
    if config.run.resume:  # lines logged after the checkpoint are logged again by this run: keep one copy
        step = checkpoint.read_state(resume_dir)["trainer"].step if resume_dir is not None else 0
        if metrics.truncate_after(step):
            logger.info("metrics.jsonl: dropped the lines logged after step %d, which this run logs again", step)
    if resume_dir is not None:
        metrics.write({"event": "resume", "from": str(resume_dir)})
    return metrics


def check_output_dir(config: TrainConfig, acc) -> None:
    """Refuse to start afresh where a run already logged or saved, unless `run.overwrite` (which then
    deletes that run's metrics and checkpoints). Every process checks before any of them deletes."""
    out = Path(config.run.output_dir)
    if config.run.resume:
        return
    previous = [p for p in (out / METRICS, out / checkpoint.CHECKPOINTS, *sorted(out.glob(SAMPLES.format(rank="*"))))
                if p.exists()]
    if not previous:
        return
    if not config.run.overwrite:
        raise StanchatError(f"run.output_dir {out} already holds a run ({previous[0].name}); continue it with --resume, "
                            "or pick a new run.output_dir, or start over with run.overwrite=true")
    acc.wait_for_everyone()
    if acc.is_main_process:
        logger.info("run.overwrite: deleting %s", ", ".join(str(p) for p in previous))
        for path in previous:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    acc.wait_for_everyone()
