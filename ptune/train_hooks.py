"""The training loop's built-in hooks: logging, evaluation (best prompt, early stopping) and
checkpointing, each a small object with named state that the loop in `ptune.trainer` calls
after every step, and that tests can drive alone.

    finite = NonFinite()                 # the first non-finite loss, noted on the device
    logging = Logging(log_period, metrics_log, finite, progress)
    exporter = PromptExport(model_dir, bank, combine)   # prompt files as the model sees them
    evaluating = Evaluating(..., best=selection.BestPrompt(metric, patience))
    checkpointing = Checkpointing(checkpointer, run_dir, period, finite, exporter)

Steps are dispatched asynchronously: metrics reach the host only at log points,
evaluations and checkpoints, where `NonFinite.check` raises before anything is saved.
"""

from __future__ import annotations

import dataclasses
import logging as logging_lib
import os
import time
from typing import Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ptune import evaluator, partitioning, prompts, selection
from ptune import trainable as trainable_lib
from ptune.checkpoints import prompt_io
from ptune.errors import UserError

log = logging_lib.getLogger("ptune")
PyTree = Any


@jax.jit
def _note(first_bad: jax.Array, metrics: Mapping[str, jax.Array], step: jax.Array):
    """(step, loss) of the first step whose loss was not finite; step 0 while none was."""
    loss = metrics["loss_sum"] / jnp.maximum(metrics["tokens"], 1.0)
    fresh = (first_bad[0] == 0) & ~jnp.isfinite(loss)
    return jnp.where(fresh, jnp.stack([step.astype(jnp.float32), loss]), first_bad)


class NonFinite:
    """The first step whose loss was not finite, kept on the device [2] (step, loss) so no
    step waits for the host; `check` reads it and stops the run."""

    def __init__(self):
        self.first_bad = jnp.zeros((2,), jnp.float32)
        self.last_checkpoint: Optional[int] = None

    def note(self, metrics: Mapping[str, jax.Array], step: jax.Array) -> None:
        self.first_bad = _note(self.first_bad, metrics, step)

    def check(self) -> None:
        bad_step, bad_loss = (float(x) for x in np.asarray(self.first_bad))
        if bad_step:
            kept = (
                "no checkpoint was written before it"
                if self.last_checkpoint is None
                else f"the last checkpoint, step {self.last_checkpoint}, is intact"
            )
            raise UserError(
                f"the training loss became {bad_loss} at step {int(bad_step)}; stopping ({kept})"
            )


def summarize(metrics: Mapping[str, jax.Array]) -> dict[str, float]:
    """A step's summed metrics -> per-token loss, z-loss, token accuracy; the gradient norm."""
    tokens = max(float(metrics["tokens"]), 1.0)
    return {
        "loss": float(metrics["loss_sum"]) / tokens,
        "z_loss": float(metrics["z_loss_sum"]) / tokens,
        "token_accuracy": float(metrics["correct"]) / tokens,
        "grad_norm": float(metrics["grad_norm"]),
    }


class Logging:
    """Every `period` steps (and the last): metrics.jsonl / TensorBoard, the progress bar's
    loss and steps per second over the window since the last log point."""

    def __init__(self, period: int, metrics_log, finite: NonFinite, progress):
        self.period, self.metrics_log, self.finite, self.progress = (
            period,
            metrics_log,
            finite,
            progress,
        )
        self.window_start, self.window_steps = time.perf_counter(), 0

    def __call__(self, step: int, metrics: Mapping[str, jax.Array], last: bool):
        """-> the logged values at a log point, else None."""
        self.window_steps += 1
        self.progress.update(1)
        if step % self.period and not last:
            return None
        self.finite.check()
        values = summarize(metrics)
        rate = self.window_steps / max(time.perf_counter() - self.window_start, 1e-9)
        values["steps_per_sec"] = rate
        self.progress.set_postfix(loss=f"{values['loss']:.4f}", steps_per_s=f"{rate:.2f}")
        self.metrics_log.write(step, "train", values)
        self.window_start, self.window_steps = time.perf_counter(), 0
        return values


