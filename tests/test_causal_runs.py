"""Prompt tuning of a decoder-only model from a Hugging Face directory, end to end through
the commands a user runs: `ptune train` with the paper's recipe file (the tasks tokenize with
the directory's tokenizer), `ptune eval` of the exported prompt, and the bad inputs of a
decoder-only run, each one line with exit status 2.

The model is a random 2-layer Llama made by transformers (tests/conftest.py); what these
tests check is the plumbing (layout, tokenizer, checkpoints, evaluation), not learning."""

import json
import os
import shutil

import numpy as np
import pytest

from conftest import simulated_devices_env, tiny_causal_run, tiny_hf_llama
from ptune import cli
from ptune.tasks import vocab

pytest.importorskip("transformers", reason="the tiny Llama is made by the [test] extra")
TASK = "ptune_demo_rank_classification"
RUN = tiny_causal_run(steps=4, log_period=2)


@pytest.fixture(autouse=True)
def _tasks_back_on_their_vocabularies():
    yield
    vocab.use_tokenizer(None)


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return tiny_hf_llama(tmp_path_factory.mktemp("hf") / "tiny-llama")


@pytest.fixture(scope="module")
def trained(llama_dir, tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("causal") / "run")
    code = cli.main(
        [
            "train",
            *RUN,
            f"--gin.INITIAL_CHECKPOINT_PATH='{llama_dir}'",
            f"--gin.MODEL_DIR='{model_dir}'",
        ]
    )
    vocab.use_tokenizer(None)
    return code, model_dir


def _error(capsys, argv) -> str:
    capsys.readouterr()
    assert cli.main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and lines[-1].startswith("ptune: error: ") and "Traceback" not in "".join(lines)
    return lines[-1]


def test_the_paper_recipe_trains_a_prompt_on_a_hugging_face_llama(trained, caplog):
    code, model_dir = trained
    assert code == 0
    best = os.path.join(model_dir, "numpy_checkpoints", "best", "encoder.prompt.prompt.npy")
    assert np.load(best).shape == (3, 32)
    lines = [json.loads(line) for line in open(os.path.join(model_dir, "metrics.jsonl"))]
    train = [x for x in lines if x["split"] == "train"]
    assert [x["step"] for x in train] == [2, 4] and all(np.isfinite(x["loss"]) for x in train)
    evals = [x for x in lines if x["split"] == f"validation/{TASK}"]
    assert [x["step"] for x in evals] == [2, 4] and 0 <= evals[-1]["accuracy"] <= 100
    summary = json.load(open(os.path.join(model_dir, "summary.json")))
    assert summary["model"].startswith("decoder-only emb 32, 2 layers")
    assert summary["trainable_params"] == 3 * 32
    # The prompt trained; nothing else did (the frozen model is the directory's).
    first = np.load(
        os.path.join(model_dir, "numpy_checkpoints", "checkpoint_2", best.split("/")[-1])
    )
    assert not np.array_equal(first, np.load(best.replace("best", "checkpoint_4")))


def test_eval_of_the_exported_prompt_reproduces_the_training_evaluation(trained, llama_dir):
    code, model_dir = trained
    assert code == 0
    lines = [json.loads(line) for line in open(os.path.join(model_dir, "metrics.jsonl"))]
    last = [x for x in lines if x["split"] == f"validation/{TASK}"][-1]
    prompt = os.path.join(
        model_dir, "numpy_checkpoints", "checkpoint_4", "encoder.prompt.prompt.npy"
    )
    out = os.path.join(model_dir, "eval_out")
    assert (
        cli.main(
            [
                "eval",
                "--gin_file=runs/eval.gin",
                f"--gin.MIXTURE_OR_TASK_NAME='{TASK}'",
                f"--gin.INITIAL_CHECKPOINT_PATH='{llama_dir}'",
                f"--gin.PROMPT_FILE='{prompt}'",
                f"--gin.EVAL_OUTPUT_DIR='{out}'",
            ]
        )
        == 0
    )
    results = json.load(open(os.path.join(out, "eval_validation.json")))
    assert results["results"][TASK]["accuracy"] == pytest.approx(last["accuracy"])


def test_a_decoder_only_run_resumes_as_a_no_op(trained, llama_dir, caplog):
    code, model_dir = trained
    assert code == 0
    before = open(os.path.join(model_dir, "metrics.jsonl")).read()
    argv = [
        "train",
        *RUN,
        f"--gin.INITIAL_CHECKPOINT_PATH='{llama_dir}'",
        f"--gin.MODEL_DIR='{model_dir}'",
    ]
    assert cli.main(argv) == 0
    assert open(os.path.join(model_dir, "metrics.jsonl")).read() == before


