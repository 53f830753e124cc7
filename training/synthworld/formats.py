"""Write synthetic clips as a dataset in any registered format: real video files (mp4 / avi),
still PNGs, and the annotation files, in the layout `stanchat.datasets` reads.

File names and folders come from the reader registry (`annotation_path`, `video_dir`), so a
dataset written here is found by `read_dataset(format, root, split=split)` with no `ann`.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from stanchat.datasets import annotation_path, get_format, video_dir
from stanchat.errors import StanchatError
from training.synthworld.render import has_still, render_clip, render_still, write_image, write_video
from training.synthworld.world import (
    MOTION_CLASSES,
    TEMPLATES,
    ClipSpec,
    WorldConfig,
    caption,
    event_sentence,
    motion_class,
    qa_pairs,
    sample_specs,
)

_SPLIT_BASE = {"train": 10000, "val": 20000, "test": 30000}  # numeric ids per split never collide


@dataclass
class SynthDataset:
    """What `write_dataset` wrote."""

    format: str  # registry name
    root: Path  # data root
    ann: Path  # annotation file (for hmdb51: the splits folder)
    split: str  # split written
    specs: list[ClipSpec]  # one per clip, in annotation order
    files: list[Path] = field(default_factory=list)  # video / image files written
    missing: list[Path] = field(default_factory=list)  # files the annotation names but that were not written


@dataclass
class _Job:
    out: SynthDataset
    videos: Path  # the format's video folder
    config: WorldConfig
    task: str
    stills: bool
    skip: set[str]  # clip ids whose files are deliberately not written
    motion_stills: bool = False  # also a trail still for every clip of one moving event (retrieval jsonl / csv)

    def video(self, spec: ClipSpec, path: Path) -> None:
        if spec.clip_id in self.skip:
            self.out.missing.append(path)
            return
        write_video(path, render_clip(spec, self.config), self.config.fps)
        self.out.files.append(path)

    def image(self, spec: ClipSpec, path: Path) -> None:
        if spec.clip_id in self.skip:
            self.out.missing.append(path)
            return
        write_image(path, render_still(spec, self.config))
        self.out.files.append(path)

    def number(self, i: int) -> int:
        return _SPLIT_BASE[self.out.split.rstrip("23")] + i


def write_dataset(
    root: str | Path, format: str, n: int = 16, seed: int = 0, split: str | None = None,
    config: WorldConfig = WorldConfig(), task: str | None = None, stills: bool = False, missing: int = 0,
    exclude: frozenset = frozenset(), only: frozenset | None = None, motion_stills: bool = False,
) -> SynthDataset:
    """Render `n` clips and write them with annotations as dataset `format` under `root`.

    `split` defaults to the format's evaluation split; `task` (generic jsonl/csv only) is
    "retrieval" (default), "recognition" or "qa"; `stills` writes PNG stills with a motion
    trail instead of videos (jsonl/csv retrieval); `motion_stills` writes videos and, for every clip
    of one moving event, its trail still too, named in the entry's `still` field (jsonl/csv
    retrieval: the target of training's motion-still loss). The last `missing` clips are annotated but
    their files are not written. `exclude` / `only` hold out (colour, shape, motion) triples
    (see `sample_specs`). Recognition clips show one motion (no "appear"); DiDeMo clips get at
    least two captioned segments, so the paragraph has several sentences.
    """
    fmt = get_format(format)
    task = _task(fmt.task, task, stills)
    if motion_stills and (stills or fmt.task != "any" or task != "retrieval"):
        raise StanchatError("motion stills are written only beside the videos of jsonl or csv retrieval data")
    split = split or fmt.default_split
    root = Path(root)
    out = SynthDataset(format, root, annotation_path(format, root, split=split), split, [])
    world = _world(format, task, stills, config)
    out.specs = sample_specs(n, seed, world, prefix=split, exclude=exclude, only=only)
    skip = {s.clip_id for s in out.specs[max(n - missing, 0):]}
    job = _Job(out, video_dir(format, root, split), world, task, stills, skip, motion_stills)
    out.ann.parent.mkdir(parents=True, exist_ok=True)
    WRITERS[format](job)
    return out


def _task(format_task: str, task: str | None, stills: bool) -> str:
    if format_task != "any" and task not in (None, format_task):
        raise StanchatError(f"this format holds {format_task} data, not {task}")
    task = task or (format_task if format_task != "any" else "retrieval")
    if stills and (format_task != "any" or task != "retrieval"):
        raise StanchatError("stills are written only as jsonl or csv retrieval (image-text) data")
    return task


def _world(format: str, task: str, stills: bool, config: WorldConfig) -> WorldConfig:
    """The config adjusted to what the format can express."""
    moving = tuple(m for m in config.motions if m != "appear")
    if stills:
        return replace(config, segments=1, distractor_prob=0.0, motions=moving)
    if task == "recognition":
        return replace(config, segments=1, motions=moving)
    if format == "didemo":
        return replace(config, segments=max(2, config.segments))
    return config


def _write_csv(path: Path, columns: list[str], rows: list[dict], **kwargs) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, **kwargs)
        writer.writeheader()
        writer.writerows(rows)


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data), encoding="utf-8")


def _youtube_id(spec: ClipSpec) -> str:
    """An 11-character YouTube-style id drawn from the clip's seed."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    rng = np.random.default_rng([spec.seed, 11])
    return "".join(alphabet[int(k)] for k in rng.integers(len(alphabet), size=11))


