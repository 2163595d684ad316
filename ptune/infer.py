"""The `ptune infer` and `ptune ensemble` runs: files in, files out, over `ptune.server`.

`run_infer` reads requests from JSONL (`{"task": ..., "inputs": ..., "prompt": optional}`) or
TSV (`task<TAB>inputs[<TAB>prompt]`), serves them in mixed batches over one frozen model and
a bank of named prompts (a request uses the prompt named like its task unless it names
another), and writes JSONL: `{"line", "task", "prompt", "inputs", "prediction"}`. `inputs` is
the model's input text in the task's format (e.g. `boolq passage: ... question: ...`).

`run_ensemble` evaluates N prompts of one task in one batched pass and reports each prompt's
metrics, their mean, the best single prompt and the ensemble (majority vote over decoded
labels; mean log-likelihood for rank classification), laid out as the paper's Table 3.

Both load the frozen model as every command does (`ptune.frozen_model`: model configuration
from the model gin file or the checkpoint) and put the bank into the prompt slot.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Mapping, Optional, Sequence, Union

import numpy as np

from ptune import (
    atomic,
    buckets,
    data,
    evaluation,
    frozen_model,
    memory,
    recipe,
    selection,
    task_checks,
)
from ptune import evaluator as evaluator_lib
from ptune import server as server_lib
from ptune.errors import UserError
from ptune.models import search

# The decoding settings as `ptune infer`'s users spell them (gin macros, runs/infer.gin).
DECODING_NAMES = {
    "num_beams": "NUM_BEAMS",
    "temperature": "TEMPERATURE",
    "top_k": "TOP_K",
    "top_p": "TOP_P",
}


@dataclasses.dataclass(frozen=True)
class InferConfig(frozen_model.FrozenModel):
    """`ptune infer`: requests served with named prompts over the frozen model
    (`frozen_model.FrozenModel`'s fields, keyword-only; the prompt's placement applies).
    Decoding: greedy by default; `num_beams` > 1 is beam search with T5's length penalty
    `alpha`; `temperature` > 0 samples (optionally top-k / top-p). `length_buckets`: requests
    padded to the bucket of each group's longest instead of task_feature_lengths["inputs"]."""

    # prompt name -> .npy / .safetensors / PEFT dir; or a multi-task bank directory (each
    # task's prompt under the task's name)
    prompt_files: Union[Mapping[str, str], str]
    input_file: str  # JSONL or TSV requests
    output_file: str  # JSONL results
    # requests are cut to "inputs" tokens; "targets" bounds decoding
    task_feature_lengths: Mapping[str, int] = dataclasses.field(
        default_factory=lambda: {"inputs": 512, "targets": 8},
        metadata={"min": 1, "keys": ("inputs", "targets")},
    )
    batch_size: int = dataclasses.field(default=32, metadata={"min": 1})
    num_beams: int = dataclasses.field(default=1, metadata={"min": 1})
    alpha: float = dataclasses.field(default=0.6, metadata={"min": 0})
    temperature: float = dataclasses.field(default=0.0, metadata={"min": 0, "zero": "greedy"})
    top_k: int = dataclasses.field(default=0, metadata={"min": 0, "zero": "every token"})
    top_p: float = dataclasses.field(default=1.0, metadata={"min": 0, "max": 1})
    seed: int = dataclasses.field(default=0, metadata={"min": 0})


def read_requests(path: str) -> list[dict]:
    """Parses the request file; every problem names its line."""
    if not os.path.isfile(path):
        raise UserError(f"input file {path} does not exist")
    requests = []
    tsv = not path.endswith((".jsonl", ".json"))
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(f"{path}, line {number}: not UTF-8 text") from e
            if not line.strip():
                continue
            if tsv:
                fields = line.rstrip("\r\n").split("\t")
                if not 2 <= len(fields) <= 3:
                    raise UserError(
                        f"{path}, line {number}: {len(fields)} tab-separated field(s), expected "
                        "2 or 3: 'task<TAB>inputs[<TAB>prompt]' (inputs text holding a tab "
                        "needs JSONL)"
                    )
                if not fields[0].strip():
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
                if not isinstance(record, dict):
                    raise UserError(
                        f"{path}, line {number}: a JSON {type(record).__name__}, expected an "
                        'object like {"task": ..., "inputs": ...}'
                    )
                if not record.get("task"):
                    raise UserError(f"{path}, line {number}: no task name (a 'task' field)")
                if not isinstance(record.get("inputs"), str):
                    raise UserError(f"{path}, line {number}: no 'inputs' text")
            record["line"] = number
            requests.append(record)
    if not requests:
        raise UserError(f"input file {path} holds no requests")
    return requests


