"""Kill -9 in the middle of a run, restart it, and get the very same prompt, bit for bit, as a
run that was never interrupted. A real process killed, real Orbax checkpoints; the
uninterrupted run and the restart run in this process (`ptune.cli.main`), at the same compiler
flags."""

import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np

from conftest import DEMO_TINY
from ptune import cli

STEPS = 80  # killed at a checkpoint from step 30 on: 50 steps to spare
# The demo's run over random frozen weights (saved in MODEL_DIR/random_init, as `make demo`'s
# contrast run saves them) at the suite's tiny shapes: what resumes is the prompt, the
# optimizer, the data position and the dropout keys, whatever the model's size; the demo
# model's own shapes compiled each bucket's step with dropout in 4-5 s here, these in about 1.
TINY = [
    "--gin.INITIAL_CHECKPOINT_PATH=None",
    "--gin.trainer.TrainConfig.random_init=True",
    *(f"--gin.t5.T5Config.{k}={v}" for k, v in DEMO_TINY.items() if k != "vocab_size"),
]


def _flags(model_dir, checkpoint_period=10):
    return [
        "train",
        "--gin_file=models/ptune_demo.gin",
        "--gin_file=prompts/sampled_vocab.gin",
        "--gin_file=runs/demo.gin",
        f"--gin.MODEL_DIR='{model_dir}'",
        f"--gin.TRAIN_STEPS={STEPS}",
        "--gin.t5.T5Config.dropout_rate=0.1",  # dropout keys must resume too
        *TINY,
        "--gin.trainer.TrainConfig.eval_period=0",
        f"--gin.trainer.TrainConfig.checkpoint_period={checkpoint_period}",
        "--gin.trainer.TrainConfig.keep_checkpoints=3",
    ]


def _final_prompt(model_dir):
    return np.load(
        os.path.join(
            model_dir, "numpy_checkpoints", f"checkpoint_{STEPS}", "encoder.prompt.prompt.npy"
        )
    )


def _checkpoint_steps(model_dir):
    directory = os.path.join(model_dir, "checkpoints")
    if not os.path.isdir(directory):
        return []
    return sorted(int(n) for n in os.listdir(directory) if n.isdigit())


def _run(model_dir, caplog, **changes):
    """80 steps with dropout in this process, at the suite's compiler flags (compiling takes
    more of the time than running: 80 steps of the demo model run in about a second)
    -> (exit status, the run's log)."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ptune"):
        code = cli.main(_flags(model_dir, **changes))
    return code, caplog.text


def test_sigkill_and_resume_equals_an_uninterrupted_run(tmp_path, caplog):
    # The run never interrupted saves only its last step: how often a run saves does not
    # change what it computes.
    straight = str(tmp_path / "straight")
    code, err = _run(straight, caplog, checkpoint_period=STEPS)
    assert code == 0, err[-2000:]

    killed = str(tmp_path / "killed")
    victim = subprocess.Popen(
        [sys.executable, "-m", "ptune.cli", *_flags(killed)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd="/",
        env=dict(os.environ),
    )
    deadline = time.time() + 240
    while time.time() < deadline and not any(s >= 30 for s in _checkpoint_steps(killed)):
        assert victim.poll() is None, "the run ended before it could be killed"
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    interrupted_at = _checkpoint_steps(killed)
    assert interrupted_at and max(interrupted_at) < STEPS, interrupted_at
    assert not os.path.exists(os.path.join(killed, "numpy_checkpoints", f"checkpoint_{STEPS}"))

    code, err = _run(killed, caplog)
    assert code == 0, err[-2000:]
    assert "resumed from" in err
    np.testing.assert_array_equal(_final_prompt(killed), _final_prompt(straight))
    assert _final_prompt(killed).tobytes() == _final_prompt(straight).tobytes()
    # Only whole checkpoints remain: temporaries of an interrupted save are cleaned up.
    names = os.listdir(os.path.join(killed, "checkpoints"))
    assert all(n.isdigit() for n in names), names
    assert _checkpoint_steps(killed)[-1] == STEPS
