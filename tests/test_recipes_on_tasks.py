"""Every shipped training recipe on every task it is meant for, end to end, a few steps each:
runs/prompt_tuning.gin (the paper's recipe, only size flags changed) on the eight SuperGLUE
tasks fed from the official JSONL layout (`--superglue_dir`), over the shared t5x checkpoint
with no model file (its configuration is inferred from its shapes); runs/model_tuning.gin on
ReCoRD, the free-text task the first version stopped on."""

import json
import os

import pytest
from superglue_records import OFFICIAL

from conftest import shared_path
from ptune import cli
from ptune.tasks import superglue_files

TASKS = {  # task or mixture -> the release folder it reads
    "taskless_super_glue_boolq_v102": "boolq",
    "taskless_super_glue_cb_v102": "cb",
    "taskless_super_glue_copa_v102": "copa",
    "taskless_super_glue_multirc_v102": "multirc",
    "taskless_super_glue_record_v102": "record",
    "taskless_super_glue_rte_v102": "rte",
    "taskless_super_glue_wic_v102": "wic",
    "taskless_super_glue_wsc_v102": "wsc.fixed",  # trains on the simple train task
}
# T5's SuperGLUE mixture: the eight tasks and DPR, whose official files sit in the release's
# DPR folder (`superglue_files.DPR_DIR`).
MIXTURE = "taskless_super_glue_v102_proportional"
DPR = (
    "The bee landed on the flower because it had pollen.\nit\nThe bee,the flower\n"
    "the flower\n\nThe bee landed on the flower because it wanted pollen.\nit\n"
    "The bee,the flower\nThe bee\n\n"
)
SIZES = [
    "--gin.TASK_FEATURE_LENGTHS={'inputs': 96, 'targets': 8}",
    "--gin.BATCH_SIZE=2",
    "--gin.TRAIN_STEPS=2",
    "--gin.EVAL_PERIOD=2",
    "--gin.CHECKPOINT_PERIOD=2",
    "--gin.LOG_PERIOD=1",
]

# The inferred configuration's dropout (T5 1.1's fine-tuning 0.1) stays on in BoolQ's run and
# is off in the other tasks' and the mixture's (whose data, not model, they test): on a CPU it
# triples a tiny prompt step's compile (threefry's rolled loops).
WITH_DROPOUT = ("taskless_super_glue_boolq_v102",)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """The official SuperGLUE layout: each folder's train.jsonl and val.jsonl (4 records)."""
    root = tmp_path_factory.mktemp("superglue")
    for config in set(TASKS.values()):
        for split in ("train", "validation"):
            path = root / superglue_files.relative_path(config, split)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(OFFICIAL[config]) + "\n" for _ in range(4)))
    for name in superglue_files.DPR_FILES.values():
        (root / superglue_files.DPR_DIR).mkdir(exist_ok=True)
        (root / superglue_files.DPR_DIR / name).write_text(DPR * 2)
    return str(root)


def _train(capsys, monkeypatch, model_dir, task, release, run):
    code = cli.main(
        [
            "train",
            f"--gin_file={run}",
            f"--gin.MODEL_DIR='{model_dir}'",
            f"--gin.MIXTURE_OR_TASK_NAME='{task}'",
            f"--gin.INITIAL_CHECKPOINT_PATH='{shared_path('t5x_tiny_checkpoint', 'checkpoint_3')}'",
            f"--superglue_dir={release}",
            f"--spm_path={shared_path('t5_vocab', 'sentencepiece.model')}",
            *SIZES,
            *(["--gin.PROMPT_LENGTH=4"] if run == "runs/prompt_tuning.gin" else []),
            *([] if task in WITH_DROPOUT else ["--gin.t5.T5Config.dropout_rate=0.0"]),
        ]
    )
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("task", list(TASKS) + [MIXTURE])
def test_the_paper_recipe_trains_and_evaluates_each_superglue_task(
    task, release, tmp_path, capsys, monkeypatch
):
    code, lines = _train(
        capsys, monkeypatch, tmp_path / "run", task, release, "runs/prompt_tuning.gin"
    )
    assert code == 0, lines[-8:]
    summary = json.load(open(tmp_path / "run" / "summary.json"))
    assert summary["steps"] == 2 and summary["best"]["metric"] == "score"
    assert summary["trainable_params"] == 4 * 4  # prompt 4 x width 4
    evaluated = json.load(open(tmp_path / "run" / "eval" / "validation_step_2.json"))
    assert evaluated["score"] == summary["best"]["value"] and evaluated["results"]
    assert os.path.exists(tmp_path / "run" / "numpy_checkpoints" / "best")


def test_model_tuning_trains_and_evaluates_record(release, tmp_path, capsys, monkeypatch):
    task = "taskless_super_glue_record_v102"
    code, lines = _train(
        capsys, monkeypatch, tmp_path / "run", task, release, "runs/model_tuning.gin"
    )
    assert code == 0, lines[-8:]
    summary = json.load(open(tmp_path / "run" / "summary.json"))
    assert summary["trainable_params"] == summary["total_params"] and summary["best"] is not None
