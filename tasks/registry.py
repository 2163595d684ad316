"""Registering, listing and looking up ptune's seqio tasks and mixtures.

Registration here replaces an existing entry of the same name instead of raising, so importing
`ptune.tasks` twice (or as both `tasks` and `ptune.tasks`, or after `importlib.reload`) is safe.
Each task's class label strings are recorded beside it, for the prompt's class-label initializer.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import seqio

_LABELS: dict[str, tuple[str, ...]] = {}
_OURS: set[str] = set()


def add_task(name: str, *, label_names: Sequence[str] | None = None, **task_kwargs) -> seqio.Task:
    """`seqio.TaskRegistry.add` that overwrites, recording the task's label names (or None)."""
    seqio.TaskRegistry.remove(name)
    task = seqio.TaskRegistry.add(name, **task_kwargs)
    _record(name, label_names)
    return task


def add_mixture(
    name: str, tasks: Sequence, *, default_rate: float | None = None, label_names=None
) -> seqio.Mixture:
    """`seqio.MixtureRegistry.add` that overwrites. `tasks` are names or (name, rate) pairs."""
    seqio.MixtureRegistry.remove(name)
    mixture = seqio.MixtureRegistry.add(name, list(tasks), default_rate=default_rate)
    _record(name, label_names)
    return mixture


def _record(name: str, label_names: Sequence[str] | None) -> None:
    _OURS.add(name)
    _LABELS.pop(name, None)
    if label_names is not None:
        _LABELS[name] = tuple(label_names)


def label_names(name: str) -> list[str] | None:
    """The class label strings of a task or mixture, in class-index order, or None when its
    targets are free text (ReCoRD, WSC's referents, SQuAD) or it mixes different label sets.

    e.g. `label_names("taskless_super_glue_rte_v102") == ["entailment", "not_entailment"]`.
    """
    get_task_or_mixture(name)
    if name in _LABELS:
        return list(_LABELS[name])
    if name in seqio.MixtureRegistry.names():
        sets = {tuple(label_names(t.name) or ()) for t in seqio.MixtureRegistry.get(name).tasks}
        if len(sets) == 1 and () not in sets:
            return list(sets.pop())
    return None


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
    names = [name]
    add_task(
        name,
        label_names=label_names,
        source=source,
        preprocessors=[*text_preprocessors, *preprocessors.t5_token_steps(sentinel=False)],
        output_features=features,
        postprocess_fn=postprocess_fn,
        metric_fns=list(metric_fns),
    )
    if with_sentinel:
        names.append(sentinel_name(name))
        add_task(
            names[-1],
            label_names=label_names,
            source=source,
            preprocessors=[*text_preprocessors, *preprocessors.t5_token_steps(sentinel=True)],
            output_features=features,
            postprocess_fn=postprocessors.strip_sentinel(postprocess_fn),
            metric_fns=list(metric_fns),
        )
    return names
