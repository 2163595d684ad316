"""What `ptune report` reads: a run directory as a `Run`, an ensemble file as its table.

Reads only what `ptune train` and `ptune ensemble` write:
    RUN_DIR/metrics.jsonl   one JSON object per line with an integer "step" and a "split": "train"
                            lines carry "loss"; "<split>" lines (e.g. "validation") the run's
                            selection "score" (the mean over tasks of each task's primary metric);
                            "<split>/<task>" lines a task's own metrics. Values that are not finite
                            numbers are ignored.
    RUN_DIR/run.json        the fingerprint: model (its configuration's fields, of any family),
                            task, prompt {length, placement} or null (model tuning), batch_size,
                            seed, ...
    RUN_DIR/summary.json    optional, absent in an interrupted run: task, model, prompt_length,
                            initializer, trainable_params, total_params, best {step, value,
                            metric}, steps, wall_seconds, label. Without it the report derives what
                            metrics.jsonl tells (best: the highest logged score) and says "n/a".
    TABLE.json              `ptune ensemble --output`: {"step": -1, "results": {"task", "split",
                            "prompts": [{name, file, metrics}], "average", "best", "ensemble"}}

Bad input raises `UserError` naming the path (and line) at fault.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Optional

from ptune import family
from ptune.errors import UserError

# What tells runs apart, in the order labels name them; values are display strings.
SETTINGS = ("task", "model", "checkpoint", "prompt", "initializer", "placement", "batch", "seed")


@dataclasses.dataclass(frozen=True)
class Run:
    """One run directory as read. `loss`: [(step, loss)] of the train lines; `scores`: each
    evaluation split (in the order logged) -> [(step, score)]; `summary`: None if interrupted."""

    path: str
    fingerprint: dict
    summary: Optional[dict]
    loss: list
    scores: dict
    last_step: int

    @property
    def name(self) -> str:
        return os.path.basename(os.path.normpath(self.path))

    @property
    def prompt_length(self) -> Optional[int]:
        prompt = self.fingerprint.get("prompt")
        return None if prompt is None else prompt["length"]

    @property
    def settings(self) -> dict[str, Optional[str]]:
        """Display value of each of SETTINGS; None where the run did not record it. All but the
        initializer come from run.json, which interrupted runs have too, so that they group
        with finished ones."""
        fp = self.fingerprint
        prompt = fp.get("prompt")
        checkpoint = fp.get("initial_checkpoint_path")
        if checkpoint:
            checkpoint = "/".join(os.path.normpath(checkpoint).split(os.sep)[-2:])
        elif fp.get("random_init"):
            checkpoint = "random weights"
        return {
            "task": fp["task"],
            "model": _describe_model(fp.get("model")),
            "checkpoint": checkpoint,
            "prompt": "model tuning" if prompt is None else f"prompt {prompt['length']}",
            "initializer": (self.summary or {}).get("initializer"),
            "placement": prompt.get("placement") if prompt else None,
            "batch": None if fp.get("batch_size") is None else f"batch {fp['batch_size']}",
            "seed": None if fp.get("seed") is None else f"seed {fp['seed']}",
        }

    def best_logged_score(self) -> Optional[dict]:
        """{step, value, metric} of the highest score of the first evaluation split logged."""
        if not self.scores:
            return None
        split, points = next(iter(self.scores.items()))
        step, value = max(points, key=lambda p: p[1])  # ties: the earliest step
        return {"step": step, "value": value, "metric": f"{split} score"}

    @property
    def best(self) -> Optional[dict]:
        """summary.json's best (the run's own selection metric), else the best logged score."""
        return (self.summary or {}).get("best") or self.best_logged_score()


def _describe_model(fields) -> Optional[str]:
    """The short description summary.json holds (less its "(random)", which the checkpoint
    setting tells), from run.json's record of the model configuration; None if no family
    knows the record."""
    config = family.from_record(fields)
    return None if config is None else family.family_of(config).describe(config)


def _read_json(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}, line {e.lineno}: not valid JSON ({e.msg})") from e
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from e


def number(value) -> Optional[float]:
    """`value` as a float if it is a finite number (not a bool), else None: what is ignored."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _read_metrics(path: str) -> tuple[list, dict, int]:
    """-> (train losses, scores per evaluation split, last step); every problem names its line."""
    loss, scores, steps = [], {}, []
    try:
        with open(path, "rb") as f:  # decoded line by line, so a bad byte names its line
            for line_number, raw in enumerate(f, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise UserError(f"{path}, line {line_number}: not UTF-8 text") from e
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(f"{path}, line {line_number}: not valid JSON ({e.msg})") from e
                if not (
                    isinstance(record, dict)
                    and type(record.get("step")) is int  # bool is no step
                    and isinstance(record.get("split"), str)
                ):
                    raise UserError(
                        f"{path}, line {line_number}: expected an object with an integer 'step' "
                        "and a 'split' name"
                    )
                step, split = record["step"], record["split"]
                steps.append(step)
                if split == "train" and number(record.get("loss")) is not None:
                    loss.append((step, number(record["loss"])))
                elif "/" not in split and number(record.get("score")) is not None:
                    scores.setdefault(split, []).append((step, number(record["score"])))
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from e
    if not steps:
        raise UserError(f"{path} is empty: the run has logged no metrics")
    return sorted(loss), {s: sorted(p) for s, p in scores.items()}, max(steps)


def read_run(path: str) -> Run:
    """Reads one run directory; a missing or malformed file raises UserError naming it."""
    if not os.path.isdir(path):
        raise UserError(f"{path}: no such run directory")
    metrics_file, run_file = (os.path.join(path, n) for n in ("metrics.jsonl", "run.json"))
    for required in (metrics_file, run_file):
        if not os.path.isfile(required):
            raise UserError(
                f"{path} is not a run directory: it has no {os.path.basename(required)} "
                "(written by `ptune train` once the run has started logging)"
            )
    fingerprint = _read_json(run_file)
    prompt = fingerprint.get("prompt", {}) if isinstance(fingerprint, dict) else None
    if (
        not isinstance(fingerprint, dict)
        or not isinstance(fingerprint.get("task"), str)
        or not (
            prompt is None or isinstance(prompt, dict) and isinstance(prompt.get("length"), int)
        )
    ):
        raise UserError(
            f"{run_file}: not a run fingerprint (expected 'task' and 'prompt': "
            "{length, placement} or null)"
        )
    summary_file = os.path.join(path, "summary.json")
    summary = _read_json(summary_file) if os.path.exists(summary_file) else None
    if summary is not None and not isinstance(summary, dict):
        raise UserError(f"{summary_file}: expected a JSON object")
    loss, scores, last_step = _read_metrics(metrics_file)
    return Run(path, fingerprint, summary, loss, scores, last_step)


def read_ensemble(path: str) -> dict:
    """The `results` table of a `ptune ensemble --output` file."""
    data = _read_json(path)
    table = data.get("results") if isinstance(data, dict) else None
    prompts = table.get("prompts") if isinstance(table, dict) else None
    if not (
        isinstance(prompts, list)
        and prompts
        and all(isinstance(p, dict) and isinstance(p.get("metrics"), dict) for p in prompts)
        and all(isinstance(table.get(k), dict) for k in ("average", "best", "ensemble"))
        and isinstance(table["best"].get("metrics"), dict)
    ):
        raise UserError(
            f"{path} is not a table written by `ptune ensemble --output` (expected "
            "results.prompts, .average, .best and .ensemble)"
        )
    return table