def _webvid(job: _Job) -> None:
    rows, page = [], "000001_000050"
    for i, spec in enumerate(job.out.specs):
        vid = str(job.number(i))
        job.video(spec, job.videos / page / f"{vid}.mp4")
        seconds = job.config.frames // job.config.fps
        rows.append({"videoid": vid, "contentUrl": f"https://example.invalid/{vid}.mp4",
                     "duration": f"PT00H00M{seconds:02d}S", "page_dir": page, "name": caption(spec)})
    _write_csv(job.out.ann, ["videoid", "contentUrl", "duration", "page_dir", "name"], rows)


def _msrvtt(job: _Job) -> None:
    """train: train_9k.json with every paraphrase; test: the JSFUSION csv, one caption per video."""
    if job.out.ann.suffix == ".json":
        data = {}
        for i, spec in enumerate(job.out.specs):
            job.video(spec, job.videos / f"video{job.number(i)}.mp4")
            data[f"video{job.number(i)}.mp4"] = [caption(spec, (spec.template + k) % TEMPLATES) for k in range(TEMPLATES)]
        _write_json(job.out.ann, data)
        return
    rows = []
    for i, spec in enumerate(job.out.specs):
        job.video(spec, job.videos / f"video{job.number(i)}.mp4")
        rows.append({"key": f"ret{i}", "vid_key": f"msr{job.number(i)}", "video_id": f"video{job.number(i)}",
                     "sentence": caption(spec)})
    _write_csv(job.out.ann, ["key", "vid_key", "video_id", "sentence"], rows)


def _didemo(job: _Job) -> None:
    """Moments named `<flickr-like id>.mov`, written as converted `.mp4` files."""
    moments = []
    for i, spec in enumerate(job.out.specs):
        stem = f"{job.number(i)}@N00_{spec.seed}_{_youtube_id(spec).lower()}"
        job.video(spec, job.videos / f"{stem}.mp4")
        for segment, event in enumerate(spec.events):
            if event.captioned:
                moments.append({"annotation_id": len(moments), "description": event_sentence(event, spec.template),
                                "times": [[min(segment, 5)] * 2] * 4, "video": f"{stem}.mov", "dl_link": ""})
    _write_json(job.out.ann, moments)


def _lsmdc(job: _Job) -> None:
    lines = []
    for i, spec in enumerate(job.out.specs):
        movie = f"{job.number(i) // 10:04d}_Synthetic_World"
        t0, t1 = _hmsf(3 * (i % 10) + 1.5), _hmsf(3 * (i % 10) + 3.5)
        clip_id = f"{movie}_{t0}-{t1}"
        job.video(spec, job.videos / movie / f"{clip_id}.avi")
        lines.append("\t".join((clip_id, t0, t1, t0, t1, caption(spec))))
    job.out.ann.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _hmsf(seconds: float) -> str:
    """Seconds as LSMDC's hh.mm.ss.fff."""
    ms = int(round(seconds * 1000))
    return f"{ms // 3_600_000:02d}.{ms // 60_000 % 60:02d}.{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def _kinetics(job: _Job) -> None:
    rows = []
    for i, spec in enumerate(job.out.specs):
        start = i % 50
        clip = f"{_youtube_id(spec)}_{start:06d}_{start + 10:06d}"
        job.video(spec, job.videos / f"{clip}.mp4")
        rows.append({"label": motion_class(spec), "youtube_id": _youtube_id(spec), "time_start": start,
                     "time_end": start + 10, "split": job.out.split})
    _write_csv(job.out.ann, ["label", "youtube_id", "time_start", "time_end", "split"], rows)


def _ucf101(job: _Job) -> None:
    """classInd.txt over every motion class, and one split list; videos in per-class folders."""
    camel = {m: "".join(w.capitalize() for w in c.split()) for m, c in _classes(job.config).items()}
    names = sorted(camel.values())
    (job.out.ann.parent / "classInd.txt").write_text("".join(f"{k + 1} {c}\n" for k, c in enumerate(names)))
    lines = []
    for i, spec in enumerate(job.out.specs):
        raw = camel[spec.captioned[0].motion]
        rel = f"{raw}/v_{raw}_g{i // 7 + 1:02d}_c{i % 7 + 1:02d}.avi"
        job.video(spec, job.videos / rel)
        lines.append(rel if job.out.split.startswith("test") else f"{rel} {names.index(raw) + 1}")
    job.out.ann.write_text("\n".join(lines) + "\n")