class PromptExport:
    """The prompt as the model sees it into a directory (`prompt_io`); a multi-task bank as one
    file per task. Computed from this host's copy (the prompt module is replicated), so one
    process may call it; nothing when the run trains no prompt."""

    def __init__(self, enabled: bool, bank: Optional[Sequence[str]], combine: Optional[str]):
        self.enabled, self.bank, self.combine = enabled, bank, combine

    def __call__(self, directory: str, params: PyTree) -> None:
        if not self.enabled:
            return
        local = prompts.with_module(
            {}, jax.tree_util.tree_map(partitioning.gather, prompts.get_module(params))
        )
        if self.bank is None:
            prompt_io.save_prompt(directory, np.asarray(prompts.effective_prompt(local)))
            return
        values = np.asarray(prompts.effective_bank(local, self.combine))
        prompt_io.save_bank(directory, dict(zip(self.bank, values)))


@dataclasses.dataclass
class Evaluating:
    """Every `period` steps (and the last): the evaluation of the current prompt, its record
    (metrics.jsonl, eval/<split>_step_<step>.json), the best prompt exported when it improves.
    `prompt_index`: {task: k} for multi-task prompts."""

    run: Any
    evaluator: Any
    period: int
    task: str
    split: str
    num_beams: int
    prompt_index: Optional[dict]
    model_dir: str
    metrics_log: Any
    finite: NonFinite
    export: PromptExport
    best: selection.BestPrompt
    primary: bool

    def due(self, step: int, last: bool) -> bool:
        return self.period > 0 and (step % self.period == 0 or last)

    def __call__(self, step: int, params: PyTree, frozen: PyTree) -> dict:
        self.finite.check()
        with self.run.partitioner.context():
            results = self.evaluator(
                self.run.model,
                trainable_lib.merge(params, frozen),
                self.num_beams,
                self.prompt_index,
            )
        score = selection.select(results, self.task, self.best.metric)
        if self.primary:
            for task, values in results.items():
                self.metrics_log.write(step, f"{self.split}/{task}", values)
            self.metrics_log.write(step, self.split, {"score": score})
            evaluator.write_results(
                os.path.join(self.model_dir, "eval", f"{self.split}_step_{step}.json"),
                step,
                results,
                {"score": score, "metric": self.best.metric},
            )
        if self.best.update(step, score) and self.primary:
            self.export(prompt_io.best_directory(self.model_dir), params)
        return results


@dataclasses.dataclass
class Checkpointing:
    """Every `period` steps (and the last, a stop, a signal): the state (Orbax; the records of
    the run before the first, `RunDir.saving`/`saved`) and the prompt's files."""

    checkpointer: Any
    run_dir: Any
    period: int
    finite: NonFinite
    export: PromptExport
    primary: bool

    def resume(self, state):
        """-> (state, step, data position, meta) of the newest intact checkpoint, or the
        given state at step None, data position 0 and no meta."""
        restored = self.checkpointer.restore_latest(state)
        if restored is None:
            return state, None, 0, {}
        step, state, meta = restored
        self.finite.last_checkpoint = step
        log.info("resumed from %s at step %d", self.checkpointer.directory, step)
        return state, step, int(meta["data_position"]), meta

    def due(self, step: int, last: bool) -> bool:
        return step % self.period == 0 or last

    def save(self, step: int, state, best: selection.BestPrompt) -> None:
        self.finite.check()
        self.run_dir.saving()
        self.checkpointer.save(step, state, {"data_position": step, **best.to_meta()})
        self.run_dir.saved()
        self.finite.last_checkpoint = step
        if self.primary:
            self.export(prompt_io.step_directory(self.run_dir.path, step), state.params)
