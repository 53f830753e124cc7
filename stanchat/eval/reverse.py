"""The time-reversal probe: does the model see which way time runs?

For every video the model encodes the clip forwards and backwards (the same sampled frames in
reverse order) and the probe reports:
- cosine: the cosine similarity of the two frame-mean video features. A model blind to frame order
  (CLIP frame-mean, or any symmetric pooling) gets exactly 1.0; lower means time matters.
- flips (needs `caption` and `reversed_caption`, e.g. "a red circle moves left" / "... right"):
  the fraction of videos where the model's preference between the caption and its direction-flipped
  twin flips when the video is reversed, plus how often each direction is matched correctly.
- with `chat`: the chat model answers `question` for both directions; the fraction of answers that
  change, and the accuracy against `answer` / `reversed_answer` where given.

Input (`--data`): a folder (every video in it, cosine only) or a JSONL file, one object per line:
`{"video": path, "caption": ..., "reversed_caption": ..., "question": ..., "answer": ...,
"reversed_answer": ...}`; only "video" is required; paths are relative to `--data-root`
(default: the JSONL's folder).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from stanchat.errors import StanchatError
from stanchat.eval.common import Annotation
from stanchat.eval.config import ReverseConfig, SCORING_MODES, check_choice
from stanchat.eval.features import Clip
from stanchat.eval.report import markdown_table, write_report

logger = logging.getLogger(__name__)

OPTIONAL_FIELDS = ("caption", "reversed_caption", "question", "answer", "reversed_answer")


@dataclass
class ProbeItem:
    clip: Clip
    fields: dict  # the optional fields present for this video


def read_probe_items(data: Path, data_root: Path | None) -> tuple[list[ProbeItem], list[str], Path]:
    """(items whose video exists, missing video paths, annotation file or folder)."""
    from stanchat.datasets import VIDEO_EXTENSIONS

    data = Path(data).expanduser()
    if data.is_dir():
        videos = sorted(p for p in data.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())
        if not videos:
            raise StanchatError(f"{data} holds no videos ({', '.join(VIDEO_EXTENSIONS)}); pass a folder of videos or a JSONL file")
        return [ProbeItem(Clip(p), {}) for p in videos], [], data
    if not data.is_file():
        raise StanchatError(f"--data {data} does not exist; pass a folder of videos or a JSONL file")
    root = Path(data_root).expanduser() if data_root is not None else data.parent
    items, missing = [], []
    for number, line in enumerate(data.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        entry = _entry(data, number, line)
        path = root / entry["video"]
        if not path.is_file():
            missing.append(str(path))
            continue
        items.append(ProbeItem(Clip(path), {k: str(entry[k]) for k in OPTIONAL_FIELDS if k in entry}))
    if not items:
        raise StanchatError(f"none of the videos named in {data} exist under {root}; check --data-root")
    return items, missing, data


def _entry(data: Path, number: int, line: str) -> dict:
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as err:
        raise StanchatError(f"{data} line {number} is not valid JSON ({err.msg})") from None
    if not isinstance(entry, dict) or "video" not in entry:
        raise StanchatError(f"{data} line {number}: expected an object with a \"video\" path")
    unknown = set(entry) - {"video", *OPTIONAL_FIELDS}
    if unknown:
        raise StanchatError(f"{data} line {number}: unknown fields {sorted(unknown)}; known: video, {', '.join(OPTIONAL_FIELDS)}")
    return entry


def direction_cosines(forward: "torch.Tensor", backward: "torch.Tensor") -> np.ndarray:
    """Cosine of frame-mean features, forward (N, T, P) vs reversed (N, T, P) -> (N,)."""
    import torch.nn.functional as F

    return F.cosine_similarity(forward.float().mean(dim=1), backward.float().mean(dim=1), dim=-1).numpy()


def caption_flips(s_fwd: np.ndarray, s_rev: np.ndarray) -> dict:
    """Ranking flips between a caption (column 0) and its reversed twin (column 1).

    s_fwd, s_rev: (N, 2) scores of [caption, reversed_caption] against the forward / reversed clip.
    A flip: the caption wins for one direction and the twin for the other (a tie is no preference,
    so never a flip). forward_correct: the caption beats its twin on the forward clip;
    reversed_correct: the twin beats the caption on the reversed clip.
    """
    pref_fwd = np.sign(s_fwd[:, 0] - s_fwd[:, 1])  # +1: caption preferred
    pref_rev = np.sign(s_rev[:, 0] - s_rev[:, 1])
    flipped = (pref_fwd * pref_rev) < 0
    return {"pairs": int(len(s_fwd)), "flip_fraction": float(flipped.mean()),
            "forward_correct": float((pref_fwd > 0).mean()), "reversed_correct": float((pref_rev < 0).mean())}


def run_reverse(cfg: ReverseConfig) -> dict:
    """Run the probe; writes reverse.{json,md,png} to `cfg.out` and returns the results (on the main
    process; the others help encode and return {})."""
    from stanchat.eval.features import process_state
    from stanchat.eval.model import check_tokens, describe, load_eval_model
    from stanchat.eval.views import video_features

    check_choice("scoring", cfg.scoring, SCORING_MODES)
    items, missing, source = read_probe_items(cfg.data, cfg.data_root)
    evm = load_eval_model(cfg.model, cfg.device)
    cfg = replace(cfg, tokens=check_tokens(evm.model, cfg.tokens))  # None: the model's default, recorded
    annotation = Annotation(items, [], [i.clip for i in items], list(range(len(items))), source)
    forward = video_features(evm, cfg, annotation, frames=cfg.frames)
    backward = video_features(evm, cfg, annotation, frames=cfg.frames, reverse=True)
    if not process_state().is_main_process:  # the features are gathered; the main process does the rest
        return {}
    back_row = {k: i for i, k in enumerate(backward.keys)}
    kept = [(i, k) for i, k in enumerate(forward.keys) if k in back_row]  # decoded both ways (normally all)
    keys = [k for _, k in kept]
    fwd = forward.features[[i for i, _ in kept], 0]  # (N, V=1, T, P) -> (N, T, P)
    bwd = backward.features[[back_row[k] for k in keys], 0]
    cosines = direction_cosines(fwd, bwd)
    by_key = {item.clip.key: item for item in items}
    results = {
        "task": "reverse",
        "metrics": {"mean_cosine": float(cosines.mean()), "min_cosine": float(cosines.min()),
                    "videos": len(keys)},
        "captions": _caption_probe(evm, cfg, [by_key[k] for k in keys], fwd, bwd),
        "chat": _chat_probe(cfg, [by_key[k] for k in keys]) if cfg.chat else None,
        "per_video": [{"video": k, "cosine": float(c)} for k, c in zip(keys, cosines)],
        "model": describe(evm),
        "settings": {k: v for k, v in asdict(cfg).items() if k not in ("data", "out", "model")},
        "dataset": {"data": str(source), "counts": {"videos": len(items) + len(missing), "encoded": len(keys),
                                                     "videos_missing": len(missing),
                                                     "videos_undecodable": len(forward.failed)},
                    "skipped": {"missing": missing, "undecodable": forward.failed}},
    }
    write_report(cfg.out, "reverse", results, reverse_markdown(results), lambda fig: plot_cosines(fig, results))
    return results


def _caption_probe(evm, cfg: ReverseConfig, items: list[ProbeItem], fwd, bwd) -> dict | None:
    """Caption-vs-twin scores for forward and reversed clips, for items that have both captions."""
    import torch

    from stanchat.eval.model import TextFeatures, encode_texts, score

    rows = [i for i, item in enumerate(items) if {"caption", "reversed_caption"} <= set(item.fields)]
    if not rows:
        return None
    texts = [t for i in rows for t in (items[i].fields["caption"], items[i].fields["reversed_caption"])]
    text = encode_texts(evm, texts, cfg.tokens)
    scores = []
    for k, i in enumerate(rows):  # each video against its own two captions only
        pair = TextFeatures(text.tokens[2 * k:2 * k + 2], text.pooled[2 * k:2 * k + 2], text.mask[2 * k:2 * k + 2])
        both = torch.stack([fwd[i], bwd[i]])  # (2 clips, T, P): forward, reversed
        scores.append(score(evm, pair, both, cfg.scoring).T.numpy())  # (2 texts, 2 clips) -> (clip, text)
    scores = np.stack(scores)  # (N, clip, text)
    return caption_flips(scores[:, 0], scores[:, 1])


def _load_chat(cfg: ReverseConfig):
    """The chat model for `--chat`: a preset (optionally with --llava), or --llava + a STAN directory."""
    import stanchat
    from stanchat.eval.model import resolve_model

    directory, _ = resolve_model(cfg.model)
    if not Path(cfg.model).expanduser().is_dir():  # a preset: its own LLaVA unless --llava overrides it
        return stanchat.load(cfg.model, llava=cfg.llava, device=cfg.device)
    if cfg.llava is None:
        raise StanchatError("--chat with a VideoCLIP directory as --model needs --llava DIR (the chat LLM)")
    return stanchat.load(llava=cfg.llava, stan=directory, device=cfg.device)


def _chat_probe(cfg: ReverseConfig, items: list[ProbeItem]) -> dict | None:
    """Ask each item's question about the forward and the reversed clip."""
    from dataclasses import replace

    from tqdm.auto import tqdm

    from stanchat.eval.videoqa import contains, normalize_answer
    from stanchat.video import load_video

    asked = [item for item in items if "question" in item.fields]
    if not asked:
        return None
    chat = _load_chat(cfg)
    answers = []
    for item in tqdm(asked, desc="asking both ways", unit="video"):
        clip = load_video(item.clip.path, frames=cfg.frames, start=item.clip.start, end=item.clip.end)
        backwards = replace(clip, frames=clip.frames[::-1].copy(), timestamps=clip.timestamps[::-1],
                            indices=clip.indices[::-1])
        pair = [chat.ask(c, item.fields["question"], frames=cfg.frames, temporal=cfg.temporal,
                         max_new_tokens=cfg.max_new_tokens, temperature=0.0).text for c in (clip, backwards)]
        answers.append({"video": item.clip.key, "question": item.fields["question"], "forward": pair[0],
                        "reversed": pair[1], "expected": item.fields.get("answer"),
                        "expected_reversed": item.fields.get("reversed_answer")})
    return {"questions": len(answers), "model": chat.name, "temporal": cfg.temporal,
            "changed_fraction": float(np.mean([normalize_answer(a["forward"]) != normalize_answer(a["reversed"])
                                               for a in answers])),
            "forward_accuracy": _accuracy(answers, "forward", "expected", contains),
            "reversed_accuracy": _accuracy(answers, "reversed", "expected_reversed", contains),
            "answers": answers}


