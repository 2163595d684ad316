"""Where a ptune train step spends its time: XLA op time by kind, from a `jax.profiler` trace.

    .venv-bench/bin/python benchmarks/profile_step.py --config t5-1.1-small [--kind prompt]

Traces a few steps of the benchmark's own jitted step (random weights of the same shape),
then sums the duration of every XLA op event on the CPU worker threads by op kind (the HLO
name without its number: `ynn_fusion` are YNNPACK matmul fusions, `*_fusion` elementwise
work, `transpose_copy_fusion` layout changes). Also prints the compiled step's FLOPs from
XLA's cost analysis beside the analytic count of `flops.py`. ptune's path only: runs where
only jax, flax and optax exist.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import jax  # noqa: E402

from benchmarks import flops, ptune_side, workloads  # noqa: E402


def op_time_by_kind(trace_dir: str) -> collections.Counter:
    """{op kind: nanoseconds} over the XLA worker threads of the trace in `trace_dir`."""
    path = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)[0]
    data = jax.profiler.ProfileData.from_file(path)
    kinds: collections.Counter = collections.Counter()
    for plane in data.planes:
        for line in plane.lines:
            if "XLAEigen" not in line.name:
                continue
            for event in line.events:
                if event.name.startswith(("ThunkExecutor", "SlinkyThreadPool")):
                    continue  # scheduling wrappers around the ops themselves
                kinds[re.sub(r"[._]\d+$", "", event.name)] += event.duration_ns
    return kinds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=workloads.HEADLINE, choices=list(workloads.CONFIGS))
    parser.add_argument("--kind", nargs="+", default=["prompt", "model"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args(argv)
    bench = workloads.CONFIGS[args.config]
    config = ptune_side.t5_config(bench)
    params = ptune_side.random_params(config)
    batches = workloads.batches(bench, 2)
    prompt = workloads.initial_prompt(bench)
    for kind in args.kind:
        step = ptune_side.make_step(kind, config, params, prompt, batches)
        for i in range(2):
            step.run(i)
        with tempfile.TemporaryDirectory() as trace_dir:
            jax.profiler.start_trace(trace_dir)
            start = time.perf_counter()
            for i in range(args.steps):
                step.run(i)
            wall = (time.perf_counter() - start) / args.steps
            jax.profiler.stop_trace()
            kinds = op_time_by_kind(trace_dir)
        total = sum(kinds.values())
        print(
            f"{args.config} {kind} step: {wall * 1e3:.0f} ms wall; XLA flops "
            f"{step.xla_flops / 1e9:.1f} G, analytic {flops.step_flops(bench, kind) / 1e9:.1f} G; "
            f"op time summed over worker threads {total / args.steps / 1e6:.0f} ms/step"
        )
        for name, ns in kinds.most_common(args.top):
            print(f"  {ns / args.steps / 1e6:9.1f} ms/step {100 * ns / total:5.1f}%  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
