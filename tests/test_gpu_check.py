"""`benchmarks/gpu_check.py --dry_run`: every step of the GPU check runs, tiny, on the CPU and
lands in one folder with one summary table, so the check is ready whenever a GPU is at hand.
Real PyTorch, transformers and PEFT on the peer side; the figures mean nothing here."""

import json
import subprocess
import sys

import pytest

from conftest import REPO

STEPS = (
    "t5 float32",
    "t5 bfloat16",
    "length rte",
    "length boolq",
    "causal step",
    "causal serving",
    "attention form",
)


@pytest.mark.full_scale
def test_the_gpu_check_runs_every_step_on_the_cpu_and_prints_one_table(tmp_path):
    out = tmp_path / "check"
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--dry_run", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = (out / "summary.md").read_text()
    assert summary in done.stdout  # the table printed last is the one written
    rows = {line.split(" | ")[0].strip("| "): line for line in summary.splitlines()[4:]}
    assert sorted(rows) == sorted(STEPS)
    for name, row in rows.items():
        assert "| ok |" in row and "no results file" not in row, row
        assert (out / (name.replace(" ", "-") + ".log")).is_file()
    assert "head by head on cpu" in rows["attention form"]  # XLA:CPU's form, as documented
    # The fused-attention probe (cuDNN on a GPU) ran with XLA's implementation here.
    assert rows["attention form"].count("xla ok, max diff") == 2
    results = [json.loads(p.read_text()) for p in out.glob("*.json")]
    t5_runs = {r["settings"]["dtype"]: r for r in results if "configs" in r}
    assert sorted(t5_runs) == ["bfloat16", "float32"]
    for run in t5_runs.values():  # parity with PEFT held before either was timed
        assert run["configs"]["dry-run"]["parity"]["ok"] is True
        assert {"ptune_prompt", "peft_prompt", "ptune_model", "hf_full"} <= set(
            run["configs"]["dry-run"]["steps"]
        )
    assert (
        "bfloat16 activations (ptune) and PyTorch autocast"
        in (
            out / f"{t5_runs['bfloat16']['date']}-{t5_runs['bfloat16']['machine']['tag']}.md"
        ).read_text()
    )
    assert sum("contenders" in r for r in results) == 2  # both length mixes
    assert sum("peft_over_ptune_step_time" in r for r in results) == 1
