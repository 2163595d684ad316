"""The training story in one function, `train(cfg)`, read top to bottom; extended by hooks.

Every array lives on the (data, model) device mesh of `cfg.partitioning` (see
`ptune.partitioning`): frozen weights are read straight into their shards, the prompt is
replicated, each host feeds its own rows of the global batch. One process, one device is
simply the 1x1 mesh.

Resume order: the run's own MODEL_DIR (latest checkpoint) -> the initial checkpoint. The
frozen model always comes from INITIAL_CHECKPOINT_PATH (strictly: every parameter but the
prompt must be there); random frozen weights only where a run names them (`random_init`,
the demo's contrast run), and then they are written to MODEL_DIR/random_init so that eval and infer
read the very same weights.

Steps are dispatched asynchronously: metrics reach the host only every `log_period` steps,
at evaluations and at checkpoints. A non-finite loss is noted on the device (the first step
it happened) and raised at the next of those points, before anything is saved, so the last
checkpoint written is always a finite one. SIGTERM or SIGINT (preemption, Ctrl-C) finishes
the current step, writes a checkpoint and raises `Preempted`; the same command resumes.

MODEL_DIR (its layout, lock, records, resume and `--overwrite`) is `ptune.run_dir`'s.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import jax

from ptune import frozen_model, model_config, optimizers, selection
from ptune import run_dir as run_dir_lib
from ptune import step as step_lib
from ptune import trainable as trainable_lib
from ptune.checkpoints.state import StateCheckpointer
from ptune.errors import UserError

log = logging.getLogger("ptune")
PyTree = Any


@dataclasses.dataclass(frozen=True)
class TrainConfig(frozen_model.FrozenModel):
    """One prompt-tuning (or model-tuning) run over the frozen model (`frozen_model.FrozenModel`'s
    fields, keyword-only: checkpoint, model, frozen dtype, partitioning, prompt, length
    buckets). Gin binds these fields from the outside.

    prompt: None tunes no prompt (model tuning: `trainable` names the weights).
    length_buckets: None pads every batch to task_feature_lengths.
    eval_metric: None selects the best prompt by the task's score (the mean of its primary
    metrics; for a mixture the mean over its tasks); or one reported metric, 'metric' or
    'task/metric'.
    """

    model_dir: str
    mixture_or_task_name: str
    # No checkpoint: weights from `seed` (the demo's contrast run; with a checkpoint, refused
    # unless every weight trains, where it means "from scratch when no checkpoint is given").
    random_init: bool = False
    task_feature_lengths: Mapping[str, int] = dataclasses.field(
        default_factory=lambda: {"inputs": 512, "targets": 8},
        metadata={"min": 1, "keys": ("inputs", "targets")},
    )
    batch_size: int = dataclasses.field(default=32, metadata={"min": 1})
    train_steps: int = dataclasses.field(
        default=30000, metadata={"min": 0, "zero": "saves the initial state only"}
    )
    # With length buckets: each window of this many batches regrouped so a batch holds
    # examples of similar length (`buckets.group_by_length`; the window's examples, and so a
    # mixture's rates, are the stream's; batch composition changes). 0: stream order.
    group_by_length: int = dataclasses.field(
        default=32, metadata={"min": 0, "zero": "batches in stream order"}
    )
    trainable: Sequence[str] = trainable_lib.PROMPT_ONLY
    optimizer: Any = None  # None: optimizers.prompt_tuning_adafactor()
    loss: step_lib.LossConfig = step_lib.LossConfig()
    seed: int = dataclasses.field(default=0, metadata={"min": 0})
    train_split: str = "train"
    eval_split: str = "validation"
    eval_period: int = dataclasses.field(default=1000, metadata={"min": 0, "zero": "no evaluation"})
    eval_batch_size: Optional[int] = dataclasses.field(default=None, metadata={"min": 1})
    eval_feature_lengths: Optional[Mapping[str, int]] = dataclasses.field(
        default=None, metadata={"min": 1, "keys": ("inputs", "targets")}
    )  # None: each example whole
    eval_metric: Optional[str] = None
    # 1: greedy; n > 1: beam search (t5x's decoding)
    eval_num_beams: int = dataclasses.field(default=1, metadata={"min": 1})
    optimizer_step_from_checkpoint: bool = False  # Adafactor's counter from the checkpoint
    # evaluations without improvement
    early_stopping_patience: Optional[int] = dataclasses.field(default=None, metadata={"min": 1})
    checkpoint_period: int = dataclasses.field(default=1000, metadata={"min": 1})
    keep_checkpoints: int = dataclasses.field(default=3, metadata={"min": 1})
    log_period: int = dataclasses.field(default=10, metadata={"min": 1})
    overwrite: bool = False
    label: Optional[str] = None  # a name for this run in reports
    # Also write the whole trained model as a ptune checkpoint in MODEL_DIR/model at the end
    # (`ptune pretrain`), usable as the frozen model (INITIAL_CHECKPOINT_PATH) of prompt tuning.
    export_model: bool = False

    def fingerprint(self, model: model_config.ModelConfig) -> dict:
        """What must not change when a run resumes (steps and periods may)."""
        return {
            "model": dataclasses.asdict(model),
            "task": self.mixture_or_task_name,
            "initial_checkpoint_path": self.checkpoint_path,
            "random_init": self.random_init,
            "task_feature_lengths": dict(self.task_feature_lengths),
            "batch_size": self.batch_size,
            "group_by_length": self.group_by_length if self.length_buckets is not None else 0,
            "prompt": None if self.prompt is None else self.prompt.describe(),
            "initializer": _initializer_asked(self.prompt),
            "trainable": list(self.trainable),
            "loss": dataclasses.asdict(self.loss),
            "optimizer": optimizers.describe(
                self.optimizer or optimizers.prompt_tuning_adafactor()
            ),
            "frozen_dtype": self.frozen_dtype,
            "seed": self.seed,
            "train_split": self.train_split,
        }


def _initializer_asked(prompt) -> Optional[str]:
    """The configured initializer's name as the fingerprint shows it (None: no prompt
    trains)."""
    if prompt is None:
        return None
    if prompt.initializer is None:
        return "class_labels"
    return getattr(prompt.initializer, "__qualname__", "custom").split(".")[0]


@dataclasses.dataclass
class HookContext:
    step: int
    state: step_lib.TrainState
    frozen: PyTree
    cfg: TrainConfig


@dataclasses.dataclass(frozen=True)
class Hook:
    """Calls `fn(context)` every `every` steps."""

    every: int
    fn: Callable[[HookContext], None]


class Preempted(UserError):
    """A signal stopped the run after writing a checkpoint; rerunning resumes it."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


