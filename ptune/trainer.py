"""The training story in one function, `train(cfg)`, read top to bottom; extended by hooks.

Every array lives on the (data, model) device mesh of `cfg.partitioning` (see
`ptune.partitioning`): frozen weights are read straight into their shards, the prompt is
replicated, each host feeds its own rows of the global batch. One process, one device is
simply the 1x1 mesh.

Resume order: the run's own MODEL_DIR (latest checkpoint) -> the initial checkpoint. The
frozen model always comes from INITIAL_CHECKPOINT_PATH (strictly: every parameter but the
prompt must be there); random frozen weights only where a run names them (`random_init`,
the offline demo), and then they are written to MODEL_DIR/random_init so that eval and infer
read the very same weights.

MODEL_DIR layout:
    config.gin, run.json          the configuration (gin) and the fingerprint resumes check
    checkpoints/<step>/           Orbax: trainable params, optimizer state, step, data position
    numpy_checkpoints/checkpoint_<step>/encoder.prompt.prompt.{npy,safetensors}; .../best/
    metrics.jsonl, train/ (TensorBoard events), eval/<split>_step_<step>.json
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from ptune import data, distributed, evaluation, partitioning, prompts
from ptune import step as step_lib
from ptune import trainable as trainable_lib
from ptune.checkpoints import prompt_io
from ptune.checkpoints.state import StateCheckpointer
from ptune.errors import UserError
from ptune.models import t5

log = logging.getLogger("ptune")
PyTree = Any


@dataclasses.dataclass(frozen=True)
class PromptConfig:
    """Prompt length, initializer (see `ptune.prompts`) and placement."""

    length: int = 100
    initializer: Any = None  # None: class labels (the paper's default)
    placement: str = "prefix"

    def factory(self):
        return prompts.prompt_factory(self.length, self.placement)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One prompt-tuning (or model-tuning) run. Gin binds these fields from the outside."""

    model_dir: str
    mixture_or_task_name: str
    model: t5.T5Config
    initial_checkpoint_path: Optional[str] = None
    random_init: bool = False  # frozen weights from `seed` instead of a checkpoint (demo only)
    task_feature_lengths: Mapping[str, int] = dataclasses.field(
        default_factory=lambda: {"inputs": 512, "targets": 8}
    )
    batch_size: int = 32
    train_steps: int = 30000
    prompt: Optional[PromptConfig] = PromptConfig()
    trainable: Sequence[str] = trainable_lib.PROMPT_ONLY
    optimizer: Any = None  # None: trainable.paper_adafactor()
    loss: step_lib.LossConfig = step_lib.LossConfig()
    frozen_dtype: Optional[str] = None  # e.g. "bfloat16" halves the frozen model's memory
    partitioning: partitioning.MeshConfig = partitioning.MeshConfig()  # mesh and axis rules
    seed: int = 0
    train_split: str = "train"
    eval_split: str = "validation"
    eval_period: int = 1000
    eval_batch_size: Optional[int] = None
    eval_metric: Optional[str] = None  # early stopping / best prompt, e.g. "accuracy"
    early_stopping_patience: Optional[int] = None  # evaluations without improvement
    checkpoint_period: int = 1000
    keep_checkpoints: int = 3
    log_period: int = 10
    overwrite: bool = False

    def fingerprint(self) -> dict:
        """What must not change when a run resumes (steps and periods may)."""
        return {
            "model": dataclasses.asdict(self.model),
            "task": self.mixture_or_task_name,
            "initial_checkpoint_path": self.initial_checkpoint_path,
            "random_init": self.random_init,
            "task_feature_lengths": dict(self.task_feature_lengths),
            "batch_size": self.batch_size,
            "prompt": None
            if self.prompt is None
            else {"length": self.prompt.length, "placement": self.prompt.placement},
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
    metrics: dict
    cfg: TrainConfig


@dataclasses.dataclass(frozen=True)
class Hook:
    """Calls `fn(context)` every `every` steps (after the step's metrics are known)."""

    every: int
    fn: Callable[[HookContext], None]


def build_model(cfg_model: t5.T5Config, prompt: Optional[PromptConfig]) -> t5.Transformer:
    return t5.Transformer(cfg_model, prompt.factory() if prompt is not None else None)


def _random_params(
    model: t5.Transformer,
    seed: int,
    partitioner: Optional[partitioning.Partitioner] = None,
    shardings: Optional[PyTree] = None,
) -> PyTree:
    """Every host computes the same values from `seed`; each device keeps only its shards."""
    tokens = jnp.zeros((1, 1), jnp.int32)

    def init(rng):
        return nn.unbox(model.init(rng, tokens, tokens, tokens, enable_dropout=False)["params"])

    if partitioner is None:
        return jax.jit(init)(jax.random.PRNGKey(seed))
    return partitioner.jit(init, in_shardings=partitioner.replicated, out_shardings=shardings)(
        jax.random.PRNGKey(seed)
    )


def load_frozen_params(
    model: t5.Transformer,
    path: Optional[str],
    random_init: bool,
    seed: int,
    partitioner: Optional[partitioning.Partitioner] = None,
    shardings: Optional[PyTree] = None,
) -> PyTree:
    """Full params (a placeholder prompt included) from the checkpoint, strictly; with
    `shardings` (shaped like the params) each device reads only its own shards."""
    placeholder = _random_params(model, seed, partitioner, shardings)
    if path is None:
        if not random_init:
            raise UserError(
                "INITIAL_CHECKPOINT_PATH is required: prompt tuning needs a "
                "pretrained model (random frozen weights only with random_init)"
            )
        log.warning("frozen model: RANDOM weights from seed %d (random_init=True)", seed)
        return placeholder
    from ptune import checkpoints

    _, loaded = checkpoints.load(
        path, model.config, fresh=[r"encoder/prompt/.*"], shardings=shardings
    )
    merged = trainable_lib.merge(loaded, {})
    if "prompt" in placeholder.get("encoder", {}):
        merged["encoder"]["prompt"] = placeholder["encoder"]["prompt"]
    return merged


def initial_prompt(cfg: TrainConfig, params: PyTree) -> np.ndarray:
    """[P, E] from the configured initializer, with the task's vocabulary and labels."""
    from ptune.tasks import registry

    init = cfg.prompt.initializer or prompts.class_labels()
    context = prompts.InitContext(
        embedding=partitioning.gather(params["token_embedder"]["embedding"]).astype(np.float32),
        vocabulary=data.output_vocabulary(cfg.mixture_or_task_name),
        labels=registry.label_names(cfg.mixture_or_task_name),
    )
    rng = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 1)
    return prompts.initialize(init, rng, cfg.prompt.length, context)