def test_bad_inputs_of_a_decoder_only_run_are_one_line(llama_dir, tmp_path, capsys):
    base = ["train", *RUN, f"--gin.MODEL_DIR='{tmp_path / 'run'}'"]

    def copy(name, drop=(), config=None):
        target = tmp_path / name
        shutil.copytree(llama_dir, target)
        for f in drop:
            os.remove(target / f)
        if config is not None:
            fields = json.load(open(target / "config.json"))
            (target / "config.json").write_text(json.dumps({**fields, **config}))
        return f"--gin.INITIAL_CHECKPOINT_PATH='{target}'"

    line = _error(capsys, base + [copy("no_tokenizer", drop=["tokenizer.json"])])
    assert "no_tokenizer" in line and "tokenizer.json" in line
    line = _error(capsys, base + [copy("gpt2", config={"architectures": ["GPT2LMHeadModel"]})])
    assert "GPT2LMHeadModel" in line and "LlamaForCausalLM" in line
    small = tiny_hf_llama(tmp_path / "small_embedding", vocab_size=300)
    line = _error(capsys, base + [f"--gin.INITIAL_CHECKPOINT_PATH='{small}'"])
    assert "300" in line and "vocabulary" in line
    # Deep prompts train (tests/test_causal_deep_prompts.py), first in the sequence only.
    line = _error(
        capsys,
        base
        + [f"--gin.INITIAL_CHECKPOINT_PATH='{llama_dir}'", "--gin_file=prompts/deep.gin"]
        + ["--gin.prompts.PromptConfig.placement='after_bos'"],
    )
    assert "deep prompts take prefix placement only" in line
    # T5's sentinel tasks need <extra_id_0>, which a tokenizer.json does not have.
    line = _error(
        capsys,
        base
        + [
            f"--gin.INITIAL_CHECKPOINT_PATH='{llama_dir}'",
            "--gin.MIXTURE_OR_TASK_NAME='super_glue_boolq_v102_1_sentinel'",
        ],
    )
    assert "super_glue_boolq_v102_1_sentinel" in line and "no sentinel ids" in line
    # A T5 model file with a decoder-only checkpoint contradict each other.
    line = _error(
        capsys,
        base
        + [f"--gin.INITIAL_CHECKPOINT_PATH='{llama_dir}'", "--gin_file=models/t5_1_1_tiny.gin"],
    )
    assert "decoder-only" in line


def test_a_prompt_for_another_model_is_refused_before_any_work(
    trained, llama_dir, tmp_path, capsys
):
    """A prompt, or a mixed bank, trained for a model of another width: one line naming
    the file, before any evaluation."""
    from ptune.checkpoints import prompt_io

    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((3, 16), np.float32))
    bank = tmp_path / "bank"
    tasks = ["ptune_demo_negation_rank_classification", TASK]
    prompt_io.save_bank(str(bank), {t: np.zeros((3, 16), np.float32) for t in tasks})
    for task, prompt in ((TASK, wrong), ("ptune_demo_mixture", bank)):
        line = _error(
            capsys,
            [
                "eval",
                "--gin_file=runs/eval.gin",
                f"--gin.MIXTURE_OR_TASK_NAME='{task}'",
                f"--gin.INITIAL_CHECKPOINT_PATH='{llama_dir}'",
                f"--gin.PROMPT_FILE='{prompt}'",
                f"--gin.EVAL_OUTPUT_DIR='{tmp_path}'",
            ],
        )
        assert str(prompt) in line and "width 16" in line and "32" in line
    assert not (tmp_path / "eval_validation.json").exists()


SHARDED_READ = """
import json
import jax, numpy as np
from ptune import model_config, partitioning, recipe
from ptune.checkpoints import hf_causal

assert jax.device_count() == 4
directory = {directory!r}
out = {{}}
for scan in (False, True):
    config = model_config.resolve_model_config(None, directory).replace(scan_layers=scan)
    mesh = partitioning.MeshConfig(mesh_shape=(2, 2), parameter_partitioning_dims=2)
    run = recipe.assemble(config, mesh=mesh)
    params = run.load_frozen(directory)
    _, whole = hf_causal.load(directory, scan_layers=scan)
    equal = jax.tree_util.tree_map(lambda a, b: bool(np.array_equal(np.asarray(a), b)), params, whole)
    split = [
        "/".join(str(k.key) for k in path)
        for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
        if leaf.addressable_shards[0].data.shape != leaf.shape
    ]
    out[str(scan)] = {{"equal": all(jax.tree_util.tree_leaves(equal)), "split": split}}
print(json.dumps(out))
"""