def named_prompt_files(prompt_files: Union[Mapping[str, str], str]) -> dict[str, str]:
    """PROMPT_FILES as {name: file}: given so, or read from a multi-task bank directory."""
    from ptune.checkpoints import prompt_io

    if isinstance(prompt_files, Mapping):
        return dict(prompt_files)
    if isinstance(prompt_files, str) and prompt_io.is_bank(prompt_files):
        return prompt_io.read_bank(prompt_files)
    raise UserError(
        f"PROMPT_FILES must be {{name: prompt file}} or a multi-task prompt bank directory "
        f"(holding {prompt_io.BANK_FILE}); got {prompt_files!r}"
    )


def _frozen_server(
    cfg,
    run: recipe.Run,
    bank: server_lib.Bank,
    vocab_limit: Optional[int],
    eos_id: int,
    lengths: Mapping[str, int],
) -> server_lib.Server:
    """`run`'s frozen model, its weights read into their shards, serving `bank`; refused
    first if its weights and a batch's attention cannot fit (`ptune.memory`)."""
    memory.check_serving_fits(
        run,
        batch_size=cfg.batch_size,
        feature_lengths=lengths,
        prompt_length=max(bank.lengths),
    )
    return server_lib.Server(
        run,
        run.load_frozen(cfg.checkpoint_path),
        bank,
        cfg.batch_size,
        vocab_limit=vocab_limit,
        eos_id=eos_id,
    )


def _tokenize(vocabulary, text: str, length: int) -> np.ndarray:
    return server_lib.tokenize(vocabulary, text, length, eos_id=int(vocabulary.eos_id))


def run_infer(cfg: InferConfig, progress: bool = True) -> list[dict]:
    """Serves every request in mixed batches; writes and returns the results."""
    import logging

    from tqdm import tqdm

    task_checks.check_feature_lengths(cfg.task_feature_lengths, "TASK_FEATURE_LENGTHS")
    search.check_decoding(
        cfg.num_beams, cfg.temperature, cfg.top_k, cfg.top_p, names=DECODING_NAMES
    )
    atomic.check_output_file(
        cfg.output_file,
        "INFER_OUTPUT_FILE",
        "JSONL",
        {
            "INFER_INPUT_FILE": cfg.input_file,
            "PROMPT_FILES": list(named_prompt_files(cfg.prompt_files).values()),
            "INITIAL_CHECKPOINT_PATH": cfg.checkpoint_path,
        },
    )
    requests = read_requests(cfg.input_file)
    run = cfg.resolve(what="ptune infer").assemble()
    bank = server_lib.Bank.from_files(named_prompt_files(cfg.prompt_files), cfg.placement())
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
    length = cfg.task_feature_lengths["inputs"]
    # `_tokenize` keeps length - 1 tokens and EOS; said once, before the model loads
    cut = [
        r["line"]
        for r in requests
        if len(vocabularies[r["task"]][0].encode(r["inputs"])) > length - 1
    ]
    if cut:
        logging.getLogger("ptune").warning(
            "%d of %d requests are longer than TASK_FEATURE_LENGTHS['inputs'] and are cut to "
            "%d tokens (lines %s); raise TASK_FEATURE_LENGTHS['inputs'] to serve them whole",
            len(cut),
            len(requests),
            length,
            ", ".join(map(str, cut[:5])) + (", ..." if len(cut) > 5 else ""),
        )
    targets = [v[1] for v in vocabularies.values()]
    server = _frozen_server(
        cfg,
        run,
        bank,
        vocab_limit=max(int(v.vocab_size) for v in targets),
        eos_id=int(targets[0].eos_id),
        lengths=cfg.task_feature_lengths,
    )
    results = []
    chunk = cfg.batch_size * 8
    with tqdm(total=len(requests), unit="req", disable=not progress) as bar:
        for start in range(0, len(requests), chunk):
            part = requests[start : start + chunk]
            tokens = np.stack(
                [_tokenize(vocabularies[r["task"]][0], r["inputs"], length) for r in part]
            )
            if cfg.length_buckets is not None:
                tokens = buckets.cut_to_buckets(
                    {"encoder_input_tokens": tokens}, cfg.length_buckets
                )["encoder_input_tokens"]
            index = np.array([bank.index(r["prompt"]) for r in part], np.int32)
            out = server.generate(
                tokens,
                index,
                max_length=cfg.task_feature_lengths["targets"],
                num_beams=cfg.num_beams,
                alpha=cfg.alpha,
                temperature=cfg.temperature,
                top_k=cfg.top_k,
                top_p=cfg.top_p,
                seed=cfg.seed + start,
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
    atomic.write_text(
        cfg.output_file, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in results)
    )
    return results


