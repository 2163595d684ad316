"""`ptune` command line: wires gin, the library and the file system together; nothing more.

    ptune info  --gin_file=models/t5_1_1_xxl.gin      # configuration, parameter tree, count
    ptune info  --checkpoint=PATH                     # detected format, inferred config, count
    ptune convert --from PATH --to DIR                # any checkpoint -> ptune's Orbax format
    ptune infer --gin_file=models/... --gin_file=runs/infer.gin --gin.PROMPT_FILES=...
    ptune ensemble --gin_file=models/... --gin_file=runs/eval.gin --prompt_files=a.npy,b.npy
    ptune explain --prompt_file=P.npy --checkpoint=PATH [--task=NAME] [--top_k=5]
    ptune tasks                                       # registered seqio tasks and mixtures
    ptune report RUN_DIR... [--output DIR]            # plots and tables of finished runs
    ptune similar --prompts A.npy,B.npy --target T.npy  # SPoT: which source transfers best
    ptune plan --gin_file=... --mesh_shape=DATA,MODEL   # per-device memory, no weights
    ptune train ... --multiprocess                    # one process per host (or
        --coordinator_address=HOST:PORT --num_processes=N --process_id=I)

Gin flags follow t5x: `--gin_file` (repeatable), `--gin.NAME=VALUE`, `--gin_bindings`,
`--gin_search_paths`. Data flags (any command): `--tfds_data_dir`, `--tfds_manual_dir`,
`--superglue_dir`, `--glue_dir`, `--spm_path` (or gin: `data.DataSources.*`; or the
environment), and `--task_file=NAME:train=a.jsonl,validation=b.jsonl,...` (repeatable) for a
task of your own from plain files.
Bad input prints one line `ptune: error: ...` and exits with status 2; set PTUNE_DEBUG=1 to
see the traceback as well.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import traceback
from typing import Callable, Sequence

from ptune.errors import UserError

COMMANDS: dict[str, tuple[str, Callable]] = {}


def command(name: str, help_text: str):
    def register(fn):
        COMMANDS[name] = (help_text, fn)
        return fn

    return register


def _parse_gin(gin_args, defaults: Sequence[str] = ()) -> list[str]:
    """Parses gin, imports task modules, checks macros; returns the resolved gin files.
    `defaults` are bindings applied before the user's, each only if the files use its macro."""
    from ptune import ginconfig

    if defaults:
        resolved = [ginconfig.resolve_gin_file(f, gin_args.search_paths) for f in gin_args.files]
        known = ginconfig.file_macros(resolved, gin_args.search_paths)
        used = [d for d in defaults if d.split("=", 1)[0] in known]
        gin_args = dataclasses.replace(gin_args, bindings=used + list(gin_args.bindings))
    files = ginconfig.parse(gin_args)
    ginconfig.check_macros(gin_args, files)
    _import_task_modules(ginconfig.macro("MIXTURE_OR_TASK_MODULE"))
    return files


def _import_task_modules(names) -> None:
    """t5x's MIXTURE_OR_TASK_MODULE: modules that register the user's own seqio tasks,
    imported before any task name is resolved (a comma-separated string or a list)."""
    import importlib

    if not names:
        return
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise UserError(
                f"MIXTURE_OR_TASK_MODULE {name!r} cannot be imported ({e}); is it on "
                "PYTHONPATH (the current directory counts)?"
            ) from e


def format_parameter_tree(boxed_params) -> list[str]:
    """One line per parameter: path, shape, logical axes (from abstract, boxed params)."""
    import jax
    from flax import linen as nn

    lines = []
    flat = jax.tree_util.tree_flatten_with_path(
        boxed_params, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)
    )[0]
    for path, leaf in flat:
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        names = getattr(leaf, "names", None)
        value = nn.unbox(leaf)
        axes = "(" + ", ".join(str(n) for n in names) + ")" if names is not None else "-"
        lines.append(f"{name:<70} {str(tuple(value.shape)):<18} {axes}")
    return lines


