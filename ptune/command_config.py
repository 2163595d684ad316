"""How a command reads its configuration: gin files and bindings, the run macros that must be
given, the modules that register the user's own tasks, and the data flags.

`configured(gin_args, fn, command)` is the whole story for the commands that run something
(train, pretrain, eval, infer, ensemble): gin parsed and checked, data sources applied, and
`fn` (a config dataclass) built from the bindings, with the model fields the gin files bind,
and every field of it checked against its declared type and range (`ptune.config_check`)
before any work: one line naming the macro or gin path the user wrote.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

from ptune.errors import UserError


def parse_gin(gin_args, defaults: Sequence[str] = ()) -> list[str]:
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
    import_task_modules(ginconfig.macro("MIXTURE_OR_TASK_MODULE"))
    return files


def import_task_modules(names) -> None:
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


# The t5x-style macros a run file may bind to %gin.REQUIRED, each with an example value.
REQUIRED_MACROS = {
    "MODEL_DIR": "'runs/my_run'",
    "MIXTURE_OR_TASK_NAME": "'taskless_super_glue_boolq_v102'",
    "INITIAL_CHECKPOINT_PATH": "'gs://.../checkpoint_1100000'",
    "PROMPT_LENGTH": "20",
    "INITIAL_PROMPT_FILE": "'prompt.npy'",
    "PROMPT_FILES": "{'task_name': 'prompt.npy'}",
    "INFER_INPUT_FILE": "'requests.jsonl'",
    "INFER_OUTPUT_FILE": "'predictions.jsonl'",
}


def check_required_macros() -> None:
    """Macros and parameters bound to %gin.REQUIRED (t5x-style run macros, and any other a gin
    file leaves for the command line, e.g. experiments/figure3a_prompt_length.gin's
    PROMPT_LENGTH) fail here, before any work, in one line."""
    import gin
    from ptune import ginconfig

    def required(value) -> bool:
        return (
            value is gin.REQUIRED
            or type(value).__name__ == "_GinRequired"
            or (hasattr(value, "selector") and "REQUIRED" in str(value))
        )

    bound = {
        name: params.get("value")
        for (name, selector), params in gin.config._CONFIG.items()
        if selector == "gin.macro"
    }
    for name in [*REQUIRED_MACROS, *sorted(set(bound) - set(REQUIRED_MACROS))]:
        if name in bound and required(bound[name]):
            example = REQUIRED_MACROS.get(name, "VALUE")
            raise UserError(f'{name} is required: pass --gin.{name}="{example}"')
    for (scope, selector), params in gin.config._CONFIG.items():
        for param, value in params.items() if selector != "gin.macro" else ():
            if required(value):
                where = ".".join(p for p in (scope, ginconfig.short_selector(selector), param) if p)
                raise UserError(
                    f"{where} is required: bind it on the command line, or add the gin file "
                    "that chooses it after the one that leaves it %gin.REQUIRED"
                )


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


def take_data_flags(argv: Sequence[str]) -> list[str]:
    """`--tfds_data_dir=...` and friends set the environment the tasks read; each
    `--task_file=NAME:train=a.jsonl,...` registers a task from plain files (see
    `ptune.tasks.files.parse_spec`), each `--corpus=NAME:train=a.txt,...` a pretraining task
    (`ptune.tasks.pretraining.parse_spec`). The other arguments are returned."""
    rest, named = [], {}
    for arg in argv:
        name, eq, value = arg.partition("=")
        if name in DATA_FLAGS or name in TASK_FLAGS:
            if not eq or not value:
                raise UserError(f"{name} needs a value: {name}=" + TASK_FLAGS.get(name, "PATH"))
            key = (name, value.split(":", 1)[0] if name in TASK_FLAGS else "")
            if key in named and named[key] != value:
                what = f"names {key[1]!r} twice" if key[1] else "is given twice"
                raise UserError(f"{name} {what} ({named[key]} and {value}): keep one")
            named[key] = value
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


# The run file each command needs at least, named when none is given.
RUN_FILES = {
    "train": "--gin_file=runs/prompt_tuning.gin",
    "pretrain": "--gin_file=runs/pretrain.gin",
    "eval": "--gin_file=runs/eval.gin",
    "infer": "--gin_file=runs/infer.gin",
    "ensemble": "--gin_file=runs/eval.gin",
}


def configured(gin_args, fn, command_name: str):
    """Parses gin, checks required and unknown macros, applies data sources, imports task
    modules, and builds `fn`'s config with the model fields the gin files bind."""
    from ptune import data, ginconfig

    if not gin_args.files:
        raise UserError(
            f"ptune {command_name} needs gin files: {RUN_FILES[command_name]}, plus a "
            "models/*.gin unless the checkpoint carries its configuration"
        )
    parse_gin(gin_args)
    check_required_macros()
    ginconfig.call(data.DataSources).apply()
    return ginconfig.call(fn, model=ginconfig.model_fields() or None)
