"""Where a ptune train step spends its time: XLA op time by kind, from a `jax.profiler` trace.

    .venv-bench/bin/python benchmarks/profile_step.py --config t5-1.1-small [--kind prompt]

Traces a few steps of the benchmark's own jitted step (random weights of the same shape),
then sums the duration of every XLA op event on the CPU worker threads by op kind (the HLO
name without its number: `ynn_fusion` are YNNPACK fusions, mostly matmuls, `*_fusion`
elementwise work, `transpose_copy_fusion` layout changes), and by role: each op looked up in
the compiled HLO as a dense-layer matmul (2-D), an attention product (batched over batch and
heads, 4-D), a layout copy or other work. Also prints the compiled step's FLOPs from XLA's
cost analysis beside the analytic count of `flops.py`, and how many cores the process kept
busy (its CPU time over wall time while stepping, untraced).

An op event lasts from its start to its end on one thread, so when XLA runs independent ops
at once each looks longer and the events add up to more than the wall time: read the shares,
not the sum, and the busy cores for utilisation. ptune's path only: runs where only jax, flax
and optax exist.
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


def op_times(trace_dir: str) -> collections.Counter:
    """{HLO op name: nanoseconds} over the XLA worker threads of the trace in `trace_dir`."""
    path = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)[0]
    data = jax.profiler.ProfileData.from_file(path)
    ops: collections.Counter = collections.Counter()
    for plane in data.planes:
        for line in plane.lines:
            if "XLAEigen" not in line.name:
                continue
            for event in line.events:
                if event.name.startswith(("ThunkExecutor", "SlinkyThreadPool")):
                    continue  # scheduling wrappers around the ops themselves
                ops[event.name] += event.duration_ns
    return ops


def op_roles(hlo_text: str) -> dict[str, str]:
    """{fusion or op name: role} from the compiled step's HLO: "dense matmul" (a 2-D dot
    inside), "attention matmul" (a dot of rank 4 or more: batched over batch and heads),
    "layout copy" (transpose/copy fusions without a dot), else "other"."""
    bodies = {
        m.group(1): m.group(2)
        for m in re.finditer(r"\n%?([\w.\-]+) [^\n]*\{\n(.*?)\n\}", hlo_text, re.S)
    }
    roles = {}
    for m in re.finditer(r"\n\s*%?([\w.\-]+) = [^\n]*?calls=%?([\w.\-]+)", hlo_text):
        name, body = m.group(1), bodies.get(m.group(2), "")
        ranks = [s.count(",") + 1 for s in re.findall(r"= \w+\[([\d,]*)\][^\n]* dot\(", body)]
        if ranks:
            roles[name] = "attention matmul" if max(ranks) >= 4 else "dense matmul"
        elif "transpose" in name or "copy" in name:
            roles[name] = "layout copy"
    for m in re.finditer(r"\n\s*%?(dot[\w.\-]*) = \w+\[([\d,]*)\]", hlo_text):
        roles[m.group(1)] = "attention matmul" if m.group(2).count(",") >= 3 else "dense matmul"
    return roles


def busy_cores(step, steps: int) -> float:
    """The process's CPU time over wall time while taking `steps` untraced steps."""
    before, start = os.times(), time.perf_counter()
    for i in range(steps):
        step.run(i)
    after, wall = os.times(), time.perf_counter() - start
    return (after.user - before.user + after.system - before.system) / wall


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
            ops = op_times(trace_dir)
        roles = op_roles(step.hlo_text)
        kinds: collections.Counter = collections.Counter()
        by_role: collections.Counter = collections.Counter()
        for name, ns in ops.items():
            kinds[re.sub(r"[._]\d+$", "", name)] += ns
            by_role[roles.get(name, "other")] += ns
        total = sum(kinds.values())
        print(
            f"{args.config} {kind} step: {wall * 1e3:.0f} ms wall; XLA flops "
            f"{step.xla_flops / 1e9:.1f} G, analytic {flops.step_flops(bench, kind) / 1e9:.1f} G; "
            f"op time summed over worker threads {total / args.steps / 1e6:.0f} ms/step; "
            f"{busy_cores(step, args.steps):.2f} cores busy"
        )
        for name, ns in by_role.most_common():
            print(f"  {ns / args.steps / 1e6:9.1f} ms/step {100 * ns / total:5.1f}%  [{name}]")
        for name, ns in kinds.most_common(args.top):
            print(f"  {ns / args.steps / 1e6:9.1f} ms/step {100 * ns / total:5.1f}%  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
