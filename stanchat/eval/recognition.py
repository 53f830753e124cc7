"""Zero-shot action recognition from class names: top-1/top-5 and mean class accuracy.

Each class becomes one or more texts: the raw class name by default, or prompt templates such as
"a video of a person {}." (all of them recorded in the results). Scores:
- mean: CLIP's prompt ensemble: the L2-normalised pooled text features of a class's templates are
  averaged and re-normalised, then compared with each video's frame-mean feature by cosine.
- mug / mug-simple: Mug needs per-token features, so each template is scored on its own and the
  class score is the mean over its templates.
Multi-view testing (`clips` x `crops`, e.g. 4 x 3) scores each view and averages the scores per
video, as in the usual Kinetics protocol.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, replace

import numpy as np

from stanchat.eval import metrics
from stanchat.eval.common import dataset_summary, keep_encoded, read_annotation
from stanchat.eval.config import RecognitionConfig, SCORING_MODES, TIE_RULES, check_choice
from stanchat.eval.report import markdown_table, write_report
from stanchat.errors import StanchatError

logger = logging.getLogger(__name__)

def check_templates(templates: tuple[str, ...]) -> tuple[str, ...]:
    """Every template must hold exactly one "{}" for the class name."""
    bad = [t for t in templates if t.count("{}") != 1]
    if not templates or bad:
        raise StanchatError(f"each --template needs exactly one {{}} for the class name, got {bad or 'none'}")
    return tuple(templates)


def run_recognition(cfg: RecognitionConfig) -> dict:
    """Evaluate `cfg.model` zero-shot on `cfg.dataset`; writes recognition.{json,md,png} to `cfg.out` and
    returns the results dict (on the main process; the others help encode and return {})."""
    from stanchat.datasets import class_names
    from stanchat.eval.features import process_state
    from stanchat.eval.model import check_tokens, describe, load_eval_model
    from stanchat.eval.views import video_features

    check_choice("scoring", cfg.scoring, SCORING_MODES)
    check_choice("ties", cfg.ties, TIE_RULES)
    check_templates(cfg.templates)
    annotation = read_annotation(cfg, "recognition")
    classes = class_names(cfg.dataset, cfg.data_root, cfg.ann, cfg.split)
    evm = load_eval_model(cfg.model, cfg.device)
    cfg = replace(cfg, tokens=check_tokens(evm.model, cfg.tokens))  # None: the model's default, recorded
    feats = video_features(evm, cfg, annotation, frames=cfg.frames, clips=cfg.clips, crops=cfg.crops)
    if not process_state().is_main_process:  # the features are gathered; the main process does the rest
        return {}
    records, rows = keep_encoded(annotation, feats)
    scores = class_scores(evm, classes, feats.features[rows], cfg)  # (Nv, C)
    index = {name: i for i, name in enumerate(classes)}
    labels = np.array([index[r.label] for r in records])
    ranks = metrics.classification_ranks(scores, labels, cfg.ties)
    results = {
        "task": "recognition",
        "metrics": {**metrics.classification_metrics(ranks, labels, len(classes)), "ties": cfg.ties},
        "classes": classes,
        "prompts": {"templates": list(cfg.templates), "example": cfg.templates[0].format(classes[0])},
        "model": describe(evm),
        "settings": {k: v for k, v in asdict(cfg).items() if k not in ("dataset", "data_root", "ann", "out", "model")},
        "dataset": dataset_summary(cfg, annotation, feats, {"samples": len(records), "classes": len(classes)}),
    }
    write_report(cfg.out, "recognition", results, recognition_markdown(results),
                 lambda fig: plot_per_class(fig, results))
    return results


def class_scores(evm, classes: list[str], video: "torch.Tensor", cfg: RecognitionConfig) -> np.ndarray:
    """Scores (Nv, C) of videos (Nv, V, T, P) against classes, averaged over views and templates."""
    import torch
    import torch.nn.functional as F

    from stanchat.eval.model import encode_texts

    n_videos, views, frames, width = video.shape
    n_templates = len(cfg.templates)
    prompts = [template.format(name) for name in classes for template in cfg.templates]  # class-major
    text = encode_texts(evm, prompts, cfg.tokens)
    flat = video.reshape(n_videos * views, frames, width).to(evm.device)  # (Nv*V, T, P)
    with torch.inference_mode():
        if cfg.scoring == "mean":
            pooled = F.normalize(text.pooled, dim=-1).reshape(len(classes), n_templates, -1).mean(dim=1)  # (C, P)
            sims = evm.model.similarity((None, pooled.to(evm.device)), None, flat, mode="mean")  # (C, Nv*V)
        else:
            sims = evm.model.similarity((text.tokens.to(evm.device), None), text.mask.to(evm.device), flat,
                                        mode=cfg.scoring, chunk_size=cfg.chunk_size)  # (C*templates, Nv*V)
            sims = sims.reshape(len(classes), n_templates, -1).mean(dim=1)  # (C, Nv*V)
    return sims.reshape(len(classes), n_videos, views).mean(dim=2).T.cpu().numpy()  # (Nv, C)


def recognition_markdown(results: dict) -> str:
    m, settings = results["metrics"], results["settings"]
    counts = results["dataset"]["counts"]
    title = (f"## Zero-shot recognition: {results['dataset']['name']} ({counts['samples']} videos, "
             f"{counts['classes']} classes)\n\nmodel `{results['model']['name']}`, {settings['frames']} frames, "
             f"{settings['clips']} x {settings['crops']} views, scoring {settings['scoring']}, "
             f"templates {results['prompts']['templates']}, ties {m['ties']}\n\n")
    table = markdown_table(["top-1", "top-5", "mean class accuracy"],
                           [[m["top1"], m["top5"], m["mean_class_accuracy"]]])
    note = f"\nskipped: {counts['videos_missing']} missing, {counts['videos_undecodable']} undecodable videos\n"
    return title + table + note


def plot_per_class(figure, results: dict) -> None:
    """Per-class top-1 accuracy: one bar per class when they fit, else the sorted curve."""
    pairs = [(name, acc) for name, acc in zip(results["classes"], results["metrics"]["per_class_top1"])
             if acc is not None]
    pairs.sort(key=lambda pair: pair[1], reverse=True)
    ax = figure.subplots()
    if len(pairs) <= 40:
        ax.barh(range(len(pairs)), [acc for _, acc in pairs])
        ax.set_yticks(range(len(pairs)), [name for name, _ in pairs], fontsize=6)
        ax.invert_yaxis()
        ax.set_xlabel("top-1 accuracy (%)")
        ax.set_xlim(0, 100)
    else:
        ax.plot(range(1, len(pairs) + 1), [acc for _, acc in pairs])
        ax.set_xlabel("class (sorted by accuracy)")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_ylim(0, 100)
    ax.set_title(f"{results['dataset']['name']}: per-class top-1 "
                 f"(mean {results['metrics']['mean_class_accuracy']:.1f}%)")
