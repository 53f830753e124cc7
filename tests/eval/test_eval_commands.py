"""Full `stanchat eval retrieval | recognition | reverse` runs on synthetic datasets in every format,
with a tiny model: results JSON/MD/PNG, skipped videos, the feature cache, and one-line errors."""

import json
from pathlib import Path

import numpy as np
import pytest

from stanchat.cli import main
from tests.floats import FLOAT32_APPROX
from tests.evalkit import FRAMES, N_CLIPS, error_line, eval_world  # noqa: F401  (fixture)
from tests.tiny_llava import tiny_models  # noqa: F401  (fixture)


def run_eval(task, world, fmt, tmp_path, *extra, model="model"):
    data = world[fmt]
    out = tmp_path / "out"
    argv = ["eval", task, "--dataset", data.format, "--data-root", str(data.root), "--model", str(world[model]),
            "--frames", FRAMES, "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--workers", "0", *extra]
    assert main(argv) == 0
    for suffix in ("json", "md", "png"):
        assert (out / f"{task}.{suffix}").stat().st_size > 0
    return json.loads((out / f"{task}.json").read_text()), out


def check_skipped(results, data):
    counts = results["dataset"]["counts"]
    assert counts["videos_missing"] == 1 and counts["videos_encoded"] == N_CLIPS - 1
    # named as the annotation names it (DiDeMo lists .mov files that live as .mp4)
    missing = [Path(p).with_suffix("") for p in results["dataset"]["skipped"]["missing"]]
    assert missing == [p.with_suffix("") for p in data.missing]


@pytest.mark.parametrize("fmt", ["msrvtt", "didemo", "lsmdc", "jsonl-retrieval", "csv-retrieval"])
def test_retrieval_every_format(eval_world, tmp_path, capsys, fmt):
    results, out = run_eval("retrieval", eval_world, fmt, tmp_path)
    assert capsys.readouterr().out.startswith("t2v: R@1 ")
    check_skipped(results, eval_world[fmt])
    t2v = results["metrics"]["text_to_video"]
    assert t2v["queries"] == t2v["candidates"] == N_CLIPS - 1  # one caption / paragraph per video
    assert set(t2v) >= {"R@1", "R@5", "R@10", "MdR", "MnR", "recall_curve"}
    assert results["settings"]["frames"] == int(FRAMES) and results["settings"]["tokens"] == 32
    assert results["provenance"]["commit"] and results["provenance"]["date"]
    assert "| text to video |" in (out / "retrieval.md").read_text()


def test_retrieval_numbers_match_an_independent_computation(eval_world, tmp_path):
    """Recompute R@K and MnR from the cached video features with CLIP4Clip's argsort ranking."""
    import torch
    from safetensors import safe_open
    from transformers import AutoTokenizer

    from stanchat.videoclip import VideoCLIP

    results, _ = run_eval("retrieval", eval_world, "jsonl-retrieval", tmp_path)
    block = Path(results["dataset"]["feature_cache"]["dir"]) / "block-00000.safetensors"
    with safe_open(str(block), framework="pt") as cache:
        video = cache.get_tensor("features")[:, 0]  # (Nv, T, P)
        keys = json.loads(cache.metadata()["keys"])
    lines = [json.loads(line) for line in eval_world["jsonl-retrieval"].ann.read_text().splitlines()]
    by_video = {str(eval_world["jsonl-retrieval"].root / line["video"]): line["caption"] for line in lines}
    captions = [by_video[k] for k in keys]
    model = VideoCLIP.from_pretrained(eval_world["model"]).eval()
    batch = AutoTokenizer.from_pretrained(eval_world["model"])(captions, padding="max_length", max_length=32,
                                                               return_tensors="pt")
    with torch.no_grad():
        _, pooled = model.encode_text(batch["input_ids"], batch["attention_mask"])
    text = torch.nn.functional.normalize(pooled, dim=-1)
    vid = torch.nn.functional.normalize(video.mean(dim=1), dim=-1)
    sims = (text @ vid.T).numpy()
    ranks = np.array([np.where(np.argsort(-row) == i)[0][0] + 1 for i, row in enumerate(sims)])
    t2v = results["metrics"]["text_to_video"]
    assert t2v["R@1"] == pytest.approx(100 * np.mean(ranks <= 1))
    assert t2v["MnR"] == pytest.approx(ranks.mean())


