"""Where a ptune train step spends its time: XLA op time by kind, from a `jax.profiler` trace.

    .venv-bench/bin/python benchmarks/profile_step.py --config t5-1.1-small [--kind prompt]

Traces a few steps of the benchmark's own jitted step (random weights of the same shape) and
splits the step's wall time among the XLA ops on the CPU worker threads: while n ops run at
once, each is charged 1/n of that time, so the shares add up to the time some op ran (the
rest is idle, printed too). Sums by op kind (the HLO name without its number: `ynn_fusion`
are YNNPACK fusions, mostly matmuls, `*_fusion` elementwise work, `transpose_copy_fusion`
layout changes) and by role: each op looked up in the compiled HLO as a dense-layer matmul
(2-D), an attention product (batched over batch and heads, rank 3 or more), a layout copy or
other work. Then every matmul by what it computes (the jax op it came from, its output shape
and contraction length): its share of the wall time, its FLOPs and the rate it ran at, the
slowest first among the costly ones. Also prints the compiled step's FLOPs from XLA's cost
analysis beside the analytic count of `flops.py`, and how many cores the process kept busy
(its CPU time over wall time while stepping, untraced).

ptune's path only: runs where only jax, flax and optax exist.
"""

from __future__ import annotations

import argparse
import collections
import glob
import math
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


def op_times(trace_dir: str) -> tuple[collections.Counter, int]:
    """({HLO op name: nanoseconds of wall time charged to it}, idle nanoseconds) over the XLA
    worker threads of the trace in `trace_dir`; n ops running at once share the time."""
    path = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)[0]
    data = jax.profiler.ProfileData.from_file(path)
    edges = []
    for plane in data.planes:
        for line in plane.lines:
            if "XLAEigen" not in line.name:
                continue
            for event in line.events:
                if event.name.startswith(_NOT_OPS):
                    continue  # scheduling wrappers and markers around the ops themselves
                edges += [(event.start_ns, 1, event.name), (event.end_ns, -1, event.name)]
    edges.sort()
    ops: collections.Counter = collections.Counter()
    running: collections.Counter = collections.Counter()
    idle, previous = 0, edges[0][0] if edges else 0
    for time_ns, change, name in edges:
        span, count = time_ns - previous, sum(running.values())
        for op, n in running.items():
            ops[op] += span * n / count
        idle += span if count == 0 else 0
        running[name] += change
        running += collections.Counter()  # drops ops that ended
        previous = time_ns
    return ops, idle


# Trace events on the worker threads that are not XLA ops.
_NOT_OPS = ("ThunkExecutor", "SlinkyThreadPool", "ThreadpoolListener", "end: ")


def _bodies(hlo_text: str) -> dict[str, str]:
    """{computation name: its body} of an HLO module's text."""
    return {
        m.group(1): m.group(2)
        for m in re.finditer(r"\n%?([\w.\-]+) [^\n]*\{\n(.*?)\n\}", hlo_text, re.S)
    }


def op_roles(hlo_text: str, dots: dict[str, tuple[str, int, str]]) -> dict[str, str]:
    """{fusion or op name: role} from the compiled step's HLO: "dense matmul" (a 2-D dot
    inside), "attention matmul" (a dot of rank 3 or more: batched over batch and heads, or
    one head's batched over the batch), "layout copy" (transpose/copy fusions without a dot),
    else "other". `dots`: `_op_dots(hlo_text)`."""
    roles = {name: role for name, (role, _, _) in dots.items()}
    for m in re.finditer(r"\n\s*%?([\w.\-]+) = [^\n]*?calls=", hlo_text):
        if m.group(1) not in dots and ("transpose" in m.group(1) or "copy" in m.group(1)):
            roles[m.group(1)] = "layout copy"
    return roles


