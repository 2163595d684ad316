"""What `ptune.trainer.train` does before and after its loop: every check of a run's inputs
and its assembly (`setup`, nothing written), the initial parameters (`initial_params`), the
periodic evaluation hook (`evaluating`), and the files a run writes besides checkpoints
(random frozen weights, the exported model, `summary.json`'s record).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import TYPE_CHECKING, Any, Optional

import jax

from ptune import (
    atomic,
    data,
    distributed,
    initial_prompts,
    memory,
    prompts,
    recipe,
    selection,
    task_checks,
)
from ptune import evaluator as evaluator_lib
from ptune import family as family_lib
from ptune import run_dir as run_dir_lib
from ptune import train_hooks as hooks_lib
from ptune import trainable as trainable_lib
from ptune.errors import UserError
from ptune.models import t5

if TYPE_CHECKING:
    from ptune.trainer import TrainConfig, TrainResult

log = logging.getLogger("ptune")
PyTree = Any


@dataclasses.dataclass
class Setup:
    """What `train` assembles before any work: the model configuration, MODEL_DIR (checked,
    not yet written), the run, the multi-task bank's tasks, the selection metric."""

    config: Any
    run_dir: run_dir_lib.RunDir
    run: recipe.Run
    bank: Optional[list[str]]
    metric: str
    optimizer_step: int


def setup(cfg: TrainConfig, primary: bool) -> Setup:
    """Every check of the run's inputs, in one place, before anything is read or written."""
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
    model = cfg.resolve(needs_checkpoint=False)  # from here the tasks read as the model does
    config = model.config
    run_dir = run_dir_lib.RunDir(
        cfg.model_dir, cfg.fingerprint(config), overwrite=cfg.overwrite, primary=primary
    )
    run_dir.check()
    require_capabilities(cfg, family_lib.family_of(config))
    task_checks.check_task(
        cfg.mixture_or_task_name,
        cfg.task_feature_lengths,
        cfg.train_split,
        splits=[cfg.eval_split] if cfg.eval_period > 0 else [],
    )
    task_checks.check_vocabulary_fits(cfg.mixture_or_task_name, config.vocab_size)
    if primary:
        task_checks.log_truncation(
            cfg.mixture_or_task_name, cfg.task_feature_lengths, cfg.train_split
        )
    optimizer_step = optimizer_start(cfg)
    metric = (
        selection.check_metric(cfg.mixture_or_task_name, cfg.eval_metric)
        if cfg.eval_period > 0
        else selection.SCORE
    )
    if cfg.early_stopping_patience is not None and cfg.eval_period <= 0:
        raise UserError("early_stopping_patience needs evaluations (eval_period > 0)")
    bank = None  # multi-task prompts: the mixture's tasks, one prompt each
    if cfg.prompt is not None and cfg.prompt.multi_task is not None:
        bank = data.bank_tasks(cfg.mixture_or_task_name)
        log.info("multi-task prompts: one per task of %s: %s", cfg.mixture_or_task_name, bank)
    memory.check_attention_fits(
        family_lib.family_of(config),
        config,
        batch_size=cfg.batch_size,
        feature_lengths=cfg.task_feature_lengths,
        prompt_length=cfg.prompt.length if cfg.prompt is not None else 0,
    )
    run = model.assemble(
        prompt_factory=cfg.prompt.factory(len(bank or ())) if cfg.prompt is not None else None,
        trainable=cfg.trainable,
        optimizer=cfg.optimizer,
    )
    run.partitioner.check_batch_size(cfg.batch_size)
    distributed.check_same_on_all_hosts(cfg.seed, "the seed")  # data order, dropout, init
    memory.check_training_fits(
        run,
        batch_size=cfg.batch_size,
        feature_lengths=cfg.task_feature_lengths,
        loss=cfg.loss,
    )
    return Setup(config, run_dir, run, bank, metric, optimizer_step)


