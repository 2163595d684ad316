"""The commands about models and their files, which train nothing: `ptune info` (a model's
configuration and parameter tree), `convert` (a checkpoint into ptune's Orbax format),
`export` (a prompt for other tools) and `plan` (per-device memory of a run, from shapes).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from ptune import runtime
from ptune.command_config import parse_gin
from ptune.errors import ArgumentParser, UserError


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


def cmd_info(argv: Sequence[str], gin_args) -> int:
    import numpy as np

    parser = ArgumentParser(prog="ptune info")
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

    from ptune import family, ginconfig, recipe
    from ptune.model_config import resolve_model_config

    if gin_args.files or gin_args.bindings:
        parse_gin(gin_args)
    fields = ginconfig.model_fields()
    assumed = {}
    if args.checkpoint:
        model_family = family.of_checkpoint(args.checkpoint)
        described = model_family.describe_checkpoint(args.checkpoint)
        config = described.config
        if fields:
            config = resolve_model_config(fields, args.checkpoint)
            model_family.check_checkpoint(args.checkpoint, config)
        assumed = {k: v for k, v in described.assumed.items() if k not in fields}
        print(f"checkpoint: {described.path}")
        print(f"format: {described.format}")
        if described.step is not None:
            print(f"step: {described.step}")
    else:
        config = resolve_model_config(fields, None)
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


def cmd_convert(argv: Sequence[str], gin_args) -> int:
    parser = ArgumentParser(prog="ptune convert")
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
    from ptune import checkpoints, family, ginconfig
    from ptune.model_config import resolve_model_config

    family.require(
        family.of_checkpoint(args.src),
        "convert",
        f"{args.src}: ptune reads its safetensors directly, there is nothing to convert",
    )
    config = None
    if gin_args.files or gin_args.bindings:
        parse_gin(gin_args)
        config = resolve_model_config(ginconfig.model_fields(), args.src)
    written = checkpoints.convert(args.src, args.dst, config, overwrite=args.overwrite)
    print(f"wrote {written}")
    return 0


def cmd_export(argv: Sequence[str], gin_args) -> int:
    parser = ArgumentParser(prog="ptune export")
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


# Run macros a plan does not need: it compiles from shapes, reading no data and no weights.
PLAN_PLACEHOLDERS = [
    "MODEL_DIR='(plan)'",
    "MIXTURE_OR_TASK_NAME='(plan)'",
    "INITIAL_CHECKPOINT_PATH=None",
    "INITIAL_PROMPT_FILE=None",
]


# XLA's CPU client builds every simulated device up front: a million of them never finish.
MAX_SIMULATED_DEVICES = 16384


def _mesh_flag(text: str) -> tuple[int, int]:
    """(data, model) from --mesh_shape=DATA,MODEL; one line if it is not that."""
    try:
        mesh = tuple(int(n) for n in text.split(","))
    except ValueError:
        mesh = ()
    if len(mesh) != 2:
        raise UserError(f"--mesh_shape must be DATA,MODEL (e.g. 4,4), got {text!r}")
    if min(mesh) < 1:
        raise UserError(f"--mesh_shape sizes must be positive, got {text!r}")
    return mesh


def cmd_plan(argv: Sequence[str], gin_args) -> int:
    parser = ArgumentParser(
        prog="ptune plan",
        description="Compiles the sharded train step from abstract shapes "
        "(no weights allocated) and prints per-device memory; the last line reads "
        "'per_device_bytes: N'. Required run macros (MODEL_DIR, ...) need not be given.",
    )
    parser.add_argument(
        "--mesh_shape",
        default=None,
        metavar="DATA,MODEL",
        help="mesh to plan for, e.g. 4,4 (simulated on CPU devices); default: the gin files' "
        "partitioning.MeshConfig.mesh_shape",
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
    mesh = None if args.mesh_shape is None else _mesh_flag(args.mesh_shape)
    budget = None
    if args.fit is not None:
        from ptune import plan_fit

        if args.fit.strip().replace(".", "", 1).isdigit():
            raise UserError(
                f"--fit={args.fit.strip()} has no unit: give the per-device budget with one, e.g. "
                "16GiB, 500MiB, 16GB (B alone for bytes)"
            )
        try:
            budget = plan_fit.parse_bytes(args.fit)
        except ValueError as e:
            raise UserError(f"--fit needs {e}")
    # The gin files are read before jax starts (nothing in them starts it): their mesh, when
    # --mesh_shape names none, decides how many devices to simulate.
    runtime.setup_logging()
    from ptune import family, ginconfig, partitioning, plan, plan_fit, trainer
    from ptune.model_config import resolve_model_config

    parse_gin(gin_args, defaults=PLAN_PLACEHOLDERS)
    cfg = ginconfig.call(trainer.TrainConfig, model=ginconfig.model_fields() or None)
    if mesh is None:
        mesh = cfg.partitioning.explicit_shape()
        if mesh is None:
            raise UserError(
                "give --mesh_shape=DATA,MODEL: the gin files set no "
                "partitioning.MeshConfig.mesh_shape to plan for"
            )
    data, model = mesh
    if not args.real_devices and data * model > MAX_SIMULATED_DEVICES:
        raise UserError(
            f"mesh {data},{model} is {data * model:,} devices; `ptune plan` simulates at most "
            f"{MAX_SIMULATED_DEVICES:,} (the largest TPU pod slices have 8,960 chips)"
        )
    if not args.real_devices and budget is None:  # before thousands of devices are made
        partitioning.check_divisible(cfg.batch_size, data, "the data axis")
    if not args.real_devices:
        runtime.simulate_cpu_devices(data * model)
    model_config = resolve_model_config(cfg.model, cfg.checkpoint_path, what="the plan")
    if args.scan_layers:
        model_config = model_config.replace(scan_layers=True)
    if budget is not None:
        result = plan_fit.fit_training(
            cfg, model_config, data * model, budget, log=lambda line: print(line, flush=True)
        )
        print("\n".join(result.lines()[len(result.tried) :]))
        return 0 if result.fitting is not None else 1
    result = plan.plan_configured(
        cfg,
        model_config,
        dataclasses.replace(cfg.partitioning, mesh_shape=(data, model)),
        cfg.frozen_dtype,
    )
    print(
        f"model: {family.family_of(model_config).layers(model_config)} layers, "
        f"emb {model_config.emb_dim}, activations {model_config.dtype}, frozen weights "
        f"{cfg.frozen_dtype or 'float32'}, remat {model_config.remat_policy}, scanned "
        f"{model_config.scan_layers}; batch {cfg.batch_size}, lengths "
        f"{dict(cfg.task_feature_lengths)}"
    )
    print("\n".join(result.lines()))
    return 0
