"""Dataset readers: every format on files the synthetic world wrote, hand-written samples in
each real format, missing videos split out, and one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import pytest

from stanchat.datasets import (
    FORMATS,
    annotation_path,
    class_names,
    clean_class_name,
    dataset_names,
    read_dataset,
    split_present,
)
from stanchat.errors import StanchatError
from training.synthworld import TEMPLATES, WorldConfig, caption, motion_class, paragraph, qa_pairs, write_dataset

CONFIG = WorldConfig(frames=8)


def _expected(name: str, split: str, specs) -> list[list]:
    """Per clip, the fields the reader should return for specs written in format `name`."""
    task = FORMATS[name].task
    if task == "qa":
        return [list(qa_pairs(s)) for s in specs]
    if task == "recognition":
        return [[motion_class(s)] for s in specs]
    if name == "didemo":
        return [[paragraph(s)] for s in specs]
    if name == "msrvtt" and split == "train":
        return [[caption(s, (s.template + k) % TEMPLATES) for k in range(TEMPLATES)] for s in specs]
    return [[caption(s)] for s in specs]


def _field(record):
    if record.task == "qa":
        return (record.question, record.answer)
    return record.label if record.task == "recognition" else record.text


def _by_video(records) -> dict:
    """video file without extension -> fields of its records, in annotation order."""
    out: dict = {}
    for r in records:
        out.setdefault(r.video.with_suffix(""), []).append(_field(r))
    return out


def _check(records, out) -> None:
    """Records match what `write_dataset` wrote: the same fields for each clip's file. (DiDeMo
    names `.mov` files that were written as `.mp4`, and HMDB-51 groups clips by class, so the
    comparison is per file, without extension.)"""
    paths = [p.with_suffix("") for p in out.files + out.missing]
    assert _by_video(records) == dict(zip(paths, _expected(out.format, out.split, out.specs)))


@pytest.mark.parametrize("name", [n for n in FORMATS if n != "webdataset"])  # shards: tests/eval/test_eval_shards.py
def test_reader_reads_what_the_world_wrote(tmp_path, name):
    out = write_dataset(tmp_path, name, n=4, seed=1, config=CONFIG, missing=1)
    records = read_dataset(name, tmp_path)
    _check(records, out)
    present, missing = split_present(records)
    assert {r.video for r in present} == set(out.files) and len(out.files) == 3
    assert {r.video.with_suffix("") for r in missing} == {out.missing[0].with_suffix("")}
    assert len(present) + len(missing) == len(records)
    with av.open(str(present[0].video)) as container:  # a real, decodable video
        assert sum(1 for _ in container.decode(video=0)) == CONFIG.frames


@pytest.mark.parametrize("name, split", [("msrvtt", "train"), ("webvid", "train"), ("ucf101", "train"),
                                         ("hmdb51", "train"), ("k400", "train"), ("msvd-qa", "train")])
def test_train_and_test_splits_share_a_root(tmp_path, name, split):
    test = write_dataset(tmp_path, name, n=3, seed=1, config=CONFIG)
    train = write_dataset(tmp_path, name, n=5, seed=2, config=CONFIG, split=split)
    test_records, train_records = read_dataset(name, tmp_path), read_dataset(name, tmp_path, split=split)
    _check(train_records, train)
    _check(test_records, test)
    assert not {r.video for r in test_records} & {r.video for r in train_records}


@pytest.mark.parametrize("task", ["retrieval", "recognition", "qa"])
def test_generic_formats_carry_every_task(tmp_path, task):
    for name in ("jsonl", "csv"):
        out = write_dataset(tmp_path / name, name, n=3, seed=0, config=CONFIG, task=task)
        records = read_dataset(name, tmp_path / name, task=task)
        assert {r.task for r in records} == {task} and len(split_present(records)[0]) == len(records)
        assert records[0].video == out.files[0]


def test_stills_are_image_records(tmp_path):
    write_dataset(tmp_path, "jsonl", n=3, seed=0, stills=True)
    records = read_dataset("jsonl", tmp_path)
    assert all(r.is_image and r.video.suffix == ".png" and r.text for r in records)


def _write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_real_format_samples(tmp_path):
    """Hand-written lines in each release's own format (not the synthetic writer's)."""
    _write(tmp_path / "w", "results_2M_val.csv", "videoid,contentUrl,duration,page_dir,name\n"
           "31353427,https://ak.picdn.net/x.mp4,PT00H00M15S,006001_006050,\"Merida, mexico - tourists walk\"\n")
    [r] = read_dataset("webvid", tmp_path / "w")
    assert r.video == tmp_path / "w/videos/006001_006050/31353427.mp4" and r.text == "Merida, mexico - tourists walk"

    _write(tmp_path / "m", "MSRVTT_JSFUSION_test.csv", "key,vid_key,video_id,sentence\n"
           "ret0,msr7579,video7579,a girl wearing red top and black trouser is putting a sweater on a dog\n")
    [r] = read_dataset("msrvtt", tmp_path / "m")
    assert (r.video_id, r.video.name) == ("video7579", "video7579.mp4") and r.text.startswith("a girl")

    moments = [{"annotation_id": 1, "description": "a dog jumps", "times": [[0, 0]], "video": "1@N0_2_ab.mov"},
               {"annotation_id": 2, "description": "the dog runs off", "times": [[1, 2]], "video": "1@N0_2_ab.mov"}]
    _write(tmp_path / "d", "test_data.json", json.dumps(moments))
    _write(tmp_path / "d", "videos/1@N0_2_ab.mp4", "x")  # converted to mp4, as people usually do
    [r] = read_dataset("didemo", tmp_path / "d")
    assert r.text == "a dog jumps the dog runs off" and r.video.name == "1@N0_2_ab.mp4"
    _write(tmp_path / "d", "stan.json", json.dumps({"1@N0_2_ab.mp4": ["a dog jumps", "the dog runs off"]}))
    assert read_dataset("didemo", tmp_path / "d", ann="stan.json") == [r]  # Mug-STAN's preprocessed form

    clip = "1004_Juno_00.00.32.849-00.00.35.458"
    _write(tmp_path / "l", "LSMDC16_challenge_1000_publictect.csv",
           f"{clip}\t00.00.32.849\t00.00.35.458\t00.00.32.849\t00.00.35.458\tSOMEONE looks up.\n")
    [r] = read_dataset("lsmdc", tmp_path / "l")
    assert r.video == tmp_path / f"l/avi/1004_Juno/{clip}.avi" and r.text == "SOMEONE looks up."


def test_real_recognition_and_qa_samples(tmp_path):
    _write(tmp_path / "k", "annotations/val.csv", "label,youtube_id,time_start,time_end,split,is_cc\n"
           "air drumming,--nQbRBEz2s,104,114,val,0\n")
    _write(tmp_path / "k", "val/air drumming/--nQbRBEz2s_000104_000114.mkv", "x")  # per-label folders, mkv
    [r] = read_dataset("k400", tmp_path / "k")
    assert r.label == "air drumming" and r.video.suffix == ".mkv" and split_present([r])[0] == [r]

    _write(tmp_path / "u", "ucfTrainTestlist/classInd.txt", "1 ApplyEyeMakeup\n2 ApplyLipstick\n")
    _write(tmp_path / "u", "ucfTrainTestlist/testlist01.txt", "ApplyLipstick/v_ApplyLipstick_g01_c01.avi\n")
    [r] = read_dataset("ucf101", tmp_path / "u")
    assert r.label == "apply lipstick" and r.video == tmp_path / "u/UCF-101/ApplyLipstick/v_ApplyLipstick_g01_c01.avi"
    assert class_names("ucf101", tmp_path / "u") == ["apply eye makeup", "apply lipstick"]

    _write(tmp_path / "h", "testTrainMulti_7030_splits/brush_hair_test_split1.txt",
           "April_09_brush_hair_u_nm_np1_ba_goo_0.avi 1 \nAmerican_Beauty_brush_hair_h_nm_np1_fr_goo_0.avi 2 \n")
    [r] = read_dataset("hmdb51", tmp_path / "h")
    assert r.label == "brush hair" and r.video.parent == tmp_path / "h/videos/brush_hair"

    _write(tmp_path / "s", "youtube_mapping.txt", "-4wsuPCjDBc_5_15 vid1\n")
    _write(tmp_path / "s", "test_qa.json", json.dumps([{"answer": "dog", "id": 0, "question": "what runs?", "video_id": 1}]))
    [r] = read_dataset("msvd-qa", tmp_path / "s")
    assert r.video == tmp_path / "s/YouTubeClips/-4wsuPCjDBc_5_15.avi" and (r.question, r.answer) == ("what runs?", "dog")

    _write(tmp_path / "a", "test_q.json", json.dumps([{"video_name": "PLqTX6ij52U", "question_id": "v_PLqTX6ij52U_1",
                                                       "question": "is the person outdoors"}]))
    _write(tmp_path / "a", "test_a.json", json.dumps([{"answer": "yes", "type": 3, "question_id": "v_PLqTX6ij52U_1"}]))
    [r] = read_dataset("activitynet-qa", tmp_path / "a")
    assert r.video.name == "v_PLqTX6ij52U.mp4" and r.answer == "yes" and r.question_id == "v_PLqTX6ij52U_1"


def test_msrvtt_clip4clip_layout(tmp_path):
    """A video_id-only train list takes its captions from MSRVTT_data.json next to it."""
    _write(tmp_path, "msrvtt_data/MSRVTT_train.9k.csv", "video_id\nvideo0\nvideo2\n")
    sentences = [{"video_id": v, "caption": f"{v} caption {k}", "sen_id": k} for v in ("video0", "video1", "video2")
                 for k in range(2)]
    _write(tmp_path, "msrvtt_data/MSRVTT_data.json", json.dumps({"info": {}, "videos": [], "sentences": sentences}))
    records = read_dataset("msrvtt", tmp_path, ann="msrvtt_data/MSRVTT_train.9k.csv", split="train")
    assert [r.text for r in records] == ["video0 caption 0", "video0 caption 1", "video2 caption 0", "video2 caption 1"]


def test_class_names_order_and_cleaning(tmp_path):
    write_dataset(tmp_path / "h", "hmdb51", n=12, seed=0, config=CONFIG)
    names = class_names("hmdb51", tmp_path / "h")
    assert names == sorted(names) and len(names) == 6 and "moving left" in names
    assert {r.label for r in read_dataset("hmdb51", tmp_path / "h")} <= set(names)
    write_dataset(tmp_path / "j", "jsonl", n=12, seed=0, config=CONFIG, task="recognition")
    assert class_names("jsonl", tmp_path / "j") == sorted({r.label for r in read_dataset("jsonl", tmp_path / "j")})
    cases = {"ApplyEyeMakeup": "apply eye makeup", "YoYo": "yo yo", "brush_hair": "brush hair",
             "air drumming": "air drumming", "PlayingDaf": "playing daf"}
    assert {raw: clean_class_name(raw) for raw in cases} == cases
    with pytest.raises(StanchatError, match="msrvtt is for retrieval, not recognition; valid: k400"):
        class_names("msrvtt", tmp_path)


def test_registry_lists_names_by_task():
    assert dataset_names("qa") == ["msvd-qa", "msrvtt-qa", "activitynet-qa", "jsonl", "csv"]
    assert {"k400", "ucf101", "hmdb51"} <= set(dataset_names("recognition"))
    with pytest.raises(StanchatError, match="unknown dataset 'kinetics'; valid: webvid, msrvtt"):
        read_dataset("kinetics", ".")
    with pytest.raises(StanchatError, match="no split 'dev'; valid: train, test"):
        read_dataset("msrvtt", ".", split="dev")
    with pytest.raises(StanchatError, match="is for recognition, not retrieval"):
        read_dataset("ucf101", ".", task="retrieval")


def test_annotation_path_resolution(tmp_path, monkeypatch):
    ann = _write(tmp_path, "lists/my.jsonl", '{"video": "a.mp4", "caption": "x"}\n')
    assert annotation_path("jsonl", tmp_path) == tmp_path / "test.jsonl"
    assert annotation_path("jsonl", tmp_path, ann="lists/my.jsonl") == ann  # found under the data root
    assert read_dataset("jsonl", tmp_path, ann=ann)[0].video == tmp_path / "a.mp4"


def _error(*args, **kwargs) -> str:
    with pytest.raises(StanchatError) as err:
        read_dataset(*args, **kwargs)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_bad_input_errors(tmp_path):
    assert "results_2M_val.csv not found" in _error("webvid", tmp_path)
    assert "is not a folder; check --data-root" in _error("webvid", tmp_path / "nope")
    _write(tmp_path, "results_2M_val.csv", "videoid,contentUrl,duration,page_dir,caption\n1,u,PT1S,p,hi\n")
    message = _error("webvid", tmp_path)
    assert "missing name (expected videoid, page_dir, name; found videoid, contentUrl, duration, page_dir, caption)" in message
    _write(tmp_path, "test.jsonl", '{"video": "a.mp4", "caption": "x"}\n{"video": "b.mp4"}\n')
    assert "test.jsonl line 2: expected video (or image) and exactly one of caption" in _error("jsonl", tmp_path)
    _write(tmp_path, "test.jsonl", '{"video": "a.mp4", "caption": "x"}\nnot json\n')
    assert "line 2 is not valid JSON" in _error("jsonl", tmp_path)
    _write(tmp_path, "test.csv", "path,caption\na.mp4,x\n")
    assert "found path, caption" in _error("csv", tmp_path)
    _write(tmp_path, "test.jsonl", "\n")
    assert "has no test entries" in _error("jsonl", tmp_path)
    _write(tmp_path, "LSMDC16_challenge_1000_publictect.csv", "clip,00.00.01.000,00.00.02.000,a sentence\n")
    assert "line 1: expected 6 tab-separated fields" in _error("lsmdc", tmp_path)
    _write(tmp_path, "test_data.json", "{not json")
    assert "test_data.json is not valid JSON" in _error("didemo", tmp_path)
    _write(tmp_path, "test_q.json", "[]")
    assert "test_a.json not found" in _error("activitynet-qa", tmp_path)


def test_data_root_without_videos(tmp_path):
    write_dataset(tmp_path, "msrvtt", n=3, seed=0, config=CONFIG, missing=3)
    records = read_dataset("msrvtt", tmp_path)
    with pytest.raises(StanchatError, match=r"none of the 3 videos named by the annotation exist .*check --data-root"):
        split_present(records)
    assert split_present(records, require_any=False) == ([], records)


def test_import_is_light():
    code = "import sys, stanchat.datasets; print(sorted(m for m in ('numpy', 'torch', 'av') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[2], capture_output=True, text=True)
    assert out.stdout.strip() == "[]"
