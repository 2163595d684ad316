"""GLUE in T5's text-to-text format, and the paper's zero-shot transfer between QQP and MRPC.

Registered names (`{p}` is `glue_`, T5's format with the task word first, or `taskless_glue_`,
the paper's setting without it):

  {p}{cola,sst2,mrpc,qqp,stsb,qnli,rte,wnli}_v200    train / validation / test
  {p}mnli_v200                                       train, validation_{matched,mismatched},
                                                     test_{matched,mismatched}
  {p}mnli_matched_v200, {p}mnli_mismatched_v200      validation / test (formatted as MNLI)
  {p}ax_v200                                         the diagnostic, test only (as MNLI)
  {p}{classification task}_v200_rank_classification  scored, not generated
  {p}v200_proportional, {p}mnli_and_dev_v200         T5's mixtures (rates: training-set sizes)
  {p}mrpc_from_qqp_v200, {p}qqp_from_mrpc_v200       validation data of the target task,
                                                     predictions read in the source's label words
  {p}mrpc_from_qqp_zeroshot_v200 (and reverse)       mixture: train on the source, evaluate the
                                                     target

Why "v200" and not T5's "v002": T5's `glue_*_v002` tasks read TFDS `glue/*:1.0.0`, which current
TFDS cannot rebuild; these read `glue/*:2.0.0` (or the official TSV files, `glue_files`), the
version google-research/prompt-tuning also names "v200". TFDS 2.0.0 changed only QQP's source
(the re-hosted file has 3 fewer training pairs); every other config holds the same examples as
1.0.0, so those scores compare directly with T5's v002 numbers.

QQP asks whether two Quora questions are duplicates, MRPC whether two news sentences are
paraphrases: the same decision in different words, with different label words. A prompt trained
on one is evaluated on the other by rewriting its predictions into the other's label words
(`duplicate` <-> `equivalent`, so `not_duplicate` <-> `not_equivalent`) before the metrics.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping

from ptune.tasks import (
    glue_files,
    labels,
    metrics,
    postprocessors,
    preprocessors,
    registry,
    sources,
)

VERSION = "v200"
TFDS_VERSION = "2.0.0"


@dataclasses.dataclass(frozen=True)
class Config:
    """How T5 formats and scores one TFDS `glue` config."""

    word: str  # T5's benchmark word, first in the inputs
    fields: tuple[str, ...]  # input fields in T5's order (sorted names)
    metric_fns: tuple  # T5's metrics
    primary: tuple[str, ...]  # the keys of their results that make the reported score
    splits: Mapping[str, str] | None = None  # seqio split -> TFDS split; None: the usual three


_PAIR = ("sentence1", "sentence2")
_NLI = ("hypothesis", "premise")
_ACCURACY = ((metrics.accuracy,), ("accuracy",))
_F1_ACCURACY = ((metrics.f1_score_with_invalid, metrics.accuracy), ("f1", "accuracy"))
_MNLI_SPLITS = (
    "train",
    "validation_matched",
    "validation_mismatched",
    "test_matched",
    "test_mismatched",
)
_EVAL_SPLITS = {"validation": "validation", "test": "test"}

CONFIGS = {
    "cola": Config("cola", ("sentence",), (metrics.matthews_corrcoef,), ("matthews_corrcoef",)),
    "sst2": Config("sst2", ("sentence",), *_ACCURACY),
    "mrpc": Config("mrpc", _PAIR, *_F1_ACCURACY),
    "qqp": Config("qqp", ("question1", "question2"), *_F1_ACCURACY),
    "stsb": Config(
        "stsb",
        _PAIR,
        (metrics.pearson_corrcoef, metrics.spearman_corrcoef),
        ("pearson_corrcoef", "spearman_corrcoef"),
    ),
    "mnli": Config("mnli", _NLI, *_ACCURACY, splits={s: s for s in _MNLI_SPLITS}),
    "mnli_matched": Config("mnli", _NLI, *_ACCURACY, splits=_EVAL_SPLITS),
    "mnli_mismatched": Config("mnli", _NLI, *_ACCURACY, splits=_EVAL_SPLITS),
    "qnli": Config("qnli", ("question", "sentence"), *_ACCURACY),
    "rte": Config("rte", _PAIR, *_ACCURACY),
    "wnli": Config("wnli", _PAIR, *_ACCURACY),
    "ax": Config("mnli", _NLI, (), (), splits={"test": "test"}),  # labels only on the server.
}

# T5's GLUE mixing rates: training examples per task (0: evaluation only). QQP has 363,846
# training pairs in glue:2.0.0 (T5 counted 363,849 in 1.0.0). WNLI is left out as in T5, which
# trains on WSC and DPR instead.
MIXING_RATES = {
    "cola": 8_551.0,
    "sst2": 67_349.0,
    "mrpc": 3_668.0,
    "qqp": 363_846.0,
    "stsb": 5_749.0,
    "mnli": 392_702.0,
    "qnli": 104_743.0,
    "rte": 2_490.0,
    "mnli_mismatched": 0.0,
    "mnli_matched": 0.0,
    "ax": 0.0,
}

# (source, target) -> rewrite of the source's label words into the target's.
TRANSLATIONS = {
    ("qqp", "mrpc"): {"duplicate": "equivalent"},
    ("mrpc", "qqp"): {"equivalent": "duplicate"},
}
PREFIXES = {"glue_": True, "taskless_glue_": False}  # name prefix -> task word?


def task_name(prefix: str, config: str) -> str:
    return f"{prefix}{config}_{VERSION}"


def source(config: str, splits: Mapping[str, str] | None = None) -> sources.TaskSource:
    return sources.TaskSource(
        f"glue/{config}:{TFDS_VERSION}",
        splits=splits or CONFIGS[config].splits,
        local=glue_files.local_files(config),
    )


def steps(name: str, config: str, with_task_word: bool) -> list:
    """Field check, then T5's formatting: `glue` for classification, `stsb` for STS-B."""
    spec = CONFIGS[config]
    prefix = spec.word if with_task_word else None
    check = functools.partial(
        preprocessors.check_fields, task_name=name, fields=(*spec.fields, "label", "idx")
    )
    if config == "stsb":
        return [check, functools.partial(preprocessors.stsb, prefix=prefix)]
    return [
        check,
        functools.partial(
            preprocessors.glue,
            prefix=prefix,
            label_names=labels.GLUE[config],
            feature_names=spec.fields,
        ),
    ]


