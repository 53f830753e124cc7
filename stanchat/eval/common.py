"""What the dataset-driven evaluations share: reading the annotation (setting missing videos aside,
counted and named), matching records to encoded videos, and the dataset part of the results."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from stanchat.eval.config import EvalConfig
from stanchat.eval.features import Clip, VideoFeatures

logger = logging.getLogger(__name__)

MAX_LISTED = 1000  # skipped videos listed by name in a results file (all are counted)


@dataclass
class Annotation:
    records: list  # stanchat.datasets.Record whose video exists
    missing: list  # records whose video file does not exist
    clips: list[Clip]  # the distinct videos of `records`, in first-seen order
    clip_of: list[int]  # records[i] shows clips[clip_of[i]]
    ann_file: Path  # the annotation file that was read


def read_annotation(cfg: EvalConfig, task: str) -> Annotation:
    """Read `cfg`'s annotation for `task`; missing videos are set aside (warned, counted, listed)."""
    from stanchat.datasets import annotation_path, read_dataset, split_present

    records = read_dataset(cfg.dataset, cfg.data_root, cfg.ann, cfg.split, task=task)
    present, missing = split_present(records)
    if missing:
        names = sorted({str(r.video) for r in missing})
        logger.warning("%d of %d videos named by the annotation are missing; skipping them (first: %s)",
                       len(names), len({str(r.video) for r in records}), names[0])
    clips, clip_of, index = [], [], {}
    for record in present:
        clip = Clip.of(record)
        if clip not in index:
            index[clip] = len(clips)
            clips.append(clip)
        clip_of.append(index[clip])
    return Annotation(present, missing, clips, clip_of, annotation_path(cfg.dataset, cfg.data_root, cfg.ann, cfg.split))


def keep_encoded(annotation: Annotation, feats: VideoFeatures) -> tuple[list, list[int]]:
    """Records whose video was encoded, each with its row in `feats` (undecodable ones dropped)."""
    row = {key: i for i, key in enumerate(feats.keys)}
    kept = [(r, row[annotation.clips[c].key]) for r, c in zip(annotation.records, annotation.clip_of)
            if annotation.clips[c].key in row]
    return [r for r, _ in kept], [i for _, i in kept]


def dataset_summary(cfg: EvalConfig, annotation: Annotation, feats: VideoFeatures, evaluated: dict) -> dict:
    """Counts and the names of skipped videos for the results file."""
    missing = sorted({str(r.video) for r in annotation.missing})
    return {
        "name": cfg.dataset,
        "data_root": str(Path(cfg.data_root).expanduser().resolve()),
        "annotation": str(annotation.ann_file),
        "split": cfg.split,
        "counts": {
            "annotation_entries": len(annotation.records) + len(annotation.missing),
            "videos_named": len(annotation.clips) + len(missing),
            "videos_missing": len(missing),
            "videos_undecodable": len(feats.failed),
            "videos_encoded": len(feats.keys),
            **evaluated,
        },
        "skipped": {"missing": missing[:MAX_LISTED], "undecodable": dict(list(feats.failed.items())[:MAX_LISTED])},
        "feature_cache": feats.cache,
    }
