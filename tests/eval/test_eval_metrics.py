"""Retrieval and recognition metrics on small matrices whose answers are worked out by hand."""

import numpy as np
import pytest

from stanchat.eval.metrics import (
    classification_metrics, classification_ranks, dual_softmax, ranks_of_positives, recall_curve, recall_metrics,
)


def test_perfect_ranking():
    scores = np.eye(12) + 0.01 * np.arange(12)  # the diagonal wins every row by ~1
    ranks = ranks_of_positives(scores, np.eye(12, dtype=bool))
    assert ranks.tolist() == [1.0] * 12
    assert recall_metrics(ranks) == {"R@1": 100.0, "R@5": 100.0, "R@10": 100.0, "MdR": 1.0, "MnR": 1.0}


def test_reversed_ranking_puts_every_answer_last():
    scores = 1.0 - np.eye(12)  # the correct video scores lowest in every row
    ranks = ranks_of_positives(scores, np.eye(12, dtype=bool))
    assert ranks.tolist() == [12.0] * 12
    assert recall_metrics(ranks) == {"R@1": 0.0, "R@5": 0.0, "R@10": 0.0, "MdR": 12.0, "MnR": 12.0}


def test_staircase_ranks_and_clip4clip_median():
    # every row scores candidate j as j, so query i (answer i) is beaten by the 3 - i larger columns
    scores = np.tile(np.arange(4.0), (4, 1))
    ranks = ranks_of_positives(scores, np.eye(4, dtype=bool))
    assert ranks.tolist() == [4.0, 3.0, 2.0, 1.0]
    metrics = recall_metrics(ranks)
    assert metrics["R@1"] == 25.0 and metrics["R@5"] == 100.0
    assert metrics["MdR"] == 2.0  # median 2.5 -> floor, as CLIP4Clip's floor(median(0-based)) + 1
    assert metrics["MnR"] == 2.5


@pytest.mark.parametrize("ties, expected", [("pessimistic", 2.0), ("optimistic", 1.0), ("mean", 1.5)])
def test_one_tie_with_a_wrong_candidate(ties, expected):
    scores = np.array([[0.5, 0.5, 0.2]])
    positives = np.array([[True, False, False]])
    assert ranks_of_positives(scores, positives, ties).tolist() == [expected]


def test_tie_rules_with_two_tied_correct_candidates():
    # two correct and one wrong candidate share the best score, one wrong candidate scores higher
    scores = np.array([[0.5, 0.5, 0.5, 0.9, 0.1]])
    positives = np.array([[True, True, False, False, False]])
    assert ranks_of_positives(scores, positives, "optimistic").tolist() == [2.0]
    assert ranks_of_positives(scores, positives, "pessimistic").tolist() == [3.0]
    # expected rank of the first of 2 correct among 3 shuffled tied items: 1 + 1 + 1/3
    assert ranks_of_positives(scores, positives, "mean")[0] == pytest.approx(2 + 1 / 3)


def test_constant_scores_never_look_perfect():
    scores = np.zeros((5, 5))
    assert ranks_of_positives(scores, np.eye(5, dtype=bool)).tolist() == [5.0] * 5
    assert ranks_of_positives(scores, np.eye(5, dtype=bool), "mean").tolist() == [3.0] * 5


def test_best_positive_counts_with_several_captions_per_video():
    # video-to-text: video 0 has captions 0 and 2; caption 2 is ranked second, caption 0 last
    scores = np.array([[0.1, 0.9, 0.8, 0.3]])
    positives = np.array([[True, False, True, False]])
    assert ranks_of_positives(scores, positives).tolist() == [2.0]


def test_recall_curve():
    curve = recall_curve([1, 3, 3, 10], max_k=4)
    assert curve.tolist() == [25.0, 25.0, 75.0, 75.0]


def test_dual_softmax_fixes_a_hubness_error():
    # text 1 prefers video 0 (0.8 > 0.7), but video 0 prefers text 0 far more (0.9): the prior
    # from the video side moves text 1 to video 1. Worked by hand at temperature 10:
    # column 0 prior = softmax([9, 8]) = [0.7311, 0.2689]; column 1 = softmax([2, 7]) = [0.0067, 0.9933]
    scores = np.array([[0.9, 0.2], [0.8, 0.7]])
    reranked = dual_softmax(scores, temperature=10.0)
    np.testing.assert_allclose(reranked, [[0.9 * 0.731059, 0.2 * 0.00669285], [0.8 * 0.268941, 0.7 * 0.993307]], rtol=1e-5)
    positives = np.eye(2, dtype=bool)
    assert recall_metrics(ranks_of_positives(scores, positives))["R@1"] == 50.0
    assert recall_metrics(ranks_of_positives(reranked, positives))["R@1"] == 100.0


def test_classification_metrics_by_hand():
    scores = np.array([
        [0.9, 0.1, 0.0],  # label 0: rank 1
        [0.2, 0.1, 0.7],  # label 1: rank 3
        [0.1, 0.5, 0.4],  # label 2: rank 2
        [0.3, 0.3, 0.9],  # label 2: rank 1
    ])
    labels = [0, 1, 2, 2]
    ranks = classification_ranks(scores, labels)
    assert ranks.tolist() == [1.0, 3.0, 2.0, 1.0]
    metrics = classification_metrics(ranks, labels, num_classes=4, ks=(1, 2))
    assert metrics["top1"] == 50.0 and metrics["top2"] == 75.0
    assert metrics["per_class_top1"] == [100.0, 0.0, 50.0, None]  # class 3 has no samples
    assert metrics["mean_class_accuracy"] == 50.0  # (100 + 0 + 50) / 3


@pytest.mark.parametrize("scores, positives, message", [
    (np.zeros((2, 2)), np.zeros((2, 2), dtype=bool), "no correct candidate"),
    (np.full((1, 2), np.nan), np.ones((1, 2), dtype=bool), "NaN"),
    (np.zeros((2, 3)), np.ones((3, 2), dtype=bool), "one shape"),
])
def test_bad_inputs_raise(scores, positives, message):
    with pytest.raises(ValueError, match=message):
        ranks_of_positives(scores, positives)


def test_unknown_tie_rule():
    with pytest.raises(ValueError, match="pessimistic"):
        ranks_of_positives(np.eye(2), np.eye(2, dtype=bool), ties="random")
