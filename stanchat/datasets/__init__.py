"""Annotation readers for the video datasets stanchat trains and evaluates on.

    from stanchat.datasets import read_dataset, split_present
    records = read_dataset("msrvtt", "/data/msrvtt")              # 1k-A test, default files
    present, missing = split_present(records)                     # skip and count missing videos

Formats (`FORMATS`, see `registry.py` for files and layouts): webvid, msrvtt, didemo, lsmdc
(retrieval); k400, k600, k700, ucf101, hmdb51 (recognition); msvd-qa, msrvtt-qa,
activitynet-qa (video QA); jsonl, csv (generic, any task); webdataset (tar shards: retrieval or
recognition, see `shards.py`). Pure standard library: importing
this package loads no torch, numpy or video decoder.
"""

from stanchat.datasets.base import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, Record, clean_class_name, split_present
from stanchat.datasets.registry import (
    FORMATS,
    TASKS,
    DatasetFormat,
    annotation_path,
    class_names,
    dataset_names,
    get_format,
    read_dataset,
    video_dir,
)

__all__ = [
    "FORMATS",
    "IMAGE_EXTENSIONS",
    "TASKS",
    "VIDEO_EXTENSIONS",
    "DatasetFormat",
    "Record",
    "annotation_path",
    "class_names",
    "clean_class_name",
    "dataset_names",
    "get_format",
    "read_dataset",
    "split_present",
    "video_dir",
]
