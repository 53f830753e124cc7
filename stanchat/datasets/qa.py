"""Readers for open-ended video QA datasets: MSVD-QA, MSRVTT-QA, ActivityNet-QA."""

from __future__ import annotations

from pathlib import Path

from stanchat.datasets.base import Record, load_json, read_lines, require_keys, resolve_video
from stanchat.errors import StanchatError


def read_msvd_qa(ann: Path, videos: Path, split: str) -> list[Record]:
    """MSVD-QA `{train,val,test}_qa.json`: a list of `{"video_id": 1, "question", "answer", "id"}`.
    The integer id names `vid1` in `youtube_mapping.txt` (lines `-4wsuPCjDBc_5_15 vid1`, next to
    the annotation), whose clip is `YouTubeClips/-4wsuPCjDBc_5_15.avi`. Entries may instead give
    the file name directly as `"video"`."""
    mapping: dict[str, str] | None = None

    def locate(item: dict) -> tuple[Path, str]:
        nonlocal mapping
        if "video" in item:
            return resolve_video(videos, str(item["video"])), Path(str(item["video"])).stem
        mapping = _youtube_mapping(ann.parent / "youtube_mapping.txt") if mapping is None else mapping
        key = f"vid{item['video_id']}"
        if key not in mapping:
            raise StanchatError(f"{ann}: video_id {item['video_id']} ({key}) is not in youtube_mapping.txt")
        return resolve_video(videos, f"{mapping[key]}.avi"), mapping[key]

    return _qa_list(ann, locate)


def read_msrvtt_qa(ann: Path, videos: Path, split: str) -> list[Record]:
    """MSRVTT-QA `{train,val,test}_qa.json`: a list of `{"video_id": 7010, "question", "answer",
    "id", "category_id"}`; the integer id names `videos/video7010.mp4` (the MSR-VTT layout).
    Entries may instead give the file name directly as `"video"`."""

    def locate(item: dict) -> tuple[Path, str]:
        if "video" in item:
            return resolve_video(videos, str(item["video"])), Path(str(item["video"])).stem
        video_id = str(item["video_id"])
        video_id = video_id if video_id.startswith("video") else f"video{video_id}"
        return resolve_video(videos, f"{video_id}.mp4"), video_id

    return _qa_list(ann, locate)


def _qa_list(ann: Path, locate) -> list[Record]:
    """Records from a JSON list of QA entries; `locate(entry) -> (video path, video id)`."""
    data = load_json(ann)
    if not isinstance(data, list):
        raise StanchatError(f"{ann}: expected a list of question entries, found {type(data).__name__}")
    records = []
    for i, item in enumerate(data):
        require_keys(ann, f"entry {i}", item, ("question", "answer"))
        if "video" not in item and "video_id" not in item:
            raise StanchatError(f"{ann} entry {i}: missing video_id (or video); found {', '.join(item)}")
        video, video_id = locate(item)
        qid = str(item.get("id", i))  # the release's question id; the entry index when it has none
        records.append(
            Record(video=video, video_id=video_id, question=str(item["question"]), answer=str(item["answer"]), question_id=qid)
        )
    return records


def _youtube_mapping(path: Path) -> dict[str, str]:
    """`vidN` -> YouTube clip name, from MSVD's `youtube_mapping.txt`."""
    if not path.is_file():
        raise StanchatError(f"{path} not found: MSVD-QA video_ids need youtube_mapping.txt next to the annotation")
    pairs = [line.split() for line in read_lines(path)]
    if not all(len(p) == 2 for p in pairs):
        raise StanchatError(f"{path}: expected lines '<youtube clip name> vid<N>'")
    return {vid: name for name, vid in pairs}


def read_activitynet_qa(ann: Path, videos: Path, split: str) -> list[Record]:
    """ActivityNet-QA `{train,val,test}_q.json` (`{"video_name", "question_id", "question"}`)
    joined by `question_id` with the `*_a.json` next to it (`{"question_id", "answer", "type"}`).
    Videos at `videos/v_{video_name}.mp4` (the name Video-ChatGPT's evaluation expects); any
    `VIDEO_EXTENSIONS` container, with or without the `v_` prefix, is found too."""
    questions = load_json(ann)
    answers_path = ann.with_name(ann.name.replace("_q.json", "_a.json"))
    if answers_path == ann or not answers_path.is_file():
        raise StanchatError(f"{answers_path} not found: ActivityNet-QA questions ({ann.name}) need their *_a.json answers")
    answers = load_json(answers_path)
    if not isinstance(questions, list) or not isinstance(answers, list):
        raise StanchatError(f"{ann} and {answers_path.name} must each hold a JSON list")
    by_id = {}
    for i, item in enumerate(answers):
        require_keys(answers_path, f"entry {i}", item, ("question_id", "answer"))
        by_id[str(item["question_id"])] = str(item["answer"])
    records = []
    for i, item in enumerate(questions):
        require_keys(ann, f"entry {i}", item, ("video_name", "question_id", "question"))
        qid, name = str(item["question_id"]), str(item["video_name"])
        if qid not in by_id:
            raise StanchatError(f"{ann} entry {i}: question_id {qid} has no answer in {answers_path.name}")
        video = resolve_video(videos, f"v_{name}.mp4", f"{name}.mp4")
        records.append(Record(video=video, video_id=name, question=str(item["question"]), answer=by_id[qid], question_id=qid))
    return records
