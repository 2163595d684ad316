"""SuperGLUE v1.0.2 in T5's text-to-text format, as the paper trains and evaluates it.

Registered names (`{p}` is `super_glue_`, T5's format with the task name first, or
`taskless_super_glue_`, the paper's setting without it):

  {p}{boolq,cb,copa,multirc,record,rte,wic}_v102      train / validation / test
  {p}{axb,axg}_v102                                   test only (RTE-style diagnostics)
  {p}wsc_v102_simple_train, {p}wsc_v102_simple_eval   WSC as referent generation (T5 "simple")
  {p}wsc_v102                                         mixture of the two WSC tasks
  {p}{classification task}_v102_rank_classification   scored, not generated
  dpr_v001_simple, taskless_dpr_v001_simple           DPR, part of T5's SuperGLUE mixture
  ..._1_sentinel variants of every generative task    "<extra_id_0>" setting (T5's names)
  {p}v102_proportional[_sentinel]                     mixtures with T5's example-count rates

Records come from TFDS `super_glue/{config}:1.0.2` or the official JSONL files
(`superglue_files`, when `sources.set_superglue_dir` or `$PTUNE_SUPERGLUE_DIR` names them).
"""

from __future__ import annotations

import functools

from ptune.tasks import (
    labels,
    metrics,
    postprocessors,
    preprocessors,
    registry,
    sources,
    superglue_files,
)

# config -> (T5's benchmark word, input fields in T5's order). AX-b is rekeyed to RTE's fields
# first; all three diagnostics are formatted as RTE.
GLUE_STYLE = {
    "boolq": ("boolq", ("passage", "question")),
    "cb": ("cb", ("hypothesis", "premise")),
    "copa": ("copa", ("choice1", "choice2", "premise", "question")),
    "multirc": ("multirc", ("question", "answer", "paragraph")),
    "rte": ("rte", ("hypothesis", "premise")),
    "wic": ("wic", ("sentence1", "sentence2", "word")),
    "axb": ("rte", ("hypothesis", "premise")),
    "axg": ("rte", ("hypothesis", "premise")),
}

METRICS = {
    "boolq": [metrics.accuracy],
    "cb": [metrics.mean_multiclass_f1(3), metrics.accuracy],
    "copa": [metrics.accuracy],
    "multirc": [
        metrics.multirc_f1_over_all_answers,
        metrics.mean_group_metric(metrics.all_match),
    ],
    "record": [metrics.record],
    "rte": [metrics.accuracy],
    "wic": [metrics.accuracy],
    "axb": [],  # Labels are scored by the SuperGLUE server (Matthews corr., gender parity).
    "axg": [],
}

# The keys of METRICS' results that make each task's leaderboard score (their mean).
PRIMARY = {
    "boolq": ("accuracy",),
    "cb": ("mean_3class_f1", "accuracy"),
    "copa": ("accuracy",),
    "multirc": ("f1", "exact_match"),
    "record": ("f1", "em"),
    "rte": ("accuracy",),
    "wic": ("accuracy",),
    "axb": (),
    "axg": (),
}

# T5's SuperGLUE mixing rates: the number of training examples of each task (0: eval only).
MIXING_RATES = {
    "dpr_v001_simple": 1_322.0,
    "super_glue_wsc_v102_simple_train": 259.0,
    "super_glue_wsc_v102_simple_eval": 0.0,
    "super_glue_boolq_v102": 9_427.0,
    "super_glue_cb_v102": 250.0,
    "super_glue_copa_v102": 400.0,
    "super_glue_multirc_v102": 27_243.0,
    "super_glue_record_v102": 138_854.0,
    "super_glue_rte_v102": 2_490.0,
    "super_glue_wic_v102": 5_428.0,
    "super_glue_axb_v102": 0.0,
    "super_glue_axg_v102": 0.0,
}

PREFIXES = {"super_glue_": True, "taskless_super_glue_": False}  # name prefix -> task word?

# Fields each config's records must have (TFDS shapes), checked before formatting.
REQUIRED = {
    "boolq": ("passage", "question", "label", "idx"),
    "cb": ("hypothesis", "premise", "label", "idx"),
    "copa": ("choice1", "choice2", "premise", "question", "label", "idx"),
    "multirc": (
        "question",
        "answer",
        "paragraph",
        "label",
        "idx/paragraph",
        "idx/question",
        "idx/answer",
    ),
    "record": ("passage", "query", "entities", "answers", "idx/passage", "idx/query"),
    "rte": ("hypothesis", "premise", "label", "idx"),
    "wic": ("sentence1", "sentence2", "word", "label", "idx"),
    "wsc.fixed": ("text", "span1_text", "span2_text", "span2_index", "label", "idx"),
    "axb": ("sentence1", "sentence2", "label", "idx"),
    "axg": ("hypothesis", "premise", "label", "idx"),
}

_AXB_AS_RTE = {"sentence1": "premise", "sentence2": "hypothesis"}