def prepare_model_dir(cfg: TrainConfig, config_text: str) -> None:
    """Creates MODEL_DIR, or checks that it holds this very run (refuses another one)."""
    run_file = os.path.join(cfg.model_dir, "run.json")
    fingerprint = json.loads(json.dumps(cfg.fingerprint()))
    if os.path.exists(run_file):
        with open(run_file) as f:
            previous = json.load(f)
        if previous != fingerprint:
            if not cfg.overwrite:
                changed = sorted(
                    k
                    for k in set(previous) | set(fingerprint)
                    if previous.get(k) != fingerprint.get(k)
                )
                raise UserError(
                    f"MODEL_DIR {cfg.model_dir} holds a run with a different "
                    f"configuration (changed: {', '.join(changed)}); choose another "
                    "MODEL_DIR or pass --overwrite to start it afresh"
                )
            log.warning("overwriting the run in %s", cfg.model_dir)
            for name in (
                "checkpoints",
                "numpy_checkpoints",
                "train",
                "eval",
                "random_init",
                "metrics.jsonl",
            ):
                target = os.path.join(cfg.model_dir, name)
                if os.path.isdir(target):
                    shutil.rmtree(target)
                elif os.path.exists(target):
                    os.remove(target)
    os.makedirs(cfg.model_dir, exist_ok=True)
    for name, text in (
        ("run.json", json.dumps(fingerprint, indent=2, sort_keys=True)),
        ("config.gin", config_text),
    ):
        if text:
            tmp = os.path.join(cfg.model_dir, f".{name}.tmp")
            with open(tmp, "w") as f:
                f.write(text)
            os.replace(tmp, os.path.join(cfg.model_dir, name))


class MetricsLog:
    """metrics.jsonl plus TensorBoard scalars (process 0 writes, others stay silent)."""

    def __init__(self, model_dir: str, resume_step: int, enabled: bool):
        self.enabled = enabled
        self.path = os.path.join(model_dir, "metrics.jsonl")
        self._writer = None
        if not enabled:
            return
        if os.path.exists(self.path):  # forget what a killed run logged past its checkpoint
            with open(self.path) as f:
                kept = [line for line in f if json.loads(line)["step"] <= resume_step]
            with open(self.path, "w") as f:
                f.writelines(kept)
        from clu import metric_writers

        self._writer = metric_writers.create_default_writer(
            os.path.join(model_dir, "train"), asynchronous=False
        )

    def write(self, step: int, split: str, values: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, "split": split, **values}, sort_keys=True) + "\n")
        scalars = {f"{split}/{k}": v for k, v in values.items() if isinstance(v, (int, float))}
        self._writer.write_scalars(step, scalars)
        self._writer.flush()


