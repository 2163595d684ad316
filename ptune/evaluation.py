"""Evaluation with seqio's Evaluator: greedy predictions and target scores from the model.

`Evaluation` caches the eval datasets once (seqio does) and is called with the current
parameters; it returns {task: {metric: value}} with the metrics of the T5 library as the
tasks declare them (generation metrics from decoded predictions, rank-classification metrics
from scores).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Mapping, Optional

import jax
import numpy as np
import seqio

from ptune import data, decoding
from ptune.errors import UserError
from ptune.models import t5

PyTree = Any


class Evaluation:
    """Evaluates params on `task_name`'s `split` at fixed feature lengths and batch size."""

    def __init__(
        self,
        task_name: str,
        feature_lengths: Mapping[str, int],
        batch_size: int,
        split: str = "validation",
    ):
        data.get_task(task_name)
        self.task_name = task_name
        self.lengths = dict(feature_lengths)
        self.batch_size = batch_size
        self.split = split
        with data.dataset_errors(task_name):
            self._evaluator = seqio.Evaluator(
                task_name,
                feature_converter=data.feature_converter(pack=False),
                eval_split=split,
                sequence_length=self.lengths,
                use_memory_cache=True,
            )
        # Ids past the tokenizer's vocabulary (padding rows of the embedding) never decode.
        self.vocab_limit = (
            max(
                int(t.output_features["targets"].vocabulary.vocab_size)
                for t in self._evaluator.eval_tasks
            )
            if self._evaluator.eval_tasks
            else None
        )
        self._model_lengths = {
            "encoder_input_tokens": self.lengths["inputs"],
            "decoder_input_tokens": self.lengths["targets"],
            "decoder_target_tokens": self.lengths["targets"],
            "decoder_loss_weights": self.lengths["targets"],
        }

    @property
    def has_tasks(self) -> bool:
        return bool(self._evaluator.eval_tasks)

    def _batches(self, ds):
        return data.padded_batches(ds.as_numpy_iterator(), self.batch_size, self._model_lengths)

    def model_outputs(self, generate_fn: Callable, score_fn: Callable) -> dict[str, dict]:
        """Runs the model once over every eval task's examples.

        generate_fn(encoder_tokens [b, ls]) -> tokens [b, lt], or for an ensemble
          (per-prompt tokens [N, b, lt], voted token tuples [b]);
        score_fn(encoder_tokens [b, ls], target_tokens [b, lt]) -> scores [b], or for an
          ensemble (per-prompt scores [N, b], mean scores [b]).
        Only what a task's metrics need is computed. Returns {task: {"predictions": [(index,
        output)], "scores": [(index, output)]}} with the outputs as returned per example.
        """
        outputs = {}
        for task in self._evaluator.eval_tasks:
            ds = self._evaluator.cached_model_datasets[task.name]
            record = {"predictions": [], "scores": []}
            need_predictions = bool(task.predict_metric_fns)
            need_scores = bool(task.score_metric_fns)
            for indices, batch in self._batches(ds):
                tokens = batch["encoder_input_tokens"]
                if need_predictions:
                    out = generate_fn(tokens)
                    record["predictions"].extend(zip(indices, _per_example(out, len(indices))))
                if need_scores:
                    out = score_fn(tokens, batch["decoder_target_tokens"])
                    record["scores"].extend(zip(indices, _per_example(out, len(indices))))
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
        self, model: t5.Transformer, params: PyTree, step: int = -1
    ) -> dict[str, dict[str, float]]:
        """Greedy predictions and target scores of `model` with `params` -> metrics."""
        targets = self.lengths["targets"]
        outputs = self.model_outputs(
            lambda tokens: np.asarray(
                decoding.generate(
                    model, params, tokens, max_length=targets, vocab_limit=self.vocab_limit
                )
            ),
            lambda tokens, target_tokens: np.asarray(
                decoding.score(model, params, tokens, _shift_right(target_tokens), target_tokens)
            ),
        )
        return self.metrics_from_outputs(outputs)


def _shift_right(targets: np.ndarray) -> np.ndarray:
    return np.concatenate([np.zeros_like(targets[:, :1]), targets[:, :-1]], axis=1)


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


def select_metric(results: Mapping[str, Mapping[str, float]], name: str) -> float:
    """`metric` (one evaluated task) or `task/metric` from evaluation results."""
    if "/" in name:
        task, metric = name.split("/", 1)
        found = results.get(task, {}).get(metric)
    else:
        found = [m[name] for m in results.values() if name in m]
        if len(found) > 1:
            raise ValueError(
                f"eval metric {name!r} is reported by several tasks; name one as "
                f"'task/{name}' (tasks: {sorted(results)})"
            )
        found = found[0] if found else None
    if found is None:
        available = sorted(f"{t}/{m}" for t, ms in results.items() for m in ms)
        raise ValueError(f"eval metric {name!r} was not reported; available: {available}")
    return float(found)


def write_results(path: str, step: int, results: Mapping, extra: Optional[dict] = None):
    """Writes results as JSON atomically."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"step": step, "results": results, **(extra or {})}, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """`ptune eval`: a frozen model, optionally a saved prompt, one task or mixture."""

    mixture_or_task_name: str
    model: t5.T5Config
    checkpoint_path: str  # the frozen model (t5x, HF, ptune; a demo run's random_init)
    prompt_file: Optional[str] = None  # None: evaluate the checkpoint without a prompt
    prompt_placement: str = "prefix"
    task_feature_lengths: Mapping[str, int] = dataclasses.field(
        default_factory=lambda: {"inputs": 512, "targets": 8}
    )
    batch_size: int = 32
    split: str = "validation"
    output_dir: Optional[str] = None  # where eval_<split>.json goes (default: beside prompt)


def run_eval(cfg: EvalConfig) -> dict[str, dict[str, float]]:
    """Loads the frozen model and the prompt, evaluates, writes JSON; returns the results."""
    from ptune import checkpoints, prompts

    data.get_task(cfg.mixture_or_task_name)
    factory = None
    prompt = None
    if cfg.prompt_file is not None:
        prompt = prompts.load_prompt_file(cfg.prompt_file)
        factory = prompts.prompt_factory(prompt.shape[0], cfg.prompt_placement)
    _, params = checkpoints.load(cfg.checkpoint_path, cfg.model)
    if prompt is not None:
        if prompt.shape[1] != cfg.model.emb_dim:
            raise UserError(
                f"prompt file {cfg.prompt_file}: width {prompt.shape[1]} does not "
                f"match the model's emb_dim {cfg.model.emb_dim}"
            )
        params["encoder"]["prompt"] = {"prompt": prompt}
    model = t5.Transformer(cfg.model, factory)
    results = Evaluation(
        cfg.mixture_or_task_name, cfg.task_feature_lengths, cfg.batch_size, cfg.split
    )(model, params)
    output_dir = cfg.output_dir or (
        os.path.dirname(os.path.abspath(cfg.prompt_file)) if cfg.prompt_file else os.getcwd()
    )
    write_results(
        os.path.join(output_dir, f"eval_{cfg.split}.json"),
        -1,
        results,
        {"checkpoint_path": cfg.checkpoint_path, "prompt_file": cfg.prompt_file},
    )
    return results
