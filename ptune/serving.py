"""File-level inference and ensembling runs (`ptune infer`, `ptune ensemble`).

`run_infer` reads requests from JSONL (`{"task": ..., "inputs": ..., "prompt": optional}`) or
TSV (`task<TAB>inputs[<TAB>prompt]`), serves them in mixed batches over one frozen model and
a bank of named prompts (a request uses the prompt named like its task unless it names
another), and writes JSONL: `{"line", "task", "prompt", "inputs", "prediction"}`. `inputs` is
the model's input text in the task's format (e.g. `boolq passage: ... question: ...`).

`run_ensemble` evaluates N prompts of one task in one batched pass and reports each prompt's
metrics, their mean, the best single prompt and the ensemble (majority vote over decoded
labels; mean log-likelihood for rank classification), laid out as the paper's Table 3.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Mapping, Optional, Sequence

import numpy as np

from ptune import data, evaluation, inference
from ptune.errors import UserError
from ptune.models import t5


@dataclasses.dataclass(frozen=True)
class InferConfig:
    model: t5.T5Config
    checkpoint_path: str  # the frozen model
    prompt_files: Mapping[str, str]  # prompt name -> .npy / .safetensors / PEFT dir
    input_file: str  # JSONL or TSV requests
    output_file: str  # JSONL results
    task_feature_lengths: Mapping[str, int] = dataclasses.field(
        default_factory=lambda: {"inputs": 512, "targets": 8}
    )
    batch_size: int = 32
    num_beams: int = 1  # 1: greedy; more: beam search with T5's length penalty
    prompt_placement: str = "prefix"


def read_requests(path: str) -> list[dict]:
    """Parses the request file; every problem names its line."""
    if not os.path.isfile(path):
        raise UserError(f"input file {path} does not exist")
    requests = []
    tsv = not path.endswith((".jsonl", ".json"))
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            if tsv:
                fields = line.rstrip("\n").split("\t")
                if len(fields) < 2 or not fields[0].strip():
                    raise UserError(
                        f"{path}, line {number}: expected 'task<TAB>inputs"
                        "[<TAB>prompt]' with a task name"
                    )
                record = {"task": fields[0].strip(), "inputs": fields[1]}
                if len(fields) > 2 and fields[2].strip():
                    record["prompt"] = fields[2].strip()
            else:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(f"{path}, line {number}: not valid JSON ({e.msg})") from e
                if not isinstance(record, dict) or not record.get("task"):
                    raise UserError(f"{path}, line {number}: no task name (a 'task' field)")
                if not isinstance(record.get("inputs"), str):
                    raise UserError(f"{path}, line {number}: no 'inputs' text")
            record["line"] = number
            requests.append(record)
    if not requests:
        raise UserError(f"input file {path} holds no requests")
    return requests


def _load_frozen(config: t5.T5Config, path: str):
    from ptune import checkpoints

    return checkpoints.load(path, config)[1]


def run_infer(cfg: InferConfig, progress: bool = True) -> list[dict]:
    """Serves every request in mixed batches; writes and returns the results."""
    from tqdm import tqdm

    requests = read_requests(cfg.input_file)
    bank = inference.Bank.from_files(dict(cfg.prompt_files), cfg.prompt_placement)
    vocabularies = {}
    for r in requests:
        r.setdefault("prompt", r["task"])
        if r["prompt"] not in bank.names:
            raise UserError(
                f"{cfg.input_file}, line {r['line']}: no prompt named "
                f"{r['prompt']!r} (the bank holds {list(bank.names)})"
            )
        if r["task"] not in vocabularies:
            try:
                task = data.get_task(r["task"])
            except UserError as e:
                raise UserError(f"{cfg.input_file}, line {r['line']}: {e}") from e
            vocabularies[r["task"]] = (
                task.output_features["inputs"].vocabulary,
                task.output_features["targets"].vocabulary,
            )
    server = inference.Server(
        cfg.model,
        _load_frozen(cfg.model, cfg.checkpoint_path),
        bank,
        cfg.batch_size,
        vocab_limit=max(int(v[1].vocab_size) for v in vocabularies.values()),
    )
    length = cfg.task_feature_lengths["inputs"]
    results = []
    chunk = cfg.batch_size * 8
    with tqdm(total=len(requests), unit="req", disable=not progress) as bar:
        for start in range(0, len(requests), chunk):
            part = requests[start : start + chunk]
            tokens = np.stack(
                [inference.tokenize(vocabularies[r["task"]][0], r["inputs"], length) for r in part]
            )
            index = np.array([bank.index(r["prompt"]) for r in part], np.int32)
            out = server.generate(
                tokens,
                index,
                max_length=cfg.task_feature_lengths["targets"],
                num_beams=cfg.num_beams,
            )
            for r, ids in zip(part, out):
                text = vocabularies[r["task"]][1].decode([int(i) for i in ids])
                results.append(
                    {
                        "line": r["line"],
                        "task": r["task"],
                        "prompt": r["prompt"],
                        "inputs": r["inputs"],
                        "prediction": text,
                    }
                )
            bar.update(len(part))
    directory = os.path.dirname(os.path.abspath(cfg.output_file))
    os.makedirs(directory, exist_ok=True)
    tmp = cfg.output_file + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for r in results:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, cfg.output_file)
    return results


@dataclasses.dataclass(frozen=True)
class EnsembleConfig:
    mixture_or_task_name: str
    model: t5.T5Config
    checkpoint_path: str
    prompt_files: Sequence[str]
    task_feature_lengths: Mapping[str, int] = dataclasses.field(
        default_factory=lambda: {"inputs": 512, "targets": 8}
    )
    batch_size: int = 32
    split: str = "validation"
    output_file: Optional[str] = None  # JSON of the table; default: none


def run_ensemble(cfg: EnsembleConfig) -> dict:
    """-> {"prompts": [{name, metrics}], "average", "best", "ensemble"} (Table 3 layout)."""
    if len(cfg.prompt_files) < 2:
        raise UserError("ensembling needs at least two prompt files")
    names = [f"prompt_{i + 1}" for i in range(len(cfg.prompt_files))]
    bank = inference.Bank.from_files(dict(zip(names, cfg.prompt_files)))
    evaluator = evaluation.Evaluation(
        cfg.mixture_or_task_name, cfg.task_feature_lengths, cfg.batch_size, cfg.split
    )
    server = inference.Server(
        cfg.model,
        _load_frozen(cfg.model, cfg.checkpoint_path),
        bank,
        cfg.batch_size,
        vocab_limit=evaluator.vocab_limit,
    )
    members = list(range(len(names)))
    outputs = evaluator.model_outputs(
        lambda tokens: inference.ensemble_generate(
            server, tokens, members, max_length=cfg.task_feature_lengths["targets"]
        ),
        lambda tokens, targets: inference.ensemble_scores(server, tokens, targets, members),
    )
    table = {"prompts": [], "task": cfg.mixture_or_task_name, "split": cfg.split}
    for m, name in enumerate(names):
        metrics = evaluator.metrics_from_outputs(outputs, member=m)
        table["prompts"].append({"name": name, "file": cfg.prompt_files[m], "metrics": metrics})
    table["ensemble"] = evaluator.metrics_from_outputs(outputs, member=None)
    table["average"] = _mean_metrics([p["metrics"] for p in table["prompts"]])
    table["best"] = _best(table["prompts"])
    if cfg.output_file:
        evaluation.write_results(cfg.output_file, -1, table)
    return table


def _flat(metrics: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    return {
        f"{task}/{name}": float(v)
        for task, ms in metrics.items()
        for name, v in ms.items()
        if isinstance(v, (int, float))
    }


def _mean_metrics(all_metrics: Sequence[Mapping]) -> dict[str, float]:
    flat = [_flat(m) for m in all_metrics]
    return {k: float(np.mean([f[k] for f in flat])) for k in flat[0]}


def _best(rows: Sequence[dict]) -> dict:
    """The prompt with the highest first metric (metric order as the task reports them)."""
    key = next(iter(_flat(rows[0]["metrics"])))
    best = max(rows, key=lambda r: _flat(r["metrics"])[key])
    return {"name": best["name"], "metric": key, "metrics": _flat(best["metrics"])}


def format_table(table: dict) -> str:
    """Markdown in the layout of the paper's Table 3."""
    keys = list(table["average"])
    lines = ["| | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]

    def row(label, values):
        return f"| {label} | " + " | ".join(f"{values[k]:.2f}" for k in keys) + " |"

    for p in table["prompts"]:
        lines.append(row(p["name"], _flat(p["metrics"])))
    lines.append(row("Average", table["average"]))
    lines.append(row(f"Best ({table['best']['name']})", table["best"]["metrics"]))
    lines.append(row("Ensemble", _flat(table["ensemble"])))
    return "\n".join(lines)
