"""Readers for video-text datasets: WebVid, MSR-VTT, DiDeMo, LSMDC.

Each reader is `read(ann, videos, split) -> list[Record]`: `ann` is the annotation file,
`videos` the folder the dataset's layout keeps its videos in (see `registry.FORMATS`).
"""

from __future__ import annotations

import re
from pathlib import Path

from stanchat.datasets.base import (
    Record,
    check_columns,
    load_json,
    read_csv,
    read_lines,
    require_keys,
    resolve_video,
)
from stanchat.errors import StanchatError

WEBVID_COLUMNS = ("videoid", "page_dir", "name")  # of videoid,contentUrl,duration,page_dir,name
JSFUSION_COLUMNS = ("key", "vid_key", "video_id", "sentence")
LSMDC_FIELDS = ("clip_id", "start_aligned", "end_aligned", "start_extracted", "end_extracted", "sentence")
_LSMDC_TIME = re.compile(r"^\d+\.\d{2}\.\d{2}\.\d+$")  # hh.mm.ss.fff, e.g. 01.02.27.034


def read_webvid(ann: Path, videos: Path, split: str) -> list[Record]:
    """WebVid `results_2M_{train,val}.csv` (columns videoid,contentUrl,duration,page_dir,name);
    videos at `videos/{page_dir}/{videoid}.mp4`, the layout of the official download script."""
    records = []
    for row in read_csv(ann, WEBVID_COLUMNS)[1]:
        rel = f"{row['page_dir']}/{row['videoid']}.mp4"
        records.append(Record(video=resolve_video(videos, rel), video_id=row["videoid"], text=row["name"]))
    return records


def read_msrvtt(ann: Path, videos: Path, split: str) -> list[Record]:
    """MSR-VTT in any of its three common annotation forms, told apart by content:

    - `train_9k.json` / `test_JSFUSION.json` (mmaction2, Mug-STAN): `{"video0.mp4": [captions]}`;
    - `MSRVTT_JSFUSION_test.csv` (1k-A test; columns key,vid_key,video_id,sentence);
    - `MSRVTT_train.9k.csv` (CLIP4Clip; a `video_id` column only): captions come from the
      `MSRVTT_data.json` (`{"sentences": [{"video_id", "caption"}]}`) in the same folder.

    Videos at `videos/{video_id}.mp4`. One record per (video, caption).
    """
    if ann.suffix.lower() == ".json":
        return _video_caption_dict(ann, load_json(ann), videos, join=False)
    header, rows = read_csv(ann, ("video_id",))
    if "sentence" in header:
        check_columns(ann, JSFUSION_COLUMNS, header)
        return [_msrvtt_record(videos, row["video_id"], row["sentence"]) for row in rows]
    captions = _msrvtt_sentences(ann.parent / "MSRVTT_data.json")
    records = []
    for row in rows:
        if row["video_id"] not in captions:
            raise StanchatError(f"{ann}: video {row['video_id']} has no caption in {ann.parent / 'MSRVTT_data.json'}")
        records += [_msrvtt_record(videos, row["video_id"], text) for text in captions[row["video_id"]]]
    return records


def _msrvtt_record(videos: Path, video_id: str, text: str) -> Record:
    return Record(video=resolve_video(videos, f"{video_id}.mp4"), video_id=video_id, text=text)


def _msrvtt_sentences(path: Path) -> dict[str, list[str]]:
    """video_id -> captions, from the MSR-VTT release's `MSRVTT_data.json`."""
    if not path.is_file():
        raise StanchatError(
            f"{path} not found: a video_id-only MSR-VTT list needs MSRVTT_data.json next to it for the captions"
        )
    data = load_json(path)
    if not isinstance(data, dict) or "sentences" not in data:
        found = ", ".join(data) if isinstance(data, dict) else type(data).__name__
        raise StanchatError(f"{path}: expected an object with 'sentences' (found {found})")
    captions: dict[str, list[str]] = {}
    for i, sentence in enumerate(data["sentences"]):
        require_keys(path, f"sentences[{i}]", sentence, ("video_id", "caption"))
        captions.setdefault(str(sentence["video_id"]), []).append(str(sentence["caption"]))
    return captions


def read_didemo(ann: Path, videos: Path, split: str) -> list[Record]:
    """DiDeMo paragraph retrieval: `{train,val,test}_data.json`, a list of moments
    `{"video", "description", "times", ...}`; the descriptions of one video are joined with
    spaces, in file order, into one paragraph record per video. A `{"file": [sentences]}` dict
    (Mug-STAN's preprocessed `train.json` / `test.json`) is joined the same way. The `video`
    names keep the original `.mov`/`.avi` extensions; converted `.mp4` files are found too.
    """
    data = load_json(ann)
    if isinstance(data, dict):
        return _video_caption_dict(ann, data, videos, join=True)
    if not isinstance(data, list):
        raise StanchatError(f"{ann}: expected a list of DiDeMo moments, found {type(data).__name__}")
    paragraphs: dict[str, list[str]] = {}
    for i, moment in enumerate(data):
        require_keys(ann, f"entry {i}", moment, ("video", "description"))
        paragraphs.setdefault(str(moment["video"]), []).append(str(moment["description"]).strip())
    return [
        Record(video=resolve_video(videos, name), video_id=Path(name).stem, text=" ".join(texts))
        for name, texts in paragraphs.items()
    ]


def _video_caption_dict(ann: Path, data, videos: Path, join: bool) -> list[Record]:
    """`{"video0.mp4": ["caption", ...]}` -> a record per caption, or one joined record per video."""
    if not isinstance(data, dict):
        raise StanchatError(f"{ann}: expected an object mapping video file -> list of captions, found {type(data).__name__}")
    records = []
    for name, texts in data.items():
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise StanchatError(f"{ann} entry {name!r}: expected a caption or a list of captions")
        video, video_id = resolve_video(videos, name), Path(name).stem
        parts = [" ".join(t.strip() for t in texts)] if join else texts
        records += [Record(video=video, video_id=video_id, text=text) for text in parts]
    return records


def read_lsmdc(ann: Path, videos: Path, split: str) -> list[Record]:
    """LSMDC 2016 `LSMDC16_annos_{training,val}.csv` / `LSMDC16_challenge_1000_publictect.csv`:
    tab-separated, no header, fields clip_id, start_aligned, end_aligned, start_extracted,
    end_extracted, sentence (times hh.mm.ss.fff in the movie). Clips are already cut, so the
    records carry no start/end. Videos at `avi/{movie}/{clip_id}.avi`, where `movie` is the
    clip id without its last `_time-range` part (`1004_Juno_00.00.32.849-00.00.35.458` ->
    `1004_Juno`); a flat `avi/{clip_id}.avi` is found too.
    """
    records = []
    for number, line in enumerate(read_lines(ann), start=1):
        fields = line.split("\t")
        if len(fields) != len(LSMDC_FIELDS) or not all(_LSMDC_TIME.match(t) for t in fields[1:5]):
            raise StanchatError(
                f"{ann} line {number}: expected {len(LSMDC_FIELDS)} tab-separated fields "
                f"({', '.join(LSMDC_FIELDS)}) with hh.mm.ss.fff times; found {len(fields)} field(s)"
            )
        clip_id, sentence = fields[0], fields[5]
        movie = clip_id.rsplit("_", 1)[0]
        video = resolve_video(videos, f"{movie}/{clip_id}.avi", f"{clip_id}.avi")
        records.append(Record(video=video, video_id=clip_id, text=sentence))
    return records
