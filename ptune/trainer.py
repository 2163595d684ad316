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
import os
import signal
import threading
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ptune import atomic, buckets, data, distributed, evaluation, partitioning, prompts, recipe
from ptune import family as family_lib
from ptune import run_dir as run_dir_lib
from ptune import step as step_lib
from ptune import trainable as trainable_lib
from ptune.checkpoints import prompt_io
from ptune.checkpoints.state import StateCheckpointer
from ptune.errors import UserError
from ptune.models import t5

log = logging.getLogger("ptune")
PyTree = Any


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One prompt-tuning (or model-tuning) run. Gin binds these fields from the outside.

    model: None takes the checkpoint's configuration; a model gin file's fields (or a whole
    T5Config) must agree with it (see `ptune.recipe.resolve_model_config`).
    eval_metric: None selects the best prompt by the task's score (the mean of its primary
    metrics; for a mixture the mean over its tasks); or one reported metric, 'metric' or
    'task/metric'.
    """

    model_dir: str
    mixture_or_task_name: str
    model: recipe.ModelSpec = None
    checkpoint_path: Optional[str] = None
    # No checkpoint: weights from `seed` (the demo's contrast run; with a checkpoint, refused
    # unless every weight trains, where it means "from scratch when no checkpoint is given").
    random_init: bool = False
    task_feature_lengths: Mapping[str, int] = dataclasses.field(
        default_factory=lambda: {"inputs": 512, "targets": 8}
    )
    batch_size: int = 32
    train_steps: int = 30000
    # Each batch padded to the smallest bucket holding its longest example (None: every batch
    # padded to task_feature_lengths); see `ptune.buckets.LengthBuckets`.
    length_buckets: Optional[buckets.LengthBuckets] = buckets.LengthBuckets()
    prompt: Optional[prompts.PromptConfig] = prompts.PromptConfig()
    trainable: Sequence[str] = trainable_lib.PROMPT_ONLY
    optimizer: Any = None  # None: optimizers.prompt_tuning_adafactor()
    loss: step_lib.LossConfig = step_lib.LossConfig()
    frozen_dtype: Optional[str] = None  # e.g. "bfloat16" halves the frozen model's memory
    partitioning: partitioning.MeshConfig = partitioning.MeshConfig()  # mesh and axis rules
    seed: int = 0
    train_split: str = "train"
    eval_split: str = "validation"
    eval_period: int = 1000
    eval_batch_size: Optional[int] = None
    eval_feature_lengths: Optional[Mapping[str, int]] = None  # None: each example whole
    eval_metric: Optional[str] = None
    eval_num_beams: Optional[int] = None  # None: greedy; n: beam search (t5x's decoding)
    optimizer_step_from_checkpoint: bool = False  # Adafactor's counter from the checkpoint
    early_stopping_patience: Optional[int] = None  # evaluations without improvement
    checkpoint_period: int = 1000
    keep_checkpoints: int = 3
    log_period: int = 10
    overwrite: bool = False
    label: Optional[str] = None  # a name for this run in reports
    # Also write the whole trained model as a ptune checkpoint in MODEL_DIR/model at the end
    # (`ptune pretrain`), usable as the frozen model (INITIAL_CHECKPOINT_PATH) of prompt tuning.
    export_model: bool = False

    def fingerprint(self, model: recipe.ModelConfig) -> dict:
        """What must not change when a run resumes (steps and periods may)."""
        return {
            "model": dataclasses.asdict(model),
            "task": self.mixture_or_task_name,
            "initial_checkpoint_path": self.checkpoint_path,
            "random_init": self.random_init,
            "task_feature_lengths": dict(self.task_feature_lengths),
            "batch_size": self.batch_size,
            "prompt": None if self.prompt is None else self.prompt.describe(),
            "initializer": _initializer_name(self.prompt),
            "trainable": list(self.trainable),
            "loss": dataclasses.asdict(self.loss),
            "frozen_dtype": self.frozen_dtype,
            "seed": self.seed,
            "train_split": self.train_split,
        }


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


@dataclasses.dataclass
class BestPrompt:
    """Best-prompt selection and early stopping: the best score (step, value, metric) and the
    number of evaluations since it improved. Saved with every checkpoint."""

    metric: str
    patience: Optional[int] = None
    best: Optional[dict] = None
    evals_without_improvement: int = 0

    def update(self, step: int, value: float) -> bool:
        """Records an evaluation; True when it is the best so far."""
        if self.best is None or value > self.best["value"]:
            self.best = {"step": step, "value": float(value), "metric": self.metric}
            self.evals_without_improvement = 0
            return True
        self.evals_without_improvement += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.evals_without_improvement >= self.patience

    def to_meta(self) -> dict:
        return {"best": self.best, "evals_without_improvement": self.evals_without_improvement}

    def restore(self, meta: Mapping) -> None:
        self.best = meta.get("best")
        self.evals_without_improvement = int(meta.get("evals_without_improvement", 0))


def initial_prompt(
    cfg: TrainConfig, embedding: PyTree, task: Optional[str] = None, stream: int = 1
) -> np.ndarray:
    """[P, E] from the configured initializer over the frozen `embedding` [vocab, E], with the
    vocabulary and labels of `task` (default: the run's task or mixture); `stream` separates
    the random draws of prompts."""
    from ptune.tasks import registry

    task = task or cfg.mixture_or_task_name
    init = cfg.prompt.initializer or prompts.class_labels()
    context = prompts.InitContext(
        embedding=partitioning.gather(embedding).astype(np.float32),
        vocabulary=data.output_vocabulary(task),
        labels=registry.label_names(task),
    )
    rng = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), stream)
    return prompts.initialize(init, rng, cfg.prompt.length, context)


def initial_deep(cfg: TrainConfig, embedding: PyTree, num_layers: int) -> np.ndarray:
    """Deep prompts' initial values [layers, P, E]: every layer's prompt from the configured
    initializer (layer 0's exactly the plain prompt's; the others from their own draws)."""
    return np.stack(
        [
            initial_prompt(cfg, embedding, stream=1 if i == 0 else 2000 + i)
            for i in range(num_layers)
        ]
    )


def initial_bank(cfg: TrainConfig, embedding: PyTree, tasks: Sequence[str]) -> dict:
    """Multi-task prompts' initial values: task k's prompt [P, E] from the initializer with
    task k's labels; the shared prompt zero for "add" (so each task starts where its own
    single-task run would), from the initializer with the mixture's labels for "concat"."""
    multi = cfg.prompt.multi_task
    bank = np.stack(
        [initial_prompt(cfg, embedding, task, 1000 + k) for k, task in enumerate(tasks)]
    )
    out = {"prompt": bank}
    if multi.combine == "add":
        out["shared"] = np.zeros(bank.shape[1:], np.float32)
    elif multi.combine == "concat":
        shared = dataclasses.replace(cfg.prompt, length=multi.shared_rows(cfg.prompt.length))
        out["shared"] = initial_prompt(dataclasses.replace(cfg, prompt=shared), embedding)
    return out


