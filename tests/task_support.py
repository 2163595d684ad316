"""Helpers shared by the tests/test_tasks_*.py modules (this module holds no tests itself).

Records are injected in memory in TFDS's feature shapes, as seqio's own test utilities do; the
real preprocessors, postprocessors and metrics of each registered task run on them. Nothing is
downloaded. The T5 SentencePiece model comes from ../shared/data; tests that tokenize skip,
saying so, when it is absent.
"""

from __future__ import annotations

import contextlib
import functools

import numpy as np
import seqio
import tensorflow as tf

import ptune.tasks  # noqa: F401  (registers the tasks)
from ptune.tasks import sources


def run(task: str, record: dict, split: str = "validation", **kwargs) -> dict:
    """The single preprocessed example a task makes of one record."""
    return seqio.test_utils.test_preprocessing_single(task, {split: record}, **kwargs)


def run_all(task: str, records, split: str = "validation", **kwargs) -> list[dict]:
    with inject(task, split, records):
        ds = seqio.get_mixture_or_task(task).get_dataset(
            split=split, shuffle=False, use_cached=False, **kwargs
        )
        return list(ds.as_numpy_iterator())


def texts(example: dict) -> tuple[str, str]:
    return example["inputs_pretokenized"].decode(), example["targets_pretokenized"].decode()


@contextlib.contextmanager
def inject(task: str, split: str, records):
    """Serves `records` (dicts in TFDS shapes, possibly several) as `split` of `task`, in place
    of its data source (behind the split tag where the task has one)."""
    datasets = [tf.data.Dataset.from_tensors(r) for r in records]
    dataset = functools.reduce(lambda a, b: a.concatenate(b), datasets)

    def dataset_fn(split, shuffle_files, seed=None):
        return dataset

    provider = seqio.get_mixture_or_task(task)
    saved = provider._source
    source = seqio.FunctionDataSource(dataset_fn, splits=[split])
    # Rank-classification tasks read their source through the split tag; keep it.
    provider._source = (
        sources.SplitTagged(source) if isinstance(saved, sources.SplitTagged) else source
    )
    try:
        yield
    finally:
        provider._source = saved


def evaluate(task: str, records, predictions=None, scores=None, split="validation") -> dict:
    """Runs seqio's Evaluator over `records` with the given model outputs; returns the metrics."""
    with inject(task, split, records):
        evaluator = seqio.Evaluator(
            task,
            feature_converter=seqio.EncDecFeatureConverter(pack=False),
            eval_split=split,
            use_memory_cache=False,
        )
        encode = seqio.get_mixture_or_task(task).output_features["targets"].vocabulary.encode

        def predict_fn(dataset, model_feature_lengths=None):
            # A real model returns [batch, length] ids: EOS-terminated, then padded with 0.
            ids = [encode(p) + [1] for p in predictions or []]
            width = max((len(i) for i in ids), default=0)
            return list(enumerate(np.array([i + [0] * (width - len(i)) for i in ids])))

        def score_fn(dataset, model_feature_lengths=None):
            return list(enumerate(scores or []))

        results = evaluator.evaluate(
            compute_metrics=True, predict_fn=predict_fn, score_fn=score_fn
        )[0].result()
        return results[task]
