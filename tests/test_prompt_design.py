"""Prompt design, the paper's no-parameters baseline (`ptune.tasks.prompt_design`): the task's
own text with an instruction and k solved training examples before every input, scored by
the task's own metrics through `ptune eval`."""

import json
import os

import numpy as np
import pytest
import seqio

import ptune.tasks  # noqa: F401  registers the demo tasks
from conftest import REPO
from ptune import cli, evaluator
from ptune.checkpoints import prompt_io
from ptune.errors import UserError
from ptune.tasks import demo, prompt_design, registry

DEMO_MODEL = os.path.join(REPO, "tasks", "data", "demo", "model")
RANK = "ptune_demo_rank_classification"


def _texts(name, split="validation", key="inputs_pretokenized"):
    ds = seqio.get_mixture_or_task(name).get_dataset(
        sequence_length=None, split=split, shuffle=False
    )
    return [ex[key].decode() for ex in ds.as_numpy_iterator()]


def test_every_input_gets_the_instruction_then_the_shots_in_the_tasks_own_format():
    name, original = prompt_design.designed(RANK, "Is it positive or negative?", 2, seed=3)
    assert original == {name: RANK} and name != RANK
    assert name not in registry.list_tasks(only_ptune=True)  # made on request, not listed
    train = demo.read("train")
    # The documented draw: 2 of the train split's examples, numpy's generator seeded with 3.
    shots = [train[i] for i in np.random.default_rng(3).choice(len(train), 2, replace=False)]
    prefix = "Is it positive or negative? " + " ".join(
        f"sentence: {row['sentence']} {row['label']}" for row in shots
    )
    plain, designed = _texts(RANK), _texts(name)
    assert len(designed) == len(plain) == 2 * len(demo.read("validation"))  # every candidate
    assert designed == [f"{prefix} {text}" for text in plain]
    # Tokenized from that text, each with its EOS (the demo's byte vocabulary).
    vocab = seqio.get_mixture_or_task(name).output_features["inputs"].vocabulary
    ds = seqio.get_mixture_or_task(name).get_dataset(None, split="validation", shuffle=False)
    first = next(ds.as_numpy_iterator())
    assert list(first["inputs"]) == vocab.encode(designed[0]) + [1]
    # Its records are the task's: labels for the initializer, primary metrics for the score.
    assert registry.label_names(name) == registry.label_names(RANK)
    assert registry.primary_metrics(name) == {name: registry.primary_metrics(RANK)[RANK]}
    # The same arguments give the same registration; another seed, other shots.
    assert prompt_design.designed(RANK, "Is it positive or negative?", 2, seed=3)[0] == name
    other = prompt_design.designed(RANK, "Is it positive or negative?", 2, seed=4)[0]
    assert other != name and _texts(other) != designed


def test_a_mixtures_tasks_each_draw_shots_from_their_own_train_split():
    name, original = prompt_design.designed(demo.MIXTURE, None, 1, seed=0)
    assert sorted(original.values()) == sorted(registry.task_names(demo.MIXTURE))
    assert sorted(registry.task_names(name)) == sorted(original)
    assert name not in registry.list_tasks(only_ptune=True)
    for task, source in original.items():
        labels = registry.label_names(source)
        shot = _texts(task)[0][: -len(_texts(source)[0]) - 1]
        assert shot.startswith("sentence: ") and shot.split()[-1] in labels, (task, shot)


def _eval(tmp_path, *bindings):
    return cli.main(
        [
            "eval",
            "--gin_file=runs/eval.gin",
            f"--gin.MIXTURE_OR_TASK_NAME='{RANK}'",
            f"--gin.INITIAL_CHECKPOINT_PATH='{DEMO_MODEL}'",
            "--gin.NO_PROMPT=True",
            f"--gin.EVAL_OUTPUT_DIR='{tmp_path}'",
            *(f"--gin.{b}" for b in bindings),
        ]
    )


