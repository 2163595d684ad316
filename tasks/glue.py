"""GLUE QQP and MRPC, and the paper's zero-shot transfer between them (Section 6, Table 2).

QQP asks whether two Quora questions are duplicates, MRPC whether two news sentences are
paraphrases: the same decision in different words, with different label words. A prompt trained
on one is evaluated on the other by rewriting its predictions into the other's label words
(`duplicate` <-> `equivalent`, so `not_duplicate` <-> `not_equivalent`) before the metrics.

Registered names (`{p}` is `glue_` or `taskless_glue_`):
  {p}{qqp,mrpc}_v002[_rank_classification]    T5's format; TFDS glue/*:2.0.0
  {p}mrpc_from_qqp_v002, {p}qqp_from_mrpc_v002  validation data of the target task, predictions
                                                read in the source task's label words
  {p}mrpc_from_qqp_zeroshot_v002 (and reverse)  mixture: train on the source, evaluate the target
"""

from __future__ import annotations

import functools

from ptune.tasks import labels, metrics, postprocessors, preprocessors, registry, sources

FIELDS = {"qqp": ("question1", "question2"), "mrpc": ("sentence1", "sentence2")}
METRICS = [metrics.f1_score_with_invalid, metrics.accuracy]
# (source, target) -> rewrite of the source's label words into the target's.
TRANSLATIONS = {
    ("qqp", "mrpc"): {"duplicate": "equivalent"},
    ("mrpc", "qqp"): {"equivalent": "duplicate"},
}
PREFIXES = {"glue_": True, "taskless_glue_": False}


def _source(config: str, splits=None) -> sources.TaskSource:
    return sources.TaskSource(f"glue/{config}:2.0.0", splits=splits)


def _steps(name: str, config: str, with_task_word: bool) -> list:
    return [
        functools.partial(
            preprocessors.check_fields,
            task_name=name,
            fields=(*FIELDS[config], "label", "idx"),
        ),
        functools.partial(
            preprocessors.glue,
            prefix=config if with_task_word else None,
            label_names=labels.GLUE[config],
            feature_names=FIELDS[config],
        ),
    ]


def register() -> None:
    for prefix, with_word in PREFIXES.items():
        for config, label_names in labels.GLUE.items():
            name = f"{prefix}{config}_v002"
            registry.add_t5_task(
                name,
                source=_source(config),
                text_preprocessors=_steps(name, config, with_word),
                postprocess_fn=postprocessors.class_id(label_names),
                metric_fns=METRICS,
                label_names=label_names,
            )
            registry.add_t5_task(
                f"{name}_rank_classification",
                source=_source(config),
                text_preprocessors=[
                    *_steps(f"{name}_rank_classification", config, with_word),
                    functools.partial(preprocessors.rank_classification, label_names=label_names),
                ],
                postprocess_fn=postprocessors.rank_classification,
                metric_fns=[metrics.rank_classification_metric(len(label_names))],
                label_names=label_names,
            )
        for (src, tgt), mapping in TRANSLATIONS.items():
            name = f"{prefix}{tgt}_from_{src}_v002"
            registry.add_t5_task(
                name,
                source=_source(tgt, splits={"validation": "validation"}),
                text_preprocessors=_steps(name, tgt, with_word),
                postprocess_fn=postprocessors.relabel(
                    mapping, postprocessors.class_id(labels.GLUE[tgt])
                ),
                metric_fns=METRICS,
                label_names=labels.GLUE[src],  # what the model is asked to generate.
            )
            registry.add_mixture(
                f"{prefix}{tgt}_from_{src}_zeroshot_v002",
                [f"{prefix}{src}_v002", name],
                default_rate=1.0,
            )


register()
