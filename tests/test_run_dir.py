"""MODEL_DIR cannot be lost: one writer, nothing written before every check has passed,
`--overwrite` that keeps the old run until the new one's first checkpoint, records that
describe the prompt, resume past a damaged newest checkpoint or a torn metrics line. Real
tiny runs, real Orbax checkpoints, a real second process holding the lock."""

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import types

import pytest

import ptune.tasks  # noqa: F401  registers the tasks
from conftest import tiny_run_config
from ptune import optimizers, prompts, run_dir, trainer
from ptune.checkpoints import state as state_lib
from ptune.errors import UserError


def snapshot(directory):
    """Every file's path and content hash, and every directory: what "byte-identical" means."""
    out = {}
    for root, dirs, files in os.walk(directory):
        for name in dirs:
            out[os.path.relpath(os.path.join(root, name), directory) + "/"] = None
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("finished") / "run"
    trainer.train(tiny_run_config(model_dir), config_text="# the finished run\n")
    return model_dir


@pytest.fixture
def run_copy(finished, tmp_path):
    target = tmp_path / "run"
    shutil.copytree(finished, target)
    return target


def _fail_at(step):
    def fail(context):
        if context.step == step:
            raise RuntimeError(f"crash at step {step}")

    return trainer.Hook(every=1, fn=fail)


def test_overwrite_with_a_bad_checkpoint_path_loses_nothing(run_copy):
    before = snapshot(run_copy)
    cfg = tiny_run_config(run_copy, random_init=False, checkpoint_path="typo/model", overwrite=True)
    with pytest.raises(UserError, match="typo/model"):
        trainer.train(cfg)
    assert snapshot(run_copy) == before


def test_overwrite_that_crashes_before_its_first_checkpoint_puts_the_old_run_back(run_copy):
    before = snapshot(run_copy)
    cfg = tiny_run_config(run_copy, seed=7, overwrite=True)  # checkpoints at step 3
    with pytest.raises(RuntimeError, match="crash at step 2"):
        trainer.train(cfg, hooks=[_fail_at(2)])
    assert snapshot(run_copy) == before


def test_overwrite_replaces_the_run_once_the_new_one_has_a_checkpoint(run_copy):
    cfg = tiny_run_config(
        run_copy, seed=7, overwrite=True, train_steps=3, eval_period=0, checkpoint_period=1
    )
    with pytest.raises(RuntimeError, match="crash at step 2"):  # after step 1's checkpoint
        trainer.train(cfg, hooks=[_fail_at(2)])
    assert json.load(open(run_copy / "run.json"))["seed"] == 7
    assert sorted(os.listdir(run_copy / "checkpoints")) == ["1"]
    assert not (run_copy / run_dir.REPLACED).exists() and not (run_copy / run_dir.LOCK).exists()
    assert not (run_copy / "numpy_checkpoints" / "checkpoint_6").exists()  # the old run's


def test_a_killed_overwrite_is_put_back_by_the_next_command(run_copy, caplog):
    before = snapshot(run_copy)
    run_dir._move_aside(str(run_copy))  # as a run killed right after moving the old one aside
    (run_copy / "metrics.jsonl").write_text('{"step": 1, "split": "train", "loss": 1.0}\n')
    with caplog.at_level(logging.WARNING, logger="ptune"):
        again = trainer.train(tiny_run_config(run_copy))  # the old run's own command: resumes
    assert again.step == 6 and "restored the run" in caplog.text
    assert snapshot(run_copy) == before


def test_a_failed_start_in_a_new_model_dir_leaves_nothing(tmp_path):
    model_dir = tmp_path / "new"
    with pytest.raises(UserError):
        trainer.train(
            tiny_run_config(
                model_dir,
                prompt=prompts.PromptConfig(
                    length=4, initializer=prompts.from_file(str(tmp_path / "missing.npy"))
                ),
            )
        )
    assert not model_dir.exists()
    with pytest.raises(RuntimeError, match="crash at step 1"):
        trainer.train(tiny_run_config(model_dir), hooks=[_fail_at(1)])
    assert not model_dir.exists()
    # The corrected command then starts as if nothing had happened.
    assert trainer.train(tiny_run_config(model_dir, train_steps=3, eval_period=0)).step == 3


HOLDER = """
import json, os, sys
from ptune import run_dir
fingerprint = json.load(open(os.path.join({model_dir!r}, "run.json")))
d = run_dir.RunDir({model_dir!r}, fingerprint, overwrite=False)
d.check()
with d.open():
    print("held", flush=True)
    sys.stdin.read()
"""


def test_a_second_command_on_a_model_dir_in_use_is_refused_naming_the_holder(run_copy):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            HOLDER.format(model_dir=str(run_copy)),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(run_copy)
        with pytest.raises(UserError, match=rf"is in use by ptune pid {holder.pid} on host"):
            trainer.train(tiny_run_config(run_copy, train_steps=9))
        assert snapshot(run_copy) == before
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert not (run_copy / run_dir.LOCK).exists()


def test_a_lock_left_by_a_dead_process_is_taken_over(run_copy, caplog):
    (run_copy / run_dir.LOCK).write_text("ptune pid 999999 on host gone since yesterday\n")
    with caplog.at_level(logging.WARNING, logger="ptune"):
        assert trainer.train(tiny_run_config(run_copy)).step == 6
    assert "left by ptune pid 999999 on host gone" in caplog.text
    assert not (run_copy / run_dir.LOCK).exists()