@command("info", "print a model's configuration, parameter tree and parameter count")
def cmd_info(argv: Sequence[str], gin_args) -> int:
    import numpy as np

    parser = argparse.ArgumentParser(prog="ptune info")
    parser.add_argument("--no_tree", action="store_true", help="omit the parameter tree")
    parser.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="describe a checkpoint (t5x, t5x Orbax, HF, ptune): detected "
        "format, inferred config (assumed fields marked), count; with "
        "--gin_file, check it strictly against that model instead",
    )
    args = parser.parse_args(argv)
    if not gin_args.files and not args.checkpoint:
        raise UserError("ptune info needs --gin_file=models/<model>.gin or --checkpoint=PATH")
    import jax
    from flax import linen as nn

    from ptune import ginconfig, recipe
    from ptune.checkpoints import hf_causal

    if gin_args.files or gin_args.bindings:
        _parse_gin(gin_args)
    fields = ginconfig.model_fields()
    assumed = {}
    if args.checkpoint and hf_causal.is_causal_dir(args.checkpoint):
        config = recipe.resolve_model_config(fields, args.checkpoint)
        hf_causal.check(args.checkpoint, config)
        print(f"checkpoint: {args.checkpoint}")
        print("format: hf (decoder-only)")
    elif args.checkpoint:
        from ptune import checkpoints

        described = checkpoints.describe(args.checkpoint)
        config = recipe.resolve_model_config(fields, args.checkpoint) if fields else None
        config = config or described.config
        assumed = {k: v for k, v in described.assumed.items() if k not in fields}
        print(f"checkpoint: {described.path}")
        print(f"format: {described.format}")
        if described.step is not None:
            print(f"step: {described.step}")
    else:
        config = recipe.resolve_model_config(fields, None)
    print("config:")
    for field in dataclasses.fields(config):
        note = f"  # assumed: {assumed[field.name]}" if field.name in assumed else ""
        print(f"  {field.name} = {getattr(config, field.name)!r}{note}")
    boxed = recipe.abstract_params(config)
    if not args.no_tree:
        print("parameters:")
        for line in format_parameter_tree(boxed):
            print("  " + line)
    total = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(nn.unbox(boxed)))
    print(f"total_params: {total}")
    return 0


@command("convert", "convert a t5x / HF checkpoint into ptune's Orbax format (fast restores)")
def cmd_convert(argv: Sequence[str], gin_args) -> int:
    parser = argparse.ArgumentParser(prog="ptune convert")
    parser.add_argument(
        "--from",
        dest="src",
        required=True,
        metavar="PATH",
        help="checkpoint to convert (any format `ptune info` detects)",
    )
    parser.add_argument(
        "--to",
        dest="dst",
        required=True,
        metavar="DIR",
        help="output directory (written atomically; must not exist)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing DIR")
    args = parser.parse_args(argv)
    from ptune import checkpoints, ginconfig, recipe
    from ptune.checkpoints import hf_causal

    if hf_causal.is_causal_dir(args.src):
        raise UserError(
            f"{args.src} is a decoder-only model: ptune reads its safetensors directly, there "
            "is nothing to convert"
        )
    config = None
    if gin_args.files or gin_args.bindings:
        _parse_gin(gin_args)
        config = recipe.resolve_model_config(ginconfig.model_fields(), args.src)
    written = checkpoints.convert(args.src, args.dst, config, overwrite=args.overwrite)
    print(f"wrote {written}")
    return 0


REQUIRED_MACROS = (
    "MODEL_DIR",
    "MIXTURE_OR_TASK_NAME",
    "INITIAL_CHECKPOINT_PATH",
    "INITIAL_PROMPT_FILE",
    "PROMPT_FILES",
    "INFER_INPUT_FILE",
    "INFER_OUTPUT_FILE",
)


