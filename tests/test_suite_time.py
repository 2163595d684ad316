"""`benchmarks/suite_time.py`: the suite's JAX and seqio time, read from JAX's own monitoring
events. If a JAX release renamed the events, the tool would report nothing; this fails first."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp

from benchmarks import suite_time


def test_a_new_program_records_its_trace_lowering_and_compile(tmp_path, monkeypatch):
    log = tmp_path / "suite-time.jsonl"
    monkeypatch.setenv(suite_time.LOG_ENV, str(log))
    jax.monitoring.register_event_duration_secs_listener(suite_time.jax_listener)
    try:
        # a program no other test compiles (and with the persistent cache: a read, not a compile)
        jax.jit(lambda x: jnp.cumsum(x * 3.0) - 17.0)(jnp.arange(13.0)).block_until_ready()
    finally:
        jax.monitoring.unregister_event_duration_listener(suite_time.jax_listener)
    kinds = [line.split('"kind": "')[1].split('"')[0] for line in log.read_text().splitlines()]
    assert {"trace", "lower"} <= set(kinds) and {"compile", "cache_read"} & set(kinds), kinds
    table = suite_time.summarize(str(log))
    assert f"| trace | {kinds.count('trace')} |" in table
    assert "| tests/test_suite_time.py |" in table  # the test that spent it


def test_a_compile_records_the_call_site_that_asked_for_it(tmp_path, monkeypatch):
    """Called as JAX calls it, in the thread that asked for the program (the program above
    may come from the persistent cache, with no compile event to look at)."""
    log = tmp_path / "suite-time.jsonl"
    monkeypatch.setenv(suite_time.LOG_ENV, str(log))
    suite_time.jax_listener("/jax/core/compile/backend_compile_duration", 0.01)
    (record,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert record["kind"] == "compile"
    assert record["where"].startswith("tests/test_suite_time.py:"), record
    assert " > " not in record["where"]  # no ptune frame between the test and the listener


def test_an_evaluators_own_pipelines_count_once(tmp_path):
    log = tmp_path / "suite-time.jsonl"
    records = [
        {"kind": "get_dataset", "s": 0.5, "nested": True, "test": "tests/test_a.py::t"},
        {"kind": "evaluator", "s": 2.0, "nested": False, "test": "tests/test_a.py::t"},
        {"kind": "get_dataset", "s": 0.25, "nested": False, "test": "tests/test_b.py::u"},
        {"kind": "compile", "s": 0.01, "test": "tests/test_b.py::u", "where": "ptune/x.py:7"},
        {"kind": "compile", "s": 0.02, "test": "tests/test_b.py::u", "where": "ptune/x.py:9"},
        {"kind": "compile", "s": 0.03, "test": "tests/test_b.py::u", "where": "tests/b.py:4"},
        {"kind": "compile", "s": 3.0, "test": "tests/test_b.py::u"},
        {"kind": "cpu", "s": 9.0, "test": "tests/test_a.py::t"},
        {"kind": "cpu", "s": 1.5, "test": "tests/test_b.py::u"},
    ]
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    table = suite_time.summarize(str(log))
    assert "| get_dataset | 1 | 0.2 |" in table and "| evaluator | 1 | 2.0 |" in table
    assert "| [0, 0.05) | 3 | 0.1 |" in table and "| [2, inf) | 1 | 3.0 |" in table
    # the small compiles' call sites: the test's line, ptune's file
    assert "| ptune/x.py | 2 |" in table and "| tests/b.py:4 | 1 |" in table
    rows = [line for line in table.splitlines() if line.startswith("| tests/test_")]
    assert rows[0].startswith("| tests/test_b.py |") and rows[0].endswith("| 3.3 |")
    assert rows[1].startswith("| tests/test_a.py |") and rows[1].endswith("| 2.0 |")
    # CPU seconds: their own table, not in the JAX + seqio sums above
    assert rows[2:] == ["| tests/test_a.py | 9.0 |", "| tests/test_b.py | 1.5 |"]
    assert "| module | CPU seconds (of 10) |" in table


def test_cpu_seconds_include_the_subprocesses_waited_for():
    start = suite_time._cpu_seconds()
    code = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert suite_time._cpu_seconds() - start >= 0.3
