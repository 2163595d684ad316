"""Gin-configured runs: every shipped gin combination parses; a real (tiny) training run on
the embedded demo task writes what it promises; eval reproduces it; bad input is one line."""

import dataclasses
import itertools
import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

import ptune.tasks  # noqa: F401  registers the tasks
from conftest import REPO, random_frozen, tiny_run_config, tiny_t5
from ptune import (
    evaluation,
    evaluator,
    ginconfig,
    optimizers,
    prompts,
    task_checks,
    train_setup,
    trainer,
)
from ptune.checkpoints import prompt_io
from ptune.errors import UserError
from ptune.models import llama, t5


def _gin_files(kind):
    return sorted(f"{kind}/{name}" for name in os.listdir(os.path.join(REPO, "gin", kind)))


RUN_MACROS = [
    "MODEL_DIR='/tmp/x'",
    "MIXTURE_OR_TASK_NAME='ptune_demo'",
    "INITIAL_CHECKPOINT_PATH='/tmp/ckpt'",
    "INITIAL_PROMPT_FILE='/tmp/p.npy'",
    "PROMPT_FILE='/tmp/p.npy'",
]

RUNS = [
    "runs/prompt_tuning.gin",
    "runs/model_tuning.gin",
    "runs/pretrain.gin",
    "runs/demo.gin",
    "runs/demo_model_tuning.gin",
    "runs/pretrain_demo.gin",
    "runs/pretrain_findings.gin",
    "runs/eval.gin",
]
# Runs that name their model (the demo's) and their task.
DEMO_RUNS = ("runs/demo.gin", "runs/demo_model_tuning.gin", "runs/pretrain_demo.gin")


def test_the_run_files_are_the_shipped_runs():
    assert sorted(_gin_files("runs")) == sorted(RUNS + ["runs/base.gin", "runs/infer.gin"])


@pytest.mark.parametrize("run", RUNS)
def test_every_shipped_gin_combination_parses(run):
    import gin

    fn = evaluation.EvalConfig if run == "runs/eval.gin" else trainer.TrainConfig
    with_prompt = run in ("runs/prompt_tuning.gin", "runs/demo.gin")
    prompt_files = [None] + _gin_files("prompts") if with_prompt else [None]
    models = [None] + _gin_files("models")
    assert len(models) > 1 and (len(prompt_files) > 1) == with_prompt, (models, prompt_files)
    for model, prompt in itertools.product(models, prompt_files):
        files = ([model] if model else []) + ([prompt] if prompt else []) + [run]
        macros = [
            m
            for m in RUN_MACROS
            if not (run in DEMO_RUNS and m.startswith(("MIXTURE", "INITIAL")))
            and (m.startswith("INITIAL_PROMPT") == (prompt == "prompts/from_file.gin"))
            and (not m.startswith("PROMPT_FILE") or run == "runs/eval.gin")
            and not (run == "runs/eval.gin" and m.startswith("MODEL_DIR"))
        ]
        args = ginconfig.GinArgs(files=files, bindings=macros)
        ginconfig.parse(args)
        ginconfig.check_macros(args, [ginconfig.resolve_gin_file(f) for f in files])
        cfg = gin.get_configurable(fn)()
        decoder_only = model is not None and ("llama" in model or "qwen" in model)
        if decoder_only and run in DEMO_RUNS:  # the demo's T5 and a Llama: one line
            with pytest.raises(UserError, match="bind both T5Config and LlamaConfig"):
                ginconfig.model_fields()
            gin.clear_config()
            continue
        fields = ginconfig.model_fields()
        if decoder_only:
            assert set(llama.ARCHITECTURE_FIELDS[:10]) <= set(fields), files
        elif model or run in DEMO_RUNS:  # the demo runs name their model
            assert set(t5.ARCHITECTURE_FIELDS) <= set(fields), files
        else:
            assert fields == {}, files
        if fn is trainer.TrainConfig and prompt == "prompts/residual.gin":
            assert cfg.prompt.residual is not None, files
        elif fn is trainer.TrainConfig and prompt == "prompts/multi_task.gin":
            assert cfg.prompt.multi_task is not None, files
        elif fn is trainer.TrainConfig and prompt == "prompts/deep.gin":
            assert cfg.prompt.deep, files
        elif fn is trainer.TrainConfig and prompt:
            assert cfg.prompt.initializer is not None, files
        gin.clear_config()


