"""One frozen-model configuration for every command (`ptune.frozen_model`): the same fields,
the same macros and gin paths in each run file, one path from them to a run."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO
from ptune import evaluation, frozen_model, ginconfig, infer, trainer
from ptune.errors import UserError

DEMO_MODEL = os.path.join(REPO, "tasks", "data", "demo", "model")
# Each command's run file, its configuration, and values for the macros it leaves required.
RUNS = {
    "train": (
        ["runs/demo.gin"],
        trainer.TrainConfig,
        ["MODEL_DIR='/tmp/x'"],
    ),
    "eval": (
        ["runs/eval.gin"],
        evaluation.EvalConfig,
        ["MIXTURE_OR_TASK_NAME='ptune_demo'", f"INITIAL_CHECKPOINT_PATH='{DEMO_MODEL}'"],
    ),
    "infer": (
        ["runs/infer.gin"],
        infer.InferConfig,
        [
            f"INITIAL_CHECKPOINT_PATH='{DEMO_MODEL}'",
            "PROMPT_FILES={'ptune_demo': 'p.npy'}",
            "INFER_INPUT_FILE='in.jsonl'",
            "INFER_OUTPUT_FILE='out.jsonl'",
        ],
    ),
}


def _configured(command: str, extra: list[str]):
    files, fn, required = RUNS[command]
    ginconfig.parse(ginconfig.GinArgs(files=list(files), bindings=required + extra))
    return ginconfig.call(fn, model=ginconfig.model_fields() or None)


def test_every_commands_configuration_declares_the_frozen_model_fields_once():
    """Train, eval and infer extend `FrozenModel` (ensemble holds an EvalConfig): each shared
    field has one declaration, its type and range the same in every command."""
    shared = {f.name: f for f in dataclasses.fields(frozen_model.FrozenModel)}
    assert set(shared) >= {"checkpoint_path", "model", "frozen_dtype", "partitioning"}
    commands = [trainer.TrainConfig, evaluation.EvalConfig, infer.InferConfig]
    for cls in commands:
        assert issubclass(cls, frozen_model.FrozenModel), cls
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for name, field in shared.items():
            assert fields[name].type == field.type and fields[name].metadata == field.metadata
    assert dataclasses.fields(infer.EnsembleConfig)[0].type in ("evaluation.EvalConfig",)


@pytest.mark.parametrize("command", sorted(RUNS))
def test_each_run_file_binds_the_frozen_dtype_and_the_mesh_by_the_same_names(command):
    cfg = _configured(
        command, ["FROZEN_DTYPE='bfloat16'", "partitioning.MeshConfig.num_partitions=2"]
    )
    assert cfg.frozen_dtype == "bfloat16"
    assert cfg.partitioning.num_partitions == 2


@pytest.mark.parametrize("command", sorted(RUNS))
def test_a_frozen_dtype_outside_the_choices_is_one_line_naming_the_macro(command):
    with pytest.raises(UserError) as e:
        _configured(command, ["FROZEN_DTYPE='bfloat17'"])
    assert str(e.value).startswith("FROZEN_DTYPE must be one of 'float32', 'bfloat16', 'float16'")


def test_evaluation_lengths_have_their_own_name_and_the_training_name_is_pointed_to(capsys):
    """`ptune eval`'s lengths are EVAL_FEATURE_LENGTHS (None: each example whole), as in
    training; its runs file does not take TASK_FEATURE_LENGTHS, and saying so names the other."""
    from ptune import cli

    cfg = _configured("eval", ["EVAL_FEATURE_LENGTHS={'inputs': 16, 'targets': 4}"])
    assert cfg.eval_feature_lengths == {"inputs": 16, "targets": 4}
    assert _configured("train", []).eval_feature_lengths is None
    files, _, required = RUNS["eval"]
    code = cli.main(
        ["eval", *(f"--gin_file={f}" for f in files), *(f"--gin.{b}" for b in required)]
        + ["--gin.NO_PROMPT=True", "--gin.TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 4}"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "did you mean EVAL_FEATURE_LENGTHS?" in err[0], err


def test_beams_are_one_int_field_with_greedy_at_one():
    assert evaluation.EvalConfig(mixture_or_task_name="t").num_beams == 1
    assert infer.InferConfig(prompt_files={}, input_file="i", output_file="o").num_beams == 1
    assert trainer.TrainConfig(model_dir="d", mixture_or_task_name="t").eval_num_beams == 1
    assert _configured("eval", ["NUM_BEAMS=3"]).num_beams == 3


def test_a_command_without_a_checkpoint_is_told_before_any_work():
    cfg = evaluation.EvalConfig(mixture_or_task_name="ptune_demo", no_prompt=True)
    with pytest.raises(UserError, match="^INITIAL_CHECKPOINT_PATH is required: ptune eval"):
        evaluation.run_eval(cfg)


def test_the_one_path_loads_the_frozen_model_in_the_configured_dtype():
    """`resolve().assemble()` is how eval, infer and ensemble build their run: the demo
    model's weights arrive in bfloat16 when FROZEN_DTYPE says so, float32 otherwise, with the
    same values up to bfloat16's rounding."""
    loaded = {}
    for dtype in (None, "bfloat16"):
        cfg = _configured("eval", [f"FROZEN_DTYPE={dtype!r}", "NO_PROMPT=True"])
        run = cfg.resolve(what="ptune eval").assemble()
        assert run.frozen_dtype == dtype
        loaded[dtype] = jax.tree.leaves(run.load_frozen(cfg.checkpoint_path))
    assert {x.dtype for x in loaded[None]} == {jnp.dtype("float32")}
    assert {x.dtype for x in loaded["bfloat16"]} == {jnp.dtype("bfloat16")}
    assert len(loaded[None]) == len(loaded["bfloat16"]) > 0
    for full, half in zip(loaded[None], loaded["bfloat16"]):
        # bfloat16 keeps 8 significant bits: a relative error of at most 2**-8
        np.testing.assert_allclose(np.asarray(half, np.float32), full, rtol=2**-8, atol=0)