def _check_required_macros() -> None:
    """t5x-style macros bound to %gin.REQUIRED fail here, before any work, in one line."""
    import gin

    for name in REQUIRED_MACROS:
        try:
            value = gin.query_parameter(f"{name}/macro.value")
        except (ValueError, KeyError):
            continue
        if (
            value is gin.REQUIRED
            or type(value).__name__ == "_GinRequired"
            or (hasattr(value, "selector") and "REQUIRED" in str(value))
        ):
            example = {
                "MODEL_DIR": "'runs/my_run'",
                "MIXTURE_OR_TASK_NAME": "'taskless_super_glue_boolq_v102'",
                "INITIAL_CHECKPOINT_PATH": "'gs://.../checkpoint_1100000'",
                "INITIAL_PROMPT_FILE": "'prompt.npy'",
                "PROMPT_FILES": "{'task_name': 'prompt.npy'}",
                "INFER_INPUT_FILE": "'requests.jsonl'",
                "INFER_OUTPUT_FILE": "'predictions.jsonl'",
            }[name]
            raise UserError(f'{name} is required: pass --gin.{name}="{example}"')


def _setup_logging() -> None:
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("ptune").setLevel(logging.INFO)


DATA_FLAGS = {
    "--tfds_data_dir": "TFDS_DATA_DIR",
    "--spm_path": "PTUNE_SPM_PATH",
    "--tfds_manual_dir": "PTUNE_TFDS_MANUAL_DIR",
    "--superglue_dir": "PTUNE_SUPERGLUE_DIR",
    "--glue_dir": "PTUNE_GLUE_DIR",
}


TASK_FLAGS = {
    "--task_file": "NAME:train=FILE,validation=FILE,...",
    "--corpus": "NAME:train=FILE,objective=span_corruption,vocabulary=t5",
}


def _take_data_flags(argv: Sequence[str]) -> list[str]:
    """`--tfds_data_dir=...` and friends set the environment the tasks read; each
    `--task_file=NAME:train=a.jsonl,...` registers a task from plain files (see
    `ptune.tasks.files.parse_spec`), each `--corpus=NAME:train=a.txt,...` a pretraining task
    (`ptune.tasks.pretraining.parse_spec`). The other arguments are returned."""
    rest = []
    for arg in argv:
        name, eq, value = arg.partition("=")
        if name in DATA_FLAGS or name in TASK_FLAGS:
            if not eq or not value:
                raise UserError(f"{name} needs a value: {name}=" + TASK_FLAGS.get(name, "PATH"))
            if name == "--task_file":
                from ptune.tasks import files

                files.parse_spec(value).register()
            elif name == "--corpus":
                from ptune.tasks import pretraining

                pretraining.parse_spec(value).register()
            else:
                os.environ[DATA_FLAGS[name]] = value
        else:
            rest.append(arg)
    return rest


def _configured(gin_args, fn, command_name: str):
    """Parses gin, checks required and unknown macros, applies data sources, imports task
    modules, and builds `fn`'s config with the model fields the gin files bind."""
    from ptune import data, ginconfig

    if not gin_args.files:
        example = {
            "train": "--gin_file=runs/prompt_tuning.gin",
            "pretrain": "--gin_file=runs/pretrain.gin",
            "eval": "--gin_file=runs/eval.gin",
            "infer": "--gin_file=runs/infer.gin",
            "ensemble": "--gin_file=runs/eval.gin",
        }[command_name]
        raise UserError(
            f"ptune {command_name} needs gin files: {example}, plus a models/*.gin unless the "
            "checkpoint carries its configuration"
        )
    _parse_gin(gin_args)
    _check_required_macros()
    ginconfig.call(data.DataSources).apply()
    return ginconfig.call(fn, model=ginconfig.model_fields() or None)


