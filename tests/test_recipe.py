"""Run assembly: where the model configuration comes from (model file, checkpoint, neither),
one owner of the prompt slot, bad run input as one line before any work, the on-device
non-finite check, preemption, and hub ids through the local Hugging Face cache."""

import json
import os
import re
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

import ptune.tasks  # noqa: F401  registers the tasks
from conftest import DEMO_TINY, REPO, tiny_run_config, tiny_t5
from ptune import checkpoints, cli, model_config, optimizers, recipe, trainer
from ptune.errors import UserError
from ptune.models import t5

# Every way code has spelled the prompt's place in the parameter tree by hand: the path's keys
# (`["prompt"]["prompt"]`, `"encoder/prompt"`, `("encoder", "prompt"`), a nested literal, the
# module's name (`name="prompt"`) and the prompt module's own parameters built as a literal
# (`{"prompt": bank}`). A `{"prompt": ...}` holding a name or a record field (requests, table
# rows, the prompt file's safetensors key) is not the slot and does not match.
PROMPT_PATH_SPELLING = re.compile(
    r"""\["prompt"\]\s*\["prompt"\]|["']encoder[/.]prompt|\(\s*["']encoder["'],\s*["']prompt"""
    r"""|prompt=\{["']prompt["']|\{["']prompt["']:\s*\{["']prompt"""
    r"""|\bname\s*=\s*["']prompt["']"""
    r"""|\{\s*["']prompt["']\s*:\s*(?:j?np\.|\w*bank\b|\w*prompt\w*\s*[,}])"""
)


def test_the_prompt_path_guard_matches_every_known_spelling():
    spelled = [
        'module = self.prompt_factory(name="prompt")',
        'out = {"prompt": bank}',
        'value = params["encoder"]["prompt"]["prompt"]',
        'PATTERN = "encoder/prompt/.*"',
        'path = ("encoder", "prompt", "prompt")',
        'params = dict(params, prompt={"prompt": value})',
        'tree = {"encoder": {"prompt": {"prompt": value}}}',
    ]
    assert [line for line in spelled if not PROMPT_PATH_SPELLING.search(line)] == []
    not_the_slot = [
        'rows = [{"prompt": name, **measures(value, target, name)}]',
        'record["prompt"] = fields[2].strip()',
        'save_file({"prompt": value}, tmp)',
        "module = self.factory(name=prompts.PROMPT_PATH[1])",
    ]
    assert [line for line in not_the_slot if PROMPT_PATH_SPELLING.search(line)] == []


