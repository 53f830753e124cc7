"""The registry of dataset formats: a name -> reader, default annotation files and video folders.

Every entry mirrors the layout the dataset is usually downloaded or prepared in, so
`read_dataset("msrvtt", "/data/msrvtt")` works without `ann=`; `training/synthworld` writes the
same layouts from the same table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from stanchat.datasets import generic, qa, recognition, retrieval, shards
from stanchat.datasets.base import Record, first_dir
from stanchat.errors import StanchatError

TASKS = ("retrieval", "recognition", "qa")


@dataclass(frozen=True)
class DatasetFormat:
    """How one dataset lays out its annotations and videos under a data root."""

    name: str  # registry name, e.g. "msrvtt"
    task: str  # "retrieval", "recognition", "qa", or "any" (generic formats: decided per entry)
    read: Callable[[Path, Path, str], list[Record]]  # (annotation, video folder, split) -> records
    splits: dict[str, str]  # split -> default annotation path, relative to the data root
    default_split: str  # split used when none is given: the usual evaluation split
    video_dirs: tuple[str, ...]  # video folder under the data root: first existing wins; "{split}" filled in
    description: str  # one line for `--help` and error messages
    classes: Callable[[Path, str], list[str]] | None = None  # (annotation, split) -> class list; None: sorted labels
    any_of: tuple[str, ...] = TASKS  # task "any": the tasks its entries can hold

    def serves(self, task: str) -> bool:
        """Whether this format can hold `task` data."""
        return self.task == task or (self.task == "any" and task in self.any_of)


def _splits(pattern: str, names: tuple[str, ...] = ("train", "val", "test")) -> dict[str, str]:
    return {split: pattern.format(split=split) for split in names}


def _folds(pattern: str) -> dict[str, str]:
    """UCF-101 / HMDB-51 splits: "test"/"train" are fold 1, "test2", "train3" ... the others."""
    return {f"{kind}{n if n > 1 else ''}": pattern.format(kind=kind, n=n) for kind in ("test", "train") for n in (1, 2, 3)}


def _kinetics(name: str, classes: int) -> DatasetFormat:
    return DatasetFormat(
        name, "recognition", recognition.read_kinetics, _splits("annotations/{split}.csv"), "val",
        video_dirs=("{split}", "videos_{split}", "videos"),
        description=f"Kinetics-{classes} annotations/{{split}}.csv; {{split}}/{{youtube_id}}_{{start:06d}}_{{end:06d}}.mp4",
    )


FORMATS: dict[str, DatasetFormat] = {f.name: f for f in (
    DatasetFormat(
        "webvid", "retrieval", retrieval.read_webvid, {"train": "results_2M_train.csv", "val": "results_2M_val.csv"}, "val",
        video_dirs=("videos",), description="WebVid csv (videoid,...,page_dir,name); videos/{page_dir}/{videoid}.mp4"),
    DatasetFormat(
        "msrvtt", "retrieval", retrieval.read_msrvtt, {"train": "train_9k.json", "test": "MSRVTT_JSFUSION_test.csv"},
        "test", video_dirs=("videos", "MSRVTT_Videos"),
        description="MSR-VTT train_9k.json, 1k-A MSRVTT_JSFUSION_test.csv; videos/{video_id}.mp4"),
    DatasetFormat(
        "didemo", "retrieval", retrieval.read_didemo, _splits("{split}_data.json"), "test",
        video_dirs=("videos", "video"), description="DiDeMo paragraphs: {split}_data.json, descriptions joined per video"),
    DatasetFormat(
        "lsmdc", "retrieval", retrieval.read_lsmdc,
        {"train": "LSMDC16_annos_training.csv", "val": "LSMDC16_annos_val.csv",
         "test": "LSMDC16_challenge_1000_publictect.csv"}, "test",
        video_dirs=("avi", "videos"), description="LSMDC 2016 tab-separated csv; avi/{movie}/{clip_id}.avi"),
    _kinetics("k400", 400),
    _kinetics("k600", 600),
    _kinetics("k700", 700),
    DatasetFormat(
        "ucf101", "recognition", recognition.read_ucf101, _folds("ucfTrainTestlist/{kind}list0{n}.txt"), "test",
        video_dirs=("UCF-101", "videos"), classes=recognition.ucf101_classes,
        description="UCF-101 ucfTrainTestlist/{test,train}list0N.txt + classInd.txt; UCF-101/{Class}/*.avi"),
    DatasetFormat(
        "hmdb51", "recognition", recognition.read_hmdb51, _folds("testTrainMulti_7030_splits"), "test",
        video_dirs=("videos", "hmdb51_org"), classes=recognition.hmdb51_classes,
        description="HMDB-51 testTrainMulti_7030_splits/{class}_test_splitN.txt; videos/{class}/*.avi"),
    DatasetFormat(
        "msvd-qa", "qa", qa.read_msvd_qa, _splits("{split}_qa.json"), "test", video_dirs=("YouTubeClips", "videos"),
        description="MSVD-QA {split}_qa.json + youtube_mapping.txt; YouTubeClips/{name}.avi"),
    DatasetFormat(
        "msrvtt-qa", "qa", qa.read_msrvtt_qa, _splits("{split}_qa.json"), "test", video_dirs=("videos", "MSRVTT_Videos"),
        description="MSRVTT-QA {split}_qa.json; videos/video{video_id}.mp4"),
    DatasetFormat(
        "activitynet-qa", "qa", qa.read_activitynet_qa, _splits("{split}_q.json"), "test", video_dirs=("videos",),
        description="ActivityNet-QA {split}_q.json + {split}_a.json; videos/v_{video_name}.mp4"),
    DatasetFormat(
        "jsonl", "any", generic.read_jsonl, _splits("{split}.jsonl"), "test", video_dirs=(".",),
        description="generic JSONL: video + caption | label | question+answer, paths relative to the data root"),
    DatasetFormat(
        "webdataset", "any", shards.read_shard_records, _splits("{split}"), "test", video_dirs=(".",),
        description="WebDataset tar shards (video2dataset's layout): {split}/*.tar holding KEY.mp4 + KEY.txt "
                    "(caption) or KEY.json with a label; --ann a folder of shards or a .txt list of them",
        any_of=("retrieval", "recognition")),
    DatasetFormat(
        "csv", "any", generic.read_generic_csv, _splits("{split}.csv"), "test", video_dirs=(".",),
        description="generic CSV with a header: video + caption | label | question+answer"),
)}


def dataset_names(task: str | None = None) -> list[str]:
    """Registered names, optionally only those that can serve `task` (generic formats serve all)."""
    if task is not None and task not in TASKS:
        raise StanchatError(f"unknown task {task!r}; valid: {', '.join(TASKS)}")
    return [name for name, f in FORMATS.items() if task is None or f.serves(task)]


def get_format(name: str) -> DatasetFormat:
    """The registered format called `name`; an unknown name raises listing the valid ones."""
    if name not in FORMATS:
        raise StanchatError(f"unknown dataset {name!r}; valid: {', '.join(FORMATS)}")
    return FORMATS[name]


def resolve_split(fmt: DatasetFormat, split: str | None) -> str:
    """`split`, or the format's default; an unknown split raises listing the valid ones."""
    split = fmt.default_split if split is None else split
    if split not in fmt.splits:
        raise StanchatError(f"dataset {fmt.name} has no split {split!r}; valid: {', '.join(fmt.splits)}")
    return split