def _run_training(argv: Sequence[str], gin_args, command_name: str):
    """`ptune train` and `ptune pretrain`: parse, configure, check, train; -> (cfg, result)."""
    import gin

    parser = argparse.ArgumentParser(prog=f"ptune {command_name}")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh even if MODEL_DIR holds a different run",
    )
    args = parser.parse_args(argv)
    _setup_logging()
    import ptune.tasks  # noqa: F401  registers the tasks
    from ptune import trainer

    cfg = _configured(gin_args, trainer.TrainConfig, command_name)
    if command_name == "pretrain" and (
        cfg.prompt is not None or not trainer.counts_everything(cfg)
    ):
        raise UserError(
            "ptune pretrain trains every weight and no prompt: use --gin_file=runs/pretrain.gin "
            "(ptune train is for prompts)"
        )
    if args.overwrite:
        cfg = dataclasses.replace(cfg, overwrite=True)
    return cfg, trainer.train(cfg, config_text=gin.config_str())


@command("train", "train (or resume) a prompt from gin files")
def cmd_train(argv: Sequence[str], gin_args) -> int:
    cfg, result = _run_training(argv, gin_args, "train")
    best = result.best
    print(
        f"trained to step {result.step} in {cfg.model_dir}"
        + (f"; best {best['metric']} {best['value']:.4f} at step {best['step']}" if best else "")
    )
    return 0


@command("pretrain", "train every weight of a T5 on a text corpus (span corruption, prefix LM)")
def cmd_pretrain(argv: Sequence[str], gin_args) -> int:
    cfg, result = _run_training(argv, gin_args, "pretrain")
    print(
        f"pretrained to step {result.step} in {cfg.model_dir}; the model: "
        f"{os.path.join(cfg.model_dir, 'model')}"
        + ("" if cfg.export_model else " (not written: export_model=False)")
    )
    return 0


@command("eval", "evaluate a saved prompt (or a bare checkpoint) on a task")
def cmd_eval(argv: Sequence[str], gin_args) -> int:
    import json

    argparse.ArgumentParser(prog="ptune eval").parse_args(argv)
    _setup_logging()
    import ptune.tasks  # noqa: F401
    from ptune import evaluation

    cfg = _configured(gin_args, evaluation.EvalConfig, "eval")
    results = evaluation.run_eval(cfg)
    print(json.dumps(results, indent=2, sort_keys=True))
    return 0


@command("infer", "serve a file of requests with a bank of named prompts (mixed batches)")
def cmd_infer(argv: Sequence[str], gin_args) -> int:
    argparse.ArgumentParser(prog="ptune infer").parse_args(argv)
    _setup_logging()
    import ptune.tasks  # noqa: F401
    from ptune import infer

    cfg = _configured(gin_args, infer.InferConfig, "infer")
    results = infer.run_infer(cfg, progress=sys.stderr.isatty())
    for r in results[:5]:
        print(f"[{r['prompt']}] {r['inputs'][:60]!r} -> {r['prediction']!r}")
    print(f"wrote {len(results)} predictions to {cfg.output_file}")
    return 0


@command("ensemble", "evaluate N prompts of one task in one pass; majority vote (Table 3)")
def cmd_ensemble(argv: Sequence[str], gin_args) -> int:
    parser = argparse.ArgumentParser(prog="ptune ensemble")
    parser.add_argument(
        "--prompt_files",
        required=True,
        help="comma-separated prompt files (.npy/.safetensors/PEFT dirs)",
    )
    parser.add_argument("--output", default=None, help="write the table as JSON here")
    args = parser.parse_args(argv)
    _setup_logging()
    import ptune.tasks  # noqa: F401
    from ptune import evaluation, infer

    eval_cfg = _configured(gin_args, evaluation.EvalConfig, "ensemble")
    files = [f for f in args.prompt_files.split(",") if f]
    cfg = infer.EnsembleConfig(
        mixture_or_task_name=eval_cfg.mixture_or_task_name,
        model=eval_cfg.model,
        checkpoint_path=eval_cfg.checkpoint_path,
        prompt_files=files,
        prompt=eval_cfg.prompt,
        task_feature_lengths=eval_cfg.task_feature_lengths,
        batch_size=eval_cfg.batch_size,
        eval_split=eval_cfg.eval_split,
        output_file=args.output,
    )
    table = infer.run_ensemble(cfg)
    print(infer.format_table(table))
    return 0


