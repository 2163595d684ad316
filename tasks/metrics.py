"""Metrics with T5's definitions (`t5.evaluation.metrics`), in plain Python and NumPy.

Every metric takes `(targets, predictions)` (or `(targets, scores)` for rank classification),
lists of what the postprocessors return, and gives a dict of percentages (0-100). Invalid
predictions arrive as -1 and count as wrong. No scikit-learn: its F1 edge cases (a class never
predicted and never true scores 0) and its multiclass Matthews correlation are reproduced
explicitly; correlations come from scipy, as in T5.
"""

from __future__ import annotations

import collections
import itertools
import re
import string
from collections.abc import Callable, Sequence

import numpy as np
import scipy.stats


def accuracy(targets, predictions) -> dict:
    return {"accuracy": 100.0 * float(np.mean([t == p for t, p in zip(targets, predictions)]))}


def _f1(tp: float, fp: float, fn: float) -> float:
    denominator = 2 * tp + fp + fn
    return 2 * tp / denominator if denominator else 0.0


def _class_f1(targets, predictions, cls: int, weights=None) -> float:
    t = np.asarray(targets) == cls
    p = np.asarray(predictions) == cls
    w = np.ones(len(t)) if weights is None else np.asarray(weights, dtype=float)
    return _f1(np.sum(w * (t & p)), np.sum(w * (~t & p)), np.sum(w * (t & ~p)))


def matthews_corrcoef(targets, predictions) -> dict:
    """Matthews correlation x 100 (CoLA), as T5 computes it with scikit-learn.

    Every distinct value is a class, so an invalid prediction (-1) is a third class; with K
    classes this is the multiclass form (Gorodkin's R_K) over the confusion matrix C:
    (c * s - t.p) / sqrt((s^2 - p.p) (s^2 - t.t)), where c = trace(C), s = examples,
    t and p the true and predicted class counts; 0 when either factor under the root is 0
    (one class only).
    """
    classes = sorted(set(targets) | set(predictions))
    index = {c: i for i, c in enumerate(classes)}
    confusion = np.zeros((len(classes), len(classes)))
    for t, p in zip(targets, predictions):
        confusion[index[t], index[p]] += 1
    true_counts, predicted_counts = confusion.sum(axis=1), confusion.sum(axis=0)
    n = confusion.sum()
    covariance = np.trace(confusion) * n - true_counts @ predicted_counts
    spread = (n**2 - predicted_counts @ predicted_counts) * (n**2 - true_counts @ true_counts)
    value = covariance / np.sqrt(spread) if spread else 0.0
    return {"matthews_corrcoef": 100.0 * float(value)}


def _correlation(statistic: Callable, targets, predictions) -> float:
    """100 x `statistic(targets, predictions)[0]`; NaN for fewer than two pairs, where scipy
    (and so T5) raises: a tiny evaluation must still report, not crash. Constant inputs give
    NaN as in T5."""
    if len(targets) < 2:
        return float("nan")
    return 100.0 * float(statistic(targets, predictions)[0])


def pearson_corrcoef(targets, predictions) -> dict:
    """Pearson's r x 100 (STS-B), via scipy as in T5; unparseable outputs arrive as -1."""
    return {"pearson_corrcoef": _correlation(scipy.stats.pearsonr, targets, predictions)}


def spearman_corrcoef(targets, predictions) -> dict:
    """Spearman's rank correlation x 100 (STS-B; ties share their mean rank), via scipy."""
    return {"spearman_corrcoef": _correlation(scipy.stats.spearmanr, targets, predictions)}


def mean_multiclass_f1(num_classes: int) -> Callable:
    """Unweighted mean over classes 0..num_classes-1 of each class's F1 (CB: 3 classes).

    A prediction outside the classes (-1) is a miss for its true class and a false positive for
    none, as with scikit-learn's `fbeta_score(labels=range(n), average="macro")`.
    """

    def mean_f1(targets, predictions):
        f1s = [_class_f1(targets, predictions, c) for c in range(num_classes)]
        return {f"mean_{num_classes}class_f1": 100.0 * float(np.mean(f1s))}

    return mean_f1


def f1_score_with_invalid(targets, predictions) -> dict:
    """Binary F1 of class 1, where any prediction other than 0 or 1 is counted as the wrong one."""
    targets = np.asarray(targets)
    predictions = np.asarray(predictions).copy()
    invalid = (predictions != 0) & (predictions != 1)
    predictions[invalid] = 1 - targets[invalid]
    return {"f1": 100.0 * _class_f1(targets, predictions, 1)}


def multirc_f1_over_all_answers(targets, predictions) -> dict:
    """MultiRC's F1a: binary F1 over every answer option of every question."""
    return f1_score_with_invalid([t["value"] for t in targets], [p["value"] for p in predictions])


def all_match(targets, predictions) -> dict:
    """100 if every prediction equals its target, else 0 (one question's answers, for EM)."""
    return {"exact_match": 100.0 * float(np.array_equal(targets, predictions))}


