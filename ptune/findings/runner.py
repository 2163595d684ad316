"""Runs `design.points()` as `ptune` commands in this one process (`cli.main`, so the tiny
models' compiles are shared through the compilation cache), each command's output in
runs/<name>.log, and collects one record per point in results.jsonl.

A record: {"name", "kind", "model", "arch", "seed", "length", "init", "shots", "steps",
"score" (validation accuracy, rank classification), "shifted" (the same prompt or model on
the shifted domain; default prompt and model-tuning runs only), "seconds"}. Ensembles: one
record per size, {"kind": "ensemble", "model", "average", "best", "ensemble"} (generation
accuracy on `design.ENSEMBLE_TASK` of the three seeds' default prompts)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from typing import Callable, Iterator, Sequence

from ptune.checkpoints import prompt_io
from ptune.errors import UserError
from ptune.findings import design


def _best_prompt(run_dir: str) -> str:
    """The best prompt a `ptune train` run in `run_dir` saved (.npy)."""
    return os.path.join(prompt_io.best_directory(run_dir), prompt_io.PROMPT_STEM + ".npy")


@contextlib.contextmanager
def _output_to(path: str) -> Iterator[None]:
    """Sends this process's stdout and stderr (file descriptors 1 and 2, so the logging
    handlers and TensorFlow's C++ logs too) to `path` for the block."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(path, "w") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def _ptune(argv: Sequence[str], log: str) -> None:
    """One `ptune` command, its output in `log`; a failure is one line naming the log."""
    from ptune import cli

    with _output_to(log):
        code = cli.main(list(argv))
    if code:
        tail = open(log).read().strip().splitlines()[-1:] or ["(no output)"]
        raise UserError(f"`ptune {' '.join(argv[:1])}` exited {code} (see {log}): {tail[0]}")


def _accuracy(path: str, task: str) -> float:
    return float(json.load(open(path))["results"][task]["accuracy"])


def _shifted(point: design.Point, run_dir: str, logs: str) -> float:
    """The trained prompt (or tuned model) scored on the shifted domain, never trained on."""
    out = os.path.join(run_dir, "shifted")
    argv = [
        "eval",
        "--gin_file=runs/eval.gin",
        f"--gin.MIXTURE_OR_TASK_NAME='{design.SHIFTED_TASK}'",
        f"--gin.EVAL_OUTPUT_DIR='{out}'",
    ]
    if point.kind == "model":
        argv += [f"--gin.INITIAL_CHECKPOINT_PATH='{os.path.join(run_dir, 'model')}'"]
        argv += ["--gin.NO_PROMPT=True"]
    else:
        argv += [f"--gin.INITIAL_CHECKPOINT_PATH='{point.checkpoint}'"]
        argv += [f"--gin.PROMPT_FILE='{_best_prompt(run_dir)}'"]
    _ptune(argv, os.path.join(logs, f"{point.name}_shifted.log"))
    return _accuracy(os.path.join(out, "eval_validation.json"), design.SHIFTED_TASK)


def run_point(point: design.Point, output: str) -> dict:
    """Runs one point under `output`/runs and returns its record."""
    runs, logs = os.path.join(output, "runs"), os.path.join(output, "logs")
    run_dir = os.path.join(runs, point.name)
    start = time.perf_counter()
    _ptune(point.argv(run_dir), os.path.join(logs, f"{point.name}.log"))
    if point.kind == "design":
        path = os.path.join(run_dir, "eval_validation.json")
        score, shifted = _accuracy(path, design.TASK), None
    else:
        path = os.path.join(run_dir, "eval", f"validation_step_{point.steps}.json")
        score = _accuracy(path, design.TASK)
        default = point.length == design.DEFAULT_LENGTH and point.init == design.DEFAULT_INIT
        shifted = (
            _shifted(point, run_dir, logs) if point.model in design.SIZES and default else None
        )
    fields = {k: getattr(point, k) for k in design.Point.__dataclass_fields__}
    return {**fields, "score": score, "shifted": shifted, "seconds": time.perf_counter() - start}


def run_ensemble(model: str, prompt_dirs: Sequence[str], output: str) -> dict:
    """`ptune ensemble` of the prompts trained in `prompt_dirs` over shipped model `model`."""
    path = os.path.join(output, "runs", f"ensemble_{model}.json")
    files = ",".join(_best_prompt(d) for d in prompt_dirs)
    argv = [
        "ensemble",
        "--gin_file=runs/eval.gin",
        f"--gin.MIXTURE_OR_TASK_NAME='{design.ENSEMBLE_TASK}'",
        f"--gin.INITIAL_CHECKPOINT_PATH='{os.path.join(design.MODELS_DIR, model)}'",
        f"--output={path}",
        f"--prompt_files={files}",
    ]
    _ptune(argv, os.path.join(output, "logs", f"ensemble_{model}.log"))
    results = json.load(open(path))["results"]
    task = design.ENSEMBLE_TASK
    return {
        "name": f"ensemble_{model}",
        "kind": "ensemble",
        "model": model,
        "members": [p["metrics"][task]["accuracy"] for p in results["prompts"]],
        "average": results["average"][f"{task}/accuracy"],
        "best": results["best"]["metrics"][f"{task}/accuracy"],
        "ensemble": results["ensemble"][task]["accuracy"],
    }


def run(
    points: Sequence[design.Point], output: str, progress: Callable[[str], None] = print
) -> list[dict]:
    """Every point, then one ensemble per size over its default prompts (when there are two
    or more seeds); writes and returns the records (results.jsonl)."""
    os.makedirs(os.path.join(output, "runs"))
    os.makedirs(os.path.join(output, "logs"))
    records = []
    results = os.path.join(output, "results.jsonl")

    def keep(record):
        records.append(record)
        with open(results, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")

    for i, point in enumerate(points, 1):
        record = run_point(point, output)
        keep(record)
        shifted = "" if record["shifted"] is None else f", shifted {record['shifted']:.2f}"
        progress(
            f"[{i}/{len(points)}] {point.name}: {record['score']:.2f}{shifted} "
            f"({record['seconds']:.0f} s)"
        )
    for size in design.SIZES:
        dirs = [
            os.path.join(output, "runs", p.name)
            for p in points
            if p.kind == "prompt"
            and p.model == size
            and p.length == design.DEFAULT_LENGTH
            and p.init == design.DEFAULT_INIT
        ]
        if len(dirs) >= 2:
            record = run_ensemble(size, dirs, output)
            keep(record)
            progress(f"ensemble {size}: {record['ensemble']:.2f} (average {record['average']:.2f})")
    return records