@dataclasses.dataclass
class TrainResult:
    """What `train` returns: the final step and state, the last train metrics and evaluation
    results, the best score so far, and whether early stopping ended the run."""

    step: int
    state: step_lib.TrainState
    train: Optional[dict[str, float]]
    eval: Optional[dict[str, dict[str, float]]]
    best: Optional[dict]
    stopped_early: bool


class _Signals:
    """Turns SIGTERM/SIGINT into a flag the loop reads after each step (main thread only)."""

    def __init__(self):
        self.received: Optional[int] = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.received is not None:  # a second signal: stop at once
            raise KeyboardInterrupt
        self.received = signum
        log.warning("%s received: finishing this step and writing a checkpoint", _name(signum))

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _name(signum: int) -> str:
    return signal.Signals(signum).name


def train(cfg: TrainConfig, *, config_text: str = "", hooks: Sequence[Hook] = ()) -> TrainResult:
    """Runs (or resumes) a training run: setup (every check, nothing written) -> MODEL_DIR
    opened -> resume -> the loop, with logging, evaluation and checkpointing as hooks."""
    from tqdm import tqdm

    # Imported here: `ptune plan` and gin files configure a TrainConfig without the data
    # modules, and so without TensorFlow's start-up.
    from ptune import data, train_setup
    from ptune import train_hooks as hooks_lib

    started = time.perf_counter()
    primary = jax.process_index() == 0
    setup = train_setup.setup(cfg, primary)
    run, run_dir = setup.run, setup.run_dir
    params, random_weights = train_setup.initial_params(cfg, setup)
    log.info(trainable_lib.summary_line(run.mask, params))
    counts = trainable_lib.count(run.mask, params)
    state, frozen = run.init_state(params, setup.optimizer_step)
    del params

    # ---- from here on MODEL_DIR is written (every check has passed): one writer, and a
    # failure before the first checkpoint leaves it as it was (see ptune.run_dir)
    with run_dir.open(config_text):
        if primary and random_weights is not None:
            train_setup.write_random_init(cfg, setup.config, random_weights)
        del random_weights
        finite = hooks_lib.NonFinite()
        export = hooks_lib.PromptExport(
            primary and cfg.prompt is not None,
            setup.bank,
            cfg.prompt.multi_task.combine if setup.bank else None,
        )
        checkpointer = StateCheckpointer(cfg.model_dir, cfg.keep_checkpoints)
        checkpointing = hooks_lib.Checkpointing(
            checkpointer, run_dir, cfg.checkpoint_period, finite, export, primary
        )
        state, latest, data_position, meta = checkpointing.resume(state)
        best = selection.BestPrompt(setup.metric, cfg.early_stopping_patience)
        best.restore(meta)
        start = int(state.step)
        metrics_log = run_dir_lib.MetricsLog(cfg.model_dir, start, primary)
        evaluating = train_setup.evaluating(cfg, setup, metrics_log, finite, export, best, primary)
        progress = tqdm(
            total=cfg.train_steps,
            initial=min(start, cfg.train_steps),
            unit="step",
            disable=not primary,
            mininterval=1.0,
            dynamic_ncols=True,
        )
        logging = hooks_lib.Logging(cfg.log_period, metrics_log, finite, progress)
        train_step = run.train_step(cfg.loss, cfg.seed)
        batches = data.train_batches(
            cfg.mixture_or_task_name,
            cfg.task_feature_lengths,
            cfg.batch_size,
            seed=cfg.seed,
            split=cfg.train_split,
            start_batch=data_position,
            shard_index=jax.process_index(),
            num_shards=jax.process_count(),
            buckets=cfg.length_buckets,
            group_by_length=cfg.group_by_length,
            prompt_index=setup.bank is not None,
        )
        result = TrainResult(start, state, None, None, best.best, False)

        # ---- the loop
        step = start
        with _Signals() as signals:
            while step < cfg.train_steps:
                state, metrics = train_step(
                    state, frozen, run.partitioner.shard_batch(next(batches))
                )
                step += 1
                last = step == cfg.train_steps
                finite.note(metrics, state.step)
                result.train = logging(step, metrics, last) or result.train
                for hook in hooks:
                    if step % hook.every == 0:
                        hook.fn(HookContext(step, state, frozen, cfg))
                if evaluating is not None and evaluating.due(step, last):
                    result.eval = evaluating(step, state.params, frozen)
                    result.best, result.stopped_early = best.best, best.should_stop
                if checkpointing.due(step, last) or result.stopped_early or signals.received:
                    checkpointing.save(step, state, best)
                if signals.received:
                    progress.close()
                    checkpointer.close()
                    raise Preempted(
                        f"{_name(signals.received)} at step {step}: checkpoint written to "
                        f"{checkpointer.directory}/{step}; rerun the same command to resume",
                        signals.received,
                    )
                if result.stopped_early:
                    log.info(
                        "early stopping at step %d: %s did not improve for %d evaluations",
                        *(step, setup.metric, cfg.early_stopping_patience),
                    )
                    break
        progress.close()
        if latest is None and start == step == cfg.train_steps == 0:
            checkpointing.save(0, state, best)
        finite.check()
        checkpointer.close()
        result.step, result.state = step, state
        if cfg.export_model:
            train_setup.export_model(
                cfg, setup.config, trainable_lib.merge(state.params, frozen), step
            )
        seconds = time.perf_counter() - started
        run_dir.write_summary(train_setup.summary(cfg, setup.config, counts, result, seconds))
        return result
