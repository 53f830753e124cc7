"""Readers for action recognition datasets: Kinetics, UCF-101, HMDB-51.

Record labels are class names cleaned by `clean_class_name` ("ApplyEyeMakeup" -> "apply eye
makeup", "brush_hair" -> "brush hair"), the form zero-shot prompts use. `*_classes` functions
return the ordered class list the dataset's label indices refer to.
"""

from __future__ import annotations

import re
from pathlib import Path

from stanchat.datasets.base import Record, clean_class_name, read_csv, read_lines, resolve_video
from stanchat.errors import StanchatError

KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end")  # `split` (and `is_cc`) unused
_HMDB_SPLIT_FILE = re.compile(r"^(?P<cls>.+)_test_split(?P<fold>\d)\.txt$")
HMDB_SPLIT_IDS = {"train": "1", "test": "2"}  # third value, 0, marks videos in neither split


def read_kinetics(ann: Path, videos: Path, split: str) -> list[Record]:
    """Kinetics-400/600/700 `annotations/{train,val,test}.csv` (columns
    label,youtube_id,time_start,time_end,split). Clips are already trimmed and named
    `{youtube_id}_{time_start:06d}_{time_end:06d}.mp4` in `{split}/`, flat (the CVDF release) or
    in one folder per label (the ActivityNet downloader); any `VIDEO_EXTENSIONS` container works.
    """
    records = []
    for number, row in enumerate(read_csv(ann, KINETICS_COLUMNS)[1], start=2):
        try:
            start, end = int(float(row["time_start"])), int(float(row["time_end"]))
        except ValueError:
            raise StanchatError(f"{ann} line {number}: time_start/time_end must be numbers of seconds") from None
        clip = f"{row['youtube_id']}_{start:06d}_{end:06d}"
        label = row["label"]
        video = resolve_video(videos, f"{clip}.mp4", f"{label}/{clip}.mp4", f"{label.replace(' ', '_')}/{clip}.mp4")
        records.append(Record(video=video, video_id=clip, label=clean_class_name(label)))
    return records


def read_ucf101(ann: Path, videos: Path, split: str) -> list[Record]:
    """UCF-101 `ucfTrainTestlist/{test,train}list0{1,2,3}.txt`: lines `Class/v_Class_gXX_cYY.avi`
    (train lists add a 1-based class index); classes from `classInd.txt` in the same folder.
    Videos at `UCF-101/{Class}/v_Class_gXX_cYY.avi`."""
    known = set(ucf101_raw_classes(ann))
    records = []
    for number, line in enumerate(read_lines(ann), start=1):
        rel = line.split()[0]
        raw = rel.split("/")[0]
        if "/" not in rel or raw not in known:
            raise StanchatError(
                f"{ann} line {number}: expected 'Class/v_Class_gXX_cYY.avi' with a class from classInd.txt, found {line!r}"
            )
        records.append(Record(video=resolve_video(videos, rel), video_id=Path(rel).stem, label=clean_class_name(raw)))
    return records


def ucf101_classes(ann: Path, split: str) -> list[str]:
    """UCF-101 classes in `classInd.txt` order, cleaned ("ApplyEyeMakeup" -> "apply eye makeup")."""
    return [clean_class_name(raw) for raw in ucf101_raw_classes(ann)]


def ucf101_raw_classes(ann: Path) -> list[str]:
    """Raw UCF-101 class names in `classInd.txt` order (`1 ApplyEyeMakeup` ... `101 YoYo`)."""
    path = ann.parent / "classInd.txt"
    if not path.is_file():
        raise StanchatError(f"{path} not found: UCF-101 split lists need classInd.txt next to them")
    pairs = [line.split() for line in read_lines(path)]
    if not all(len(p) == 2 and p[0].isdigit() for p in pairs):
        raise StanchatError(f"{path}: expected lines '<index> <ClassName>'")
    return [name for _, name in sorted(pairs, key=lambda p: int(p[0]))]


def read_hmdb51(ann: Path, videos: Path, split: str) -> list[Record]:
    """HMDB-51 `testTrainMulti_7030_splits/` (the `--ann` is this folder): one file
    `{class}_test_split{fold}.txt` per class and fold, lines `name.avi <id>` with id 1 = train,
    2 = test, 0 = unused. Split "test"/"train" is fold 1, "test2"/"train3" etc. pick other
    folds. Videos at `videos/{class}/name.avi`."""
    kind, fold = split.rstrip("123"), split[-1] if split[-1].isdigit() else "1"
    records = []
    for raw, path in _hmdb_split_files(ann, fold):
        for number, line in enumerate(read_lines(path), start=1):
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise StanchatError(f"{path} line {number}: expected '<video>.avi <0|1|2>', found {line!r}")
            if parts[1] == HMDB_SPLIT_IDS[kind]:
                video = resolve_video(videos, f"{raw}/{parts[0]}")
                records.append(Record(video=video, video_id=Path(parts[0]).stem, label=clean_class_name(raw)))
    return records


def hmdb51_classes(ann: Path, split: str) -> list[str]:
    """HMDB-51 label indices follow the alphabetical order of the raw class names."""
    fold = split[-1] if split[-1].isdigit() else "1"
    return [clean_class_name(raw) for raw, _ in _hmdb_split_files(ann, fold)]


def _hmdb_split_files(ann: Path, fold: str) -> list[tuple[str, Path]]:
    """(raw class, split file) for one fold, sorted by class name."""
    if not ann.is_dir():
        raise StanchatError(f"{ann} is not a folder: HMDB-51's annotation is the testTrainMulti_7030_splits folder")
    files = []
    for path in ann.iterdir():
        match = _HMDB_SPLIT_FILE.match(path.name)
        if match and match["fold"] == fold:
            files.append((match["cls"], path))
    if not files:
        raise StanchatError(f"{ann} holds no '<class>_test_split{fold}.txt' files; is it the HMDB-51 splits folder?")
    return sorted(files)
