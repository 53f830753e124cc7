"""What every dataset reader shares: the `Record`, file readers that fail in one line, and
video-path resolution.

Readers only parse annotations; they never decode a video. Whether a video file exists is
checked once, by `split_present`, so callers skip and count missing videos instead of failing
mid-epoch.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

from stanchat.errors import StanchatError

# Extensions tried, in this order, when an annotation names a video whose file on disk has a
# different container (DiDeMo lists `.mov`/`.avi` names that people usually convert to `.mp4`;
# Kinetics downloaders write `.mkv`/`.webm` when YouTube has no mp4).
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".flv")
# Still images that image-text samples (jsonl `"image"`) may point to.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@dataclass(frozen=True)
class Record:
    """One annotated sample. Exactly one of `text`, `label` or (`question`, `answer`) is set.

    Retrieval datasets give one record per (video, caption) pair, so several records can share
    a `video_id` (MSR-VTT train has 20 captions per video); paragraph datasets (DiDeMo) give one
    record per video whose `text` is the joined descriptions.
    """

    video: Path  # the video (or still image) file, resolved under the data root; may not exist
    video_id: str  # the dataset's own id of the video; records of the same video share it
    text: str | None = None  # caption (retrieval / video-text training)
    label: str | None = None  # class name in `class_names` form: cleaned, e.g. "apply eye makeup"
    question: str | None = None  # video QA question
    answer: str | None = None  # video QA reference answer
    question_id: str | None = None  # the dataset's id of the question, when it has one
    start: float | None = None  # seconds into the file where the sample starts; None: file start
    end: float | None = None  # seconds into the file where the sample ends; None: file end
    still: Path | None = None  # an image showing the video's whole motion (a synthetic clip's trail still), the target of training's motion-still loss
    member: str | None = None  # a sample of WebDataset shards: `video` is the tar shard and this the video's member in it

    @property
    def task(self) -> str:
        """"retrieval", "recognition" or "qa", from which fields are set."""
        if self.question is not None:
            return "qa"
        if self.label is not None:
            return "recognition"
        return "retrieval"

    @property
    def is_image(self) -> bool:
        """True when `video` is a still image (image-text samples), judged by its extension."""
        return self.video.suffix.lower() in IMAGE_EXTENSIONS


def split_present(records: list[Record], require_any: bool = True) -> tuple[list[Record], list[Record]]:
    """Split records into those whose file exists (and is not empty) and those whose file does not.

    Each distinct path is checked once. With `require_any`, a non-empty list whose files are all
    missing raises `StanchatError` (the usual cause is a wrong `--data-root`).
    """
    exists: dict[Path, bool] = {}
    present, missing = [], []
    for record in records:
        if record.video not in exists:
            exists[record.video] = record.video.is_file() and record.video.stat().st_size > 0
        (present if exists[record.video] else missing).append(record)
    if require_any and records and not present:
        raise StanchatError(
            f"none of the {len(exists)} videos named by the annotation exist "
            f"(first expected at {records[0].video}); check --data-root"
        )
    return present, missing


def clean_class_name(raw: str) -> str:
    """A raw class-folder name as words for a text prompt.

    Underscores become spaces (HMDB-51 "brush_hair" -> "brush hair"), CamelCase is split before
    each capital that follows a lower-case letter or digit (UCF-101 "ApplyEyeMakeup" -> "apply
    eye makeup", "YoYo" -> "yo yo"), everything is lower-cased and runs of spaces collapse.
    Already clean names (Kinetics "air drumming") come back unchanged.
    """
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", raw.replace("_", " "))
    return " ".join(words.lower().split())


def resolve_video(directory: Path, *names: str) -> Path:
    """The first of `names` (paths relative to `directory`) that exists, trying each as written
    and then with every `VIDEO_EXTENSIONS` suffix in place of its own; if none exists, the first
    name as written (so a missing video is reported where the dataset's layout puts it).
    A present file in the usual place costs one `stat`.
    """
    first = directory / names[0]
    if first.is_file():
        return first
    for name in names:
        path = directory / name
        stem = path.with_suffix("") if path.suffix.lower() in VIDEO_EXTENSIONS else path
        for candidate in (path, *(stem.with_name(stem.name + ext) for ext in VIDEO_EXTENSIONS)):
            if candidate.is_file():
                return candidate
    return first


def first_dir(root: Path, candidates: tuple[str, ...]) -> Path:
    """`root / c` for the first candidate folder that exists, else `root / candidates[0]`."""
    for name in candidates:
        if (root / name).is_dir():
            return root / name
    return root / candidates[0]


def load_json(path: Path):
    """Parse a JSON file; a syntax error becomes one StanchatError line naming the file."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise StanchatError(f"{path} is not valid JSON ({err.msg} at line {err.lineno}); check --ann") from None
    except UnicodeDecodeError:
        raise StanchatError(f"{path} is not a UTF-8 text file; check --ann") from None


def read_csv(path: Path, required: tuple[str, ...]) -> tuple[list[str], list[dict[str, str]]]:
    """(header, rows as dicts) of a CSV file; the header must name every `required` column."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            found = [name.strip() for name in reader.fieldnames or []]
            check_columns(path, required, found)
            rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    except UnicodeDecodeError:
        raise StanchatError(f"{path} is not a UTF-8 text file; check --ann") from None
    return found, rows


def check_columns(path: Path, required: tuple[str, ...], found: list[str], where: str = "") -> None:
    """Raise one line naming the missing columns (or keys), what was expected and what was found;
    `where` says which JSON entry or line, when it is not the file's header."""
    missing = [name for name in required if name not in found]
    if missing:
        raise StanchatError(
            f"{path}{' ' + where if where else ''}: missing {', '.join(missing)} (expected "
            f"{', '.join(required)}; found {', '.join(found) or 'nothing'}); "
            "is this the right dataset for this annotation file?"
        )


def require_keys(path: Path, where: str, item, keys: tuple[str, ...]) -> None:
    """Raise one line when a JSON entry is not an object holding every key in `keys`."""
    if not isinstance(item, dict):
        raise StanchatError(f"{path} {where}: expected a JSON object with {', '.join(keys)}, found {type(item).__name__}")
    check_columns(path, keys, list(item), where)


def read_lines(path: Path) -> list[str]:
    """Non-empty, stripped lines of a text file."""
    try:
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise StanchatError(f"{path} is not a UTF-8 text file; check --ann") from None