def source(config: str, splits=None) -> sources.TaskSource:
    test_only = config in ("axb", "axg")
    return sources.TaskSource(
        f"super_glue/{config}:1.0.2",
        splits=splits or ({"test": "test"} if test_only else None),
        local=superglue_files.local_files(config),
    )


def _check(name: str, fields) -> functools.partial:
    return functools.partial(preprocessors.check_fields, task_name=name, fields=fields)


def glue_style_steps(name: str, config: str, with_task_word: bool) -> list:
    """Field check, AX-b's rekey, then T5's `glue` formatting for one classification config."""
    word, feature_names = GLUE_STYLE[config]
    steps = [_check(name, REQUIRED[config])]
    if config == "axb":
        steps.append(functools.partial(preprocessors.rename_fields, names=_AXB_AS_RTE))
    steps.append(
        functools.partial(
            preprocessors.glue,
            prefix=word if with_task_word else None,
            label_names=labels.SUPER_GLUE[config],
            feature_names=feature_names,
            multirc=config == "multirc",
        )
    )
    return steps


def _register_classification(prefix: str, config: str) -> None:
    with_word = PREFIXES[prefix]
    name = f"{prefix}{config}_v102"
    label_names = labels.SUPER_GLUE[config]
    postprocess = (
        postprocessors.multirc if config == "multirc" else postprocessors.class_id(label_names)
    )
    registry.add_t5_task(
        name,
        source=source(config),
        text_preprocessors=glue_style_steps(name, config, with_word),
        postprocess_fn=postprocess,
        metric_fns=METRICS[config],
        primary_metrics=PRIMARY[config],
        label_names=label_names,
        with_sentinel=True,
    )
    rank_name = f"{name}_rank_classification"
    registry.add_rank_classification_task(
        rank_name,
        source=source(config),
        text_preprocessors=glue_style_steps(rank_name, config, with_word),
        label_names=label_names,
    )


def _register_record(prefix: str) -> None:
    name = f"{prefix}record_v102"
    registry.add_t5_task(
        name,
        source=source("record"),
        text_preprocessors=[
            _check(name, REQUIRED["record"]),
            functools.partial(preprocessors.record, prefix="record" if PREFIXES[prefix] else None),
        ],
        postprocess_fn=postprocessors.record,
        metric_fns=METRICS["record"],
        primary_metrics=PRIMARY["record"],
        with_sentinel=True,
    )


def _register_wsc(prefix: str) -> None:
    word = "wsc:" if PREFIXES[prefix] else None
    names = []
    for suffix, splits, correct_only in (
        ("train", {"train": "train"}, True),
        ("eval", {"validation": "validation", "test": "test"}, False),
    ):
        name = f"{prefix}wsc_v102_simple_{suffix}"
        names.append(name)
        registry.add_t5_task(
            name,
            source=source("wsc.fixed", splits=splits),
            text_preprocessors=[
                _check(name, REQUIRED["wsc.fixed"]),
                functools.partial(
                    preprocessors.wsc_simple, prefix=word, correct_referent_only=correct_only
                ),
            ],
            postprocess_fn=None if correct_only else postprocessors.wsc_simple,
            metric_fns=[] if correct_only else [metrics.accuracy],
            primary_metrics=() if correct_only else ("accuracy",),
            with_sentinel=True,
        )
    # One name that trains on the train task and evaluates on the eval task.
    registry.add_mixture(f"{prefix}wsc_v102", names, default_rate=1.0)
    registry.add_mixture(
        f"{prefix}wsc_v102_1_sentinel", [registry.sentinel_name(n) for n in names], default_rate=1.0
    )


def _register_dpr(prefix: str) -> None:
    name = "dpr_v001_simple" if PREFIXES[prefix] else "taskless_dpr_v001_simple"
    registry.add_t5_task(
        name,
        source=sources.TaskSource(
            "definite_pronoun_resolution:1.1.0",
            splits={"train": "train", "test": "test"},
            local=superglue_files.dpr_local_files(),
        ),
        text_preprocessors=[
            _check(name, ("sentence", "pronoun", "candidates", "label")),
            functools.partial(
                preprocessors.dpr_simple, prefix="wsc:" if PREFIXES[prefix] else None
            ),
        ],
        metric_fns=[metrics.accuracy],
        primary_metrics=("accuracy",),
        with_sentinel=True,
    )


def _rename(t5_name: str, prefix: str) -> str:
    if t5_name.startswith("super_glue_"):
        return prefix + t5_name[len("super_glue_") :]
    return t5_name if PREFIXES[prefix] else "taskless_" + t5_name


def _register_mixtures(prefix: str) -> None:
    rates = [(_rename(n, prefix), r) for n, r in MIXING_RATES.items()]
    registry.add_mixture(f"{prefix}v102_proportional", rates)
    registry.add_mixture(
        f"{prefix}v102_proportional_sentinel", [(registry.sentinel_name(n), r) for n, r in rates]
    )


def register() -> None:
    for prefix in PREFIXES:
        for config in GLUE_STYLE:
            _register_classification(prefix, config)
        _register_record(prefix)
        _register_wsc(prefix)
        _register_dpr(prefix)
        _register_mixtures(prefix)


register()
