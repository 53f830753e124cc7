"""Zero-shot text-video retrieval: R@1/5/10, MdR, MnR in both directions.

Protocol (CLIP4Clip's, which Mug-STAN reports): every caption of the test set against every video.
Text-to-video ranks the videos for each caption; video-to-text ranks the captions for each video,
where a video with several captions counts its best-ranked one. MSR-VTT 1k-A (the JSFUSION test
list: 1,000 videos, one caption each) uses 12 frames and 32 text tokens; DiDeMo is paragraph
retrieval (a video's descriptions joined into one text); LSMDC uses its 1,000-clip public test.
Scores are mean-pooled cosines or Mug (`--scoring mug`); optional dual-softmax re-ranking (DSL)
is applied to each direction and flagged in the results, which keep the plain numbers beside it.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, replace
import numpy as np

from stanchat.eval import metrics
from stanchat.eval.common import dataset_summary, keep_encoded, read_annotation
from stanchat.eval.config import RetrievalConfig, SCORING_MODES, TIE_RULES, check_choice
from stanchat.eval.report import markdown_table, write_report

logger = logging.getLogger(__name__)

CURVE_MAX_K = 50  # the recall plot's last K


def run_retrieval(cfg: RetrievalConfig) -> dict:
    """Evaluate `cfg.model` on `cfg.dataset`; writes retrieval.{json,md,png} to `cfg.out` and returns
    the results dict (on the main process; the others help encode and return {})."""
    from stanchat.eval.features import process_state
    from stanchat.eval.model import check_tokens, describe, encode_texts, load_eval_model, score
    from stanchat.eval.views import video_features

    check_choice("scoring", cfg.scoring, SCORING_MODES)
    check_choice("ties", cfg.ties, TIE_RULES)
    annotation = read_annotation(cfg, "retrieval")
    evm = load_eval_model(cfg.model, cfg.device)
    cfg = replace(cfg, tokens=check_tokens(evm.model, cfg.tokens))  # None: the model's default, recorded
    feats = video_features(evm, cfg, annotation, frames=cfg.frames)
    if not process_state().is_main_process:  # the features are gathered; the main process does the rest
        return {}
    records, rows = keep_encoded(annotation, feats)
    texts = encode_texts(evm, [r.text for r in records], cfg.tokens)
    used = sorted(set(rows))  # encoded videos that still have a caption
    column = {row: j for j, row in enumerate(used)}
    video_frames = feats.features[used, 0]  # (Nv, V=1, T, P) -> (Nv, T, P)
    scores = score(evm, texts, video_frames, cfg.scoring, cfg.chunk_size).numpy()  # (Nt, Nv)
    positives = np.zeros(scores.shape, dtype=bool)
    positives[np.arange(len(records)), [column[r] for r in rows]] = True
    results = {
        "task": "retrieval",
        "metrics": score_both_directions(scores, positives, cfg),
        "model": describe(evm),
        "settings": {k: v for k, v in asdict(cfg).items() if k not in ("dataset", "data_root", "ann", "out", "model")},
        "dataset": dataset_summary(cfg, annotation, feats, {"texts": len(records), "videos": len(used)}),
    }
    write_report(cfg.out, "retrieval", results, retrieval_markdown(results),
                 lambda fig: plot_recall(fig, results))
    return results


def score_both_directions(scores: np.ndarray, positives: np.ndarray, cfg: RetrievalConfig) -> dict:
    """Metrics and recall curves for text-to-video (rows) and video-to-text (columns).

    With DSL, the headline numbers are re-ranked and the plain ones are kept under "plain"."""
    out: dict = {"dual_softmax": cfg.dual_softmax, "ties": cfg.ties}
    for name, s, p in (("text_to_video", scores, positives), ("video_to_text", scores.T, positives.T)):
        plain = metrics.ranks_of_positives(s, p, cfg.ties)
        ranks = metrics.ranks_of_positives(metrics.dual_softmax(s, cfg.dsl_temperature), p, cfg.ties) \
            if cfg.dual_softmax else plain
        entry = {**metrics.recall_metrics(ranks), "queries": int(s.shape[0]), "candidates": int(s.shape[1]),
                 "recall_curve": metrics.recall_curve(ranks, min(CURVE_MAX_K, s.shape[1])).round(4).tolist()}
        if cfg.dual_softmax:
            entry["plain"] = metrics.recall_metrics(plain)
        out[name] = entry
    return out


def retrieval_markdown(results: dict) -> str:
    m = results["metrics"]
    dsl = " + dual softmax" if m["dual_softmax"] else ""
    settings = results["settings"]
    title = (f"## Retrieval: {results['dataset']['name']} ({m['text_to_video']['queries']} texts x "
             f"{m['text_to_video']['candidates']} videos)\n\nmodel `{results['model']['name']}`, "
             f"{settings['frames']} frames, {settings['tokens']} tokens, scoring {settings['scoring']}{dsl}, "
             f"ties {m['ties']}\n\n")
    rows = [[name.replace("_", " "), *(m[name][k] for k in ("R@1", "R@5", "R@10", "MdR", "MnR"))]
            for name in ("text_to_video", "video_to_text")]
    skipped = results["dataset"]["counts"]
    note = (f"\nskipped: {skipped['videos_missing']} missing, {skipped['videos_undecodable']} undecodable videos\n")
    return title + markdown_table(["direction", "R@1", "R@5", "R@10", "MdR", "MnR"], rows) + note


def plot_recall(figure, results: dict) -> None:
    ax = figure.subplots()
    for name in ("text_to_video", "video_to_text"):
        curve = results["metrics"][name]["recall_curve"]
        ax.plot(range(1, len(curve) + 1), curve, marker=".", label=name.replace("_", " "))
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("K")
    ax.set_ylabel("R@K (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{results['dataset']['name']}: recall at K ({results['model']['name'][-40:]})")
    ax.grid(alpha=0.3)
    ax.legend()