def mean_group_metric(metric_fn: Callable, group_key="group", value_key="value") -> Callable:
    """Averages `metric_fn` computed separately on each group of results (MultiRC's per-question
    exact match). Groups are keyed by `target[group_key]`; values are `[value_key]`."""

    def grouped(targets, predictions):
        groups = collections.defaultdict(lambda: ([], []))
        for target, prediction in zip(targets, predictions):
            group = groups[target[group_key]]
            group[0].append(target[value_key])
            group[1].append(prediction[value_key])
        scores = collections.defaultdict(list)
        for group_targets, group_predictions in groups.values():
            for name, value in metric_fn(group_targets, group_predictions).items():
                scores[name].append(value)
        return {name: float(np.mean(values)) for name, values in scores.items()}

    return grouped


def deduplicate_metric(metric_fn: Callable, group_key="group", value_key="value") -> Callable:
    """Applies `metric_fn` to the first example of each group only (ReCoRD repeats each query
    once per gold answer; evaluation must count it once)."""

    def deduplicated(targets, predictions):
        seen = set()
        kept_targets, kept_predictions = [], []
        for target, prediction in zip(targets, predictions):
            if target[group_key] in seen:
                continue
            seen.add(target[group_key])
            kept_targets.append(target[value_key])
            kept_predictions.append(prediction[value_key])
        return metric_fn(kept_targets, kept_predictions)

    return deduplicated


# ----------------------------------------------------------------------------------------------
# SQuAD-style EM / F1


def normalize_squad(text: str) -> str:
    """The official SQuAD v1.1 normalisation: lower case, drop ASCII punctuation, drop the
    articles a/an/the, collapse whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _token_f1(target: str, prediction: str) -> float:
    prediction_tokens, target_tokens = prediction.split(), target.split()
    common = collections.Counter(prediction_tokens) & collections.Counter(target_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(prediction_tokens), same / len(target_tokens)
    return 2 * precision * recall / (precision + recall)


def squad(targets: Sequence[Sequence[str]], predictions: Sequence[str]) -> dict:
    """Exact match and token F1, each the maximum over an example's gold answers, averaged.

    An example with no gold answer (unlabelled test data) scores 0.
    """
    em, f1 = [], []
    for answers, prediction in zip(targets, predictions):
        prediction = normalize_squad(prediction)
        answers = [normalize_squad(a) for a in answers]
        em.append(max((float(a == prediction) for a in answers), default=0.0))
        f1.append(max((_token_f1(a, prediction) for a in answers), default=0.0))
    return {"em": 100.0 * float(np.mean(em)), "f1": 100.0 * float(np.mean(f1))}


record = deduplicate_metric(squad)
record.__doc__ = "ReCoRD: SQuAD EM/F1, max over all gold answers, one copy of each query."


# ----------------------------------------------------------------------------------------------
# Rank classification


def rank_classification(targets, scores, num_classes: int | None = None) -> dict:
    """Accuracy (and F1) of picking, per example, the candidate with the highest score.

    `targets` are (idx=(example, candidate), is_correct, weight, target length) tuples from
    `postprocessors.rank_classification`, in any order; `scores` the model's log-likelihoods of
    each candidate. With several correct candidates, picking any of them is right. With a fixed
    `num_classes`, adds F1 of class 1 (two classes) or mean per-class F1 (more), as T5 does;
    T5's AUC scores are left out (they need scikit-learn).
    """
    rows = sorted(zip(targets, scores), key=lambda r: tuple(r[0][0]))
    correct, total = 0.0, 0.0
    true_classes, predicted_classes, weights = [], [], []
    for _, group in itertools.groupby(rows, key=lambda r: r[0][0][0]):
        group = list(group)
        best = int(np.argmax([score for _, score in group]))
        weight = group[best][0][2]
        correct += weight * float(group[best][0][1])
        total += weight
        truth = [i for i, (t, _) in enumerate(group) if t[1]]
        true_classes.append(truth[0] if truth else -1)
        predicted_classes.append(best)
        weights.append(weight)
    out = {"accuracy": 100.0 * correct / total if total else 0.0}
    if num_classes == 2:
        out["f1"] = 100.0 * _class_f1(true_classes, predicted_classes, 1, weights)
    elif num_classes and num_classes > 2:
        f1s = [_class_f1(true_classes, predicted_classes, c, weights) for c in range(num_classes)]
        out[f"mean_{num_classes}class_f1"] = 100.0 * float(np.mean(f1s))
    return out


def rank_classification_metric(num_classes: int | None) -> Callable:
    """`rank_classification` with `num_classes` bound, keeping seqio's `(targets, scores)`
    signature, which is how seqio knows to score rather than decode."""

    def metric(targets, scores):
        return rank_classification(targets, scores, num_classes=num_classes)

    return metric