def test_a_runs_folder_on_the_python_path_leaves_the_shipped_includes_found(tmp_path, monkeypatch):
    """`python -m ptune train --gin_file=runs/prompt_tuning.gin` from a folder holding the
    user's runs/ (sys.path[0] is that folder): its `include 'runs/base.gin'` still resolves."""
    import gin

    (tmp_path / "runs").mkdir()
    monkeypatch.syspath_prepend(str(tmp_path))
    files = ["runs/prompt_tuning.gin", "experiments/figure1_prompt_tuning_xxl.gin"]
    for run in files:
        ginconfig.parse(ginconfig.GinArgs(files=[run], bindings=RUN_MACROS[:2]))
        assert ginconfig.macro("BATCH_SIZE") == 32, run  # bound in the included files
        gin.clear_config()


def test_paper_recipe_is_the_prompt_tuning_default():
    import gin

    ginconfig.parse(
        ginconfig.GinArgs(
            files=["models/t5_1_1_base.gin", "runs/prompt_tuning.gin"], bindings=RUN_MACROS[:3]
        )
    )
    cfg = gin.get_configurable(trainer.TrainConfig)()
    fields = ginconfig.model_fields()
    gin.clear_config()
    assert cfg.prompt.length == 100 and cfg.prompt.initializer is None  # class labels
    assert cfg.batch_size == 32 and cfg.train_steps == 30000
    assert dict(cfg.task_feature_lengths) == {"inputs": 512, "targets": 8}
    assert list(cfg.trainable) == ["encoder/prompt/.*"]
    assert cfg.eval_metric is None and cfg.eval_split == "validation"  # the task's score
    assert fields["dropout_rate"] == 0.1 and cfg.model is None


def _bindings(name):
    """{binding key: file} of one shipped gin file (block scopes expanded)."""
    import re

    keys, scope = {}, None
    for line in open(os.path.join(REPO, "gin", name)):
        line = line.split("#")[0].rstrip()
        block = re.match(r"^([\w.]+):$", line)
        if block:
            scope = block.group(1)
            continue
        binding = re.match(r"^(\s*)([\w./]+)\s*=", line)
        if binding:
            keys[binding.group(2) if not binding.group(1) else f"{scope}.{binding.group(2)}"] = name
    return keys


def test_no_value_is_bound_in_two_shipped_files():
    # Runs are alternatives (one per command line); prompts/ and runs/ never overlap, and a
    # run never rebinds what the base it includes binds.
    seen = {}
    for name in _gin_files("prompts") + _gin_files("runs"):
        for key in _bindings(name):
            seen.setdefault(key, []).append(name)
    assert seen
    for key, files in seen.items():
        assert len({f.split("/")[0] for f in files}) == 1, (key, files)
    base = _bindings("runs/base.gin")
    on_base = [
        r for r in RUNS if "include 'runs/base.gin'" in open(os.path.join(REPO, "gin", r)).read()
    ]
    assert base and on_base, (base, on_base)
    for run in on_base:
        assert not set(base) & set(_bindings(run)), run


def test_a_listing_read_by_head_ends_quietly_and_sigpipe_is_left_to_python():
    # `ptune tasks | head -1`: the closed pipe ends the command without a traceback. The CLI
    # must not set SIGPIPE to its default action: a library writing to a closed socket would
    # then kill a training run (return code -13) instead of getting EPIPE.
    proc = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {sys.executable} -m ptune.cli tasks | head -1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 1
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    # TensorFlow, imported when the tasks are, starts silently (no CUDA probing lines).
    assert "cuda" not in proc.stderr.lower() and "absl" not in proc.stderr, proc.stderr
    import ptune.cli

    before = signal.getsignal(signal.SIGPIPE)
    ptune.cli.main(["--help"])
    assert signal.getsignal(signal.SIGPIPE) == before


