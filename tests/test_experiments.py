"""The paper's full-scale experiments (gin/experiments/): every Figure 1 file, and the largest
runs of the files layered on them, plans within the slice its comment names (`ptune plan`,
mesh from the file, on simulated CPU devices, real T5 1.1 shapes), and every file trains a
step at tiny size: the file as shipped, then only the model (the shared tiny t5x checkpoint),
batch, steps and mesh changed, on BoolQ from the official SuperGLUE layout (files whose tiny
runs bind the very same gin configuration train once). Table 1's SQuAD/MRQA data are TFDS
datasets that cannot be made offline: its file trains on BoolQ too, and its task and metric
are checked against the registered mixture.

The plans and the tiny runs (with Table 3's ensemble of two of them: about 70 CPU seconds
together, compiling a step for every file's settings) are marked `full_scale`: `make
test-full-scale` runs them, CI runs both targets; `make test` keeps the file checks here
that read gin only."""

import glob
import json
import os
import re
import subprocess
import sys

import pytest
from superglue_records import OFFICIAL

from conftest import shared_path
from ptune import cli, ginconfig, selection
from ptune.tasks import superglue_files

EXPERIMENTS = os.path.join(ginconfig.GIN_DIR, "experiments")
FIGURE1 = sorted(
    os.path.basename(f)[:-4] for f in glob.glob(os.path.join(EXPERIMENTS, "figure1_*.gin"))
)
SIZES = ("small", "base", "large", "xl", "xxl")
SHAPES = {"small": "8+8 layers, emb 512", "base": "12+12 layers, emb 768",
          "large": "24+24 layers, emb 1024", "xl": "24+24 layers, emb 2048",
          "xxl": "24+24 layers, emb 4096"}  # T5 1.1's  # fmt: skip
# Files added after a Figure 1 prompt-tuning file, with what each requires.
LAYERED = {
    "figure3a_prompt_length": ["--gin.PROMPT_LENGTH=5"],
    "figure3b_initialization": ["--gin_file=prompts/sampled_vocab.gin"],
    "figure3c_objective": [],  # INITIAL_CHECKPOINT_PATH: the tiny checkpoint, below
    "table1_domain_shift": [
        "--gin.MIXTURE_OR_TASK_NAME='taskless_super_glue_boolq_v102'",
        "--gin.trainer.TrainConfig.eval_metric=None",
    ],
}
BOOLQ = "taskless_super_glue_boolq_v102"


def _slice(name: str) -> tuple[int, int]:
    """(devices, GiB per device) from the file's "# Slice: N devices of G GiB" comment."""
    text = open(os.path.join(EXPERIMENTS, f"{name}.gin")).read()
    devices, gib = re.search(r"^# Slice: (\d+) devices of (\d+) GiB", text, re.M).groups()
    return int(devices), int(gib)


def test_every_size_has_both_methods_and_every_file_is_tested():
    assert FIGURE1 == sorted(
        f"figure1_{k}_{s}" for k in ("model_tuning", "prompt_tuning") for s in SIZES
    )
    shipped = {os.path.basename(f)[:-4] for f in glob.glob(os.path.join(EXPERIMENTS, "*.gin"))}
    assert shipped == set(FIGURE1) | set(LAYERED) | {"table3_ensemble"}


PLANS = """
import sys
from ptune import cli
for name, extra in {plans!r}:
    print("=== plan", name, flush=True)
    if cli.main(["plan", f"--gin_file=experiments/{{name}}.gin", *extra]):
        sys.exit(1)
"""
# The layered files' largest runs, planned on their Figure 1 file's slice: Table 1's longer
# targets over model tuning at XXL, and Figure 3a's longest prompt at XL (the fullest slice).
LAYERED_PLANS = [
    ("figure1_model_tuning_xxl", ["--gin_file=experiments/table1_domain_shift.gin"]),
    ("figure1_prompt_tuning_xl",
     ["--gin_file=experiments/figure3a_prompt_length.gin", "--gin.PROMPT_LENGTH=150"]),
]  # fmt: skip