def test_retrieval_cache_reuse_mug_and_dual_softmax(eval_world, tmp_path):
    first, _ = run_eval("retrieval", eval_world, "msrvtt", tmp_path)
    cache = first["dataset"]["feature_cache"]
    assert (cache["blocks"], cache["reused_blocks"]) == (1, 0)
    again, _ = run_eval("retrieval", eval_world, "msrvtt", tmp_path, "--scoring", "mug", "--dual-softmax")
    assert again["dataset"]["feature_cache"] == {**cache, "reused_blocks": 1}
    metrics = again["metrics"]
    assert metrics["dual_softmax"] is True and again["settings"]["scoring"] == "mug"
    assert set(metrics["text_to_video"]["plain"]) == {"R@1", "R@5", "R@10", "MdR", "MnR"}
    other, _ = run_eval("retrieval", eval_world, "msrvtt", tmp_path / "f8", "--frames", "8")
    assert other["dataset"]["feature_cache"]["dir"] != cache["dir"]


def test_interrupted_feature_extraction_resumes_from_its_blocks(eval_world, tmp_path, monkeypatch):
    import stanchat.eval.features as features

    monkeypatch.setattr(features, "CACHE_BLOCK", 1)  # one video per cache file
    first, _ = run_eval("retrieval", eval_world, "lsmdc", tmp_path)
    folder = Path(first["dataset"]["feature_cache"]["dir"])
    assert len(list(folder.glob("block-*.safetensors"))) == N_CLIPS - 1
    (folder / "block-00001.safetensors").unlink()  # as if the run had stopped there
    (folder / "block-00002.safetensors").write_bytes(b"cut short")
    second, _ = run_eval("retrieval", eval_world, "lsmdc", tmp_path)
    assert second["dataset"]["feature_cache"]["reused_blocks"] == N_CLIPS - 3
    assert second["metrics"] == first["metrics"]


@pytest.mark.parametrize("fmt", ["k400", "ucf101", "hmdb51", "jsonl-recognition", "csv-recognition"])
def test_recognition_every_format(eval_world, tmp_path, capsys, fmt):
    results, out = run_eval("recognition", eval_world, fmt, tmp_path)
    assert capsys.readouterr().out.startswith("top-1 ")
    check_skipped(results, eval_world[fmt])
    metrics = results["metrics"]
    assert len(metrics["per_class_top1"]) == len(results["classes"]) == results["dataset"]["counts"]["classes"]
    present = [acc for acc in metrics["per_class_top1"] if acc is not None]
    assert metrics["mean_class_accuracy"] == pytest.approx(np.mean(present))
    assert results["prompts"]["templates"] == ["{}"]  # raw class names by default


def test_recognition_templates_views_and_mug(eval_world, tmp_path):
    results, _ = run_eval("recognition", eval_world, "k400", tmp_path, "--template", "a video of a shape {}.",
                          "--template", "{}", "--clips", "2", "--crops", "3", "--scoring", "mug")
    assert results["prompts"]["templates"] == ["a video of a shape {}.", "{}"]
    assert results["prompts"]["example"].startswith("a video of a shape ")
    assert (results["settings"]["clips"], results["settings"]["crops"], results["settings"]["scoring"]) == (2, 3, "mug")


def test_reverse_probe_with_chat(eval_world, tmp_path, tiny_models):
    out = tmp_path / "out"
    argv = ["eval", "reverse", "--data", str(eval_world["reverse"]), "--model", str(eval_world["model"]),
            "--frames", FRAMES, "--out", str(out), "--no-cache", "--workers", "0", "--chat",
            "--llava", tiny_models["default"], "--max-new-tokens", "2"]
    assert main(argv) == 0
    results = json.loads((out / "reverse.json").read_text())
    assert 0.0 < results["metrics"]["mean_cosine"] < 1.0 - 1e-7  # the STAN branch sees frame order
    assert results["captions"]["pairs"] == N_CLIPS
    chat = results["chat"]
    assert chat["questions"] == N_CLIPS and len(chat["answers"]) == N_CLIPS
    assert {"forward", "reversed", "expected", "expected_reversed"} <= set(chat["answers"][0])
    assert (out / "reverse.png").stat().st_size > 0


def test_reverse_probe_frame_order_blind_model(eval_world, tmp_path):
    """With no temporal embedding the model cannot tell directions: cosine 1 and no caption flips."""
    out = tmp_path / "out"
    argv = ["eval", "reverse", "--ann", str(eval_world["reverse"]), "--model", str(eval_world["blind"]),
            "--frames", FRAMES, "--out", str(out), "--no-cache", "--workers", "0"]
    assert main(argv) == 0
    results = json.loads((out / "reverse.json").read_text())
    assert results["metrics"]["mean_cosine"] == pytest.approx(1.0, **FLOAT32_APPROX)
    assert results["captions"]["flip_fraction"] == 0.0 and results["chat"] is None