@command("explain", "nearest vocabulary tokens of each prompt position (paper, Section 7)")
def cmd_explain(argv: Sequence[str], gin_args) -> int:
    parser = argparse.ArgumentParser(prog="ptune explain")
    parser.add_argument("--prompt_file", required=True)
    parser.add_argument("--checkpoint", required=True, help="the frozen model (embedding table)")
    parser.add_argument(
        "--task",
        default=None,
        help="task whose vocabulary decodes tokens and whose labels summarise",
    )
    parser.add_argument("--labels", default=None, help="comma-separated labels (else the task's)")
    parser.add_argument("--top_k", type=int, default=5)
    parser.add_argument("--output", default=None, help="JSON output (default: beside prompt)")
    args = parser.parse_args(argv)
    from ptune import interpret, prompts
    from ptune.checkpoints import hf_causal

    vocabulary, labels = None, None
    if hf_causal.is_causal_dir(args.checkpoint):  # its tokenizer decodes, and feeds the tasks
        from ptune import data
        from ptune.tasks import vocab

        data.causal_layout(args.checkpoint)
        vocabulary = vocab.active_tokenizer()
    if args.task:
        import ptune.tasks  # noqa: F401
        from ptune import data
        from ptune.tasks import registry

        vocabulary = data.output_vocabulary(args.task)
        labels = registry.label_names(args.task)
    if args.labels:
        labels = [x for x in args.labels.split(",") if x]
    prompt = prompts.load_prompt_file(args.prompt_file)
    result = interpret.explain(
        prompt, interpret.read_embedding(args.checkpoint), vocabulary, labels, args.top_k
    )
    print(interpret.format_text(result))
    from ptune import atomic

    output = args.output or os.path.splitext(args.prompt_file)[0] + ".explain.json"
    atomic.write_json(output, result)
    print(f"wrote {output}")
    return 0


@command("tasks", "list the registered seqio tasks and mixtures")
def cmd_tasks(argv: Sequence[str], gin_args) -> int:
    parser = argparse.ArgumentParser(prog="ptune tasks")
    parser.add_argument("--all", action="store_true", help="also tasks registered by others")
    args = parser.parse_args(argv)
    import ptune.tasks  # noqa: F401
    from ptune.tasks import registry

    tasks = registry.list_tasks(only_ptune=not args.all, include_mixtures=False)
    mixtures = registry.list_mixtures(only_ptune=not args.all)
    print(f"tasks ({len(tasks)}):")
    for name in tasks:
        print(f"  {name}")
    print(f"mixtures ({len(mixtures)}):")
    for name in mixtures:
        print(f"  {name}")
    return 0


@command("export", "write a prompt for other tools: a PEFT adapter directory, .npy or .safetensors")
def cmd_export(argv: Sequence[str], gin_args) -> int:
    parser = argparse.ArgumentParser(prog="ptune export")
    parser.add_argument(
        "--format",
        required=True,
        choices=("peft", "npy", "safetensors"),
        help="peft: adapter_model.safetensors + adapter_config.json that "
        "peft.PeftModel.from_pretrained loads",
    )
    parser.add_argument(
        "--prompt",
        required=True,
        metavar="PATH",
        help="the prompt: .npy, .safetensors or a PEFT adapter directory",
    )
    parser.add_argument(
        "--to",
        required=True,
        metavar="PATH",
        help="output directory (peft) or file (.npy / .safetensors)",
    )
    parser.add_argument(
        "--base_model",
        metavar="NAME",
        help="base_model_name_or_path recorded in the PEFT adapter config",
    )
    parser.add_argument(
        "--task_type",
        default="SEQ_2_SEQ_LM",
        choices=("SEQ_2_SEQ_LM", "CAUSAL_LM"),
        help="the PEFT adapter's task type: T5 (default) or a decoder-only model",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing PATH")
    args = parser.parse_args(argv)
    from ptune import export

    written = export.export_prompt(
        args.prompt,
        args.to,
        args.format,
        base_model=args.base_model,
        overwrite=args.overwrite,
        task_type=args.task_type,
    )
    print(f"wrote {written}")
    return 0


@command("report", "plots and tables from run directories (and `ptune ensemble` JSON)")
def cmd_report(argv: Sequence[str], gin_args) -> int:
    from ptune import report

    return report.main(argv)


@command("similar", "rank source prompts by SPoT's similarity to a target task's prompt")
def cmd_similar(argv: Sequence[str], gin_args) -> int:
    from ptune import similarity

    return similarity.main(argv)


# ---- capacity planning and multi-process flags (ptune.plan, ptune.distributed)

PLAN_PLACEHOLDERS = [
    "MODEL_DIR='(plan)'",
    "MIXTURE_OR_TASK_NAME='(plan)'",
    "INITIAL_CHECKPOINT_PATH=None",
    "INITIAL_PROMPT_FILE=None",
]


def _simulate_cpu_devices(count: int) -> None:
    """Makes jax (not yet started) see `count` CPU devices, however many chips are here."""
    flags = [
        f
        for f in os.environ.get("XLA_FLAGS", "").split()
        if not f.startswith("--xla_force_host_platform_device_count")
    ]
    os.environ["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={count}"])
    os.environ["JAX_PLATFORMS"] = "cpu"


