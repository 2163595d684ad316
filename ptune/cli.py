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

The commands live by group: `commands_run` (train, pretrain, eval, infer, ensemble),
`commands_model` (info, convert, export, plan), `commands_inspect` (explain, tasks, report,
similar); how they read gin and data flags in `command_config`; the process set-up (process
flags, TensorFlow, compilation cache, logging) in `runtime`.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Callable, Sequence

from ptune import command_config, commands_inspect, commands_model, commands_run, runtime
from ptune.errors import UserError, did_you_mean

# tests/conftest.py points the compilation cache at a shared folder through these two names.
from ptune.runtime import COMPILE_CACHE_ENV, enable_compilation_cache  # noqa: F401

# name -> (one line of help, fn(argv, gin_args) -> exit code), in the order `ptune` lists them.
COMMANDS: dict[str, tuple[str, Callable]] = {
    "info": (
        "print a model's configuration, parameter tree and parameter count",
        commands_model.cmd_info,
    ),
    "convert": (
        "convert a t5x / HF checkpoint into ptune's Orbax format (fast restores)",
        commands_model.cmd_convert,
    ),
    "train": ("train (or resume) a prompt from gin files", commands_run.cmd_train),
    "pretrain": (
        "train every weight of a T5 on a text corpus (span corruption, prefix LM)",
        commands_run.cmd_pretrain,
    ),
    "eval": ("evaluate a saved prompt (or a bare checkpoint) on a task", commands_run.cmd_eval),
    "infer": (
        "serve a file of requests with a bank of named prompts (mixed batches)",
        commands_run.cmd_infer,
    ),
    "ensemble": (
        "evaluate N prompts of one task in one pass; majority vote (Table 3)",
        commands_run.cmd_ensemble,
    ),
    "explain": (
        "nearest vocabulary tokens of each prompt position (paper, Section 7)",
        commands_inspect.cmd_explain,
    ),
    "tasks": ("list the registered seqio tasks and mixtures", commands_inspect.cmd_tasks),
    "export": (
        "write a prompt for other tools: a PEFT adapter directory, .npy or .safetensors",
        commands_model.cmd_export,
    ),
    "report": (
        "plots and tables from run directories (and `ptune ensemble` JSON)",
        commands_inspect.cmd_report,
    ),
    "similar": (
        "rank source prompts by SPoT's similarity to a target task's prompt",
        commands_inspect.cmd_similar,
    ),
    "plan": (
        "per-device memory of a training run on a mesh, compiled from shapes only",
        commands_model.cmd_plan,
    ),
}

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
        if not argv:
            print("ptune: error: no command given", file=sys.stderr)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if "gin" in sys.modules:  # a second command in one process starts from no bindings
        sys.modules["gin"].clear_config(clear_constants=True)
    if name not in COMMANDS:
        hint = did_you_mean(name, COMMANDS) or f"; the commands: {', '.join(COMMANDS)}"
        print(f"ptune: error: unknown command {name!r}{hint}", file=sys.stderr)
        return 2
    # The data flags (--superglue_dir, ...) set the environment the tasks read, and gin's
    # `data.DataSources` the task modules' overrides, for this command only: a second command
    # in one process (a sweep, `make paper`) sees its own.
    data_env = {v: os.environ.get(v) for v in command_config.DATA_FLAGS.values()}
    data_overrides = _data_overrides()
    try:
        runtime.quiet_tensorflow()  # when the data modules import it (commands, gin files)
        rest = runtime.take_process_flags(rest)
        if name in COMPILES:
            runtime.enable_compilation_cache()
        from ptune import ginconfig

        gin_args = ginconfig.split_gin_args(command_config.take_data_flags(rest))
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
    except Exception as e:  # noqa: BLE001  only memory exhaustion is caught; the rest re-raised
        if not _out_of_memory(e):
            raise
        if os.environ.get("PTUNE_DEBUG"):
            traceback.print_exc()
        cause = " ".join(str(e).split())[:160]
        print(
            f"ptune: error: out of memory ({cause}): reduce BATCH_SIZE, the feature lengths "
            "or NUM_BEAMS; `ptune plan` estimates what a run needs",
            file=sys.stderr,
        )
        return 2
    finally:
        for variable, value in data_env.items():
            if value is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = value
        _restore_data_overrides(data_overrides)


def _data_overrides() -> tuple:
    """What gin-bound `data.DataSources` may set process-wide (the task sources' directories,
    the SentencePiece model), read without importing the task modules: None where they are not
    loaded, so nothing is set yet."""
    sources = sys.modules.get("ptune.tasks.sources")
    vocab = sys.modules.get("ptune.tasks.vocab")
    return (
        sources.overrides() if sources else None,
        vocab.sentencepiece_override() if vocab else None,
    )


def _restore_data_overrides(saved: tuple) -> None:
    """Puts back what `_data_overrides` read, so a command's data sources last for it only."""
    directories, spm_path = saved
    if "ptune.tasks.sources" in sys.modules:
        sys.modules["ptune.tasks.sources"].restore_overrides(directories)
    if "ptune.tasks.vocab" in sys.modules:
        sys.modules["ptune.tasks.vocab"].set_sentencepiece_path(spm_path)


def _out_of_memory(error: BaseException) -> bool:
    """Host memory (numpy's MemoryError) or an accelerator's (XLA's RESOURCE_EXHAUSTED)."""
    if isinstance(error, MemoryError):
        return True
    text = str(error)
    return type(error).__name__ == "JaxRuntimeError" and (
        "RESOURCE_EXHAUSTED" in text or "Out of memory" in text
    )


if __name__ == "__main__":
    sys.exit(main())