def test_reverse_probe_on_a_folder(eval_world, tmp_path):
    folder = eval_world["reverse"].parent / "videos"
    out = tmp_path / "out"
    assert main(["eval", "reverse", "--data", str(folder), "--model", str(eval_world["model"]), "--frames", FRAMES,
                 "--out", str(out), "--no-cache", "--workers", "0"]) == 0
    results = json.loads((out / "reverse.json").read_text())
    assert results["metrics"]["videos"] == N_CLIPS and results["captions"] is None


@pytest.mark.parametrize("case, expected", [
    ("unknown-dataset", "unknown dataset 'msrvt'"),
    ("missing-ann", "annotation"),
    ("all-missing", "none of the"),
    ("wrong-task", "not retrieval"),
    ("bad-model", "--model"),
    ("too-many-tokens", "--tokens 99"),
])
def test_bad_input_is_one_line(eval_world, tmp_path, capsys, case, expected):
    data = eval_world["msrvtt"]
    args = {"--dataset": "msrvtt", "--data-root": str(data.root), "--model": str(eval_world["model"])}
    extra = []
    if case == "unknown-dataset":
        args["--dataset"] = "msrvt"
    elif case == "missing-ann":
        extra = ["--ann", str(tmp_path / "nope.csv")]
    elif case == "all-missing":
        args["--data-root"] = str(tmp_path)
        extra = ["--ann", str(data.ann)]
    elif case == "wrong-task":
        args["--dataset"] = "k400"
    elif case == "bad-model":
        args["--model"] = str(tmp_path / "no-model")
    else:
        extra = ["--tokens", "99"]
    argv = ["eval", "retrieval", *[x for kv in args.items() for x in kv], "--out", str(tmp_path / "out"),
            "--no-cache", "--workers", "0", *extra]
    assert main(argv) == 2
    assert expected in error_line(capsys.readouterr().err)


def test_reverse_bad_input_is_one_line(eval_world, tmp_path, capsys):
    argv = ["eval", "reverse", "--data", str(tmp_path / "none.jsonl"), "--model", str(eval_world["model"]),
            "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "does not exist" in error_line(capsys.readouterr().err)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"video": "a.mp4", "colour": "red"}\n')
    assert main([*argv[:3], str(bad), *argv[4:]]) == 2
    assert "unknown fields ['colour']" in error_line(capsys.readouterr().err)


@pytest.mark.slow
def test_retrieval_sharded_over_two_processes_matches_one(eval_world, tmp_path):
    """torchrun with 2 CPU processes (gloo): each encodes half the videos, the gathered features
    give the same numbers as one process."""
    import os
    import subprocess
    import sys

    single, _ = run_eval("retrieval", eval_world, "jsonl-retrieval", tmp_path / "one")
    data = eval_world["jsonl-retrieval"]
    out = tmp_path / "two"
    argv = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "stanchat", "eval",
            "retrieval", "--dataset", "jsonl", "--data-root", str(data.root), "--model", str(eval_world["model"]),
            "--frames", FRAMES, "--out", str(out), "--cache-dir", str(tmp_path / "cache2"), "--workers", "0"]
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("wrote ") == 1  # only the main process reports
    sharded = json.loads((out / "retrieval.json").read_text())
    assert sharded["metrics"] == single["metrics"]
    assert sharded["dataset"]["counts"] == single["dataset"]["counts"]


def test_undecodable_video_is_skipped_and_listed(eval_world, tmp_path):
    import shutil

    data = eval_world["jsonl-retrieval"]
    root = tmp_path / "data"
    shutil.copytree(data.root, root)
    broken = root / "videos" / f"{data.specs[0].clip_id}.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 20)
    world = {**eval_world, "broken": type(data)(data.format, root, root / data.ann.name, data.split, data.specs)}
    results, _ = run_eval("retrieval", world, "broken", tmp_path)
    counts = results["dataset"]["counts"]
    assert (counts["videos_undecodable"], counts["videos_missing"], counts["videos"]) == (1, 1, N_CLIPS - 2)
    assert list(results["dataset"]["skipped"]["undecodable"]) == [str(broken)]