@command("plan", "per-device memory of a training run on a mesh, compiled from shapes only")
def cmd_plan(argv: Sequence[str], gin_args) -> int:
    parser = argparse.ArgumentParser(
        prog="ptune plan",
        description="Compiles the sharded train step from abstract shapes "
        "(no weights allocated) and prints per-device memory; the last line reads "
        "'per_device_bytes: N'. Required run macros (MODEL_DIR, ...) need not be given.",
    )
    parser.add_argument(
        "--mesh_shape",
        required=True,
        metavar="DATA,MODEL",
        help="mesh to plan for, e.g. 4,4 (simulated on CPU devices)",
    )
    parser.add_argument(
        "--scan_layers",
        action="store_true",
        help="plan with scanned layers: much faster to compile for big models",
    )
    parser.add_argument(
        "--real_devices",
        action="store_true",
        help="compile for this machine's own devices instead of simulated CPUs",
    )
    parser.add_argument(
        "--fit",
        metavar="BYTES",
        default=None,
        help="per-device budget, e.g. 16GiB: try the memory-relevant settings (mesh splits of "
        "the device count, remat, bfloat16 activations and frozen weights, 2-D weight "
        "partitioning; layers scanned), cheapest first, and print the flags of the first "
        "that fits",
    )
    args = parser.parse_args(argv)
    try:
        data, model = (int(n) for n in args.mesh_shape.split(","))
    except ValueError:
        raise UserError(f"--mesh_shape must be DATA,MODEL (e.g. 4,4), got {args.mesh_shape!r}")
    if data < 1 or model < 1:
        raise UserError(f"--mesh_shape sizes must be positive, got {args.mesh_shape!r}")
    budget = None
    if args.fit is not None:
        from ptune import plan as plan_lib

        try:
            budget = plan_lib.parse_bytes(args.fit)
        except ValueError as e:
            raise UserError(f"--fit needs {e}")
    if not args.real_devices:
        _simulate_cpu_devices(data * model)
    _setup_logging()
    from ptune import ginconfig, plan, recipe, trainer

    _parse_gin(gin_args, defaults=PLAN_PLACEHOLDERS)
    cfg = ginconfig.call(trainer.TrainConfig, model=ginconfig.model_fields() or None)
    model_config = recipe.resolve_model_config(cfg.model, cfg.checkpoint_path, what="the plan")
    if args.scan_layers:
        model_config = model_config.replace(scan_layers=True)
    if budget is not None:
        return _fit(cfg, model_config, data * model, budget)
    run = recipe.assemble(
        model_config,
        prompt_factory=_plan_prompt_factory(cfg),
        mesh=dataclasses.replace(cfg.partitioning, mesh_shape=(data, model)),
        trainable=cfg.trainable,
        optimizer=cfg.optimizer,
        frozen_dtype=cfg.frozen_dtype,
    )
    result = plan.plan_training(
        run, batch_size=cfg.batch_size, feature_lengths=cfg.task_feature_lengths, loss=cfg.loss
    )
    print(
        f"model: {_layers(model_config)} layers, "
        f"emb {model_config.emb_dim}, activations {model_config.dtype}, frozen weights "
        f"{cfg.frozen_dtype or 'float32'}, remat {model_config.remat_policy}, scanned "
        f"{model_config.scan_layers}; batch {cfg.batch_size}, lengths "
        f"{dict(cfg.task_feature_lengths)}"
    )
    print("\n".join(result.lines()))
    return 0


