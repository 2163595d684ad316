"""Inference workloads of the inference issue, on ptune's prompt bank (`ptune.server`):

- mixed-task serving: 64 requests for 8 tasks arrive interleaved with a skewed task mix
  (20, 14, 10, 7, 5, 4, 2, 2). ptune serves them from one `Server` whose bank holds all eight
  prompts (a `prompt_index` per example), in mixed batches of 8 and as one batch of 64. A
  single-adapter system must group by task and serve each group on its own (8 servers,
  `serve_grouped` below), in batches of the same size 8: groups that do not fill a batch
  are padded (12 batches instead of 8).
- ensembling (paper, Table 3): 8 examples under 5 prompts in one pass (40 rows, one batch),
  against five passes of 8 rows, one per prompt.

Greedy decoding of `targets` tokens, float32, the same frozen weights as the training steps.
Every contender is called once untimed (compilation), then timed as in `timing`. Outputs of
the two ways are compared: they must be equal token for token, or nothing is reported.
"""

from __future__ import annotations

import collections
from typing import Mapping, Optional, Sequence

import numpy as np

from benchmarks import timing
from ptune import recipe
from ptune import server as server_lib

TASK_MIX = (20, 14, 10, 7, 5, 4, 2, 2)  # requests per prompt: 64 over 8 tasks
BATCH = 8  # the serving batch size of both systems
ENSEMBLE = 5
ENSEMBLE_EXAMPLES = 8


def _bank_prompts(bench, count: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.RandomState(seed + 7)
    return {
        f"task{k}": rng.uniform(-0.5, 0.5, (bench.prompt, bench.d_model)).astype(np.float32)
        for k in range(count)
    }


def group_by_prompt(requests: Sequence[tuple[str, np.ndarray]]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = collections.defaultdict(list)
    for i, (name, _) in enumerate(requests):
        groups[name].append(i)
    return dict(groups)


def serve_grouped(
    server_for: Mapping[str, server_lib.Server],
    requests: Sequence[tuple[str, np.ndarray]],
    *,
    max_length: int,
) -> np.ndarray:
    """What a single-adapter system must do: one batch stream per prompt, each on a server
    holding only that prompt. The baseline `serve_mixed` is measured against."""
    out: Optional[np.ndarray] = None
    for name, rows in group_by_prompt(requests).items():
        tokens = np.stack([requests[i][1] for i in rows])
        result = server_for[name].generate(
            tokens, np.zeros(len(rows), np.int32), max_length=max_length
        )
        if out is None:
            out = np.zeros((len(requests), result.shape[1]), np.int32)
        out[rows] = result
    return out


def run(bench, config, params, batches, steps: int, warmup: int, rounds: int) -> dict:
    """Timings of the two workloads on one configuration (see the module docstring)."""
    named = _bank_prompts(bench, len(TASK_MIX), 0)
    names = list(named)
    bank = server_lib.Bank.from_arrays(named)
    inputs = np.concatenate([b["encoder_input_tokens"] for b in batches], axis=0)
    rng = np.random.RandomState(1)
    order = rng.permutation(np.repeat(np.arange(len(TASK_MIX)), TASK_MIX))
    requests = [(names[k], inputs[i % len(inputs)]) for i, k in enumerate(order)]
    run = recipe.assemble(config)
    mixed = server_lib.Server(run, params, bank, batch_size=BATCH)
    mixed_one = server_lib.Server(run, params, bank, batch_size=len(requests))
    single = {
        n: server_lib.Server(
            run, params, server_lib.Bank.from_arrays({n: named[n]}), batch_size=BATCH
        )
        for n in names
    }
    length = bench.targets

    examples = inputs[:ENSEMBLE_EXAMPLES]
    members = list(range(ENSEMBLE))
    one_pass = server_lib.Server(run, params, bank, batch_size=ENSEMBLE * ENSEMBLE_EXAMPLES)

    per_pass = server_lib.Server(run, params, bank, batch_size=ENSEMBLE_EXAMPLES)

    def five_passes():
        return [
            per_pass.generate(examples, np.full(len(examples), m, np.int32), max_length=length)
            for m in members
        ]

    runs = {
        "mixed_batches": lambda i: server_lib.serve_mixed(mixed, requests, max_length=length),
        "mixed_one_batch": lambda i: server_lib.serve_mixed(mixed_one, requests, max_length=length),
        "grouped_per_task": lambda i: serve_grouped(single, requests, max_length=length),
        "ensemble_one_pass": lambda i: server_lib.ensemble_generate(
            one_pass, examples, members, max_length=length
        )[0],
        "ensemble_five_passes": lambda i: five_passes(),
    }
    same_mixed = np.array_equal(
        runs["mixed_batches"](0), runs["grouped_per_task"](0)
    ) and np.array_equal(runs["mixed_one_batch"](0), runs["grouped_per_task"](0))
    per_prompt = runs["ensemble_one_pass"](0)
    same_ensemble = np.array_equal(per_prompt, np.stack(runs["ensemble_five_passes"](0)))
    if not (same_mixed and same_ensemble):
        return {
            "status": "failed",
            "reason": "outputs differ between the two ways "
            f"(mixed == grouped: {same_mixed}, one pass == five passes: {same_ensemble})",
        }
    timings = timing.time_interleaved(
        runs, {n: warmup for n in runs}, {n: steps for n in runs}, rounds
    )
    out = {
        "status": "ok",
        "config": bench.name,
        "requests": len(requests),
        "task_mix": list(TASK_MIX),
        "batch_size": BATCH,
        "decode_length": length,
        "ensemble": {"prompts": ENSEMBLE, "examples": ENSEMBLE_EXAMPLES},
    }
    for name, t in timings.items():
        rows = len(requests) if name.startswith(("mixed", "grouped")) else ENSEMBLE_EXAMPLES
        out[name] = t.as_dict(rows)
    out["mixed_speedup_vs_grouped"] = (
        timings["grouped_per_task"].median_s / timings["mixed_batches"].median_s
    )
    out["mixed_one_batch_speedup_vs_grouped"] = (
        timings["grouped_per_task"].median_s / timings["mixed_one_batch"].median_s
    )
    out["ensemble_one_pass_speedup"] = (
        timings["ensemble_five_passes"].median_s / timings["ensemble_one_pass"].median_s
    )
    return out