def test_a_resume_with_another_initializer_is_refused_and_changes_nothing(run_copy):
    before = snapshot(run_copy)
    other = prompts.PromptConfig(length=4, initializer=prompts.sampled_vocab())
    with pytest.raises(UserError, match=r"changed: initializer\)"):
        trainer.train(tiny_run_config(run_copy, prompt=other))
    assert snapshot(run_copy) == before


def test_a_resume_with_another_learning_rate_is_refused_and_changes_nothing(run_copy):
    """The records name the optimizer the prompt was trained with (config.gin, run.json)."""
    recorded = json.load(open(run_copy / "run.json"))["optimizer"]
    assert recorded["name"] == "adafactor" and recorded["learning_rate"] == 0.3
    before = snapshot(run_copy)
    faster = optimizers.prompt_tuning_adafactor(learning_rate=0.5)
    with pytest.raises(UserError, match=r"changed: optimizer\)"):
        trainer.train(tiny_run_config(run_copy, optimizer=faster))
    assert snapshot(run_copy) == before
    # the same optimizer, asked for by name, resumes
    same = optimizers.prompt_tuning_adafactor(learning_rate=0.3)
    assert trainer.train(tiny_run_config(run_copy, optimizer=same, train_steps=7)).step == 7


def _damage(run, how):
    step_dir = run / "checkpoints" / "6"
    files = [os.path.join(r, f) for r, _, fs in os.walk(step_dir / "state") for f in fs]
    if how == "truncated data files":  # a write cut short: every array file loses its end
        data = [f for f in files if os.path.basename(os.path.dirname(f)) == "d"]
        assert data
        for target in data:
            with open(target, "r+b") as f:
                f.truncate(os.path.getsize(target) // 2)
    else:
        manifests = [f for f in files if f.endswith("manifest.ocdbt")]
        assert manifests
        for target in manifests:
            open(target, "w").close()


# An exception printed from another thread (Orbax's reads finishing after a failed restore)
# fails the test instead of passing as a warning.
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("how", ["truncated data files", "empty manifest"])
def test_resume_falls_back_past_a_damaged_newest_checkpoint(run_copy, how, caplog):
    _damage(run_copy, how)
    with caplog.at_level(logging.WARNING, logger="ptune"):
        again = trainer.train(tiny_run_config(run_copy, train_steps=9))
    assert again.step == 9
    assert "checkpoint 6 is damaged" in caplog.text and "resuming from step 3" in caplog.text
    assert (run_copy / "damaged_checkpoints" / "6").is_dir()  # kept, never deleted
    assert sorted(os.listdir(run_copy / "checkpoints")) == ["6", "9"]


def test_only_the_late_reads_of_a_failed_restore_are_quieted(caplog, monkeypatch):
    """What `_quiet_late_reads` drops after a failed restore, and what it lets through."""
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    state_lib._quiet_late_reads("/runs/a/checkpoints")
    hook = sys.unraisablehook
    state_lib._quiet_late_reads("/runs/a/checkpoints")  # a second call wraps nothing again
    assert sys.unraisablehook is hook
    filters = logging.getLogger("asyncio").filters
    assert sum(isinstance(f, state_lib._ReadsNeverRetrieved) for f in filters) == 1

    def unraisable(error):
        try:
            raise error
        except BaseException as e:  # noqa: BLE001
            return types.SimpleNamespace(exc_value=e, exc_traceback=e.__traceback__)

    def call_soon_threadsafe():  # named as asyncio's, where a closed loop raises
        raise RuntimeError("Event loop is closed")

    try:
        call_soon_threadsafe()
    except RuntimeError as e:
        late = types.SimpleNamespace(exc_value=e, exc_traceback=e.__traceback__)
    sys.unraisablehook(late)
    other = unraisable(RuntimeError("Event loop is closed"))  # not from call_soon_threadsafe
    sys.unraisablehook(other)
    assert seen == [other]
    asyncio_log = logging.getLogger("asyncio")
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        for coro in ("/runs/a/checkpoints/6/state/d/1f", "/runs/b/checkpoints/6", "user code"):
            asyncio_log.error("Future exception was never retrieved\nfuture: <%s>", coro)
    assert "/runs/a/" not in caplog.text and "/runs/b/" in caplog.text and "user" in caplog.text


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_no_intact_checkpoint_is_one_line_and_moves_nothing(run_copy):
    for step in ("3", "6"):
        for root, _, files in os.walk(run_copy / "checkpoints" / step / "state"):
            for name in files:
                if name.endswith("manifest.ocdbt"):
                    open(os.path.join(root, name), "w").close()
    before = snapshot(run_copy)
    with pytest.raises(UserError, match=r"no checkpoint in .* restores: step 6: .*; step 3: "):
        trainer.train(tiny_run_config(run_copy, train_steps=9))
    assert snapshot(run_copy) == before


def test_a_torn_last_metrics_line_is_dropped(run_copy, caplog):
    with open(run_copy / "metrics.jsonl", "a") as f:
        f.write('{"step": 7, "split": "tra')
    with caplog.at_level(logging.WARNING, logger="ptune"):
        assert trainer.train(tiny_run_config(run_copy, train_steps=8)).step == 8
    assert "dropped a torn last line" in caplog.text
    lines = [json.loads(line) for line in open(run_copy / "metrics.jsonl")]
    assert [x["step"] for x in lines if x["split"] == "train"][-2:] == [6, 8]
