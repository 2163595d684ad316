"""`ptune eval`: a saved prompt (or none) over the frozen model, on one task or mixture,
scored by `ptune.evaluator.Evaluation` (seqio's Evaluator, the T5 library's metrics); the
results go to `eval_<split>.json` with the score that picks the best prompt
(`ptune.selection`). Its configuration, `EvalConfig`, is what `gin/runs/eval.gin` binds.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Mapping, Optional

import numpy as np

from ptune import atomic, data, frozen_model, memory, prompts, selection, task_checks
from ptune import family as family_lib
from ptune.errors import UserError
from ptune.evaluator import Evaluation, write_results

log = logging.getLogger("ptune")


@dataclasses.dataclass(frozen=True)
class EvalConfig(frozen_model.FrozenModel):
    """`ptune eval`: a saved prompt (or `no_prompt`) over the frozen model
    (`frozen_model.FrozenModel`'s fields, keyword-only), on one task or mixture.

    prompt_file: a prompt, a deep prompt, or a multi-task bank directory (each task of the
      mixture evaluated with its own prompt).
    prompt: its placement applies (the prompt file decides the length).
    eval_feature_lengths: None evaluates every example whole (see `Evaluation`).
    instruction, shots, shots_seed: prompt design (the paper's GPT-3-style baseline): a
      hand-written instruction and/or `shots` solved training examples (drawn with
      `shots_seed`) before every input (`ptune.tasks.prompt_design`).
    """

    mixture_or_task_name: str
    prompt_file: Optional[str] = None
    no_prompt: bool = False  # evaluate the bare checkpoint (needs saying: prompts are the point)
    eval_feature_lengths: Optional[Mapping[str, int]] = dataclasses.field(
        default=None, metadata={"min": 1, "keys": ("inputs", "targets")}
    )
    batch_size: int = dataclasses.field(default=32, metadata={"min": 1})
    eval_split: str = "validation"
    # 1: greedy; n > 1: beam search (t5x's decoding, alpha 0.6)
    num_beams: int = dataclasses.field(default=1, metadata={"min": 1})
    output_dir: Optional[str] = None  # where eval_<split>.json goes (default: beside prompt)
    instruction: Optional[str] = None  # text before every input (prompt design)
    shots: int = dataclasses.field(default=0, metadata={"min": 0})  # train examples before it
    shots_seed: int = 0  # which train examples


def run_eval(cfg: EvalConfig) -> dict[str, dict[str, float]]:
    """Loads the frozen model and the prompt, evaluates, writes JSON; returns the results."""
    if cfg.prompt_file is None and not cfg.no_prompt:
        raise UserError(
            "no prompt to evaluate: pass --gin.PROMPT_FILE=\"'prompt.npy'\", or "
            "--gin.NO_PROMPT=True to score the bare frozen model"
        )
    if cfg.prompt_file is not None and cfg.no_prompt:
        raise UserError("PROMPT_FILE and NO_PROMPT=True contradict each other: choose one")
    output_dir = cfg.output_dir or (
        os.path.dirname(os.path.abspath(cfg.prompt_file)) if cfg.prompt_file else os.getcwd()
    )
    atomic.check_writable_dir(output_dir, "the eval output directory (EVAL_OUTPUT_DIR)")
    model = cfg.resolve(what="ptune eval")
    task_checks.check_task(cfg.mixture_or_task_name, cfg.eval_feature_lengths, cfg.eval_split)
    task_checks.check_vocabulary_fits(cfg.mixture_or_task_name, model.config.vocab_size)
    prompt, factory, prompt_index = _eval_prompt(cfg, model.config)
    task_name, original = cfg.mixture_or_task_name, {}
    if cfg.instruction is not None or cfg.shots:
        from ptune.tasks import prompt_design

        task_name, original = prompt_design.designed(
            task_name, cfg.instruction, cfg.shots, cfg.shots_seed
        )
    if prompt_index is not None and original:
        prompt_index = {new: prompt_index[task] for new, task in original.items()}
    evaluator = Evaluation(
        task_name,
        cfg.eval_feature_lengths,
        cfg.batch_size,
        cfg.eval_split,
        buckets=cfg.length_buckets,
    )
    run = model.assemble(prompt_factory=factory)
    memory.check_serving_fits(
        run,
        batch_size=cfg.batch_size,
        feature_lengths=evaluator.lengths,
        prompt_length=0 if prompt is None else int(np.shape(prompt)[-2]),
    )
    params = run.load_frozen(cfg.checkpoint_path)
    if prompt is not None:
        params = run.place_prompt(params, prompt)
    with run.partitioner.context():
        results = evaluator(run.model, params, cfg.num_beams, prompt_index)
    results = {original.get(task, task): metrics for task, metrics in results.items()}
    write_results(
        os.path.join(output_dir, f"eval_{cfg.eval_split}.json"),
        -1,
        results,
        {
            "checkpoint_path": cfg.checkpoint_path,
            "prompt_file": cfg.prompt_file,
            "instruction": cfg.instruction,
            "shots": cfg.shots,
            "shots_seed": cfg.shots_seed if cfg.shots else None,
            selection.SCORE: selection.score(results, cfg.mixture_or_task_name)
            if selection.primary_metrics(cfg.mixture_or_task_name)
            else None,
        },
    )
    return results


def _eval_prompt(cfg: EvalConfig, config):
    """What `ptune eval` puts in the prompt slot -> (value, prompt factory, {task: index} or
    None): a prompt [P, E], a deep prompt [layers, P, E], or a multi-task bank directory
    (each task of the mixture with its own prompt); (None, None, None) with NO_PROMPT."""
    from ptune.checkpoints import prompt_io

    if cfg.prompt_file is None:
        log.warning("evaluating the bare frozen model, without a prompt (NO_PROMPT=True)")
        return None, None, None
    if prompt_io.is_bank(cfg.prompt_file):
        named = prompt_io.read_bank(cfg.prompt_file)
        tasks = [t.name for t in getattr(data.get_task(cfg.mixture_or_task_name), "tasks", [])]
        tasks = tasks or [cfg.mixture_or_task_name]
        missing = [t for t in tasks if t not in named]
        if missing:
            raise UserError(
                f"the prompt bank {cfg.prompt_file} has no prompt for {', '.join(missing)} "
                f"(it holds {', '.join(named)})"
            )
        value, lengths = prompts.stack_bank([prompt_io.load_prompt_file(named[t]) for t in tasks])
        factory = prompts.bank_factory(lengths, cfg.placement())
        index = {t: k for k, t in enumerate(tasks)}
    else:
        value = prompt_io.load_prompt_file(cfg.prompt_file, deep=True)
        index = None
        family = family_lib.family_of(config)
        if value.ndim == 3:
            family_lib.require(family, "deep_prompts", f"prompt file {cfg.prompt_file}")
        if value.ndim == 3 and value.shape[0] != family.prompt_layers(config):
            raise UserError(
                f"prompt file {cfg.prompt_file}: a deep prompt for {value.shape[0]} layers; "
                f"the model takes one for {family.prompt_layers(config)}"
            )
        if value.ndim == 3 and cfg.placement() != "prefix":
            raise UserError(
                f"prompt file {cfg.prompt_file} is a deep prompt, which takes prefix placement "
                f"only, got placement {cfg.placement()!r}"
            )
        factory = (
            prompts.deep_factory(value.shape[1])
            if value.ndim == 3
            else prompts.prompt_factory(value.shape[0], cfg.placement())
        )
    if value.shape[-1] != config.emb_dim:
        raise UserError(
            f"prompt file {cfg.prompt_file}: width {value.shape[-1]} does not match the "
            f"model's emb_dim {config.emb_dim}"
        )
    return value, factory, index
