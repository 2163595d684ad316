"""A user's own task through the shipped recipe, the three ways t5x/seqio users expect: a task
from plain files (`--task_file`), a module named by MIXTURE_OR_TASK_MODULE, and an `import`
line in a gin file. Each trains two steps of runs/demo.gin and evaluates."""

import importlib
import json
import os

import pytest
import seqio

from conftest import REPO
from ptune import cli, data, task_checks

DEMO_DATA = os.path.join(REPO, "tasks", "data", "demo")

MODULE = """
from ptune.tasks import files

files.FileTask(
    name={name!r},
    splits={{"train": {train!r}, "validation": {validation!r}}},
    inputs_field="sentence",
    targets_field="label",
    label_names=("negative", "positive"),
    vocabulary="byte",
).register()
"""

PLAIN_SEQIO = """
import seqio

def accuracy(targets, predictions):
    return {{"accuracy": 100.0 * sum(t == p for t, p in zip(targets, predictions)) / len(targets)}}

def records(split, shuffle_files=False, seed=None):
    import tensorflow as tf
    rows = [("good film", "positive"), ("sad film", "negative")] * 8
    return tf.data.Dataset.from_tensor_slices(
        {{"inputs": [r[0] for r in rows], "targets": [r[1] for r in rows]}})

@seqio.map_over_dataset
def shout_long_inputs(ex):
    import tensorflow as tf
    # A Python `if` on a tensor: it needs autograph (tf.cond), as t5x users write them.
    inputs = ex["inputs"]
    if tf.strings.length(inputs) > 8:
        inputs = tf.strings.upper(inputs)
    return {{**ex, "inputs": inputs}}

vocabulary = seqio.ByteVocabulary()
seqio.TaskRegistry.add(
    {name!r},
    source=seqio.FunctionDataSource(records, splits=("train", "validation")),
    preprocessors=[
        shout_long_inputs, seqio.preprocessors.tokenize, seqio.preprocessors.append_eos
    ],
    output_features={{
        "inputs": seqio.Feature(vocabulary, add_eos=True),
        "targets": seqio.Feature(vocabulary, add_eos=True),
    }},
    metric_fns=[accuracy],
)
"""


def _train(capsys, monkeypatch, model_dir, task, *extra):
    code = cli.main(
        [
            "train",
            "--gin_file=runs/demo.gin",
            f"--gin.MODEL_DIR='{model_dir}'",
            f"--gin.MIXTURE_OR_TASK_NAME='{task}'",
            "--gin.TRAIN_STEPS=2",
            "--gin.BATCH_SIZE=4",
            "--gin.LOG_PERIOD=1",
            *extra,
        ]
    )
    return code, capsys.readouterr().err.strip().splitlines()


def test_a_task_from_plain_files_on_the_command_line(tmp_path, capsys, monkeypatch):
    spec = (
        f"my_sentiment:train={DEMO_DATA}/train.jsonl,validation={DEMO_DATA}/validation.jsonl,"
        "inputs=sentence,targets=label,labels=negative|positive,vocabulary=byte"
    )
    code, lines = _train(
        capsys, monkeypatch, tmp_path / "run", "my_sentiment", f"--task_file={spec}"
    )
    assert code == 0, lines[-5:]
    summary = json.load(open(tmp_path / "run" / "summary.json"))
    assert summary["task"] == "my_sentiment" and summary["best"]["metric"] == "score"
    assert 0.0 <= summary["best"]["value"] <= 100.0


def test_a_task_module_from_the_macro_and_from_a_gin_import(tmp_path, capsys, monkeypatch):
    for name in ("mine_by_macro", "mine_by_import"):
        (tmp_path / f"{name}_tasks.py").write_text(
            MODULE.format(
                name=name,
                train=f"{DEMO_DATA}/train.jsonl",
                validation=f"{DEMO_DATA}/validation.jsonl",
            )
        )
    monkeypatch.syspath_prepend(str(tmp_path))
    code, lines = _train(
        capsys,
        monkeypatch,
        tmp_path / "by_macro",
        "mine_by_macro",
        "--gin.MIXTURE_OR_TASK_MODULE='mine_by_macro_tasks'",
    )
    assert code == 0, lines[-5:]
    gin_file = tmp_path / "my_run.gin"
    gin_file.write_text("import mine_by_import_tasks\ninclude 'runs/demo.gin'\n")
    code, lines = _train(
        capsys, monkeypatch, tmp_path / "by_import", "mine_by_import", f"--gin_file={gin_file}"
    )
    assert code == 0, lines[-5:]
    assert os.path.exists(tmp_path / "by_import" / "summary.json")