def _layers(config) -> str:
    """ "8+8" for a T5, "22" for a decoder-only model."""
    if hasattr(config, "num_hidden_layers"):
        return str(config.num_hidden_layers)
    return f"{config.num_encoder_layers}+{config.num_decoder_layers}"


def _plan_prompt_factory(cfg):
    """The run's prompt module; multi-task prompts are sized by the mixture's task count."""
    if cfg.prompt is None:
        return None
    if cfg.prompt.multi_task is None:
        return cfg.prompt.factory()
    if cfg.mixture_or_task_name == "(plan)":
        raise UserError(
            "multi-task prompts hold one prompt per task: name the mixture "
            "(--gin.MIXTURE_OR_TASK_NAME=...) so `ptune plan` can size the bank"
        )
    import ptune.tasks  # noqa: F401  registers the mixtures
    from ptune import data

    return cfg.prompt.factory(len(data.bank_tasks(cfg.mixture_or_task_name)))


def _fit(cfg, model_config, devices: int, budget: int) -> int:
    """`ptune plan --fit`: the cheapest setting whose step fits `budget` bytes per device."""
    from ptune import plan, recipe, trainer

    def plan_for(setting: plan.Setting) -> plan.Plan:
        run = recipe.assemble(
            model_config.replace(
                scan_layers=True, remat_policy=setting.remat_policy, dtype=setting.dtype
            ),
            prompt_factory=_plan_prompt_factory(cfg),
            mesh=dataclasses.replace(
                cfg.partitioning,
                mesh_shape=setting.mesh_shape,
                parameter_partitioning_dims=setting.parameter_partitioning_dims,
            ),
            trainable=cfg.trainable,
            optimizer=cfg.optimizer,
            frozen_dtype=setting.frozen_dtype,
        )
        return plan.plan_training(
            run, batch_size=cfg.batch_size, feature_lengths=cfg.task_feature_lengths, loss=cfg.loss
        )

    candidates = plan.candidate_settings(
        devices, cfg.batch_size, frozen_weights=not trainer.counts_everything(cfg)
    )
    if not candidates:
        raise UserError(
            f"batch size {cfg.batch_size} is not divisible by any data-axis size of {devices} "
            "devices"
        )
    print(
        f"fitting {_layers(model_config)} layers, "
        f"emb {model_config.emb_dim}, batch {cfg.batch_size}, lengths "
        f"{dict(cfg.task_feature_lengths)} on {devices} devices in {budget / plan.GIB:.2f} GiB "
        "each (XLA:CPU's estimate, an upper bound for TPU); cheapest first:",
        flush=True,
    )
    family = type(model_config)
    result = plan.fit(
        plan_for,
        candidates,
        budget,
        log=lambda line: print(line, flush=True),
        model=f"{family.__module__.rsplit('.', 1)[-1]}.{family.__name__}",
    )
    print("\n".join(result.lines()[len(result.tried) :]))
    return 0 if result.fitting is not None else 1


PROCESS_FLAGS = ("--coordinator_address", "--num_processes", "--process_id")


