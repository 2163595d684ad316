"""The commands that run a model over data: `ptune train`, `pretrain`, `eval`, `infer` and
`ensemble`. Each parses its own flags, builds its config from gin (`ptune.command_config`),
calls the library and prints a summary; files are written by the library.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Sequence

from ptune import runtime
from ptune.command_config import configured
from ptune.errors import ArgumentParser, UserError

GIN_HELP = """configuration, t5x style (before or after the command's own flags):
  --gin_file=FILE         a gin file (repeatable, applied in order; found as given, on
                          --gin_search_paths, or in ptune's installed gin/ folder)
  --gin.NAME=VALUE        one binding, e.g. --gin.MODEL_DIR="'runs/x'" (strings quoted)
  --gin_bindings=TEXT     bindings as gin text
data:
  --task_file=NAME:train=FILE,validation=FILE,...   a task of your own from JSONL/TSV files
  --corpus=NAME:train=FILE,objective=...            a pretraining corpus
  --tfds_data_dir, --superglue_dir, --glue_dir, --spm_path   where the data lies"""


def _parser(command_name: str) -> argparse.ArgumentParser:
    return ArgumentParser(
        prog=f"ptune {command_name}",
        epilog=GIN_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _run_training(argv: Sequence[str], gin_args, command_name: str):
    """`ptune train` and `ptune pretrain`: parse, configure, check, train; -> (cfg, result)."""
    import gin

    parser = _parser(command_name)
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the different run MODEL_DIR holds (kept until this run's first "
        "checkpoint is written; put back if this run fails before it)",
    )
    args = parser.parse_args(argv)
    runtime.setup_logging()
    import ptune.tasks  # noqa: F401  registers the tasks
    from ptune import train_setup, trainer

    cfg = configured(gin_args, trainer.TrainConfig, command_name)
    if command_name == "pretrain" and (
        cfg.prompt is not None or not train_setup.counts_everything(cfg)
    ):
        raise UserError(
            "ptune pretrain trains every weight and no prompt: use --gin_file=runs/pretrain.gin "
            "(ptune train is for prompts)"
        )
    if command_name == "pretrain" and _binds_a_prompt():
        raise UserError(
            "ptune pretrain trains no prompt, but the gin files configure one "
            "(prompts.PromptConfig: a prompts/*.gin file?): drop it, or use ptune train"
        )
    if args.overwrite:
        cfg = dataclasses.replace(cfg, overwrite=True)
    return cfg, trainer.train(cfg, config_text=gin.config_str())


def cmd_train(argv: Sequence[str], gin_args) -> int:
    cfg, result = _run_training(argv, gin_args, "train")
    best = result.best
    print(
        f"trained to step {result.step} in {cfg.model_dir}"
        + (f"; best {best['metric']} {best['value']:.4f} at step {best['step']}" if best else "")
    )
    return 0


def _binds_a_prompt() -> bool:
    """Whether the parsed gin files bind any field of `prompts.PromptConfig` (which a run
    without a prompt would silently ignore)."""
    import gin
    from ptune import prompts

    try:
        return bool(gin.get_bindings(prompts.PromptConfig))
    except (ValueError, KeyError):
        return False


def cmd_pretrain(argv: Sequence[str], gin_args) -> int:
    cfg, result = _run_training(argv, gin_args, "pretrain")
    print(
        f"pretrained to step {result.step} in {cfg.model_dir}; the model: "
        f"{os.path.join(cfg.model_dir, 'model')}"
        + ("" if cfg.export_model else " (not written: export_model=False)")
    )
    return 0


def cmd_eval(argv: Sequence[str], gin_args) -> int:
    import json

    _parser("eval").parse_args(argv)
    runtime.setup_logging()
    import ptune.tasks  # noqa: F401
    from ptune import evaluation

    cfg = configured(gin_args, evaluation.EvalConfig, "eval")
    results = evaluation.run_eval(cfg)
    print(json.dumps(results, indent=2, sort_keys=True))
    return 0


def cmd_infer(argv: Sequence[str], gin_args) -> int:
    _parser("infer").parse_args(argv)
    runtime.setup_logging()
    import ptune.tasks  # noqa: F401
    from ptune import infer

    cfg = configured(gin_args, infer.InferConfig, "infer")
    results = infer.run_infer(cfg, progress=sys.stderr.isatty())
    for r in results[:5]:
        print(f"[{r['prompt']}] {r['inputs'][:60]!r} -> {r['prediction']!r}")
    print(f"wrote {len(results)} predictions to {cfg.output_file}")
    return 0


def cmd_ensemble(argv: Sequence[str], gin_args) -> int:
    parser = _parser("ensemble")
    parser.add_argument(
        "--prompt_files",
        required=True,
        help="comma-separated prompt files (.npy/.safetensors/PEFT dirs)",
    )
    parser.add_argument("--output", default=None, help="write the table as JSON here")
    args = parser.parse_args(argv)
    runtime.setup_logging()
    import ptune.tasks  # noqa: F401
    from ptune import evaluation, infer

    cfg = infer.EnsembleConfig(
        eval=configured(gin_args, evaluation.EvalConfig, "ensemble"),
        prompt_files=[f for f in args.prompt_files.split(",") if f],
        output_file=args.output,
    )
    table = infer.run_ensemble(cfg)
    print(infer.format_table(table))
    return 0