def _hmdb51(job: _Job) -> None:
    """One `<class>_test_split<fold>.txt` per class; existing entries of other clips are kept."""
    fold = job.out.split[-1] if job.out.split[-1].isdigit() else "1"
    mark = "1" if job.out.split.startswith("train") else "2"
    job.out.ann.mkdir(parents=True, exist_ok=True)
    entries: dict[str, dict[str, str]] = {}
    for motion, words in _classes(job.config).items():
        path = job.out.ann / f"{words.replace(' ', '_')}_test_split{fold}.txt"
        old = path.read_text().split("\n") if path.exists() else []
        entries[motion] = dict(line.split() for line in old if line.strip())
    for spec in job.out.specs:
        raw = _classes(job.config)[spec.captioned[0].motion].replace(" ", "_")
        name = f"{spec.clip_id}_{raw}_u_nm_np1_fr_med_0.avi"
        job.video(spec, job.videos / raw / name)
        entries[spec.captioned[0].motion][name] = mark
    for motion, words in _classes(job.config).items():
        lines = "".join(f"{name} {m} \n" for name, m in entries[motion].items())
        (job.out.ann / f"{words.replace(' ', '_')}_test_split{fold}.txt").write_text(lines)


def _classes(config: WorldConfig) -> dict[str, str]:
    """motion -> class words, for the motions a recognition dataset of this config shows."""
    return {m: MOTION_CLASSES[m] for m in config.motions}


def _msvd_qa(job: _Job) -> None:
    mapping_path = job.out.ann.parent / "youtube_mapping.txt"
    mapping = dict(line.split()[::-1] for line in mapping_path.read_text().splitlines() if line.strip()) \
        if mapping_path.exists() else {}
    entries = []
    for i, spec in enumerate(job.out.specs):
        name = f"{_youtube_id(spec)}_{i % 50}_{i % 50 + 10}"
        mapping[f"vid{job.number(i)}"] = name
        job.video(spec, job.videos / f"{name}.avi")
        entries += [{"answer": a, "id": len(entries), "question": q, "video_id": job.number(i)} for q, a in qa_pairs(spec)]
    mapping_path.write_text("".join(f"{name} {vid}\n" for vid, name in mapping.items()))
    _write_json(job.out.ann, entries)


def _msrvtt_qa(job: _Job) -> None:
    entries = []
    for i, spec in enumerate(job.out.specs):
        job.video(spec, job.videos / f"video{job.number(i)}.mp4")
        entries += [{"answer": a, "category_id": 0, "id": len(entries), "question": q, "video_id": job.number(i)}
                    for q, a in qa_pairs(spec)]
    _write_json(job.out.ann, entries)


def _activitynet_qa(job: _Job) -> None:
    questions, answers = [], []
    for spec in job.out.specs:
        name = _youtube_id(spec)
        job.video(spec, job.videos / f"v_{name}.mp4")
        for k, (q, a) in enumerate(qa_pairs(spec)):
            questions.append({"video_name": name, "question_id": f"v_{name}_{k}", "question": q})
            answers.append({"answer": a, "type": 0 if q.startswith(("Which", "Does")) else 4, "question_id": f"v_{name}_{k}"})
    _write_json(job.out.ann, questions)
    _write_json(job.out.ann.with_name(job.out.ann.name.replace("_q.json", "_a.json")), answers)


def _generic_entries(job: _Job) -> list[dict]:
    """The jsonl / csv entries of every clip for the job's task; writes the files."""
    entries = []
    for spec in job.out.specs:
        if job.stills:
            rel = f"stills/{spec.clip_id}.png"
            job.image(spec, job.videos / rel)
            entries.append({"image": rel, "caption": caption(spec)})
            continue
        rel = f"videos/{spec.clip_id}.mp4"
        job.video(spec, job.videos / rel)
        if job.task == "retrieval":
            entries.append({"video": rel, "caption": caption(spec)})
            if job.motion_stills and has_still(spec):
                entries[-1]["still"] = f"stills/{spec.clip_id}.png"
                job.image(spec, job.videos / entries[-1]["still"])
        elif job.task == "recognition":
            entries.append({"video": rel, "label": motion_class(spec)})
        else:
            entries += [{"video": rel, "question": q, "answer": a} for q, a in qa_pairs(spec)]
    return entries


def _jsonl(job: _Job) -> None:
    job.out.ann.write_text("".join(json.dumps(e) + "\n" for e in _generic_entries(job)), encoding="utf-8")


def _generic_csv(job: _Job) -> None:
    entries = _generic_entries(job)
    _write_csv(job.out.ann, list(entries[0]) if entries else ["video", "caption"], entries)


WRITERS = {
    "webvid": _webvid, "msrvtt": _msrvtt, "didemo": _didemo, "lsmdc": _lsmdc,
    "k400": _kinetics, "k600": _kinetics, "k700": _kinetics, "ucf101": _ucf101, "hmdb51": _hmdb51,
    "msvd-qa": _msvd_qa, "msrvtt-qa": _msrvtt_qa, "activitynet-qa": _activitynet_qa,
    "jsonl": _jsonl, "csv": _generic_csv,
}
