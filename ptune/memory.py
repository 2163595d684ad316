"""Memory before work: a run whose step cannot fit its devices is refused in one line, with
the figure and the `ptune plan --fit` command to run, before anything is allocated.

    check_attention_fits(family, config, batch_size=..., feature_lengths=..., prompt_length=...)
    check_training_fits(run, batch_size=..., feature_lengths=..., loss=...)
    check_serving_fits(run, batch_size=..., feature_lengths=..., prompt_length=...)

The bound, per device: the arguments of the step (trainable parameters, optimizer state,
frozen weights, each device's shards) plus the widest attention scores of one layer in
float32 (`Family.attention_scores`: a decoder-only model's one query chunk of them), a lower
bound of what the step holds at its peak.
Above the device's memory, the run is refused without compiling. Below 1/64 of it
(`UNCHECKED_BELOW`), the run proceeds without a compile of its own: the compiled peaks seen
are 4.4x the bound for the tests' tiny T5 and 16.7x for TinyLlama prompt tuning at batch
32 x 256 (77 GiB by `ptune plan` over a 4.6 GiB bound), so such a run fits with room. In
between, the step is compiled from shapes alone, as `ptune plan` does, on this platform's
attention, and its peak decides.
The device's memory: `memory_stats()["bytes_limit"]` on accelerators; on the CPU, the host's
available memory (MemAvailable), shared by the simulated devices of one process.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping, Optional

import jax
import numpy as np

from ptune import plan, prompts
from ptune import step as step_lib
from ptune.errors import UserError

log = logging.getLogger("ptune")
GIB = 1024**3
UNCHECKED_BELOW = 64  # runs whose lower bound is under 1/64 of the memory are not compiled


def device_memory_bytes() -> Optional[int]:
    """What one device may hold, or None where it cannot be told."""
    device = jax.local_devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        return stats.get("bytes_limit")
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        available = int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None
    return available // max(len(jax.local_devices()), 1)


def _scores_bytes(family, config, rows: int, lengths: Mapping[str, int], prompt: int) -> int:
    heads, queries, keys = family.attention_scores(config, lengths, prompt)
    return rows * heads * queries * keys * np.dtype(np.float32).itemsize


def check_attention_fits(
    family: Any,
    config: Any,
    *,
    batch_size: int,
    feature_lengths: Mapping[str, int],
    prompt_length: int,
) -> None:
    """Before the run is assembled (tracing a model at absurd lengths allocates by itself):
    one layer's widest attention scores alone, the batch spread over every device."""
    available = device_memory_bytes()
    if available is None or os.environ.get("PTUNE_MEMORY_CHECK") == "off":
        return
    rows = -(-batch_size // max(jax.device_count(), 1))
    _refuse_above(
        _scores_bytes(family, config, rows, feature_lengths, prompt_length), available, "at least"
    )


def lower_bound_bytes(run: Any, batch_size: int, feature_lengths: Mapping[str, int]) -> int:
    """The step's arguments per device plus one layer's widest attention scores (float32)."""
    state, frozen = run.abstract_state()
    arguments = sum(
        plan.shard_bytes(tree, shardings)
        for tree, shardings in (
            (state.params, run.state_shardings.params),
            (state.opt_state, run.state_shardings.opt_state),
            (frozen, run.frozen_shardings),
        )
    )
    abstract = run.abstract_params
    prompt = prompts.get_prompt(abstract).shape[-2] if prompts.has_prompt(abstract) else 0
    rows = -(-batch_size // run.partitioner.data_size)
    return arguments + _scores_bytes(run.family, run.config, rows, feature_lengths, prompt)


def check_serving_fits(
    run: Any, *, batch_size: int, feature_lengths: Mapping[str, int], prompt_length: int
) -> None:
    """`eval`, `infer`, `ensemble`: the frozen weights in their dtype, each device's shards,
    plus one layer's widest attention scores for a batch refuse a run that cannot fit (the
    lower bound alone: no step of theirs is compiled ahead)."""
    available = device_memory_bytes()
    if available is None or os.environ.get("PTUNE_MEMORY_CHECK") == "off":
        return
    abstract = prompts.without_prompt(run.abstract_params)
    if run.frozen_dtype:
        abstract = jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(x.shape, run.frozen_dtype), abstract
        )
    weights = plan.shard_bytes(abstract, prompts.without_prompt(run.shardings))
    rows = -(-batch_size // run.partitioner.data_size)
    scores = _scores_bytes(run.family, run.config, rows, feature_lengths, prompt_length)
    _refuse_above(
        weights + scores,
        available,
        "at least",
        "lower BATCH_SIZE or the lengths, or set the frozen dtype to bfloat16",
    )


def check_training_fits(
    run: Any,
    *,
    batch_size: int,
    feature_lengths: Mapping[str, int],
    loss: step_lib.LossConfig,
) -> None:
    """Refuses a training run whose step cannot fit (see the module docstring)."""
    available = device_memory_bytes()
    if available is None or os.environ.get("PTUNE_MEMORY_CHECK") == "off":
        return
    needed = lower_bound_bytes(run, batch_size, feature_lengths)
    if needed < available // UNCHECKED_BELOW:
        return
    what = "at least"
    if needed <= available:
        compiled = plan.plan_training(
            run,
            batch_size=batch_size,
            feature_lengths=feature_lengths,
            loss=loss,
            accelerator_attention=False,
        )
        needed, what = compiled.per_device_bytes, "its compiled step needs"
    _refuse_above(needed, available, what)


def _refuse_above(needed: int, available: int, what: str, remedy: str = "") -> None:
    if needed <= available:
        return
    where = "of host memory available" if jax.local_devices()[0].platform == "cpu" else "per device"
    remedy = remedy or (
        f"find settings that fit with `ptune plan --fit={max(available // GIB, 1)}GiB` and the "
        "same gin files and flags"
    )
    raise UserError(
        f"this run does not fit: {what} {needed / GIB:.2f} GiB per device, and there are "
        f"{available / GIB:.2f} GiB {where}; {remedy} (PTUNE_MEMORY_CHECK=off skips this check)"
    )