def test_the_checkpoint_is_read_slice_by_slice_into_each_devices_shards(tmp_path):
    """On a 2x2 mesh with 2-D weight partitioning (4 simulated devices, in a subprocess),
    each device reads its own slices (transposed kernels, layers stacked when scanned): the
    assembled arrays equal the whole tensors read on one host."""
    import subprocess
    import sys

    directory = tiny_hf_llama(tmp_path / "llama", intermediate_size=96)
    script = SHARDED_READ.format(directory=directory)
    env = simulated_devices_env(4)
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for scan in ("False", "True"):
        assert out[scan]["equal"], scan
        assert len(out[scan]["split"]) >= 5, out[scan]  # the weights really are split
    assert any("q_proj/kernel" in path for path in out["True"]["split"])


def test_info_and_plan_read_a_hugging_face_llama(llama_dir, capsys):
    import subprocess
    import sys

    from safetensors.numpy import load_file

    capsys.readouterr()
    assert cli.main(["info", f"--checkpoint={llama_dir}", "--no_tree"]) == 0
    out = capsys.readouterr().out
    stored = load_file(os.path.join(llama_dir, "model.safetensors"))
    assert "format: hf (decoder-only)" in out and "num_key_value_heads = 2" in out
    assert f"total_params: {sum(v.size for v in stored.values())}" in out
    # The training step compiled from shapes alone, on 2 simulated devices.
    proc = subprocess.run(
        [sys.executable, "-m", "ptune.cli", "plan", "--mesh_shape=2,1", *RUN[:5]]
        + [f"--gin.INITIAL_CHECKPOINT_PATH='{llama_dir}'", "--gin.MODEL_DIR='/nonexistent'"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "model: 2 layers, emb 32" in proc.stdout
    assert int(proc.stdout.strip().splitlines()[-1].split(": ")[1]) > 0


def test_infer_serves_a_mixed_batch_from_each_prompts_keys_and_values(trained, llama_dir, tmp_path):
    """`ptune infer` over a decoder-only model: requests for two prompts (lengths 3 and 5) in
    one mixed batch, each row decoding from its prompt's precomputed keys and values, give
    what decoding with each prompt in its input gives."""
    from conftest import REPO
    from ptune import frozen_model, infer, prompts, recipe
    from ptune.models import causal_decoding, llama

    _, model_dir = trained
    first = os.path.join(model_dir, "numpy_checkpoints", "best", "encoder.prompt.prompt.npy")
    second = tmp_path / "second.npy"
    np.save(second, np.random.default_rng(0).uniform(-0.5, 0.5, (5, 32)).astype(np.float32))
    out = tmp_path / "predictions.jsonl"
    argv = [
        "infer",
        "--gin_file=runs/infer.gin",
        "--gin.TASK_FEATURE_LENGTHS={'inputs': 40, 'targets': 4}",
        f"--gin.INITIAL_CHECKPOINT_PATH='{llama_dir}'",
        f"--gin.PROMPT_FILES={{'class_labels': '{first}', 'sampled_vocab': '{second}'}}",
        f"--gin.INFER_INPUT_FILE='{REPO}/tasks/data/demo/requests.jsonl'",
        f"--gin.INFER_OUTPUT_FILE='{out}'",
    ]
    assert cli.main(argv) == 0
    served = [json.loads(line) for line in open(out)]
    assert [r["prompt"] for r in served] == ["class_labels", "sampled_vocab"] * 2
    # The reference: each request alone, its prompt in its input (no cache reuse).
    resolved = frozen_model.FrozenModel(checkpoint_path=llama_dir).resolve()
    config, layout = resolved.config, resolved.layout
    frozen = recipe.load_frozen(config, llama_dir)
    tokenizer = vocab.active_tokenizer()
    for r in served:
        value = np.load(first if r["prompt"] == "class_labels" else second)
        model = llama.CausalLM(config, prompts.prompt_factory(len(value)), **layout)
        tokens = infer._tokenize(tokenizer, r["inputs"], 40)[None]
        alone = causal_decoding.seq2seq_generate(
            model, prompts.with_prompt(frozen, value), tokens, 4
        )
        assert r["prediction"] == tokenizer.decode([int(i) for i in np.asarray(alone)[0]])


def test_ensemble_explain_and_convert_over_a_decoder_only_model(
    trained, llama_dir, tmp_path, capsys
):
    """`ptune ensemble` of two prompts scores each as the run's own evaluation did; `ptune
    explain` decodes nearest tokens with the model's tokenizer; `ptune convert` has nothing
    to do (one line)."""
    _, model_dir = trained
    steps = os.path.join(model_dir, "numpy_checkpoints")
    files = [os.path.join(steps, f"checkpoint_{s}", "encoder.prompt.prompt.npy") for s in (4, 2)]
    output = tmp_path / "ensemble.json"
    argv = [
        "ensemble",
        "--gin_file=runs/eval.gin",
        f"--gin.MIXTURE_OR_TASK_NAME='{TASK}'",
        f"--gin.INITIAL_CHECKPOINT_PATH='{llama_dir}'",
        f"--prompt_files={','.join(files)}",
        f"--output={output}",
    ]
    assert cli.main(argv) == 0
    table = json.load(open(output))["results"]
    lines = [json.loads(line) for line in open(os.path.join(model_dir, "metrics.jsonl"))]
    evals = {x["step"]: x["accuracy"] for x in lines if x["split"] == f"validation/{TASK}"}
    got = [p["metrics"][TASK]["accuracy"] for p in table["prompts"]]
    assert got == pytest.approx([evals[4], evals[2]])
    assert 0 <= table["ensemble"][TASK]["accuracy"] <= 100
    capsys.readouterr()
    explained = tmp_path / "explain.json"
    argv = ["explain", f"--prompt_file={files[0]}", f"--checkpoint={llama_dir}"]
    assert cli.main(argv + [f"--task={TASK}", f"--output={explained}"]) == 0
    result = json.load(open(explained))
    assert len(result["positions"]) == 3 and sorted(result["labels"]) == ["negative", "positive"]
    tokenizer = vocab.active_tokenizer()
    for neighbor in result["positions"][0]["neighbors"]:
        text = tokenizer.decode([neighbor["id"]])
        assert neighbor["token"] in (text, f"<id {neighbor['id']}>")
    line = _error(capsys, ["convert", f"--from={llama_dir}", f"--to={tmp_path / 'converted'}"])
    assert "nothing to convert" in line


# The memory settings `ptune plan --fit` prints, as flags on a run without a model file.
MEMORY_FLAGS = [
    "--gin.llama.LlamaConfig.scan_layers=True",
    "--gin.llama.LlamaConfig.remat_policy='full'",
    "--gin.llama.LlamaConfig.dtype='bfloat16'",
    "--gin.trainer.TrainConfig.frozen_dtype='bfloat16'",
]


@pytest.mark.parametrize(
    "task, files",
    [
        (TASK, ["prompts/sampled_vocab.gin", "prompts/residual.gin"]),
        ("ptune_demo_mixture", ["prompts/multi_task.gin"]),
        (TASK, MEMORY_FLAGS),
    ],
)
def test_the_prompt_kinds_train_over_a_decoder_only_model(llama_dir, tmp_path, task, files):
    """Sampled-vocabulary init with the model's tokenizer, a residual prompt, multi-task
    prompts over a mixture (a bank, each task's examples with their own prompt), and the
    memory settings (scanned layers, full remat, bfloat16 weights and activations)."""
    model_dir = tmp_path / "run"
    argv = ["train", *RUN, *(f if f.startswith("--") else f"--gin_file={f}" for f in files)]
    argv += [
        f"--gin.MIXTURE_OR_TASK_NAME='{task}'",
        f"--gin.INITIAL_CHECKPOINT_PATH='{llama_dir}'",
        f"--gin.MODEL_DIR='{model_dir}'",
        "--gin.TRAIN_STEPS=2",
    ]
    assert cli.main(argv) == 0
    best = model_dir / "numpy_checkpoints" / "best"
    if task == TASK:
        assert np.load(best / "encoder.prompt.prompt.npy").shape == (3, 32)
    else:
        tasks = json.load(open(best / "bank.json"))["tasks"]
        assert tasks == ["ptune_demo_negation_rank_classification", TASK]
        for name in tasks:
            assert np.load(best / f"{name}.npy").shape == (3, 32)
    lines = [json.loads(line) for line in open(model_dir / "metrics.jsonl")]
    assert any(x["split"].startswith("validation/") for x in lines)
