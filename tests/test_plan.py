"""`ptune plan` compiles the sharded train step from shapes alone on simulated CPU devices that
it creates itself from --mesh_shape, and reports per-device memory; prompt tuning holds
(almost) no optimizer state and less than model tuning; bad meshes are one clear error."""

import re
import subprocess
import sys

import pytest

TINY = [
    "--gin_file=models/t5_1_1_tiny.gin",
    "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 4}",
    "--gin.BATCH_SIZE=8",
    "--gin.t5.T5Config.vocab_size=64",
]


def _plan(*args):
    return subprocess.run(
        [sys.executable, "-m", "ptune.cli", "plan", *args],
        capture_output=True,
        text=True,
        cwd="/",
        timeout=300,
    )


def _bytes(stdout: str, name: str) -> int:
    return int(re.search(rf"{name}:\s+([\d,]+) bytes", stdout).group(1).replace(",", ""))


@pytest.fixture(scope="module")
def prompt_plan():
    proc = _plan(
        *TINY,
        "--gin_file=runs/prompt_tuning.gin",
        "--gin.PROMPT_LENGTH=4",
        "--mesh_shape=2,4",
        "--gin.trainer.TrainConfig.frozen_dtype='bfloat16'",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_plan_reports_per_device_memory_on_a_simulated_mesh(prompt_plan):
    lines = prompt_plan.strip().splitlines()
    assert "mesh: 2x4 (data x model), 8 devices" in lines
    peak = int(re.fullmatch(r"per_device_bytes: (\d+)", lines[-1]).group(1))
    assert peak == _bytes(prompt_plan, "peak") > 0
    # tiny T5 1.1 (emb 4): prompt [4, 4] float32 replicated, every device holds all of it.
    assert _bytes(prompt_plan, "trainable params") == 4 * 4 * 4
    # bfloat16 frozen weights: 2 bytes each, vocab/mlp/heads split 4 ways on `model`.
    assert 0 < _bytes(prompt_plan, "frozen params") < 2 * 700
    assert _bytes(prompt_plan, "arguments") >= _bytes(prompt_plan, "frozen params")


def test_model_tuning_holds_more_per_device_than_prompt_tuning(prompt_plan):
    proc = _plan(*TINY, "--gin_file=runs/model_tuning.gin", "--mesh_shape=2,4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _bytes(proc.stdout, "frozen params") == 0
    assert _bytes(proc.stdout, "optimizer state") > 10 * _bytes(prompt_plan, "optimizer state")
    # On this tiny model activations dominate the peak; the weights' share shows the saving.
    assert _bytes(proc.stdout, "arguments") > 1.5 * _bytes(prompt_plan, "arguments")


@pytest.mark.parametrize(
    "mesh, message",
    [
        ("4", "--mesh_shape must be DATA,MODEL"),
        ("3,1", "batch size 8 is not divisible by the data axis (3)"),
    ],
)
def test_bad_plan_input_is_one_line(mesh, message):
    proc = _plan(*TINY, "--gin_file=runs/prompt_tuning.gin", f"--mesh_shape={mesh}")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == "ptune: error: " + message + (
        "; choose a multiple of 3" if mesh == "3,1" else f" (e.g. 4,4), got '{mesh}'"
    )