def _summarize(metrics: Mapping[str, jax.Array]) -> dict[str, float]:
    tokens = max(float(metrics["tokens"]), 1.0)
    return {
        "loss": float(metrics["loss_sum"]) / tokens,
        "z_loss": float(metrics["z_loss_sum"]) / tokens,
        "token_accuracy": float(metrics["correct"]) / tokens,
        "grad_norm": float(metrics["grad_norm"]),
    }


@jax.jit
def _note_non_finite(first_bad: jax.Array, metrics: Mapping[str, jax.Array], step: jax.Array):
    """(step, loss) of the first step whose loss was not finite; step 0 while none was."""
    loss = metrics["loss_sum"] / jnp.maximum(metrics["tokens"], 1.0)
    fresh = (first_bad[0] == 0) & ~jnp.isfinite(loss)
    return jnp.where(fresh, jnp.stack([step.astype(jnp.float32), loss]), first_bad)


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


def _initializer_name(prompt: Optional[prompts.PromptConfig]) -> Optional[str]:
    if prompt is None:
        return None
    if prompt.initializer is None:
        return "class_labels"
    return getattr(prompt.initializer, "__qualname__", "custom").split(".")[0]


def train(cfg: TrainConfig, *, config_text: str = "", hooks: Sequence[Hook] = ()) -> TrainResult:
    """Runs (or resumes) a training run."""
    from tqdm import tqdm

    started = time.perf_counter()
    main_process = jax.process_index() == 0
    if cfg.train_steps < 0 or cfg.batch_size < 1:
        raise UserError(
            f"train_steps must be >= 0 and batch_size >= 1, got {cfg.train_steps} "
            f"and {cfg.batch_size}"
        )
    if cfg.checkpoint_path is None and not cfg.random_init:
        raise UserError(
            "INITIAL_CHECKPOINT_PATH is required: prompt tuning needs a "
            "pretrained model (random frozen weights only with random_init)"
        )
    if cfg.checkpoint_path is not None and cfg.random_init and not counts_everything(cfg):
        raise UserError(
            f"random_init=True asks for random frozen weights, but INITIAL_CHECKPOINT_PATH is "
            f"{cfg.checkpoint_path}: set INITIAL_CHECKPOINT_PATH=None for random weights, or "
            "drop random_init to freeze the checkpoint"
        )
    atomic.check_writable_dir(cfg.model_dir, "MODEL_DIR")

    # ---- task, data and model configuration: every bad input fails here, before any work
    config = recipe.resolve_model_config(cfg.model, cfg.checkpoint_path)
    run_dir = run_dir_lib.RunDir(
        cfg.model_dir, cfg.fingerprint(config), overwrite=cfg.overwrite, primary=main_process
    )
    run_dir.check()
    _require_capabilities(cfg, family_lib.family_of(config))
    causal_layout = data.model_layout(config, cfg.checkpoint_path)
    data.check_task(
        cfg.mixture_or_task_name,
        cfg.task_feature_lengths,
        cfg.train_split,
        splits=[cfg.eval_split] if cfg.eval_period > 0 else [],
    )
    data.check_vocabulary_fits(cfg.mixture_or_task_name, config.vocab_size)
    if main_process:
        data.log_truncation(cfg.mixture_or_task_name, cfg.task_feature_lengths, cfg.train_split)
    optimizer_step = _optimizer_step(cfg)
    metric = (
        evaluation.check_metric(cfg.mixture_or_task_name, cfg.eval_metric)
        if cfg.eval_period > 0
        else evaluation.SCORE
    )
    if cfg.early_stopping_patience is not None and cfg.eval_period <= 0:
        raise UserError("early_stopping_patience needs evaluations (eval_period > 0)")
    bank = None  # multi-task prompts: the mixture's tasks, one prompt each
    if cfg.prompt is not None and cfg.prompt.multi_task is not None:
        bank = data.bank_tasks(cfg.mixture_or_task_name)
        log.info("multi-task prompts: one per task of %s: %s", cfg.mixture_or_task_name, bank)

    # ---- assembly: mesh, model, shardings, what trains, optimizer (see ptune.recipe)
    run = recipe.assemble(
        config,
        prompt_factory=cfg.prompt.factory(len(bank or ())) if cfg.prompt is not None else None,
        mesh=cfg.partitioning,
        trainable=cfg.trainable,
        optimizer=cfg.optimizer,
        frozen_dtype=cfg.frozen_dtype,
        causal_layout=causal_layout,
    )
    run.partitioner.check_batch_size(cfg.batch_size)
    distributed.check_same_on_all_hosts(cfg.seed, "the seed")  # data order, dropout, init

    # ---- frozen weights (straight into their shards), prompt (replicated)
    random_weights = None
    if cfg.checkpoint_path is None and counts_everything(cfg):
        log.warning(
            "initial weights: random from seed %d (training from scratch; set "
            "INITIAL_CHECKPOINT_PATH to continue a checkpoint instead)",
            cfg.seed,
        )
        params = run.random_frozen(cfg.seed)
    elif cfg.checkpoint_path is None:
        log.warning("frozen model: RANDOM weights from seed %d (random_init=True)", cfg.seed)
        params = random_weights = run.random_frozen(cfg.seed)  # written to MODEL_DIR below
    else:
        params = run.load_frozen(cfg.checkpoint_path)
    if cfg.prompt is not None:
        embedding = run.embedding(params)
        if bank:
            value = initial_bank(cfg, embedding, bank)
        elif cfg.prompt.deep:
            value = initial_deep(cfg, embedding, run.family.prompt_layers(config))
        else:
            value = initial_prompt(cfg, embedding)
        params = run.place_prompt(params, value, cfg.seed)
    log.info(trainable_lib.summary_line(run.mask, params))
    counts = trainable_lib.count(run.mask, params)
    state, frozen = run.init_state(params, optimizer_step)
    del params

    # ---- from here on MODEL_DIR is written (every check has passed): one writer, and a
    # failure before the first checkpoint leaves it as it was (see ptune.run_dir)
    with run_dir.open(config_text):
        if main_process and random_weights is not None:
            _write_random_init(cfg, config, random_weights)
        del random_weights
        # ---- resume from this run's own latest checkpoint
        checkpointer = StateCheckpointer(cfg.model_dir, cfg.keep_checkpoints)
        best = BestPrompt(metric, cfg.early_stopping_patience)
        restored = checkpointer.restore_latest(state)
        latest, data_position = None, 0
        if restored is not None:
            latest, state, meta = restored
            best.restore(meta)
            data_position = int(meta["data_position"])
            log.info("resumed from %s at step %d", checkpointer.directory, latest)
        start = int(state.step)

        # ---- steps, data, evaluation, logging
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
            prompt_index=bank is not None,
        )
        evaluator = None
        if cfg.eval_period > 0:
            evaluator = evaluation.Evaluation(
                cfg.mixture_or_task_name,
                cfg.eval_feature_lengths,
                cfg.eval_batch_size or cfg.batch_size,
                cfg.eval_split,
                buckets=cfg.length_buckets,
            )
        metrics_log = run_dir_lib.MetricsLog(cfg.model_dir, start, main_process)
        first_bad = jnp.zeros((2,), jnp.float32)
        result = TrainResult(start, state, None, None, best.best, False)

        def check_finite() -> None:
            bad_step, bad_loss = (float(x) for x in np.asarray(first_bad))
            if bad_step:
                last = checkpointer.latest_step()
                raise UserError(
                    f"the training loss became {bad_loss} at step {int(bad_step)}; stopping "
                    f"(the last checkpoint, step {last}, is intact)"
                )

        def export_prompts(directory: str) -> None:
            """The prompt as the model sees it; a multi-task bank as one file per task. Computed
            from this host's copy (the prompt module is replicated), so one process may call it."""
            local = prompts.with_module(
                {}, jax.tree_util.tree_map(partitioning.gather, prompts.get_module(state.params))
            )
            if bank is None:
                prompt_io.save_prompt(directory, np.asarray(prompts.effective_prompt(local)))
                return
            values = np.asarray(prompts.effective_bank(local, cfg.prompt.multi_task.combine))
            prompt_io.save_bank(directory, dict(zip(bank, values)))

        def save(step_number: int) -> None:
            check_finite()
            run_dir.saving()
            checkpointer.save(step_number, state, {"data_position": step_number, **best.to_meta()})
            run_dir.saved()
            if main_process and cfg.prompt is not None:
                export_prompts(prompt_io.step_directory(cfg.model_dir, step_number))

        def evaluate(step_number: int) -> None:
            check_finite()
            with run.partitioner.context():
                results = evaluator(
                    run.model,
                    trainable_lib.merge(state.params, frozen),
                    cfg.eval_num_beams,
                    {task: k for k, task in enumerate(bank)} if bank else None,
                )
            result.eval = results
            score = evaluation.select(results, cfg.mixture_or_task_name, metric)
            if main_process:
                for task, values in results.items():
                    metrics_log.write(step_number, f"{cfg.eval_split}/{task}", values)
                metrics_log.write(step_number, cfg.eval_split, {"score": score})
                evaluation.write_results(
                    os.path.join(
                        cfg.model_dir, "eval", f"{cfg.eval_split}_step_{step_number}.json"
                    ),
                    step_number,
                    results,
                    {"score": score, "metric": metric},
                )
            if best.update(step_number, score) and main_process and cfg.prompt is not None:
                export_prompts(prompt_io.best_directory(cfg.model_dir))
            result.best = best.best

        # ---- the loop
        progress = tqdm(
            total=cfg.train_steps,
            initial=min(start, cfg.train_steps),
            unit="step",
            disable=not main_process,
            mininterval=1.0,
            dynamic_ncols=True,
        )
        window_start, window_steps = time.perf_counter(), 0
        step_number = start
        with _Signals() as signals:
            while step_number < cfg.train_steps:
                state, metrics = train_step(
                    state, frozen, run.partitioner.shard_batch(next(batches))
                )
                step_number += 1
                first_bad = _note_non_finite(first_bad, metrics, state.step)
                window_steps += 1
                progress.update(1)
                last_step = step_number == cfg.train_steps
                if step_number % cfg.log_period == 0 or last_step:
                    check_finite()
                    values = _summarize(metrics)
                    rate = window_steps / max(time.perf_counter() - window_start, 1e-9)
                    values["steps_per_sec"] = rate
                    progress.set_postfix(loss=f"{values['loss']:.4f}", steps_per_s=f"{rate:.2f}")
                    metrics_log.write(step_number, "train", values)
                    result.train = values
                    window_start, window_steps = time.perf_counter(), 0
                for hook in hooks:
                    if step_number % hook.every == 0:
                        hook.fn(HookContext(step_number, state, frozen, cfg))
                if evaluator is not None and (step_number % cfg.eval_period == 0 or last_step):
                    evaluate(step_number)
                    result.stopped_early = best.should_stop
                if (
                    step_number % cfg.checkpoint_period == 0
                    or last_step
                    or result.stopped_early
                    or signals.received
                ):
                    save(step_number)
                if signals.received:
                    progress.close()
                    checkpointer.close()
                    raise Preempted(
                        f"{_name(signals.received)} at step {step_number}: checkpoint written to "
                        f"{checkpointer.directory}/{step_number}; rerun the same command to resume",
                        signals.received,
                    )
                if result.stopped_early:
                    log.info(
                        "early stopping at step %d: %s did not improve for %d evaluations",
                        step_number,
                        metric,
                        cfg.early_stopping_patience,
                    )
                    break
        progress.close()
        if latest is None and start == step_number == 0 and cfg.train_steps == 0:
            save(0)
        check_finite()
        checkpointer.close()
        result.step, result.state = step_number, state
        if cfg.export_model:
            _export_model(cfg, config, trainable_lib.merge(state.params, frozen), step_number)
        run_dir.write_summary(_summary(cfg, config, counts, result, time.perf_counter() - started))
        return result


