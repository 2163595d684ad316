"""Step timing shared by both sides: warm-up excluded, then the median of repeated steps.

The median (with min and max beside it) is reported rather than the mean because the
machines this runs on are shared: one step preempted by a neighbour should not move the
figure. `run_step` must block until its result exists (`block_until_ready` in JAX; PyTorch
on CPU is synchronous), or the clock would measure dispatch only.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Callable


@dataclasses.dataclass
class Timing:
    """Seconds per step: median, min, max over `steps` timed steps after `warmup` untimed."""

    median_s: float
    min_s: float
    max_s: float
    steps: int
    warmup: int

    def as_dict(self, examples_per_step: int) -> dict:
        return {
            "median_s": self.median_s,
            "min_s": self.min_s,
            "max_s": self.max_s,
            "steps": self.steps,
            "warmup": self.warmup,
            "examples_per_s": examples_per_step / self.median_s,
        }


def time_steps(run_step: Callable[[int], object], warmup: int, steps: int) -> Timing:
    """Calls `run_step(i)` warmup + steps times; times each of the last `steps` calls."""
    for i in range(warmup):
        run_step(i)
    times = []
    for i in range(warmup, warmup + steps):
        start = time.perf_counter()
        run_step(i)
        times.append(time.perf_counter() - start)
    return Timing(statistics.median(times), min(times), max(times), steps, warmup)


def time_interleaved(
    runs: dict[str, Callable[[int], object]],
    warmup: dict[str, int],
    steps: dict[str, int],
    rounds: int,
) -> dict[str, Timing]:
    """Times each named `run(i)`: `warmup[name]` untimed calls each, then `rounds` rounds in
    which every contender takes its share of `steps[name]` timed steps in turn; one Timing
    per name over all its timed steps. (Per-name counts let a contender ten times slower
    than the others take fewer steps without shortening theirs.)"""
    rounds = max(rounds, 1)
    for name, run in runs.items():
        for i in range(warmup[name]):
            run(i)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(rounds):
        for name, run in runs.items():
            share = steps[name] // rounds + (1 if r < steps[name] % rounds else 0)
            for _ in range(share):
                i = warmup[name] + len(times[name])
                start = time.perf_counter()
                run(i)
                times[name].append(time.perf_counter() - start)
    return {
        name: Timing(statistics.median(t), min(t), max(t), len(t), warmup[name])
        for name, t in times.items()
    }