def _take_process_flags(argv: Sequence[str]) -> list[str]:
    """`--multiprocess` (auto-detect: TPU pod, SLURM) or `--coordinator_address=HOST:PORT
    --num_processes=N --process_id=I` join this process to the others before jax starts
    (see ptune.distributed); the other arguments are returned."""
    rest, values, multiprocess = [], {}, False
    for arg in argv:
        name, eq, value = arg.partition("=")
        if arg == "--multiprocess":
            multiprocess = True
        elif name in PROCESS_FLAGS:
            if not eq or not value:
                raise UserError(f"{name} needs a value: {name}=VALUE")
            values[name[2:]] = value
        else:
            rest.append(arg)
    if multiprocess or values:
        from ptune import distributed

        try:
            config = distributed.ProcessConfig(
                coordinator_address=values.get("coordinator_address"),
                num_processes=int(values["num_processes"]) if "num_processes" in values else None,
                process_id=int(values["process_id"]) if "process_id" in values else None,
            )
        except ValueError:
            raise UserError("--num_processes and --process_id must be integers")
        distributed.initialize(config)
    return rest


def _quiet_tensorflow() -> None:
    """Imports TensorFlow (seqio's data engine) with its C++ start-up lines silenced and its
    GPUs hidden: ptune never computes with TensorFlow, and on a machine without a GPU its CUDA
    probing prints lines that read like errors. Only the import and the device probe are
    silenced: warnings raised later still show, and an import failure is re-raised after
    stderr is restored."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules:
        return
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            try:
                import tensorflow as tf

                try:  # listing devices probes CUDA, which prints its own error lines
                    tf.config.set_visible_devices([], "GPU")
                except (RuntimeError, ValueError):
                    pass  # already initialised by someone else: nothing to hide any more
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


COMPILE_CACHE_ENV = "PTUNE_COMPILATION_CACHE"


def enable_compilation_cache() -> None:
    """JAX's persistent compilation cache, so a second run of the same configuration compiles
    nothing it compiled before. Directory: $PTUNE_COMPILATION_CACHE, default
    ~/.cache/ptune/jax; `PTUNE_COMPILATION_CACHE=off` turns it off."""
    setting = os.environ.get(COMPILE_CACHE_ENV, "")
    if setting.lower() in ("0", "off", "false", "no"):
        return
    directory = setting or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ptune", "jax"
    )
    import jax

    # Which compiles get a file is JAX's setting: those over a second by default
    # ($JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS).
    jax.config.update("jax_compilation_cache_dir", directory)


NEEDS_DATA = ("train", "pretrain", "eval", "infer", "ensemble", "tasks", "explain")
COMPILES = ("train", "pretrain", "eval", "infer", "ensemble")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = (
        "usage: ptune {"
        + ",".join(COMMANDS)
        + "} [flags]\n"
        + "\n".join(f"  {name:<10} {text}" for name, (text, _) in COMMANDS.items())
    )
    if not argv or argv[0] in ("-h", "--help"):
        print(usage)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if "gin" in sys.modules:  # a second command in one process starts from no bindings
        sys.modules["gin"].clear_config(clear_constants=True)
    if name not in COMMANDS:
        print(f"ptune: error: unknown command {name!r}\n{usage}", file=sys.stderr)
        return 2
    try:
        if name in NEEDS_DATA or any(a.startswith("--gin_file") for a in rest):
            _quiet_tensorflow()  # run gin files import the data modules, and so TensorFlow
        rest = _take_process_flags(rest)
        if name in COMPILES:
            enable_compilation_cache()
        from ptune import ginconfig

        gin_args = ginconfig.split_gin_args(_take_data_flags(rest))
        code = COMMANDS[name][1](gin_args.rest, gin_args) or 0
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except UserError as e:
        if os.environ.get("PTUNE_DEBUG"):
            traceback.print_exc()
        message = " ".join(str(e).split())
        print(f"ptune: error: {message}", file=sys.stderr)
        return 128 + e.signum if hasattr(e, "signum") else 2
    except FileNotFoundError as e:
        if os.environ.get("PTUNE_DEBUG"):
            traceback.print_exc()
        print(f"ptune: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ptune: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `ptune tasks | head` closed our stdout: end quietly. SIGPIPE keeps Python's own
        # setting (ignored), since libraries that write to sockets rely on getting EPIPE.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