@pytest.mark.full_scale
@pytest.mark.parametrize("devices", [8, 16])
def test_figure1_files_fit_the_slice_they_name(devices):
    names = [n for n in FIGURE1 if _slice(n)[0] == devices]
    assert names  # each slice size is shipped
    plans = [(n, []) for n in names] + [p for p in LAYERED_PLANS if _slice(p[0])[0] == devices]
    proc = subprocess.run(
        [sys.executable, "-c", PLANS.format(plans=plans)],
        capture_output=True, text=True, cwd="/", timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    outs = re.split(r"^=== plan (\S+)\n", proc.stdout, flags=re.M)[1:]
    assert outs[::2] == [name for name, _ in plans]
    for (name, extra), out in zip(plans, outs[1::2]):
        assert f"model: {SHAPES[name.rsplit('_', 1)[1]]}," in out, (name, out)
        assert f", {devices} devices" in out and "scanned True" in out, (name, out)
        if extra:  # the layered file took effect
            assert "'targets': 32" in out or "trainable params: 307,200 " in out, (name, out)
        peak = int(re.search(r"^per_device_bytes: (\d+)$", out, re.M).group(1))
        assert 0 < peak <= _slice(name)[1] * 2**30, (name, extra, peak / 2**30)


@pytest.fixture(scope="module")
def boolq(tmp_path_factory):
    """BoolQ in the official SuperGLUE layout (4 records per split)."""
    root = tmp_path_factory.mktemp("superglue")
    for split in ("train", "validation"):
        path = root / superglue_files.relative_path("boolq", split)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(OFFICIAL["boolq"]) + "\n" for _ in range(4)))
    return str(root)


def _tiny_step(model_dir, files, boolq, *extra):
    return cli.main(["train", *_tiny_flags(model_dir, files, boolq, *extra)])


# The tiny model file's dropout (T5 1.1's fine-tuning 0.1; no experiment file sets it) stays on
# in the XXL files' tiny runs, where it meets scanned layers, remat and the most settings, and
# is off in the others: on a CPU each dropout site's threefry draws compile as rolled loops,
# and this module's CPU time fell by a sixth without them (measured 2026-12-07).
WITH_DROPOUT = ("figure1_prompt_tuning_xxl", "figure1_model_tuning_xxl")


def _tiny_flags(model_dir, files, boolq, *extra):
    dropout = files[-1] in {f"experiments/{name}.gin" for name in WITH_DROPOUT}
    return [
        *(f"--gin_file={f}" for f in files),
        "--gin_file=models/t5_1_1_tiny.gin",  # the tiny checkpoint's shapes, not the size's
        *([] if dropout else ["--gin.t5.T5Config.dropout_rate=0.0"]),
        f"--gin.INITIAL_CHECKPOINT_PATH='{shared_path('t5x_tiny_checkpoint', 'checkpoint_3')}'",
        f"--gin.MODEL_DIR='{model_dir}'",
        f"--gin.MIXTURE_OR_TASK_NAME='{BOOLQ}'",
        f"--superglue_dir={boolq}",
        f"--spm_path={shared_path('t5_vocab', 'sentencepiece.model')}",
        "--gin.BATCH_SIZE=2",
        "--gin.TRAIN_STEPS=1",
        "--gin.EVAL_PERIOD=1",
        "--gin.CHECKPOINT_PERIOD=1",
        "--gin.LOG_PERIOD=1",
        "--gin.partitioning.MeshConfig.mesh_shape=None",  # this process's one device
        *extra,
    ]


def _tiny_bindings(files, boolq, *extra) -> str:
    """Every gin binding of the tiny run of `files` (gin's own listing, MODEL_DIR fixed)."""
    import gin
    from ptune.command_config import parse_gin

    flags = _tiny_flags("(run)", files, boolq, *extra)
    parse_gin(ginconfig.split_gin_args(flags))
    try:
        return gin.config_str()
    finally:
        gin.clear_config(clear_constants=True)


@pytest.fixture(scope="module")
def prompts_trained(boolq, tmp_path_factory):
    """Every Figure 1 file trained one step at tiny size: name -> its run directory. A file
    whose tiny run binds exactly what an earlier file's binds (small and base differ only in
    the sizes the tiny model replaces) shares that file's run."""
    root = tmp_path_factory.mktemp("figure1")
    runs, by_bindings = {}, {}
    for name in FIGURE1:
        bindings = _tiny_bindings([f"experiments/{name}.gin"], boolq)
        if bindings not in by_bindings:
            by_bindings[bindings] = root / name
            assert _tiny_step(root / name, [f"experiments/{name}.gin"], boolq) == 0, name
        runs[name] = by_bindings[bindings]
    # Only the sizes collapse: each method keeps its own run at every size it sets more for.
    assert len(by_bindings) == 8, sorted(p.name for p in by_bindings.values())
    return runs