def _summarize(metrics: Mapping[str, jax.Array]) -> dict[str, float]:
    tokens = max(float(metrics["tokens"]), 1.0)
    return {
        "loss": float(metrics["loss_sum"]) / tokens,
        "z_loss": float(metrics["z_loss_sum"]) / tokens,
        "token_accuracy": float(metrics["correct"]) / tokens,
        "grad_norm": float(metrics["grad_norm"]),
    }


def train(cfg: TrainConfig, *, config_text: str = "", hooks: Sequence[Hook] = ()) -> dict:
    """Runs (or resumes) a training run; returns {'step', 'train', 'eval', 'best'}."""
    from tqdm import tqdm

    main_process = jax.process_index() == 0
    if cfg.train_steps < 0 or cfg.batch_size < 1:
        raise UserError(
            f"train_steps must be >= 0 and batch_size >= 1, got {cfg.train_steps} "
            f"and {cfg.batch_size}"
        )
    if cfg.early_stopping_patience is not None and cfg.eval_metric is None:
        raise UserError("early_stopping_patience needs eval_metric (e.g. 'accuracy')")

    # ---- task and vocabularies: an unknown name or a missing file fails before any work
    data.check_vocabularies(cfg.mixture_or_task_name)
    if main_process:
        prepare_model_dir(cfg, config_text)

    # ---- mesh: the (data, model) device grid; the logical axis rules place every array
    partitioner = partitioning.Partitioner.create(cfg.partitioning)
    partitioner.check_batch_size(cfg.batch_size)
    distributed.check_same_on_all_hosts(cfg.seed, "the seed")  # data order, dropout, init

    # ---- model, frozen weights (straight into their shards), prompt (replicated)
    model = build_model(cfg.model, cfg.prompt)
    boxed = t5.abstract_variables(cfg.model, model.prompt_factory)["params"]
    shardings = partitioner.param_shardings(boxed)
    params = load_frozen_params(
        model, cfg.initial_checkpoint_path, cfg.random_init, cfg.seed, partitioner, shardings
    )
    if cfg.random_init and main_process:
        _write_random_init(cfg, params)
    if cfg.prompt is not None:
        params["encoder"]["prompt"]["prompt"] = partitioner.put(
            initial_prompt(cfg, params), shardings["encoder"]["prompt"]["prompt"]
        )

    # ---- what trains: one mask for the optimizer, the state, checkpoints and the log line
    mask = trainable_lib.trainable_mask(params, cfg.trainable)
    log.info(trainable_lib.summary_line(mask, params))
    train_params, frozen = trainable_lib.partition(params, mask)
    frozen = trainable_lib.cast_frozen(frozen, cfg.frozen_dtype)
    del params
    optimizer = cfg.optimizer or trainable_lib.paper_adafactor()
    state_sh, frozen_sh = step_lib.train_shardings(partitioner, optimizer, boxed, mask)
    state = partitioner.jit(
        lambda p: step_lib.init_state(p, optimizer),
        in_shardings=(state_sh.params,),
        out_shardings=state_sh,
    )(train_params)

    # ---- resume from this run's own latest checkpoint
    checkpointer = StateCheckpointer(cfg.model_dir, cfg.keep_checkpoints)
    meta = {"data_position": 0, "best": None, "evals_without_improvement": 0}
    latest = checkpointer.latest_step()
    if latest is not None:
        state, meta = checkpointer.restore(latest, state)
        log.info("resumed from %s at step %d", checkpointer.directory, latest)
    start = int(state.step)

    # ---- steps, data, evaluation, logging
    train_step = step_lib.make_train_step(
        model,
        optimizer,
        cfg.loss,
        seed=cfg.seed,
        partitioner=partitioner,
        in_shardings=(state_sh, frozen_sh),
    )
    batches = data.train_batches(
        cfg.mixture_or_task_name,
        cfg.task_feature_lengths,
        cfg.batch_size,
        seed=cfg.seed,
        split=cfg.train_split,
        start_batch=int(meta["data_position"]),
        shard_index=jax.process_index(),
        num_shards=jax.process_count(),
        pack=False,
    )
    evaluator = None
    if cfg.eval_period > 0:
        evaluator = evaluation.Evaluation(
            cfg.mixture_or_task_name,
            cfg.task_feature_lengths,
            cfg.eval_batch_size or cfg.batch_size,
            cfg.eval_split,
        )
    metrics_log = MetricsLog(cfg.model_dir, start, main_process)
    summary = {"step": start, "train": None, "eval": None, "best": meta.get("best")}

    def save(step_number: int) -> None:
        meta["data_position"] = step_number
        checkpointer.save(step_number, state, meta)
        if main_process and cfg.prompt is not None:
            prompt_io.save_prompt(
                prompt_io.step_directory(cfg.model_dir, step_number),
                partitioning.gather(state.params["encoder"]["prompt"]["prompt"]),
            )

    def evaluate(step_number: int) -> bool:
        """Evaluates, tracks the best prompt; returns True when early stopping triggers."""
        with partitioner.context():
            results = evaluator(model, trainable_lib.merge(state.params, frozen), step_number)
        summary["eval"] = results
        if main_process:
            for task, values in results.items():
                metrics_log.write(step_number, f"{cfg.eval_split}/{task}", values)
            evaluation.write_results(
                os.path.join(cfg.model_dir, "eval", f"{cfg.eval_split}_step_{step_number}.json"),
                step_number,
                results,
            )
        if cfg.eval_metric is None:
            return False
        value = evaluation.select_metric(results, cfg.eval_metric)
        best = meta.get("best")
        if best is None or value > best["value"]:
            meta["best"] = {"step": step_number, "value": value, "metric": cfg.eval_metric}
            meta["evals_without_improvement"] = 0
            if main_process and cfg.prompt is not None:
                prompt_io.save_prompt(
                    os.path.join(cfg.model_dir, "numpy_checkpoints", "best"),
                    partitioning.gather(state.params["encoder"]["prompt"]["prompt"]),
                )
        else:
            meta["evals_without_improvement"] += 1
        summary["best"] = meta["best"]
        patience = cfg.early_stopping_patience
        return patience is not None and meta["evals_without_improvement"] >= patience

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
    stopped_early = False
    while step_number < cfg.train_steps:
        state, metrics = train_step(state, frozen, partitioner.shard_batch(next(batches)))
        step_number += 1
        loss = float(metrics["loss_sum"]) / max(float(metrics["tokens"]), 1.0)
        if not np.isfinite(loss):
            last = checkpointer.latest_step()
            raise UserError(
                f"the training loss became {loss} at step {step_number}; stopping "
                f"(the last checkpoint, step {last}, is intact)"
            )
        window_steps += 1
        progress.update(1)
        if step_number % cfg.log_period == 0 or step_number == cfg.train_steps:
            values = _summarize(metrics)
            rate = window_steps / max(time.perf_counter() - window_start, 1e-9)
            values["steps_per_sec"] = rate
            progress.set_postfix(loss=f"{values['loss']:.4f}", steps_per_s=f"{rate:.2f}")
            metrics_log.write(step_number, "train", values)
            summary["train"] = values
            window_start, window_steps = time.perf_counter(), 0
        for hook in hooks:
            if step_number % hook.every == 0:
                hook.fn(HookContext(step_number, state, frozen, metrics, cfg))
        last_step = step_number == cfg.train_steps
        if evaluator is not None and (step_number % cfg.eval_period == 0 or last_step):
            stopped_early = evaluate(step_number)
        if step_number % cfg.checkpoint_period == 0 or last_step or stopped_early:
            save(step_number)
        if stopped_early:
            log.info(
                "early stopping at step %d: %s did not improve for %d evaluations",
                step_number,
                cfg.eval_metric,
                cfg.early_stopping_patience,
            )
            break
    progress.close()
    if latest is None and start == step_number == 0 and cfg.train_steps == 0:
        save(0)
    checkpointer.close()
    summary["step"] = step_number
    summary["state"] = state
    summary["stopped_early"] = stopped_early
    return summary


def _write_random_init(cfg: TrainConfig, params: PyTree) -> None:
    """Persists random frozen weights (demo) as a ptune checkpoint for eval and infer."""
    from ptune.checkpoints.orbax_params import save_ptune

    target = os.path.join(cfg.model_dir, "random_init")
    if os.path.exists(target):
        return
    frozen = dict(params)
    frozen["encoder"] = {k: v for k, v in params["encoder"].items() if k != "prompt"}
    save_ptune(frozen, cfg.model, target, source=f"random init, seed {cfg.seed}")
