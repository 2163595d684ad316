"""Where the test suite's time goes, as the workers spend it: JAX tracing, lowering and XLA
compiling (per program, with the call site that asked for it), seqio pipeline builds and
Evaluators, per test module; and each module's CPU seconds (its worker's and the subprocesses
its tests waited for), which the machine's load changes far less than wall seconds.

    .venv/bin/python -m pytest -p benchmarks.suite_time -n 3 --dist loadscope \
        --no-loadscope-reorder -m "not full_scale" tests      # writes suite-time.jsonl
    .venv/bin/python benchmarks/suite_time.py suite-time.jsonl   # the tables

A sampling profiler (py-spy) samples Python threads on a CPU: XLA:CPU compiles in threads of
its own while the calling Python thread waits, so compiles hardly show there. These durations
come from JAX's own monitoring events (`/jax/core/compile/...`) and from timing seqio's
`Task.get_dataset` and `Evaluator.__init__` (the pipelines an Evaluator builds count in its
time), in every pytest-xdist worker; subprocesses the tests start are not counted. They are
wall seconds inside each worker: with more workers than cores they include waits for a core.
`SUITE_TIME_LOG` names the output file (default: suite-time.jsonl in the directory pytest
starts in; appended to, so delete it between runs).
"""

from __future__ import annotations

import collections
import functools
import json
import os
import sys
import time
import traceback

import pytest

LOG_ENV = "SUITE_TIME_LOG"
EVENTS = {
    "/jax/core/compile/jaxpr_trace_duration": "trace",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
    "/jax/core/compile/backend_compile_duration": "compile",
    "/jax/compilation_cache/cache_retrieval_time_sec": "cache_read",
}
KINDS = ("trace", "lower", "compile", "cache_read", "get_dataset", "evaluator")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL_COMPILE_S = 0.05  # below: one eager op or a tiny helper (about 20 ms each here)
WHERE_ROWS = 20  # call sites listed for them
CPU_ROWS = 40  # modules listed by CPU seconds


def _write(record: dict) -> None:
    record.setdefault("test", os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0])
    with open(os.environ[LOG_ENV], "a") as f:
        f.write(json.dumps(record) + "\n")


_OPEN: list = []  # the timed calls under way: an Evaluator builds its datasets itself


def _timed(kind: str, method):
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        start = time.perf_counter()
        _OPEN.append(kind)
        try:
            return method(self, *args, **kwargs)
        finally:
            _OPEN.pop()
            _write({"kind": kind, "s": time.perf_counter() - start, "nested": bool(_OPEN)})

    return wrapper


def _caller() -> str:
    """Where a compile came from (JAX reports its events in the thread that asked for the
    program): the innermost "file:line" in the tests, then in ptune, joined by " > "."""
    found = {}
    for frame in reversed(traceback.extract_stack()):
        path = os.path.relpath(frame.filename, REPO).replace(os.sep, "/")
        top = path.split("/")[0]
        if top in ("tests", "ptune") and top not in found:
            found[top] = f"{path}:{frame.lineno}"
    return " > ".join(found[k] for k in ("tests", "ptune") if k in found) or "(elsewhere)"


def jax_listener(event: str, seconds: float, **_) -> None:
    """Records JAX's compile-path durations (a `jax.monitoring` duration listener); each
    compile with the call site that asked for it."""
    if event in EVENTS:
        record = {"kind": EVENTS[event], "s": seconds}
        if record["kind"] == "compile":
            record["where"] = _caller()
        _write(record)


def _cpu_seconds() -> float:
    """User + system CPU of this process and of the children it has waited for."""
    import resource

    usage = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Records each test's CPU seconds (its module-scoped fixtures count in the test that
    first asks for them)."""
    if LOG_ENV not in os.environ:
        return None
    start = _cpu_seconds()
    try:
        yield
    finally:
        _write({"kind": "cpu", "s": _cpu_seconds() - start, "test": item.nodeid})


def pytest_configure(config):
    """Loaded with `-p benchmarks.suite_time` (in every xdist worker too): starts recording."""
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        return  # pytest-xdist's controller runs no tests
    import jax.monitoring
    import seqio

    # absolute: a test may change the working directory
    os.environ.setdefault(LOG_ENV, os.path.abspath("suite-time.jsonl"))

    jax.monitoring.register_event_duration_secs_listener(jax_listener)
    seqio.Task.get_dataset = _timed("get_dataset", seqio.Task.get_dataset)
    seqio.Evaluator.__init__ = _timed("evaluator", seqio.Evaluator.__init__)


def _site(where: str) -> str:
    """A compile's call site as the tables group it: the test's line, then ptune's file."""
    parts = where.split(" > ")
    if parts[-1].startswith("ptune/"):
        parts[-1] = parts[-1].rsplit(":", 1)[0]
    return " > ".join(parts)


def summarize(path: str) -> str:
    """The log's tables: totals by kind, compiles by duration, and the modules spending most
    (JAX: trace + lower + compile + cache reads; seqio: Evaluators and the pipelines built
    outside them)."""
    records = [json.loads(line) for line in open(path)]
    records = [r for r in records if not r.get("nested")]  # counted in their Evaluator
    totals = collections.Counter()
    counts = collections.Counter()
    modules = collections.defaultdict(collections.Counter)
    for r in records:
        if r["kind"] not in KINDS:
            continue
        totals[r["kind"]] += r["s"]
        counts[r["kind"]] += 1
        modules[r["test"].split("::")[0] or "(outside a test)"][r["kind"]] += r["s"]
    out = ["| kind | count | worker seconds |", "|---|---:|---:|"]
    out += [f"| {k} | {counts[k]} | {totals[k]:.1f} |" for k in KINDS if counts[k]]
    compiles = [r["s"] for r in records if r["kind"] == "compile"]
    out += ["", "| compile seconds | programs | worker seconds |", "|---|---:|---:|"]
    bounds = (0.0, SMALL_COMPILE_S, 0.2, 1.0, 2.0, float("inf"))
    for low, high in zip(bounds, bounds[1:]):
        inside = [s for s in compiles if low <= s < high]
        out.append(f"| [{low:g}, {high:g}) | {len(inside)} | {sum(inside):.1f} |")
    small = collections.Counter(
        _site(r.get("where", "(not recorded)"))
        for r in records
        if r["kind"] == "compile" and r["s"] < SMALL_COMPILE_S
    )
    out += ["", f"| where compiles under {SMALL_COMPILE_S:g} s come from | programs |"]
    out += ["|---|---:|"]
    out += [f"| {where} | {n} |" for where, n in small.most_common(WHERE_ROWS)]
    out += ["", "| module | " + " | ".join(KINDS) + " | JAX + seqio |"]
    out.append("|---|" + "---:|" * (len(KINDS) + 1))
    ranked = sorted(modules.items(), key=lambda item: -sum(item[1].values()))
    for name, spent in ranked[:25]:
        cells = " | ".join(f"{spent[k]:.1f}" for k in KINDS)
        out.append(f"| {name} | {cells} | {sum(spent.values()):.1f} |")
    cpu = collections.Counter()
    for r in records:
        if r["kind"] == "cpu":
            cpu[r["test"].split("::")[0]] += r["s"]
    if cpu:
        out += ["", f"| module | CPU seconds (of {sum(cpu.values()):.0f}) |", "|---|---:|"]
        out += [f"| {name} | {spent:.1f} |" for name, spent in cpu.most_common(CPU_ROWS)]
    return "\n".join(out)


if __name__ == "__main__":
    print(summarize(sys.argv[1] if len(sys.argv) > 1 else "suite-time.jsonl"))