@pytest.mark.full_scale
def test_figure1_files_train_a_step_at_tiny_size(prompts_trained):
    for name, run in prompts_trained.items():
        summary = json.load(open(run / "summary.json"))
        assert summary["steps"] == 1 and summary["best"]["metric"] == "score", name
        prompt = name.startswith("figure1_prompt_tuning")
        # The paper's 100-token prompt over width 4, or every weight of the tiny model.
        assert (summary["trainable_params"] == 100 * 4) == prompt, (name, summary)
        assert (summary["trainable_params"] == summary["total_params"]) != prompt, name


@pytest.mark.full_scale
@pytest.mark.parametrize("name", sorted(LAYERED))
def test_layered_files_train_a_step_after_a_figure1_file(name, boolq, prompts_trained, tmp_path):
    files = ["experiments/figure1_prompt_tuning_xl.gin", f"experiments/{name}.gin"]
    extra = LAYERED[name]
    if _tiny_bindings(files, boolq, *extra) == _tiny_bindings(files[:1], boolq):
        # Figure 3c's file chooses only the checkpoint, which the tiny run replaces: its tiny
        # run is the Figure 1 file's, trained above.
        assert name == "figure3c_objective"
        xl = json.load(open(prompts_trained["figure1_prompt_tuning_xl"] / "summary.json"))
        assert xl["steps"] == 1
        return
    assert _tiny_step(tmp_path / "run", files, boolq, *extra) == 0
    config = open(tmp_path / "run" / "config.gin").read()
    summary = json.load(open(tmp_path / "run" / "summary.json"))
    assert summary["steps"] == 1
    if name == "figure3a_prompt_length":
        assert summary["trainable_params"] == 5 * 4
    if name == "figure3b_initialization":
        assert "sampled_vocab" in config


def test_layered_files_refuse_to_run_without_their_choice(boolq, tmp_path, capsys):
    for name, needed in (("figure3a_prompt_length", "PROMPT_LENGTH"),
                         ("figure3b_initialization", "initializer")):  # fmt: skip
        files = ["experiments/figure1_prompt_tuning_small.gin", f"experiments/{name}.gin"]
        assert _tiny_step(tmp_path / name, files, boolq) == 2, name
        err = capsys.readouterr().err.strip().splitlines()
        assert needed in err[-1], err[-3:]
        assert not os.path.exists(tmp_path / name)


def test_table1_binds_squad_to_mrqa_chosen_on_squad_alone():
    import seqio

    import gin
    from ptune import trainer
    from ptune.command_config import parse_gin

    files = ["figure1_prompt_tuning_xxl", "table1_domain_shift"]
    parse_gin(
        ginconfig.split_gin_args([f"--gin_file=experiments/{f}.gin" for f in files]),
        defaults=["MODEL_DIR='(test)'"],
    )
    try:
        cfg = ginconfig.call(trainer.TrainConfig, model=ginconfig.model_fields() or None)
    finally:
        gin.clear_config(clear_constants=True)
    task = cfg.mixture_or_task_name
    assert task == "squad_to_mrqa" and len(seqio.get_mixture_or_task(task).tasks) == 7
    assert selection.check_metric(task, cfg.eval_metric) == "squad_v010_allanswers/f1"
    assert dict(cfg.task_feature_lengths) == {"inputs": 512, "targets": 32}


@pytest.mark.full_scale
def test_table3_ensembles_two_figure1_prompts_at_tiny_size(prompts_trained, boolq, tmp_path):
    files = [
        str(prompts_trained[f"figure1_prompt_tuning_{s}"] / "numpy_checkpoints" / "best"
            / "encoder.prompt.prompt.npy")
        for s in ("small", "xxl")
    ]  # fmt: skip
    out = tmp_path / "ensemble.json"
    code = cli.main(
        [
            "ensemble",
            "--gin_file=experiments/table3_ensemble.gin",
            "--gin_file=models/t5_1_1_tiny.gin",
            f"--gin.INITIAL_CHECKPOINT_PATH='{shared_path('t5x_tiny_checkpoint', 'checkpoint_3')}'",
            f"--gin.MIXTURE_OR_TASK_NAME='{BOOLQ}'",
            "--gin.partitioning.MeshConfig.mesh_shape=None",
            f"--superglue_dir={boolq}",
            f"--spm_path={shared_path('t5_vocab', 'sentencepiece.model')}",
            f"--prompt_files={','.join(files)}",
            f"--output={out}",
        ]
    )
    assert code == 0
    results = json.load(open(out))["results"]
    assert len(results["prompts"]) == 2 and results["ensemble"][BOOLQ]