def _op_dots(hlo_text: str) -> dict[str, tuple[str, int, str]]:
    """{op name: (role, FLOPs, what)} for every op of the compiled step that is or holds a
    dot: "what" is the jax op it came from (layer numbers dropped), its output shape and
    contraction length."""
    bodies = _bodies(hlo_text)
    called = set(re.findall(r"calls=%?([\w.\-]+)", hlo_text))
    fused = {  # instructions inside fusions: their fusion's event carries their time
        m.group(1) for name in called for m in re.finditer(r"%([\w.\-]+) = ", bodies.get(name, ""))
    }

    def shapes_in(text):
        return {
            d.group(1): [int(x) for x in d.group(2).split(",") if x]
            for d in re.finditer(r"%([\w.\-]+) = \w+\[([\d,]*)\]", text)
        }

    top_level = shapes_in(hlo_text)  # unique names across the module
    found = {}
    for m in re.finditer(r"\n\s*(?:ROOT )?%?([\w.\-]+) = ([^\n]*)", hlo_text):
        name, rest = m.group(1), m.group(2)
        calls = re.search(r"calls=%?([\w.\-]+)", rest)
        body = bodies.get(calls.group(1), "") if calls else ""
        dots, shapes = re.findall(r"\n?[^\n]*? dot\([^\n]*", body), None
        if not calls and name not in fused and re.match(r"\w+\[[\d,]*\]\S* dot\(", rest):
            dots, shapes = [m.group(0)], top_level
        if not dots:
            continue
        shapes = shapes or shapes_in(body)
        flops, what, rank = 0, "", 0
        for dot in dots:
            d = re.search(r"= \w+\[([\d,]*)\]\S* dot\(%?([\w.\-]+), ", dot)
            contract = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", dot)
            if not d or not contract or d.group(2) not in shapes:
                continue
            out = [int(x) for x in d.group(1).split(",") if x]
            k = math.prod(shapes[d.group(2)][int(i)] for i in contract.group(1).split(","))
            flops += 2 * math.prod(out) * k
            rank = max(rank, len(out))
            source = re.search(r'op_name="(?:jit\([^)]*\)/)?([^"]*)"', dot)
            source = re.sub(r"layers_\d+", "layers_N", source.group(1)) if source else "?"
            pass_ = "backward" if "transpose(" in source else "forward"
            source = source.split("Transformer.", 1)[-1]
            what = f"{pass_} {source[-60:]} {out} K={k}"
        if flops:
            found[name] = ("attention matmul" if rank >= 3 else "dense matmul", flops, what)
    return found


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
            ops, idle = op_times(trace_dir)
        dots = _op_dots(step.hlo_text)
        roles = op_roles(step.hlo_text, dots)
        kinds: collections.Counter = collections.Counter()
        by_role: collections.Counter = collections.Counter()
        for name, ns in ops.items():
            kinds[re.sub(r"[._]\d+$", "", name)] += ns
            by_role[roles.get(name, "other")] += ns
        total, per_step = sum(kinds.values()), lambda ns: ns / args.steps / 1e6  # noqa: E731
        print(
            f"{args.config} {kind} step: {wall * 1e3:.0f} ms wall; XLA flops "
            f"{step.xla_flops / 1e9:.1f} G, analytic {flops.step_flops(bench, kind) / 1e9:.1f} G; "
            f"ops ran {per_step(total):.0f} ms/step, none {per_step(idle):.0f} ms/step; "
            f"{busy_cores(step, args.steps):.2f} cores busy"
        )
        for name, ns in by_role.most_common():
            print(f"  {per_step(ns):9.1f} ms/step {100 * ns / total:5.1f}%  [{name}]")
        for name, ns in kinds.most_common(args.top):
            print(f"  {per_step(ns):9.1f} ms/step {100 * ns / total:5.1f}%  {name}")
        matmuls: dict = collections.defaultdict(lambda: [0, 0.0, 0])
        for name, (_, flop, what) in dots.items():
            matmuls[what] = [a + b for a, b in zip(matmuls[what], (1, ops.get(name, 0), flop))]
        print("  matmuls by what they compute (ms/step, GFLOP/step, GFLOP/s, ops/step):")
        for what, (count, ns, flop) in sorted(matmuls.items(), key=lambda kv: -kv[1][1])[
            : args.top
        ]:
            rate = flop / (ns / args.steps) if ns else float("nan")
            print(f"  {per_step(ns):9.1f} {flop / 1e9:7.2f} {rate:7.0f} x{count:<3d} {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