def test_no_module_but_prompts_spells_the_prompt_path():
    sources = []
    for root in ("ptune", "tasks", "benchmarks"):
        for directory, _, files in os.walk(os.path.join(REPO, root)):
            sources += [os.path.join(directory, n) for n in files if n.endswith(".py")]
    assert len(sources) > 20, sources  # the walk found the code (ptune alone has ~50 files)
    # The one owner is the file that defines PROMPT_PATH, wherever the prompts package keeps it.
    owners = [p for p in sources if re.search(r"^PROMPT_PATH\s*=", open(p).read(), re.M)]
    assert len(owners) == 1, owners
    assert os.path.relpath(owners[0], REPO).startswith(os.path.join("ptune", "prompts")), owners
    offenders = []
    for path in sorted(set(sources) - set(owners)):
        for number, line in enumerate(open(path), start=1):
            if PROMPT_PATH_SPELLING.search(line):
                offenders.append(f"{os.path.relpath(path, REPO)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_a_model_needs_a_model_file_or_a_checkpoint_config():
    with pytest.raises(UserError, match=r"^no model configured: add a model file"):
        model_config.resolve_model_config(None, None)
    with pytest.raises(UserError, match=r"leaves .*relative_attention_max_distance unset"):
        model_config.resolve_model_config({"emb_dim": 16, "vocab_size": 384}, None)
    with pytest.raises(TypeError):  # the architecture has no defaults to fall back on
        t5.T5Config()
    full = tiny_t5(**DEMO_TINY)
    assert model_config.resolve_model_config(full, None) == full


def test_the_checkpoint_config_is_used_and_a_contradicting_model_file_is_named(hf_t5_dir):
    config = model_config.resolve_model_config(None, str(hf_t5_dir))
    assert (config.emb_dim, config.num_heads, config.mlp_dim) == (16, 2, 32)
    # Run-time fields from gin apply on top of the checkpoint's architecture.
    assert (
        model_config.resolve_model_config({"dtype": "bfloat16"}, str(hf_t5_dir)).dtype == "bfloat16"
    )
    wrong = {**config.__dict__, "emb_dim": 32, "num_heads": 4}
    with pytest.raises(UserError) as caught:
        model_config.resolve_model_config(wrong, str(hf_t5_dir))
    message = str(caught.value)
    assert message.startswith("the model file contradicts hf checkpoint")
    assert "emb_dim (model file 32, checkpoint 16)" in message
    assert "num_heads (model file 4, checkpoint 2)" in message


def test_hub_ids_resolve_through_the_local_cache_only(hf_t5_dir, tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    snapshot = cache / "models--acme--t5-tiny" / "snapshots" / "0123abcd"
    snapshot.parent.mkdir(parents=True)
    os.symlink(hf_t5_dir, snapshot)
    (cache / "models--acme--t5-tiny" / "refs").mkdir()
    (cache / "models--acme--t5-tiny" / "refs" / "main").write_text("0123abcd")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    described = checkpoints.describe("acme/t5-tiny")
    assert described.format == "hf" and described.config.emb_dim == 16
    with pytest.raises(UserError, match=r"acme/absent is neither .*`hf download acme/absent`"):
        checkpoints.describe("acme/absent")


def _cli(capsys, monkeypatch, *args):
    code = cli.main(list(args))
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize(
    "args, message",
    [
        (
            [
                "--gin_file=runs/prompt_tuning.gin",
                "--gin.MIXTURE_OR_TASK_NAME='ptune_demo'",
                "--gin.INITIAL_CHECKPOINT_PATH=None",
                "--gin.trainer.TrainConfig.random_init=True",
            ],
            "ptune: error: no model configured",
        ),
        (
            ["--gin_file=runs/demo.gin", "--gin.BATCH_SIZ=8"],
            "ptune: error: --gin.BATCH_SIZ: no gin file given uses the macro BATCH_SIZ; "
            "did you mean BATCH_SIZE",
        ),
        (
            ["--gin_file=runs/demo.gin", "--gin.MODEL_DIR=/tmp/x"],
            "ptune: error: --gin.MODEL_DIR=/tmp/x: gin string values need quotes",
        ),
        (["--gin.MODEL_DIR='x'"], "ptune: error: ptune train needs gin files"),
        (
            ["--gin_file=runs/demo.gin", "--gin.TASK_FEATURE_LENGTHS={'inputs': 8}"],
            "ptune: error: TASK_FEATURE_LENGTHS must be a dict {'inputs': positive int, "
            "'targets': positive int}, got {'inputs': 8} (a dict: missing 'targets')",
        ),
        (
            [
                "--gin_file=runs/demo.gin",
                "--gin.t5.T5Config.vocab_size=200",
                "--gin.INITIAL_CHECKPOINT_PATH=None",  # random weights: no checkpoint to ask
                "--gin.trainer.TrainConfig.random_init=True",
            ],
            "ptune: error: task ptune_demo: its inputs vocabulary has 259 ids but the "
            "model's embedding has 200 rows",
        ),
        (
            [
                "--gin_file=runs/demo.gin",
                "--gin.MIXTURE_OR_TASK_NAME='taskless_super_glue_rte_v102'",
                "--superglue_dir=/no/such/dir",
                f"--spm_path={os.path.join(REPO, '..', 'shared', 'data', 't5_vocab')}"
                "/sentencepiece.model",
            ],
            "ptune: error: data for taskless_super_glue_rte_v102 is missing: the "
            "--superglue_dir / PTUNE_SUPERGLUE_DIR directory /no/such/dir does not exist",
        ),
        (
            ["--gin_file=runs/demo.gin", "--gin.MIXTURE_OR_TASK_MODULE='no_such_tasks'"],
            "ptune: error: MIXTURE_OR_TASK_MODULE 'no_such_tasks' cannot be imported",
        ),
    ],
)
def test_bad_run_input_is_one_line_and_writes_nothing(args, message, tmp_path, capsys, monkeypatch):
    model_dir = tmp_path / "run"
    if not any(a.startswith("--gin.MODEL_DIR") for a in args):
        args = args + [f"--gin.MODEL_DIR='{model_dir}'"]
    code, lines = _cli(capsys, monkeypatch, "train", *args)
    assert code == 2 and lines and lines[-1].startswith(message), lines
    assert not model_dir.exists()


def test_model_dir_that_is_a_file_or_not_writable(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(UserError, match="MODEL_DIR .* exists and is not a directory"):
        trainer.train(tiny_run_config(a_file))
    with pytest.raises(UserError, match=f"MODEL_DIR {a_file}/run: {a_file} is a file, not a dir"):
        trainer.train(tiny_run_config(a_file / "run"))
    with pytest.raises(UserError, match="^MODEL_DIR is empty; name a directory$"):
        trainer.train(tiny_run_config(""))
    if os.path.isdir("/proc/self"):  # writable to `access` (as root), yet nothing is created there
        with pytest.raises(UserError, match="^MODEL_DIR /proc/run: cannot create it in /proc"):
            trainer.train(tiny_run_config("/proc/run"))
    assert sorted(os.listdir(tmp_path)) == ["file"]
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.access(locked, os.W_OK):
        pytest.skip("running as a user who may write anywhere (root): permissions not testable")
    with pytest.raises(UserError, match="is not writable"):
        trainer.train(tiny_run_config(locked / "run"))


def test_an_unknown_eval_metric_fails_before_training(tmp_path):
    with pytest.raises(UserError, match=r"eval metric 'acuracy' is not reported .* 'accuracy'"):
        trainer.train(tiny_run_config(tmp_path / "run", eval_metric="acuracy"))
    assert not (tmp_path / "run").exists()


def test_the_first_non_finite_step_is_named_when_found_later(tmp_path):
    # NaN from step 2 on, noticed at the step-4 log point (no per-step host sync): the error
    # names step 2, and no checkpoint holding NaN is written; a run that failed before its
    # first checkpoint leaves no MODEL_DIR behind (ptune.run_dir).
    cfg = tiny_run_config(
        tmp_path / "run",
        train_steps=8,
        log_period=4,
        checkpoint_period=4,
        eval_period=0,
        optimizer=optimizers.prompt_tuning_adafactor(learning_rate=float("nan")),
    )
    with pytest.raises(UserError, match=r"at step 2; stopping \(no checkpoint was written before"):
        trainer.train(cfg)
    assert not (tmp_path / "run").exists()


def test_note_non_finite_keeps_the_first_bad_step():
    from ptune import train_hooks

    finite = train_hooks.NonFinite()
    ok = {"loss_sum": jnp.float32(2.0), "tokens": jnp.float32(4.0)}
    bad = {"loss_sum": jnp.float32(np.inf), "tokens": jnp.float32(4.0)}
    for step, metrics in enumerate([ok, bad, ok, bad], start=1):
        finite.note(metrics, jnp.int32(step))
    assert np.asarray(finite.first_bad).tolist() == [2.0, np.inf]
    with pytest.raises(UserError, match=r"loss became inf at step 2"):
        finite.check()


# For each signal, in its own model directory: the command, preempted at step 3, then the
# same command again. Both signals in one process (one start-up); each pair prints its codes.
PREEMPT = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from ptune import cli, trainer

train = trainer.train

def preempted_at_step_3(signum):
    def run(cfg, **kwargs):
        def send(context):
            if context.step == 3:
                os.kill(os.getpid(), signum)
        return train(cfg, hooks=[trainer.Hook(every=1, fn=send)], **kwargs)
    return run

for name in {names!r}:
    args = ["train", "--gin_file=runs/demo.gin", f"--gin.MODEL_DIR='{root}/{{name}}'",
            "--gin.TRAIN_STEPS=6", "--gin.EVAL_PERIOD=0", "--gin.BATCH_SIZE=4"]
    trainer.train = preempted_at_step_3(getattr(signal, name))
    first = cli.main(args)
    trainer.train = train
    second = cli.main(args)
    print("EXIT", name, first, second, flush=True)
"""
PREEMPTIONS = [("SIGTERM", 143), ("SIGINT", 130)]


@pytest.fixture(scope="module")
def preempted(tmp_path_factory):
    root = tmp_path_factory.mktemp("preempted")
    names = [name for name, _ in PREEMPTIONS]
    script = PREEMPT.format(tests=os.path.dirname(__file__), names=names, root=str(root))
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    return root, proc


@pytest.mark.parametrize("name, code", PREEMPTIONS)
def test_preemption_writes_a_checkpoint_and_the_same_command_resumes(name, code, preempted):
    root, proc = preempted
    model_dir = root / name
    assert f"EXIT {name} {code} 0" in proc.stdout.strip().splitlines(), proc.stderr[-3000:]
    assert (
        f"ptune: error: {name} at step 3: checkpoint written to {model_dir}/checkpoints/3; "
        "rerun the same command to resume" in proc.stderr
    )
    assert "Traceback" not in proc.stderr
    assert f"resumed from {model_dir}" in proc.stderr
    assert sorted(os.listdir(model_dir / "checkpoints")) == ["3", "6"]
    summary = json.load(open(model_dir / "summary.json"))
    assert summary["steps"] == 6 and summary["prompt_length"] == 20


def test_the_paper_recipe_trains_over_a_hugging_face_directory_without_a_model_file(
    hf_t5_dir, tmp_path, capsys, monkeypatch, caplog
):
    caplog.set_level("INFO", logger="ptune")
    code, lines = _cli(
        capsys,
        monkeypatch,
        "train",
        "--gin_file=runs/prompt_tuning.gin",
        f"--gin.MODEL_DIR='{tmp_path / 'run'}'",
        "--gin.MIXTURE_OR_TASK_NAME='ptune_demo'",
        f"--gin.INITIAL_CHECKPOINT_PATH='{hf_t5_dir}'",
        "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 8}",
        "--gin.BATCH_SIZE=4",
        "--gin.TRAIN_STEPS=2",
        "--gin.EVAL_PERIOD=2",
        "--gin.PROMPT_LENGTH=4",
    )
    assert code == 0, lines[-5:]
    assert "model: from the hf checkpoint" in caplog.text
    run = json.load(open(tmp_path / "run" / "run.json"))
    assert (run["model"]["emb_dim"], run["model"]["vocab_size"]) == (16, 384)


def test_runs_assembled_alike_in_one_process_share_one_compiled_train_step():
    """`make paper`'s points and a sweep's runs share a process: a run equal in everything
    its step is built from gets the step an earlier run compiled (no second trace); anything
    that changes the step (learning rate, seed, prompt length, the attention form
    `ptune plan` traces) gets its own."""
    from ptune import partitioning, prompts, step, trainable
    from ptune.models import attention

    def train_step(lr=0.3, seed=0, length=4):
        run = recipe.assemble(
            tiny_t5(),
            prompt_factory=prompts.prompt_factory(length),
            trainable=trainable.PROMPT_ONLY,
            optimizer=optimizers.prompt_tuning_adafactor(lr),
            mesh=partitioning.MeshConfig(mesh_shape=None),
        )
        return run.train_step(step.LossConfig(), seed)

    first = train_step()
    assert train_step() is first
    assert prompts.prompt_factory(4) == prompts.prompt_factory(4) != prompts.prompt_factory(5)
    assert optimizers.prompt_tuning_adafactor(0.3) is optimizers.prompt_tuning_adafactor(0.3)
    assert train_step(lr=0.1) is not first
    assert train_step(seed=1) is not first
    assert train_step(length=5) is not first
    with attention.batched_on_every_platform():
        assert train_step() is not first