def annotation_path(name: str, data_root: str | Path, ann: str | Path | None = None, split: str | None = None) -> Path:
    """The annotation file a read would use: `ann` as given (a relative path that does not exist
    from the working directory is looked up under the data root), else the split's default name."""
    fmt, root = get_format(name), Path(data_root).expanduser()
    if ann is None:
        return root / fmt.splits[resolve_split(fmt, split)]
    ann = Path(ann).expanduser()
    return root / ann if not ann.is_absolute() and not ann.exists() and (root / ann).exists() else ann


def video_dir(name: str, data_root: str | Path, split: str | None = None) -> Path:
    """The folder the format keeps its videos in under `data_root` (the first that exists)."""
    fmt = get_format(name)
    split = resolve_split(fmt, split)
    return first_dir(Path(data_root).expanduser(), tuple(d.format(split=split) for d in fmt.video_dirs))


def read_dataset(
    name: str, data_root: str | Path, ann: str | Path | None = None, split: str | None = None, task: str | None = None
) -> list[Record]:
    """Read the annotation of dataset `name` under `data_root` into records.

    `ann` overrides the split's default annotation file; `split` defaults to the format's
    evaluation split. With `task`, every record must be of that task. Raises one-line
    `StanchatError`s for an unknown name or split, a missing data root or annotation file, wrong
    columns, or an annotation with no entries. Videos are not opened: use `split_present`.
    """
    fmt, root = get_format(name), Path(data_root).expanduser()
    split = resolve_split(fmt, split)
    if task is not None and not fmt.serves(task):
        raise StanchatError(f"dataset {name} is for {fmt.task}, not {task}; valid: {', '.join(dataset_names(task))}")
    if not root.is_dir():
        raise StanchatError(f"data root {root} is not a folder; check --data-root")
    path = annotation_path(name, root, ann, split)
    if not path.exists():
        default = "" if ann is None else f" (the default is {fmt.splits[split]} under the data root)"
        raise StanchatError(f"{name} annotation {path} not found{default}; check --data-root or pass --ann FILE")
    records = fmt.read(path, video_dir(name, root, split), split)
    if not records:
        raise StanchatError(f"{path} has no {split} entries; check --ann and --split")
    wrong = [r for r in records if task is not None and r.task != task]
    if wrong:
        raise StanchatError(f"{path}: {len(wrong)} of {len(records)} entries are {wrong[0].task}, not {task}")
    return records


def class_names(name: str, data_root: str | Path, ann: str | Path | None = None, split: str | None = None) -> list[str]:
    """The ordered class list of a recognition dataset, as cleaned names (`clean_class_name`);
    every record's `label` is in it.

    UCF-101: `classInd.txt` order. HMDB-51: alphabetical over its split files. Kinetics and the
    generic formats: alphabetical over the labels the annotation holds (Kinetics' own order when
    the annotation covers every class).
    """
    fmt = get_format(name)
    records = read_dataset(name, data_root, ann, split, task="recognition")
    if fmt.classes is None:
        return sorted({r.label for r in records})
    return fmt.classes(annotation_path(name, data_root, ann, split), resolve_split(fmt, split))