def test_eval_scores_the_frozen_model_given_an_instruction_and_shots(tmp_path):
    assert _eval(tmp_path, "INSTRUCTION='Positive or negative?'", "SHOTS=3") == 0
    written = json.loads((tmp_path / "eval_validation.json").read_text())
    assert list(written["results"]) == [RANK]  # the task's own name, not the copy's
    assert 0 <= written["results"][RANK]["accuracy"] <= 100
    assert written["score"] == written["results"][RANK]["accuracy"]
    assert (written["instruction"], written["shots"], written["shots_seed"]) == (
        "Positive or negative?",
        3,
        0,
    )
    # What was scored is the longer text: the evaluator's input length grows with it.
    name, _ = prompt_design.designed(RANK, "Positive or negative?", 3, 0)
    assert (
        evaluator.Evaluation(name, None, 8).lengths["inputs"]
        > (evaluator.Evaluation(RANK, None, 8).lengths["inputs"])
    )


def test_a_mixtures_prompt_bank_meets_each_tasks_designed_copy(tmp_path):
    """With a bank (one prompt per task of the mixture), each designed copy of a task is
    evaluated with that task's prompt, and the results carry the mixture's task names."""
    bank = tmp_path / "bank"
    rng = np.random.default_rng(0)
    tasks = registry.task_names(demo.MIXTURE)
    prompt_io.save_bank(str(bank), {t: rng.uniform(-0.5, 0.5, (2, 64)) for t in tasks})
    out = tmp_path / "out"
    out.mkdir()
    code = cli.main(
        [
            "eval",
            "--gin_file=runs/eval.gin",
            f"--gin.MIXTURE_OR_TASK_NAME='{demo.MIXTURE}'",
            f"--gin.INITIAL_CHECKPOINT_PATH='{DEMO_MODEL}'",
            f"--gin.PROMPT_FILE='{bank}'",
            f"--gin.EVAL_OUTPUT_DIR='{out}'",
            "--gin.SHOTS=1",
        ]
    )
    assert code == 0
    written = json.loads((out / "eval_validation.json").read_text())
    assert sorted(written["results"]) == sorted(tasks)


@pytest.mark.parametrize(
    "binding, needle",
    [
        ("SHOTS=-1", "SHOTS"),
        ("SHOTS=401", "SHOTS=401, but its train split has 400 examples"),
        ("INSTRUCTION='  '", "INSTRUCTION is empty"),
        ("SHOTS='2'", "SHOTS"),
    ],
)
def test_bad_prompt_design_input_is_one_line_and_writes_nothing(tmp_path, capsys, binding, needle):
    assert _eval(tmp_path, binding) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert os.listdir(tmp_path) == []


def test_a_task_without_a_train_split_has_no_shots_to_draw():
    """A plain seqio task (not registered by ptune.tasks) whose source has a validation split
    only: the demo's task over such a source."""
    name = "ptune_test_validation_only"
    shipped = demo.ShippedSource()
    seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add_provider(
        name,
        seqio.get_mixture_or_task(demo.TASK).replace(
            name=name,
            source=seqio.FunctionDataSource(
                lambda split, shuffle_files: shipped.get_dataset(split, shuffle=False),
                splits=["validation"],
            ),
        ),
    )
    with pytest.raises(UserError, match=f"^task {name} has no train split to draw SHOTS from"):
        prompt_design.designed(name, None, 2)
    assert _texts(prompt_design.designed(name, "Only words.", 0)[0])[0].startswith("Only words. ")


def test_ensemble_refuses_prompt_design_in_one_line(tmp_path, capsys):
    code = cli.main(
        [
            "ensemble",
            "--gin_file=runs/eval.gin",
            f"--gin.MIXTURE_OR_TASK_NAME='{RANK}'",
            f"--gin.INITIAL_CHECKPOINT_PATH='{DEMO_MODEL}'",
            "--gin.SHOTS=2",
            "--prompt_files=a.npy,b.npy",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "are for `ptune eval`" in err[0], err