@dataclasses.dataclass(frozen=True)
class EnsembleConfig:
    """`ptune ensemble`: N prompt files of one task, evaluated in one pass.

    eval: everything `ptune eval` is configured with (frozen model, task, split, lengths,
      batch size, length buckets, beams, the prompt's placement), so each prompt is evaluated
      as `ptune eval` would evaluate it; its prompt_file, no_prompt and output_dir are
      `ptune eval`'s own and unused here.
    """

    eval: evaluation.EvalConfig
    prompt_files: Sequence[str]
    output_file: Optional[str] = None  # JSON of the table; default: none


def run_ensemble(cfg: EnsembleConfig) -> dict:
    """-> {"prompts": [{name, metrics}], "average", "best", "ensemble"} (Table 3 layout)."""
    ev = cfg.eval
    if len(cfg.prompt_files) < 2:
        raise UserError("ensembling needs at least two prompt files")
    twice = sorted({p for p in cfg.prompt_files if list(cfg.prompt_files).count(p) > 1})
    if twice:
        raise UserError(f"--prompt_files names {', '.join(twice)} twice: each prompt votes once")
    if ev.prompt_file is not None or ev.no_prompt:
        raise UserError(
            "PROMPT_FILE and NO_PROMPT are for `ptune eval`: `ptune ensemble` evaluates "
            "--prompt_files"
        )
    if ev.instruction is not None or ev.shots:
        raise UserError(
            "INSTRUCTION and SHOTS (prompt design) are for `ptune eval`: `ptune ensemble` "
            "evaluates the prompt files over the task's own inputs"
        )
    run = ev.resolve(what="ptune ensemble").assemble()
    task_checks.check_task(ev.mixture_or_task_name, ev.eval_feature_lengths, ev.eval_split)
    if cfg.output_file:
        atomic.check_output_file(
            cfg.output_file,
            "--output",
            "JSON",
            {
                "--prompt_files": list(cfg.prompt_files),
                "INITIAL_CHECKPOINT_PATH": ev.checkpoint_path,
            },
        )
    names = [f"prompt_{i + 1}" for i in range(len(cfg.prompt_files))]
    bank = server_lib.Bank.from_files(dict(zip(names, cfg.prompt_files)), ev.placement())
    evaluator = evaluator_lib.Evaluation(
        ev.mixture_or_task_name,
        ev.eval_feature_lengths,
        ev.batch_size,
        ev.eval_split,
        buckets=ev.length_buckets,
    )
    eos_id = int(data.output_vocabulary(ev.mixture_or_task_name).eos_id)
    # One pass holds batch_size rows, each (example, prompt) pair a row.
    server = _frozen_server(ev, run, bank, evaluator.vocab_limit, eos_id, lengths=evaluator.lengths)
    members = list(range(len(names)))

    def generate(tokens):
        length = evaluator.lengths["targets"]
        per_prompt, voted = server_lib.ensemble_generate(
            server, tokens, members, max_length=length, num_beams=ev.num_beams
        )
        return per_prompt, _padded(voted, length)

    outputs = evaluator.model_outputs(
        generate,
        lambda tokens, targets: server_lib.ensemble_scores(server, tokens, targets, members),
    )
    table = {"prompts": [], "task": ev.mixture_or_task_name, "split": ev.eval_split}
    for m, name in enumerate(names):
        metrics = evaluator.metrics_from_outputs(outputs, member=m)
        table["prompts"].append({"name": name, "file": cfg.prompt_files[m], "metrics": metrics})
    table["ensemble"] = evaluator.metrics_from_outputs(outputs, member=None)
    table["average"] = _mean_metrics([p["metrics"] for p in table["prompts"]])
    table["best"] = _best(table["prompts"], ev.mixture_or_task_name)
    if cfg.output_file:
        evaluator_lib.write_results(cfg.output_file, -1, table)
    return table


def _padded(votes: Sequence[Sequence[int]], length: int) -> np.ndarray:
    """Voted token sequences (up to EOS) -> [n, length], 0 after each, as decoding leaves a
    prompt's own output: seqio stacks a task's predictions, which must share one length."""
    out = np.zeros((len(votes), length), np.int32)
    for row, ids in enumerate(votes):
        out[row, : len(ids)] = ids
    return out


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


def _best(rows: Sequence[dict], task: str) -> dict:
    """The prompt with the highest score (the mean of the task's primary metrics; for a task
    registered outside ptune.tasks, its first reported metric)."""
    try:
        value = {r["name"]: selection.score(r["metrics"], task) for r in rows}
        key = selection.SCORE
    except UserError:
        key = next(iter(_flat(rows[0]["metrics"])))
        value = {r["name"]: _flat(r["metrics"])[key] for r in rows}
    best = max(rows, key=lambda r: value[r["name"]])
    return {"name": best["name"], "metric": key, "metrics": _flat(best["metrics"])}


def format_table(table: dict) -> str:
    """Markdown in the layout of the paper's Table 3 (see `ptune.report.table_3`)."""
    from ptune import report

    return report.table_3(table)
