"""Registering, listing and looking up ptune's seqio tasks and mixtures.

Registration here replaces an existing entry of the same name instead of raising, so importing
`ptune.tasks` twice (or as both `tasks` and `ptune.tasks`, or after `importlib.reload`) is safe.
Beside each task two facts are recorded that seqio has no place for: its class label strings
(for the prompt's class-label initializer) and its primary metrics (the metric names whose mean
is its score, as T5 and the GLUE/SuperGLUE leaderboards report it, for model selection).
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Mapping, Sequence

import numpy as np
import seqio

from ptune.errors import UserError

_LABELS: dict[str, tuple[str, ...]] = {}
_PRIMARY: dict[str, tuple[str, ...]] = {}
_MEMBERS: dict[str, tuple[str, ...]] = {}  # mixture -> task or mixture names, as given.
_OURS: set[str] = set()


def add_task(
    name: str,
    *,
    primary_metrics: Sequence[str],
    label_names: Sequence[str] | None = None,
    **task_kwargs,
) -> seqio.Task:
    """`seqio.TaskRegistry.add` that overwrites, recording the task's label names (or None) and
    its primary metrics (empty for a task that is never scored: training-only, test-only)."""
    if bool(primary_metrics) != bool(task_kwargs.get("metric_fns")):
        raise ValueError(f"task {name}: primary metrics must be named exactly when it has metrics")
    seqio.TaskRegistry.remove(name)
    task = seqio.TaskRegistry.add(name, **task_kwargs)
    _record(name, label_names)
    _PRIMARY[name] = tuple(primary_metrics)
    return task


def add_variant(name: str, original: str, preprocessors: Sequence) -> seqio.Task:
    """Registers `name`: task `original` with other `preprocessors` (seqio's `Task.replace`),
    and with its records (label names, primary metrics, or their absence) carried over. A
    variant is made on request (prompt design's copies), so `list_tasks(only_ptune=True)`
    leaves it out."""
    seqio.TaskRegistry.remove(name)
    task = seqio.get_mixture_or_task(original).replace(name=name, preprocessors=preprocessors)
    seqio.TaskRegistry.add_provider(name, task)
    _LABELS.pop(name, None)
    if original in _LABELS:
        _LABELS[name] = _LABELS[original]
    if original in _PRIMARY:
        _PRIMARY[name] = _PRIMARY[original]
    return task


def add_mixture(
    name: str, tasks: Sequence, *, default_rate: float | None = None, listed: bool = True
) -> seqio.Mixture:
    """`seqio.MixtureRegistry.add` that overwrites. `tasks` are names or (name, rate) pairs; their
    order is kept for `label_names` and `primary_metrics` (seqio sorts them by name). `listed`
    False: made on request (of `add_variant` tasks), left out of `list_tasks(only_ptune=True)`."""
    seqio.MixtureRegistry.remove(name)
    mixture = seqio.MixtureRegistry.add(name, list(tasks), default_rate=default_rate)
    if listed:
        _record(name, None)
    else:
        _LABELS.pop(name, None)
    _MEMBERS[name] = tuple(t if isinstance(t, str) else t[0] for t in tasks)
    return mixture


def _record(name: str, label_names: Sequence[str] | None) -> None:
    _OURS.add(name)
    _LABELS.pop(name, None)
    if label_names is not None:
        _LABELS[name] = tuple(label_names)


def task_names(name: str) -> list[str]:
    """The tasks of a task (itself) or mixture (its tasks in the order registered, nested
    mixtures expanded, each once)."""
    provider = get_task_or_mixture(name)
    if isinstance(provider, seqio.Task):
        return [name]
    members = _MEMBERS.get(name) or tuple(t.name for t in provider.tasks)
    return list(dict.fromkeys(t for member in members for t in task_names(member)))


def label_names(name: str) -> list[str] | None:
    """The class label strings of a task, in class-index order, or of a mixture: its tasks'
    labels in task order, each string once. None when there are none: free-text targets
    (ReCoRD, WSC's referents, SQuAD) contribute no labels.

    e.g. `label_names("taskless_super_glue_rte_v102") == ["entailment", "not_entailment"]`.
    """
    found = [label for task in task_names(name) for label in _LABELS.get(task, ())]
    return list(dict.fromkeys(found)) or None


def primary_metrics(name: str) -> dict[str, tuple[str, ...]]:
    """{task: names of the metrics whose mean is its score} for a task or each task of a
    mixture, as T5 and the leaderboards report them: BoolQ accuracy, CB mean of macro-F1 and
    accuracy, MultiRC F1a and exact match, ReCoRD F1 and EM, CoLA Matthews correlation, STS-B
    Pearson and Spearman, MRPC/QQP F1 and accuracy, ... Names are keys the task's metric
    functions return. Tasks that are never scored (WSC's training task, the test-only
    diagnostics) are left out, so the result may be empty.
    """
    out = {}
    for task in task_names(name):
        if task not in _PRIMARY:
            raise UserError(f"task {task} was not registered by ptune.tasks: no primary metrics")
        if _PRIMARY[task]:
            out[task] = _PRIMARY[task]
    return out


def primary_score(name: str, results: Mapping[str, Mapping[str, float]]) -> float:
    """The one number to select a prompt by: the mean over the scored tasks of `name` of the
    mean of each task's primary metrics, given evaluation `results` {task: {metric: value}}
    (the GLUE/SuperGLUE leaderboard average). A task absent from `results` was not evaluated
    (seqio skips, with a warning, a mixture's tasks that lack the eval split: DPR, in T5's
    SuperGLUE mixture, has no validation split); a metric missing from an evaluated task is
    an error."""
    scores = []
    for task, metrics in primary_metrics(name).items():
        if task not in results:
            continue
        missing = [m for m in metrics if m not in results[task]]
        if missing:
            raise UserError(f"task {task}: evaluation results lack {', '.join(missing)}")
        scores.append(float(np.mean([results[task][m] for m in metrics])))
    if not scores:
        raise UserError(
            f"{name} has no scored task in these results (its tasks are training-only or "
            "test-only, or lack the eval split)"
        )
    return float(np.mean(scores))


def list_tasks(only_ptune: bool = False, include_mixtures: bool = True) -> list[str]:
    """Sorted names of the registered seqio tasks and (by default) mixtures, for `ptune tasks`.

    `only_ptune` leaves out anything registered by other code in the same process;
    `include_mixtures=False` lists tasks alone (then `list_mixtures()` gives the rest).
    """
    names = set(seqio.TaskRegistry.names())
    if include_mixtures:
        names |= set(seqio.MixtureRegistry.names())
    if only_ptune:
        names &= _OURS
    return sorted(names)


def list_mixtures(only_ptune: bool = False) -> list[str]:
    names = set(seqio.MixtureRegistry.names())
    return sorted(names & _OURS if only_ptune else names)


def get_task_or_mixture(name: str) -> seqio.Task | seqio.Mixture:
    """The registered task or mixture; for an unknown name a one-line `ValueError` that lists
    the closest registered names."""
    if name in seqio.TaskRegistry.names():
        return seqio.TaskRegistry.get(name)
    if name in seqio.MixtureRegistry.names():
        return seqio.MixtureRegistry.get(name)
    known = list_tasks()
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
    hint = f"close matches: {', '.join(close)}" if close else "no close match"
    raise ValueError(
        f"unknown task or mixture {name!r} ({len(known)} registered; {hint}; "
        "`ptune tasks` lists them all)"
    )


# ----------------------------------------------------------------------------------------------
# The one way tasks in this package are built: text steps, then T5's token steps.


def sentinel_name(name: str) -> str:
    """T5's name for the `<extra_id_0>` variant: "_1_sentinel" before a _train/_eval suffix."""
    for suffix in ("_train", "_dev", "_test", "_eval"):
        at = name.find(suffix)
        if at >= 0:
            return name[:at] + "_1_sentinel" + name[at:]
    return name + "_1_sentinel"


def add_t5_task(
    name: str,
    *,
    source: seqio.DataSource,
    text_preprocessors: Sequence,
    primary_metrics: Sequence[str],
    postprocess_fn=None,
    metric_fns: Sequence = (),
    label_names: Sequence[str] | None = None,
    output_features=None,
    with_sentinel: bool = False,
) -> list[str]:
    """Registers `name` (and, with `with_sentinel`, its `_1_sentinel` variant, whose inputs end
    and targets start with `<extra_id_0>`, stripped again before the metrics). Returns the names.

    The token steps are the same for every task: tokenize (keeping `*_pretokenized` strings for
    evaluation), a cache point, then truncation with a count and EOS.
    """
    from ptune.tasks import postprocessors, preprocessors, vocab

    features = output_features or vocab.output_features()
    common = dict(
        label_names=label_names,
        primary_metrics=primary_metrics,
        source=source,
        output_features=features,
        metric_fns=list(metric_fns),
    )
    names = [name]
    add_task(
        name,
        preprocessors=[*text_preprocessors, *preprocessors.t5_token_steps(sentinel=False)],
        postprocess_fn=postprocess_fn,
        **common,
    )
    if with_sentinel:
        names.append(sentinel_name(name))
        add_task(
            names[-1],
            preprocessors=[*text_preprocessors, *preprocessors.t5_token_steps(sentinel=True)],
            postprocess_fn=postprocessors.strip_sentinel(postprocess_fn),
            **common,
        )
    return names


def add_rank_classification_task(
    name: str,
    *,
    source: seqio.DataSource,
    text_preprocessors: Sequence,
    label_names: Sequence[str],
    output_features=None,
) -> None:
    """Registers `name` as T5's rank classification over `label_names`, after
    `text_preprocessors` that format each record as the generative task does (with its class
    index in `label`).

    Training reads only the correct candidate, evaluation scores every candidate: the source
    is wrapped in `sources.SplitTagged` so `preprocessors.rank_classification` knows which.
    Scored by accuracy (and F1), the primary metric being accuracy.
    """
    from ptune.tasks import metrics, postprocessors, preprocessors, sources

    add_t5_task(
        name,
        source=sources.SplitTagged(source),
        text_preprocessors=[
            *text_preprocessors,
            functools.partial(preprocessors.rank_classification, label_names=label_names),
        ],
        postprocess_fn=postprocessors.rank_classification,
        metric_fns=[metrics.rank_classification_metric(len(label_names))],
        primary_metrics=("accuracy",),
        label_names=label_names,
        output_features=output_features,
    )