def _accuracy(answers: list[dict], said: str, expected: str, match) -> float | None:
    scored = [match(a[said], a[expected]) for a in answers if a[expected] is not None]
    return float(np.mean(scored)) if scored else None


def reverse_markdown(results: dict) -> str:
    m, s = results["metrics"], results["settings"]
    lines = [f"## Time-reversal probe ({m['videos']} videos)\n",
             f"model `{results['model']['name']}`, {s['frames']} frames, scoring {s['scoring']}\n"]
    rows = [["mean cosine forward vs reversed (1.0 = blind to time)", m["mean_cosine"]]]
    if results["captions"]:
        c = results["captions"]
        rows += [["caption ranking flips on reversal", c["flip_fraction"]],
                 ["caption beats its twin, forward clip", c["forward_correct"]],
                 ["twin beats the caption, reversed clip", c["reversed_correct"]]]
    if results["chat"]:
        c = results["chat"]
        rows.append(["chat answers that change on reversal", c["changed_fraction"]])
        rows += [[f"chat accuracy, {k}", c[f"{k}_accuracy"]] for k in ("forward", "reversed")
                 if c[f"{k}_accuracy"] is not None]
    return "\n".join(lines) + "\n" + markdown_table(["measure", "value"], [[r[0], f"{r[1]:.4f}"] for r in rows])


def plot_cosines(figure, results: dict) -> None:
    cosines = [v["cosine"] for v in results["per_video"]]
    ax = figure.subplots()
    low = min(cosines)
    ax.hist(cosines, bins=min(30, max(5, len(cosines) // 3)), range=(low - 0.05 * (1.0 - low) - 1e-6, 1.0))
    ax.axvline(results["metrics"]["mean_cosine"], color="black", linestyle="--", label="mean")
    ax.set_xlabel("cosine(forward, reversed) of frame-mean features")
    ax.set_ylabel("videos")
    ax.set_title("time-reversal probe: 1.0 = blind to frame order")
    ax.legend()
