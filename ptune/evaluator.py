"""The evaluator: seqio's Evaluator over the model, greedy (or beam) predictions and target
scores. `ptune eval` itself (its configuration and command) is `ptune.evaluation`.

`Evaluation` caches the eval datasets once (seqio does) and is called with the current
parameters; it returns {task: {metric: value}} with the metrics of the T5 library as the
tasks declare them (generation metrics from decoded predictions, rank-classification metrics
from scores). `score` reduces them as the SuperGLUE leaderboard does: each task's primary
metrics are averaged into its score, a mixture's score is the mean over its tasks; that is
what picks the best prompt unless a run names one metric (`ptune.selection.check_metric`).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Optional

import jax
import numpy as np
import seqio

from ptune import atomic, data, task_checks
from ptune import buckets as buckets_lib
from ptune import family as family_lib
from ptune.errors import UserError

log = logging.getLogger("ptune")


class _NoEvaluatorLoggerNotice(logging.Filter):
    """seqio warns on every Evaluator that it has no result loggers: ptune writes the results
    itself (metrics.jsonl, eval/*.json, TensorBoard), so the notice only reads like a fault."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "'logger_cls' is empty" not in str(record.msg)


logging.getLogger("absl").addFilter(_NoEvaluatorLoggerNotice())

PyTree = Any


READ_BATCH = 1024  # eval examples read out of TensorFlow at a time


class Evaluation:
    """Evaluates params on `task_name`'s `split`, in batches of `batch_size`.

    feature_lengths None (the default, as t5x's evaluator) evaluates every example whole: the
    lengths are the longest found in the eval data, rounded up to a power of two so a few
    shapes cover every task. Fixed lengths truncate; how many examples lost tokens is logged.

    progress: a bar over the examples on stderr while the model runs (`model_outputs`),
    cleared when done (so that, during training, it comes and goes below the step bar). None
    (the default) shows it when stderr is a terminal, on the primary process only.
    """

    def __init__(
        self,
        task_name: str,
        feature_lengths: Optional[Mapping[str, int]],
        batch_size: int,
        split: str = "validation",
        buckets: Optional[buckets_lib.LengthBuckets] = None,
        progress: Optional[bool] = None,
    ):
        data.get_task(task_name)
        task_checks.check_feature_lengths(feature_lengths, "eval feature lengths")
        self.task_name = task_name
        self.batch_size = batch_size
        self.split = split
        self.buckets = buckets
        self.progress = progress
        self._examples: dict[str, list] = {}  # task -> its examples, once read
        with data.building_dataset(task_name):
            self._evaluator = seqio.Evaluator(
                task_name,
                feature_converter=data.feature_converter(pack=False),
                eval_split=split,
                sequence_length=dict(feature_lengths) if feature_lengths else None,
                use_memory_cache=True,
            )
        # Ids past the tokenizer's vocabulary (padding rows of the embedding) never decode;
        # its EOS ends a generated row (a decoder-only model's is its tokenizer's).
        targets = [t.output_features["targets"].vocabulary for t in self._evaluator.eval_tasks]
        self.vocab_limit = max(int(v.vocab_size) for v in targets) if targets else None
        self.eos_id = int(targets[0].eos_id) if targets else None
        if feature_lengths:
            self.lengths = dict(feature_lengths)
            self._log_truncation()
        else:
            self.lengths = self._data_lengths()
        self._model_lengths = {
            "encoder_input_tokens": self.lengths["inputs"],
            "decoder_input_tokens": self.lengths["targets"],
            "decoder_target_tokens": self.lengths["targets"],
            "decoder_loss_weights": self.lengths["targets"],
        }

    def _data_lengths(self) -> dict[str, int]:
        """Longest inputs and targets over the eval data, rounded up to a power of two.

        seqio measured them while caching the eval data (without lengths it pads every task's
        examples to the longest of all); its padded shapes say them without a second pass."""
        shapes = self._evaluator.model_feature_shapes
        longest = {
            "inputs": max(shapes["encoder_input_tokens"][0], 1),
            "targets": max(shapes["decoder_target_tokens"][0], 1),
        }
        return {k: 1 << max(v - 1, 0).bit_length() for k, v in longest.items()}

    def _log_truncation(self) -> None:
        from ptune.tasks import preprocessors

        for name, ds in self._evaluator.cached_task_datasets.items():
            total, totals = preprocessors.count_truncated(ds)
            cut = {f: totals[f]["examples"] for f in totals}
            if any(cut.values()):
                log.warning(
                    "%s %s: fixed eval lengths %s truncate the inputs of %d and the targets "
                    "of %d of %d examples (leave the eval lengths unset to evaluate them whole)",
                    name,
                    self.split,
                    self.lengths,
                    cut["inputs"],
                    cut["targets"],
                    total,
                )

    @property
    def has_tasks(self) -> bool:
        return bool(self._evaluator.eval_tasks)

    def _examples_of(self, task_name: str) -> list[tuple[Any, dict[str, np.ndarray]]]:
        """The task's cached eval examples as (index, {feature: ids}) pairs, read out of
        TensorFlow once, `READ_BATCH` at a time, and kept for every later evaluation: read one
        by one, each example cost a TensorFlow call (about 1 ms on a CPU, every evaluation).
        Rows padded with zeros to their read batch's longest, which `data.padded_batches`
        pads or cuts to the evaluation's lengths as it would the example alone."""
        if task_name not in self._examples:
            ds = self._evaluator.cached_model_datasets[task_name]
            rows = []
            for indices, features in ds.padded_batch(READ_BATCH).as_numpy_iterator():
                rows += [(i, {k: v[r] for k, v in features.items()}) for r, i in enumerate(indices)]
            self._examples[task_name] = rows
        return self._examples[task_name]

    def _batches(self, task_name: str):
        return data.padded_batches(
            self._examples_of(task_name), self.batch_size, self._model_lengths, self.buckets
        )

    @property
    def num_examples(self) -> int:
        """Examples over every eval task."""
        return sum(len(self._examples_of(t.name)) for t in self._evaluator.eval_tasks)

    def _progress_bar(self, progress: Optional[bool]):
        import sys

        from tqdm import tqdm

        show = self.progress if progress is None else progress
        if show is None:
            show = sys.stderr.isatty() and jax.process_index() == 0
        return tqdm(
            total=self.num_examples if show else None,
            desc=f"eval {self.split}",
            unit="ex",
            disable=not show,
            leave=False,
            mininterval=1.0,
            dynamic_ncols=True,
        )

    def model_outputs(
        self,
        generate_fn: Callable,
        score_fn: Callable,
        task_arg: bool = False,
        progress: Optional[bool] = None,
    ) -> dict[str, dict]:
        """Runs the model once over every eval task's examples.

        generate_fn(encoder_tokens [b, ls]) -> tokens [b, lt], or for an ensemble
          (per-prompt tokens [N, b, lt], voted token tuples [b]);
        score_fn(encoder_tokens [b, ls], target_tokens [b, lt]) -> scores [b], or for an
          ensemble (per-prompt scores [N, b], mean scores [b]).
        With `task_arg`, both also get the batch's task name as a last argument.
        Only what a task's metrics need is computed. Returns {task: {"predictions": [(index,
        output)], "scores": [(index, output)]}} with the outputs as returned per example.
        `progress` overrides the instance's (see the class docstring) for this call.
        """
        outputs = {}
        with self._progress_bar(progress) as bar:
            for task in self._evaluator.eval_tasks:
                record = {"predictions": [], "scores": []}
                need_predictions = bool(task.predict_metric_fns)
                need_scores = bool(task.score_metric_fns)
                extra = (task.name,) if task_arg else ()
                for indices, batch in self._batches(task.name):
                    tokens = batch["encoder_input_tokens"]
                    if need_predictions:
                        out = generate_fn(tokens, *extra)
                        record["predictions"].extend(zip(indices, _per_example(out, len(indices))))
                    if need_scores:
                        out = score_fn(tokens, batch["decoder_target_tokens"], *extra)
                        record["scores"].extend(zip(indices, _per_example(out, len(indices))))
                    bar.update(len(indices))
                outputs[task.name] = record
        return outputs

    def metrics_from_outputs(
        self, outputs: dict[str, dict], member: Optional[int] = None
    ) -> dict[str, dict[str, float]]:
        """Metrics of precomputed outputs; `member` selects one prompt of an ensemble's
        outputs, None the combined (or only) output."""
        by_dataset = {id(self._evaluator.cached_model_datasets[name]): name for name in outputs}

        def pick(kind):
            def fn(ds, *_):
                rows = outputs[by_dataset[id(ds)]][kind]
                return [(i, _member(o, member)) for i, o in rows]

            return fn

        if not self.has_tasks:
            return {}
        future, _ = self._evaluator.evaluate(
            compute_metrics=True, predict_fn=pick("predictions"), score_fn=pick("scores")
        )
        return {
            task: {k: _to_float(v) for k, v in metrics.items()}
            for task, metrics in future.result().items()
        }

    def __call__(
        self,
        model: Any,
        params: PyTree,
        num_beams: int = 1,
        prompt_index: Optional[Mapping[str, int]] = None,
    ) -> dict[str, dict[str, float]]:
        """Predictions (greedy; with `num_beams` > 1, t5x's beam search with its length penalty,
        alpha 0.6) and target scores of `model` with `params` -> metrics. `prompt_index`
        ({task: k}, multi-task prompts) gives each task's examples its own prompt."""
        targets = self.lengths["targets"]
        if prompt_index is not None:
            missing = [t.name for t in self._evaluator.eval_tasks if t.name not in prompt_index]
            if missing:
                raise UserError(f"the prompt bank has no prompt for {', '.join(missing)}")

        def index_of(tokens, task):
            if task is None:
                return None
            return np.full((tokens.shape[0],), prompt_index[task], np.int32)

        family = family_lib.family_of(model.config)
        decode = family_lib.Decoding(
            num_beams=num_beams, vocab_limit=self.vocab_limit, eos_id=self.eos_id
        )
        if num_beams > 1:
            family_lib.require(family, "beam_search", "eval_num_beams / NUM_BEAMS")

        def generate(tokens, task=None):
            return np.asarray(
                family.generate(
                    model, params, tokens, targets, decode, prompt_index=index_of(tokens, task)
                )
            )

        def score(tokens, target_tokens, task=None):
            return np.asarray(
                family_lib.score(
                    model, params, tokens, target_tokens, prompt_index=index_of(tokens, task)
                )
            )

        outputs = self.model_outputs(generate, score, task_arg=prompt_index is not None)
        return self.metrics_from_outputs(outputs)


def _per_example(out, n: int) -> list:
    """Splits a batch output (or an ensemble's (per-prompt, combined) pair) into n rows."""
    if isinstance(out, tuple):
        per_prompt, combined = out
        return [(np.asarray(per_prompt)[:, r], combined[r]) for r in range(n)]
    return [np.asarray(out)[r] for r in range(n)]


def _member(output, member: Optional[int]):
    """The output seqio expects (token list or float) from a stored per-example output."""
    if isinstance(output, tuple):
        per_prompt, combined = output
        output = combined if member is None else per_prompt[member]
    if isinstance(output, (tuple, list)):
        return [int(t) for t in output]
    output = np.asarray(output)
    return output.tolist() if output.ndim else float(output)


def _to_float(value):
    if isinstance(value, seqio.metrics.Scalar):
        value = value.value
    if isinstance(value, (np.generic, np.ndarray, jax.Array)):
        value = np.asarray(value).item()
    return float(value) if isinstance(value, (int, float)) else value


def write_results(path: str, step: int, results: Mapping, extra: Optional[dict] = None):
    """Writes results as JSON atomically."""
    atomic.write_json(path, {"step": step, "results": results, **(extra or {})})
