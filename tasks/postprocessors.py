"""Postprocessors: decoded model output (or the target string plus its example) -> what the
metrics compare, with T5's semantics (`t5.data.postprocessors`).

seqio calls each as `fn(text, example=..., is_target=...)`, where `example` is the preprocessed
record as NumPy values (bytes for strings). A prediction that is not a label name maps to -1 and
simply scores as wrong: generation can produce anything, and evaluation must never crash on it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

from ptune.tasks import labels

SENTINEL = "<extra_id_0>"


def as_text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def string_label_to_class_id(
    label, label_classes: Sequence[str], default: int = -1, **unused_kwargs
) -> int:
    """Index of `label` in `label_classes`; `default` (-1) for anything else."""
    label = as_text(label)
    return list(label_classes).index(label) if label in label_classes else default


def class_id(label_classes: Sequence[str]) -> Callable[..., int]:
    """The postprocessor of a classification task with these label names."""
    return functools.partial(string_label_to_class_id, label_classes=tuple(label_classes))


def multirc(label, example=None, is_target=False) -> dict:
    """{"value": 0/1/-1}, plus for targets the question it belongs to as "group".

    The group is (paragraph idx, question idx): T5 used the question idx alone, which is unique
    across the official release, so results agree there and stay right for any other data.
    """
    out = {"value": string_label_to_class_id(label, labels.SUPER_GLUE["multirc"])}
    if is_target:
        out["group"] = (int(example["idx/paragraph"]), int(example["idx/question"]))
    return out


def record(answer, example=None, is_target=False) -> dict:
    """Predictions: {"value": text}; targets: {"value": all gold answers, "group": (passage, query)}
    so the metric can keep one of the per-answer duplicates of each query."""
    if is_target:
        return {
            "value": [as_text(a) for a in example["answers"]],
            "group": (int(example["idx/passage"]), int(example["idx/query"])),
        }
    return {"value": as_text(answer)}


def qa(answer, example=None, is_target=False):
    """Predictions stay text; targets become the list of all gold answers (SQuAD, MRQA)."""
    if is_target:
        return [as_text(a) for a in example["answers"]]
    return as_text(answer)


_DETERMINERS = frozenset(
    {"a", "an", "few", "her", "his", "each", "every", "many", "much", "my", "our", "some", "that",
     "the", "their", "these", "this", "those", "which", "whose", "your"}
)  # fmt: skip


def _drop_determiners(text: str) -> str:
    return " ".join(w for w in text.strip().lower().split(" ") if w not in _DETERMINERS)


def wsc_simple(prediction, example=None, is_target=False) -> int:
    """1 if the generated referent names the candidate (`targets_pretokenized`), 0 if not, -1 if
    nothing is left of it once case and determiners are dropped ("", "the", "a", ...); the
    target is the label (0/1).

    Why -1: an empty prediction would otherwise score 0, which counts as right on every
    example whose candidate is wrong (label 0); T5 returns -1 so it is always wrong. Matching
    accepts either word set containing the other ("fuzzy bunny" vs "bunny"), but not a
    possessive against a plain noun ("Bob" vs "Bob's hat").
    """
    if is_target:
        return int(example["label"])
    prediction = _drop_determiners(as_text(prediction))
    if not prediction:
        return -1
    referent = _drop_determiners(as_text(example["targets_pretokenized"]))
    if ("'" in prediction) != ("'" in referent):
        return 0
    predicted, wanted = set(prediction.split(" ")), set(referent.split(" "))
    return int(predicted <= wanted or wanted <= predicted)


def string_to_float(text, default: float = -1.0, **unused_kwargs) -> float:
    """The number a regression task's output (STS-B: "3.8") spells; `default` (-1) if none.

    As T5: Python's `float()` of the whole string, so " 3.8" parses and "3.8 out of 5" does not.
    Targets go through the same function, reading back the rounded score the preprocessor wrote.
    """
    try:
        return float(as_text(text))
    except ValueError:
        return default


def rank_classification(score, example=None, is_target=False):
    """Targets: (idx (example, candidate), is_correct, weight, number of target ids); model
    outputs are already scores and pass through."""
    if is_target:
        return (
            tuple(int(i) for i in example["idx"]),
            bool(example["is_correct"]),
            float(example.get("weight", 1.0)),
            len(example["targets"]),
        )
    return score


def strip_sentinel(postprocess_fn: Callable | None) -> Callable:
    """Wraps a postprocessor to drop a leading `<extra_id_0>` first (the `_1_sentinel` tasks)."""

    def strip(text, example=None, is_target=False):
        text = as_text(text)
        if text.startswith(SENTINEL):
            text = text[len(SENTINEL) :].strip()
        if postprocess_fn is None:
            return text
        return postprocess_fn(text, example=example, is_target=is_target)

    return strip


def relabel(mapping: dict[str, str], then: Callable) -> Callable:
    """Rewrites label words before `then`, for zero-shot transfer between label vocabularies
    (a QQP prompt says "duplicate" where MRPC expects "equivalent"). Replacement is by substring,
    so "not_duplicate" becomes "not_equivalent" too."""

    def translate(text, example=None, is_target=False):
        text = as_text(text)
        if not is_target:
            for old, new in mapping.items():
                text = text.replace(old, new)
        return then(text, example=example, is_target=is_target)

    return translate
