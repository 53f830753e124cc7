"""Retrieval and recognition metrics on score matrices: pure numpy, no model code.

Conventions (the CLIP4Clip ones, made explicit):

- A score matrix is (Q, C): one row per query, one column per candidate, higher is better.
  Text-to-video retrieval passes (N_text, N_video); video-to-text passes its transpose.
- `positives` (Q, C) marks the correct candidates of each query (one or more per row). A query's
  rank is the 1-based rank of its best-scored correct candidate, so rank 1 is a hit at R@1.
- Ties. CLIP4Clip sorts the row and looks up the ground truth, so tied scores are ordered by
  whatever the sort did. stanchat counts ties by a named rule instead, with `better` the number of
  wrong candidates scoring strictly higher than the best correct one and `tied` those scoring
  exactly the same:
    pessimistic (default): rank = 1 + better + tied. Every tie goes against the model, so a model
        that scores everything alike gets the worst rank, never a perfect one.
    optimistic: rank = 1 + better. Every tie goes to the model.
    mean: rank = 1 + better + tied / (m + 1), with m the correct candidates sharing the best score:
        the expected rank when ties are broken uniformly at random.
  The rule is recorded in every results file.
- R@K is the percentage of queries with rank <= K. MdR is floor(median rank) and MnR the mean
  rank, both 1-based: CLIP4Clip's `floor(median(0-based)) + 1` and `mean(0-based) + 1`.
"""

from __future__ import annotations

import numpy as np

from stanchat.eval.config import TIE_RULES
RECALL_KS = (1, 5, 10)


def ranks_of_positives(scores, positives, ties: str = "pessimistic") -> np.ndarray:
    """1-based rank of each query's best correct candidate, float (Q,), ties by `ties` (see module doc).

    Args:
        scores: (Q, C) array-like of finite scores, higher = better.
        positives: (Q, C) bool array-like, True where the candidate is correct; every row needs one.
        ties: "pessimistic", "optimistic" or "mean".
    """
    scores, positives = _check_scores(scores, positives, ties)
    best = np.where(positives, scores, -np.inf).max(axis=1, keepdims=True)  # (Q, 1)
    wrong = ~positives
    better = (wrong & (scores > best)).sum(axis=1)  # (Q,)
    tied = (wrong & (scores == best)).sum(axis=1)  # (Q,)
    if ties == "optimistic":
        return 1.0 + better
    if ties == "pessimistic":
        return 1.0 + better + tied
    tied_correct = (positives & (scores == best)).sum(axis=1)  # m >= 1: the best one itself
    return 1.0 + better + tied / (tied_correct + 1)


def _check_scores(scores, positives, ties: str) -> tuple[np.ndarray, np.ndarray]:
    if ties not in TIE_RULES:
        raise ValueError(f"unknown tie rule {ties!r}; choose one of {', '.join(TIE_RULES)}")
    scores = np.asarray(scores, dtype=np.float64)
    positives = np.asarray(positives, dtype=bool)
    if scores.ndim != 2 or scores.shape != positives.shape:
        raise ValueError(f"scores and positives must be (Q, C) of one shape, got {scores.shape} and {positives.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values")
    empty = np.flatnonzero(~positives.any(axis=1))
    if empty.size:
        raise ValueError(f"queries {empty[:5].tolist()} have no correct candidate")
    return scores, positives


def recall_metrics(ranks, ks: tuple[int, ...] = RECALL_KS) -> dict[str, float]:
    """R@K (percent) for each K, MdR = floor(median rank), MnR = mean rank, from 1-based ranks."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.ndim != 1 or ranks.size == 0:
        raise ValueError(f"ranks must be a non-empty 1-d array, got shape {ranks.shape}")
    metrics = {f"R@{k}": 100.0 * float((ranks <= k).mean()) for k in ks}
    metrics["MdR"] = float(np.floor(np.median(ranks)))
    metrics["MnR"] = float(ranks.mean())
    return metrics


def recall_curve(ranks, max_k: int) -> np.ndarray:
    """R@K in percent for K = 1..max_k, shape (max_k,), for the recall plot."""
    ranks = np.asarray(ranks, dtype=np.float64)
    ks = np.arange(1, max_k + 1)
    return 100.0 * (ranks[None, :] <= ks[:, None]).mean(axis=1)


def dual_softmax(scores, temperature: float = 100.0) -> np.ndarray:
    """Dual-softmax re-ranking (CAMoE's DSL at inference) of a (Q, C) query-by-candidate matrix.

    Each score is multiplied by the softmax over the *queries* (axis 0) of temperature * scores:
    a prior saying how much this candidate prefers this query over the other queries. (A softmax
    over the candidates of the same row would not change the row's order for positive scores;
    the prior has to come from the other direction.) CAMoE's constant factor len(scores) is left
    out: it does not change any ranking. `temperature` multiplies cosine-scale scores; 100 is
    CLIP's logit scale. Returns float64 (Q, C).
    """
    scores = np.asarray(scores, dtype=np.float64)
    logits = temperature * scores
    prior = np.exp(logits - logits.max(axis=0, keepdims=True))  # stable softmax over axis 0
    prior /= prior.sum(axis=0, keepdims=True)
    return scores * prior


def classification_ranks(scores, labels, ties: str = "pessimistic") -> np.ndarray:
    """1-based rank of the true class of each sample: scores (N, classes), integer labels (N,)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if scores.ndim != 2 or labels.shape != (scores.shape[0],):
        raise ValueError(f"scores must be (N, classes) and labels (N,), got {scores.shape} and {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= scores.shape[1]):
        raise ValueError(f"labels must lie in 0..{scores.shape[1] - 1}")
    positives = np.zeros(scores.shape, dtype=bool)
    positives[np.arange(labels.size), labels] = True
    return ranks_of_positives(scores, positives, ties)


def classification_metrics(ranks, labels, num_classes: int, ks: tuple[int, ...] = (1, 5)) -> dict:
    """Top-K accuracy (percent), mean class accuracy (percent, over classes that have samples) and
    the top-1 accuracy of each class (None for classes without samples)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if ranks.shape != labels.shape or ranks.size == 0:
        raise ValueError(f"ranks and labels must be non-empty and of one shape, got {ranks.shape} and {labels.shape}")
    metrics: dict = {f"top{k}": 100.0 * float((ranks <= k).mean()) for k in ks}
    per_class: list[float | None] = []
    for c in range(num_classes):
        hits = ranks[labels == c] <= 1
        per_class.append(100.0 * float(hits.mean()) if hits.size else None)
    present = [acc for acc in per_class if acc is not None]
    metrics["mean_class_accuracy"] = float(np.mean(present))
    metrics["per_class_top1"] = per_class
    return metrics