def _require_capabilities(cfg: TrainConfig, family: family_lib.Family) -> None:
    """What this run asks of its model family, refused in one line before any work."""
    if cfg.random_init:
        family_lib.require(family, "random_init")
    if cfg.export_model:
        family_lib.require(family, "export_model")
    if cfg.prompt is not None and cfg.prompt.deep:
        family_lib.require(family, "deep_prompts")
    if cfg.eval_num_beams:
        family_lib.require(family, "beam_search", "eval_num_beams")


def counts_everything(cfg: TrainConfig) -> bool:
    """Whether every weight trains (model tuning, pretraining): then random initial weights
    are a start from scratch, not a random frozen model."""
    return tuple(cfg.trainable) == trainable_lib.EVERYTHING


def _export_model(cfg: TrainConfig, config: t5.T5Config, params: PyTree, step: int) -> None:
    """The whole trained model as a ptune checkpoint in MODEL_DIR/model (replaced atomically),
    to be the frozen model of prompt tuning (INITIAL_CHECKPOINT_PATH)."""
    from ptune.checkpoints.orbax_params import save_ptune

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        params = multihost_utils.process_allgather(params, tiled=True)
    else:
        params = jax.device_get(params)
    if jax.process_index() == 0:
        target = os.path.join(cfg.model_dir, "model")
        save_ptune(
            params,
            config,
            target,
            overwrite=True,
            source=f"trained on {cfg.mixture_or_task_name} by ptune, step {step}",
            step=step,
        )
        log.info("wrote the trained model to %s (a ptune checkpoint)", target)