def postprocessor(config: str):
    if config == "stsb":
        return postprocessors.string_to_float
    return postprocessors.class_id(labels.GLUE[config])


def _register_config(prefix: str, config: str) -> None:
    spec = CONFIGS[config]
    name = task_name(prefix, config)
    registry.add_t5_task(
        name,
        source=source(config),
        text_preprocessors=steps(name, config, PREFIXES[prefix]),
        postprocess_fn=postprocessor(config),
        metric_fns=spec.metric_fns,
        primary_metrics=spec.primary,
        label_names=labels.GLUE.get(config),
    )
    if config in labels.GLUE and spec.metric_fns:
        rank_name = f"{name}_rank_classification"
        registry.add_rank_classification_task(
            rank_name,
            source=source(config),
            text_preprocessors=steps(rank_name, config, PREFIXES[prefix]),
            label_names=labels.GLUE[config],
        )


def _register_transfer(prefix: str) -> None:
    for (src, tgt), mapping in TRANSLATIONS.items():
        name = f"{prefix}{tgt}_from_{src}_{VERSION}"
        registry.add_t5_task(
            name,
            source=source(tgt, splits={"validation": "validation"}),
            text_preprocessors=steps(name, tgt, PREFIXES[prefix]),
            postprocess_fn=postprocessors.relabel(mapping, postprocessor(tgt)),
            metric_fns=CONFIGS[tgt].metric_fns,
            primary_metrics=CONFIGS[tgt].primary,
            label_names=labels.GLUE[src],  # what the model is asked to generate.
        )
        registry.add_mixture(
            f"{prefix}{tgt}_from_{src}_zeroshot_{VERSION}",
            [task_name(prefix, src), name],
            default_rate=1.0,
        )


def register() -> None:
    for prefix in PREFIXES:
        for config in CONFIGS:
            _register_config(prefix, config)
        _register_transfer(prefix)
        registry.add_mixture(
            f"{prefix}{VERSION}_proportional",
            [(task_name(prefix, config), rate) for config, rate in MIXING_RATES.items()],
        )
        registry.add_mixture(
            f"{prefix}mnli_and_dev_{VERSION}",
            [task_name(prefix, c) for c in ("mnli", "mnli_matched", "mnli_mismatched")],
            default_rate=1.0,
        )


register()