def initial_params(cfg: TrainConfig, setup: Setup) -> tuple[dict, Optional[dict]]:
    """(the run's parameters: frozen weights straight into their shards, the prompt
    replicated; random frozen weights to write to MODEL_DIR/random_init, or None)."""
    run = setup.run
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
        params = random_weights = run.random_frozen(cfg.seed)
    else:
        params = run.load_frozen(cfg.checkpoint_path)
    if cfg.prompt is not None:
        value = initial_prompts.initial_values(
            cfg.prompt,
            run.embedding(params),
            cfg.mixture_or_task_name,
            cfg.seed,
            bank=setup.bank,
            layers=run.family.prompt_layers(setup.config),
        )
        params = run.place_prompt(params, value, cfg.seed)
    return params, random_weights


def evaluating(cfg, setup: Setup, metrics_log, finite, export, best, primary):
    """The periodic evaluation hook (None when `eval_period` is 0)."""
    if cfg.eval_period <= 0:
        return None
    evaluator = evaluator_lib.Evaluation(
        cfg.mixture_or_task_name,
        cfg.eval_feature_lengths,
        cfg.eval_batch_size or cfg.batch_size,
        cfg.eval_split,
        buckets=cfg.length_buckets,
    )
    return hooks_lib.Evaluating(
        run=setup.run,
        evaluator=evaluator,
        period=cfg.eval_period,
        task=cfg.mixture_or_task_name,
        split=cfg.eval_split,
        num_beams=cfg.eval_num_beams,
        prompt_index={task: k for k, task in enumerate(setup.bank)} if setup.bank else None,
        model_dir=cfg.model_dir,
        metrics_log=metrics_log,
        finite=finite,
        export=export,
        best=best,
        primary=primary,
    )


def require_capabilities(cfg: TrainConfig, family: family_lib.Family) -> None:
    """What this run asks of its model family, refused in one line before any work."""
    if cfg.random_init:
        family_lib.require(family, "random_init")
    if cfg.export_model:
        family_lib.require(family, "export_model")
    if cfg.prompt is not None and cfg.prompt.deep:
        family_lib.require(family, "deep_prompts")
    if cfg.eval_num_beams > 1:
        family_lib.require(family, "beam_search", "eval_num_beams")


def counts_everything(cfg: TrainConfig) -> bool:
    """Whether every weight trains (model tuning, pretraining): then random initial weights
    are a start from scratch, not a random frozen model."""
    return tuple(cfg.trainable) == trainable_lib.EVERYTHING


def export_model(cfg: TrainConfig, config: t5.T5Config, params: PyTree, step: int) -> None:
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


def optimizer_start(cfg: TrainConfig) -> int:
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


def _initializer_used(cfg: TrainConfig) -> Optional[str]:
    """The initializer that made the prompt, as records name it: class labels over a task
    without labels is sampled vocabulary (the same labels `initial_prompts` gave it)."""
    from ptune.tasks import registry

    if cfg.prompt is None:
        return None
    return prompts.initializers.initializer_name(
        cfg.prompt.initializer, registry.label_names(cfg.mixture_or_task_name)
    )


def summary(cfg, config, counts, result: TrainResult, seconds: float) -> dict:
    """summary.json: what `ptune report` tabulates for this run."""
    return {
        "task": cfg.mixture_or_task_name,
        "model": (
            family_lib.family_of(config).describe(config)
            + (" (random)" if cfg.random_init and cfg.checkpoint_path is None else "")
        ),
        "prompt_length": cfg.prompt.length if cfg.prompt is not None else None,
        "initializer": _initializer_used(cfg),
        "trainable_params": counts[0],
        "total_params": counts[1],
        "best": result.best,
        "steps": result.step,
        "wall_seconds": seconds,
        "label": cfg.label,
    }


def write_random_init(cfg: TrainConfig, config: t5.T5Config, params: PyTree) -> None:
    """Persists random frozen weights (demo) as a ptune checkpoint for eval and infer."""
    from ptune.checkpoints.orbax_params import save_ptune

    target = os.path.join(cfg.model_dir, "random_init")
    if os.path.exists(target):
        return
    save_ptune(params, config, target, source=f"random init, seed {cfg.seed}")