def test_a_commands_data_flags_do_not_outlive_it(monkeypatch, capsys, tmp_path):
    """`make paper` and a sweep run commands in one process: each sees its own data flags."""
    from ptune import cli

    monkeypatch.delenv("PTUNE_SUPERGLUE_DIR", raising=False)
    monkeypatch.setenv("PTUNE_GLUE_DIR", "/before")
    assert cli.main(["tasks", f"--superglue_dir={tmp_path}", f"--glue_dir={tmp_path}"]) == 0
    assert "PTUNE_SUPERGLUE_DIR" not in os.environ
    assert os.environ["PTUNE_GLUE_DIR"] == "/before"


def test_a_commands_gin_bound_data_sources_do_not_outlive_it(capsys, tmp_path):
    """The same for gin's `data.DataSources`, which sets the task modules' overrides: what
    was set before the command (an API user's, a fixture's) is back after it, and what the
    command set is gone, whether it succeeded or not."""
    from ptune import cli
    from ptune.tasks import sources, vocab

    sources_gin = tmp_path / "sources.gin"
    sources_gin.write_text(
        "from __gin__ import dynamic_registration\n"
        "from ptune import data\n"
        f"data.DataSources.superglue_dir = '{tmp_path}'\n"
        f"data.DataSources.glue_dir = '{tmp_path}'\n"
        "data.DataSources.spm_path = 'mt5'\n"
    )
    sources.set_glue_dir("/before")
    try:
        code = cli.main(
            [
                "eval",
                "--gin_file=models/ptune_demo.gin",
                "--gin_file=runs/eval.gin",
                f"--gin_file={sources_gin}",
                "--gin.MIXTURE_OR_TASK_NAME='ptune_demo'",
                f"--gin.INITIAL_CHECKPOINT_PATH='{tmp_path / 'missing'}'",
                f"--gin.EVAL_OUTPUT_DIR='{tmp_path / 'out'}'",
                "--gin.NO_PROMPT=True",
            ]
        )
        err = capsys.readouterr().err
        assert code == 2 and "missing does not exist" in err, err  # after `apply`
        assert sources.overrides() == {**dict.fromkeys(sources.overrides()), "glue": "/before"}
        assert vocab.sentencepiece_override() is None
    finally:
        sources.set_glue_dir(None)