def _optimizer_step(cfg: TrainConfig) -> int:
    """Where the optimizer's counters start: 0, or (optimizer_step_from_checkpoint, as the
    original implementation) the step stored in the checkpoint, read from it."""
    if not cfg.optimizer_step_from_checkpoint:
        return 0
    from ptune import checkpoints

    step = checkpoints.describe(cfg.checkpoint_path).step if cfg.checkpoint_path else None
    if step is None:
        raise UserError(
            "optimizer_step_from_checkpoint needs a checkpoint that stores its training step "
            f"(a t5x checkpoint); {cfg.checkpoint_path} stores none"
        )
    log.info("optimizer step counters start at the checkpoint's step %d", step)
    return int(step)


def _summary(cfg, config, counts, result: TrainResult, seconds: float) -> dict:
    """summary.json: what `ptune report` tabulates for this run."""
    return {
        "task": cfg.mixture_or_task_name,
        "model": (
            family_lib.family_of(config).describe(config)
            + (" (random)" if cfg.random_init and cfg.checkpoint_path is None else "")
        ),
        "prompt_length": cfg.prompt.length if cfg.prompt is not None else None,
        "initializer": _initializer_name(cfg.prompt),
        "trainable_params": counts[0],
        "total_params": counts[1],
        "best": result.best,
        "steps": result.step,
        "wall_seconds": seconds,
        "label": cfg.label,
    }


def _write_random_init(cfg: TrainConfig, config: t5.T5Config, params: PyTree) -> None:
    """Persists random frozen weights (demo) as a ptune checkpoint for eval and infer."""
    from ptune.checkpoints.orbax_params import save_ptune

    target = os.path.join(cfg.model_dir, "random_init")
    if os.path.exists(target):
        return
    save_ptune(params, config, target, source=f"random init, seed {cfg.seed}")