def test_a_plain_seqio_task_needs_its_selection_metric_named(tmp_path, capsys, monkeypatch):
    (tmp_path / "plain_tasks.py").write_text(PLAIN_SEQIO.format(name="plain_task"))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = "--gin.MIXTURE_OR_TASK_MODULE='plain_tasks'"
    code, lines = _train(capsys, monkeypatch, tmp_path / "a", "plain_task", module)
    assert code == 2 and "declares no primary metrics: name the metric" in lines[-1]
    assert not (tmp_path / "a").exists()
    code, lines = _train(
        capsys,
        monkeypatch,
        tmp_path / "b",
        "plain_task",
        module,
        "--gin.trainer.TrainConfig.eval_metric='accuracy'",
    )
    assert code == 0, lines[-5:]
    assert json.load(open(tmp_path / "b" / "summary.json"))["best"]["metric"] == "accuracy"


def test_a_users_own_preprocessor_keeps_autograph(tmp_path, monkeypatch):
    """ptune builds its own tasks' pipelines without autograph (`data.needs_autograph`); a
    task with the user's own code keeps it, so a Python `if` on a tensor works as in t5x."""
    from tensorflow.python.autograph.core import ag_ctx

    (tmp_path / "shouting_tasks.py").write_text(PLAIN_SEQIO.format(name="shouting_task"))
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("shouting_tasks")
    task = seqio.get_mixture_or_task("shouting_task")
    lengths = {"inputs": 16, "targets": 8}
    assert data.needs_autograph("shouting_task") and not data.needs_autograph("ptune_demo")
    with data.building_dataset("ptune_demo"):
        assert ag_ctx.control_status_ctx().status == ag_ctx.Status.DISABLED
    with data.building_dataset("shouting_task"):
        ds = task.get_dataset(lengths, split="train", shuffle=False)
    inputs = {ex["inputs_pretokenized"].decode() for ex in ds.as_numpy_iterator()}
    assert inputs == {"GOOD FILM", "sad film"}
    assert (
        task_checks.log_truncation("shouting_task", lengths, "train")["shouting_task"]["read"] == 16
    )
    with ag_ctx.ControlStatusCtx(status=ag_ctx.Status.DISABLED):  # what the check avoids
        with pytest.raises(Exception, match="tf.Tensor. as a Python .bool."):
            task.get_dataset(lengths, split="train", shuffle=False)


@pytest.mark.parametrize("bound, needs", [({"key_map": {"inputs": "x"}}, False), ({}, True)])
def test_a_users_function_bound_into_a_seqio_preprocessor_keeps_autograph(bound, needs):
    """A functools.partial counts the callables it binds: seqio's `rekey` with a key map needs
    no autograph; handed a function of the user's, it keeps it."""
    import functools

    def users_own(x):
        return x

    name = f"bound_into_seqio_{needs}"
    demo = seqio.get_mixture_or_task("ptune_demo")
    seqio.TaskRegistry.add(
        name,
        source=demo.source,  # ptune's
        preprocessors=[
            functools.partial(seqio.preprocessors.rekey, **(bound or {"fn": users_own}))
        ],
        output_features=demo.output_features,
    )
    try:
        assert data.needs_autograph(name) == needs
    finally:
        seqio.TaskRegistry.remove(name)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("nocolon", "expected NAME:train=FILE"),
        ("x:train=/no/such.jsonl,inputs=a,targets=b", "/no/such.jsonl"),
    ],
)
def test_a_bad_task_file_flag_is_one_line(spec, message, tmp_path, capsys, monkeypatch):
    code, lines = _train(capsys, monkeypatch, tmp_path / "run", "x", f"--task_file={spec}")
    assert code == 2 and lines[-1].startswith("ptune: error:") and message in lines[-1]
    assert not (tmp_path / "run").exists()