def test_a_misspelt_command_is_one_line_naming_the_closest(capsys):
    from ptune import cli

    assert cli.main(["trian", "--gin_file=runs/demo.gin"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "ptune: error: unknown command 'trian'; did you mean 'train'?"
    ]
    assert cli.main(["zzz"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"ptune: error: unknown command 'zzz'; the commands: {', '.join(cli.COMMANDS)}"
    ]
    assert cli.main([]) == 2  # the usage on stdout, the error alone on stderr
    assert capsys.readouterr().err.strip().splitlines() == ["ptune: error: no command given"]
    # A bad flag is argparse's cause in one line, not its usage block.
    assert cli.main(["tasks", "foo"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "ptune: error: unrecognized arguments: foo (`ptune tasks --help` lists the flags)"
    ]


@pytest.mark.parametrize(
    "missing", ["MODEL_DIR", "MIXTURE_OR_TASK_NAME", "INITIAL_CHECKPOINT_PATH"]
)
def test_required_values_fail_early_in_one_line(missing, capsys):
    from ptune import cli

    bindings = [f"--gin.{m}" for m in RUN_MACROS[:3] if not m.startswith(missing)]
    code = cli.main(
        ["train", "--gin_file=models/t5_1_1_tiny.gin", "--gin_file=runs/prompt_tuning.gin"]
        + bindings
    )
    assert code == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith(f"ptune: error: {missing} is required")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("run")
    result = trainer.train(tiny_run_config(model_dir), config_text="# test\n")
    return model_dir, result


def test_training_run_writes_what_it_promises(finished_run):
    model_dir, summary = finished_run
    assert summary.step == 6
    lines = [json.loads(line) for line in open(model_dir / "metrics.jsonl")]
    train_steps = [x["step"] for x in lines if x["split"] == "train"]
    assert train_steps == [2, 4, 6]
    assert all(
        np.isfinite(x["loss"]) and x["steps_per_sec"] > 0 for x in lines if x["split"] == "train"
    )
    evals = [x for x in lines if x["split"].startswith("validation/")]
    assert [x["step"] for x in evals] == [3, 6] and "accuracy" in evals[0]
    for step in (3, 6):
        directory = model_dir / "numpy_checkpoints" / f"checkpoint_{step}"
        npy = np.load(directory / "encoder.prompt.prompt.npy")
        assert npy.shape == (4, 16)
        loaded = prompt_io.load_prompt_file(str(directory / "encoder.prompt.prompt.safetensors"))
        np.testing.assert_array_equal(npy, loaded)
    final = np.asarray(prompts.get_prompt(summary.state.params))
    np.testing.assert_array_equal(
        np.load(model_dir / "numpy_checkpoints" / "checkpoint_6" / "encoder.prompt.prompt.npy"),
        final,
    )
    assert sorted(os.listdir(model_dir / "checkpoints")) == ["3", "6"]
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(model_dir / "train"))
    assert (model_dir / "config.gin").read_text() == "# test\n"
    assert json.load(open(model_dir / "eval" / "validation_step_6.json"))["step"] == 6
    assert (model_dir / "numpy_checkpoints" / "best" / "encoder.prompt.prompt.npy").exists()


def test_eval_of_the_exported_prompt_reproduces_training_numbers(finished_run, tmp_path):
    model_dir, summary = finished_run
    cfg = evaluation.EvalConfig(
        mixture_or_task_name="ptune_demo_rank_classification",
        checkpoint_path=str(model_dir / "random_init"),
        prompt_file=str(
            model_dir / "numpy_checkpoints" / "checkpoint_6" / "encoder.prompt.prompt.npy"
        ),
        eval_feature_lengths={"inputs": 64, "targets": 8},
        batch_size=16,
        output_dir=str(tmp_path),
    )
    results = evaluation.run_eval(cfg)
    assert results == summary.eval
    assert json.load(open(tmp_path / "eval_validation.json"))["results"] == results


def test_finished_run_resumes_as_a_no_op_and_longer_runs_continue(finished_run):
    model_dir, summary = finished_run
    again = trainer.train(tiny_run_config(model_dir))
    assert again.step == 6
    np.testing.assert_array_equal(
        np.asarray(prompts.get_prompt(again.state.params)),
        np.asarray(prompts.get_prompt(summary.state.params)),
    )


def test_model_dir_with_another_configuration_is_refused(finished_run, tmp_path):
    model_dir, _ = finished_run
    with pytest.raises(UserError, match=r"different configuration \(changed: prompt\)"):
        trainer.train(tiny_run_config(model_dir, prompt=prompts.PromptConfig(length=5)))
    other = tmp_path / "other"
    trainer.train(tiny_run_config(other, train_steps=3, eval_period=0))
    fresh = trainer.train(
        tiny_run_config(other, train_steps=3, eval_period=0, seed=1, overwrite=True)
    )
    assert fresh.step == 3 and json.load(open(other / "run.json"))["seed"] == 1


def test_unknown_task_lists_close_matches(tmp_path):
    with pytest.raises(UserError, match="ptune_demo"):
        trainer.train(tiny_run_config(tmp_path / "x", mixture_or_task_name="ptune_dem"))
    assert not (tmp_path / "x").exists()


def test_the_demo_model_tuning_baseline_runs_as_make_demo_runs_it(tmp_path, capsys):
    """runs/demo_model_tuning.gin for 2 steps with an evaluation: every weight of the shipped
    pretrained demo model trains, and the run reports a score."""
    from ptune import cli

    code = cli.main(
        [
            "train",
            "--gin_file=runs/demo_model_tuning.gin",
            f"--gin.MODEL_DIR='{tmp_path / 'run'}'",
            "--gin.TRAIN_STEPS=2",
            "--gin.EVAL_PERIOD=2",
            "--gin.BATCH_SIZE=4",
        ]
    )
    assert code == 0, capsys.readouterr().err
    summary = json.load(open(tmp_path / "run" / "summary.json"))
    assert summary["trainable_params"] == summary["total_params"] > 0
    assert summary["steps"] == 2 and summary["prompt_length"] is None
    assert 0.0 <= summary["best"]["value"] <= 100.0


def test_random_weights_must_be_asked_for(tmp_path):
    with pytest.raises(UserError, match="INITIAL_CHECKPOINT_PATH is required"):
        trainer.train(tiny_run_config(tmp_path / "x", random_init=False))


def test_random_weights_and_a_checkpoint_contradict_each_other(tmp_path):
    cfg = tiny_run_config(tmp_path / "x", random_init=True, checkpoint_path="/some/ckpt")
    with pytest.raises(UserError, match="random_init=True asks for random frozen weights"):
        trainer.train(cfg)
    assert not (tmp_path / "x").exists()


def test_nan_loss_stops_with_the_step(tmp_path):
    # A NaN learning rate turns the prompt into NaN after step 1; step 2's loss is NaN.
    cfg = tiny_run_config(
        tmp_path / "run",
        eval_period=0,
        checkpoint_period=1,
        optimizer=optimizers.prompt_tuning_adafactor(learning_rate=float("nan")),
    )
    with pytest.raises(
        UserError,
        match=r"loss became nan at step 2; stopping \(the last "
        r"checkpoint, step 1, is intact\)",
    ):
        trainer.train(cfg)
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["1"]
    first = dataclasses.replace(cfg, model_dir=str(tmp_path / "first"), checkpoint_period=100)
    with pytest.raises(UserError, match=r"at step 2; stopping \(no checkpoint was written before"):
        trainer.train(first)


def test_unreachable_data_is_one_line_with_the_remedies():
    import requests

    from ptune import data

    with pytest.raises(
        UserError,
        match=r"task taskless_super_glue_rte_v102: its data is not "
        r"prepared here .* --tfds_data_dir",
    ):
        with data.building_dataset("taskless_super_glue_rte_v102"):
            raise requests.exceptions.ConnectionError("Max retries exceeded with url: RTE.zip")
    with pytest.raises(KeyError):  # other errors pass through untouched
        with data.building_dataset("x"):
            raise KeyError("bug")


DISK_FULL = """
import resource, signal, sys
sys.path.insert(0, {tests!r})
import ptune.tasks
from ptune import trainer
from ptune.errors import UserError
from conftest import tiny_run_config

def fill_disk(context):  # from step 3 on, no file may grow past 64 bytes: EFBIG, as ENOSPC
    if context.step == 3:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64, resource.RLIM_INFINITY))

cfg = tiny_run_config({model_dir!r}, train_steps=4, eval_period=0, checkpoint_period=1)
try:
    trainer.train(cfg, hooks=[trainer.Hook(every=1, fn=fill_disk)])
except UserError as e:
    print("ptune: error:", e)
    sys.exit(2)
"""


def test_a_full_disk_while_saving_keeps_the_previous_checkpoint(tmp_path):
    model_dir = tmp_path / "run"
    script = DISK_FULL.format(tests=os.path.dirname(__file__), model_dir=str(model_dir))
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd="/"
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert (
        "saving the checkpoint of step 3" in proc.stdout and "checkpoint 2 is intact" in proc.stdout
    ), proc.stdout
    steps = sorted(n for n in os.listdir(model_dir / "checkpoints") if n.isdigit())
    assert steps == ["1", "2"]
    # With space again, the run resumes from step 2 and the half-written save is gone.
    summary = trainer.train(
        tiny_run_config(model_dir, train_steps=4, eval_period=0, checkpoint_period=1)
    )
    assert summary.step == 4
    assert sorted(os.listdir(model_dir / "checkpoints")) == ["3", "4"]


def test_missing_vocabulary_fails_before_anything_is_written(tmp_path, capsys):
    import ptune.cli

    model_dir = tmp_path / "run"
    capsys.readouterr()
    code = ptune.cli.main(
        [
            "train",
            "--gin_file=models/t5_1_1_tiny.gin",
            "--gin_file=runs/demo.gin",
            f"--gin.MODEL_DIR='{model_dir}'",
            "--gin.MIXTURE_OR_TASK_NAME='taskless_super_glue_rte_v102'",
            f"--spm_path={tmp_path / 'missing.model'}",
        ]
    )
    assert code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(
        "ptune: error: task taskless_super_glue_rte_v102: SentencePiece "
        f"model not found: '{tmp_path / 'missing.model'}'"
    ), last
    assert not model_dir.exists()


def test_the_original_preset_sets_each_difference_on_top_of_the_paper_recipe():
    import gin
    from ptune import prompts as prompts_lib

    shipped = _gin_files("prompts")
    # Both initializer branches below run.
    assert {"prompts/random_uniform.gin", "prompts/class_labels.gin"} <= set(shipped), shipped
    for prompt in shipped:
        files = ["models/t5_1_1_tiny.gin", prompt, "runs/prompt_tuning.gin", "presets/original.gin"]
        ginconfig.parse(ginconfig.GinArgs(files=files, bindings=RUN_MACROS))
        cfg = gin.get_configurable(trainer.TrainConfig)()
        fields = ginconfig.model_fields()
        assert cfg.optimizer_step_from_checkpoint and cfg.eval_num_beams == 1, files
        assert cfg.loss.loss_normalizing_factor is None and fields["dtype"] == "bfloat16"
        if prompt == "prompts/random_uniform.gin":
            value = cfg.prompt.initializer(jax.random.PRNGKey(0), (50, 4), None)
            assert float(value.min()) >= 0.0 and float(value.max()) < 0.5
        if prompt in ("prompts/sampled_vocab.gin", "prompts/class_labels.gin"):
            # Three candidate rows (pad, eos, unk included) fill five prompt rows.
            embedding = np.arange(12, dtype=np.float32).reshape(3, 4)
            context = prompts_lib.InitContext(embedding=embedding, labels=None)
            value = cfg.prompt.initializer(jax.random.PRNGKey(0), (5, 4), context)
            assert value.shape == (5, 4) and set(value[:, 0].tolist()) <= {0.0, 4.0, 8.0}
        gin.clear_config()


def test_optimizer_step_counters_start_at_the_checkpoint_step(shared_data):
    from ptune import recipe

    path = shared_data("t5x_tiny_checkpoint", "checkpoint_3")
    cfg = tiny_run_config("/tmp/unused", checkpoint_path=path, optimizer_step_from_checkpoint=True)
    assert train_setup.optimizer_start(cfg) == 3
    run = recipe.assemble(
        tiny_t5(), prompt_factory=prompts.prompt_factory(4), trainable=cfg.trainable
    )
    params = run.place_prompt(random_frozen(run), np.zeros((4, 8), np.float32))
    state, _ = run.init_state(params, optimizer_step=3)
    counts = [x for x in jax.tree_util.tree_leaves(state.opt_state) if np.ndim(x) == 0]
    assert counts and all(int(c) == 3 for c in counts) and int(state.step) == 0


def test_evaluation_takes_each_example_whole_unless_lengths_are_fixed(caplog):
    import logging

    from ptune import data

    task = data.get_task("ptune_demo")
    rows = list(task.get_dataset(None, split="validation", shuffle=False).as_numpy_iterator())
    longest = max(len(r["inputs"]) for r in rows)
    whole = evaluator.Evaluation("ptune_demo", None, 16)
    assert whole.lengths["inputs"] >= longest and whole.lengths["inputs"] < 2 * longest
    with caplog.at_level(logging.WARNING):
        cut = evaluator.Evaluation("ptune_demo", {"inputs": 8, "targets": 4}, 16)
    assert cut.lengths == {"inputs": 8, "targets": 4}
    assert f"truncate the inputs of {len(rows)} and the targets of" in caplog.text


def test_training_says_when_its_lengths_cut_the_training_examples(caplog):
    """Targets 8 cut every demo label ("positive" + EOS is 9 bytes) to "positiv": greedy decoding
    then never produces a label. Training says so in one line before it starts."""
    from ptune.tasks import demo

    with caplog.at_level("WARNING", logger="ptune"):
        cut = task_checks.log_truncation("ptune_demo", {"inputs": 64, "targets": 8}, "train")
    assert cut == {"ptune_demo": {"inputs": 0, "targets": 400, "read": 400}}
    (line,) = [r.getMessage() for r in caplog.records]
    assert "cut the inputs of 0 and the targets of 400 of the first 400 examples" in line
    caplog.clear()
    with caplog.at_level("WARNING", logger="ptune"):
        cut = task_checks.log_truncation(
            "ptune_demo", {"inputs": 16, "targets": 9}, "train", limit=50
        )
    assert cut == {"ptune_demo": {"inputs": 50, "targets": 0, "read": 50}}
    caplog.clear()
    with caplog.at_level("WARNING", logger="ptune"):
        task_checks.log_truncation("ptune_demo", demo.SEQUENCE_LENGTH, "train")
    assert not caplog.records  # the demo's own lengths cut nothing
