"""Everything about a task that can fail without a model, checked before any work (the name,
the feature lengths, the vocabulary, the data files of the splits a run reads), and the
training lengths' truncation, counted and logged before a run starts."""

from __future__ import annotations

import logging
from typing import Mapping, Optional, Sequence

import seqio

from ptune.data import building_dataset, feature_converter, get_task
from ptune.errors import UserError

log = logging.getLogger("ptune")
TRUNCATION_SAMPLE = 1000  # training examples per task read to count truncation


def check_feature_lengths(lengths: Optional[Mapping[str, int]], what: str) -> None:
    """TASK_FEATURE_LENGTHS must give positive `inputs` and `targets` token counts."""
    if lengths is None:
        return
    if not isinstance(lengths, Mapping):
        raise UserError(f"{what} must be a dict like {{'inputs': 512, 'targets': 8}}")
    for key in ("inputs", "targets"):
        value = lengths.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(
                f"{what} needs a positive integer '{key}' length, got {value!r} "
                f"(e.g. {{'inputs': 512, 'targets': 8}})"
            )


def check_task(
    task_name: str,
    feature_lengths: Optional[Mapping[str, int]] = None,
    split: Optional[str] = None,
    splits: Sequence[str] = (),
) -> None:
    """Everything about a task that can fail without a model, checked before any work: the
    name, the feature lengths, the vocabulary files and the data of the splits the run reads
    (`split`, which must exist, and `splits`)."""
    splits = tuple(dict.fromkeys([*([split] if split else []), *splits])) or None
    task = get_task(task_name)
    check_feature_lengths(feature_lengths, "TASK_FEATURE_LENGTHS")
    for feature in task.output_features.values():
        try:
            _ = feature.vocabulary.vocab_size
        except (OSError, ValueError) as e:
            raise UserError(f"task {task_name}: {e}") from e
    from ptune.tasks import preprocessors

    for sub in task.tasks if isinstance(task, seqio.Mixture) else [task]:
        if preprocessors.add_sentinel in getattr(sub, "preprocessors", ()):
            try:
                for feature in sub.output_features.values():
                    preprocessors.sentinel_id(feature.vocabulary)
            except UserError as e:
                raise UserError(f"task {sub.name}: {e}") from e
    from ptune.tasks import sources

    if split is not None and isinstance(task, seqio.Task) and split not in task.splits:
        raise UserError(f"task {task_name} has no split {split!r}; it has {', '.join(task.splits)}")
    sources.check_task_data(task_name, splits)
    from ptune.tasks import pretraining

    if task_name in pretraining.registered() and feature_lengths and split:
        # The objectives check their settings against the lengths and the vocabulary (room
        # for the sentinels, targets long enough) when the pipeline is built: build it now,
        # reading nothing, so a bad setting stops the run before anything is written.
        with building_dataset(task_name):
            seqio.get_dataset(
                task_name,
                task_feature_lengths=dict(feature_lengths),
                dataset_split=split,
                shuffle=False,
                feature_converter=feature_converter(),
            )


def log_truncation(
    task_name: str, feature_lengths: Mapping[str, int], split: str, limit: int = TRUNCATION_SAMPLE
) -> dict[str, dict[str, int]]:
    """Reads the first `limit` examples of `split` of each task (of a mixture: each of its
    tasks with that split) at the training lengths and logs one warning per task whose inputs
    or targets they cut, e.g. labels cut to "positiv" by targets 8. Pretraining corpora are
    skipped: their segments are cut to the lengths by design.
    -> {task: {"inputs": n, "targets": n, "read": n}}"""
    from ptune.tasks import preprocessors, pretraining

    mixture_or_task = get_task(task_name)
    tasks = getattr(mixture_or_task, "tasks", None) or [mixture_or_task]
    out = {}
    for task in tasks:
        # a mixture trains on the tasks that have the split (seqio's rule; WSC's eval-only
        # task has none); corpora are cut to the lengths by design
        if task.name in pretraining.registered() or split not in task.splits:
            continue
        with building_dataset(task.name):
            ds = task.get_dataset(dict(feature_lengths), split=split, shuffle=False)
            read, totals = preprocessors.count_truncated(ds.take(limit))
        cut = {f: totals[f]["examples"] for f in totals}
        out[task.name] = {**cut, "read": read}
        if any(cut.values()):
            log.warning(
                "%s %s: TASK_FEATURE_LENGTHS %s cut the inputs of %d and the targets of %d of "
                "the first %d examples; training sees them cut",
                task.name,
                split,
                dict(feature_lengths),
                cut["inputs"],
                cut["targets"],
                read,
            )
    return out


def check_vocabulary_fits(task_name: str, embedding_rows: int) -> None:
    """A vocabulary larger than the model's embedding table would gather rows that do not
    exist (an IndexError on CPU; silently clamped on accelerators): refuse it up front."""
    for name, feature in get_task(task_name).output_features.items():
        size = int(feature.vocabulary.vocab_size)
        if size > embedding_rows:
            raise UserError(
                f"task {task_name}: its {name} vocabulary has {size} ids but the model's "
                f"embedding has {embedding_rows} rows; use a model (or vocabulary) that fits"
            )
