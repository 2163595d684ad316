"""Bad inputs that used to name the wrong cause (or none): each is now one line, exit status 2
(`ptune: error: ...`), raised before any work, and the output path is left as it was."""

import dataclasses
import hashlib
import json
import logging
import os

import numpy as np
import pytest

import ptune.tasks  # noqa: F401  registers the demo task
from conftest import DEMO_TINY, REPO, random_params, tiny_t5
from ptune import cli, export, infer
from ptune.checkpoints import hf, prompt_io
from ptune.errors import UserError
from ptune.models import llama

DEMO_DATA = os.path.join(REPO, "tasks", "data", "demo")


def _error(capsys, argv) -> str:
    """The one line `ptune` prints for a bad input (exit 2, no traceback)."""
    capsys.readouterr()
    assert cli.main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and lines[-1].startswith("ptune: error: ") and "Traceback" not in "".join(lines)
    return lines[-1]


def _snapshot(path) -> dict:
    """{relative path: sha256} of every file under `path` (or of `path` itself), and the
    directories, so a test can assert that a refused command changed nothing there."""
    path = str(path)
    if not os.path.exists(path):
        return {}
    if os.path.isfile(path):
        return {"": hashlib.sha256(open(path, "rb").read()).hexdigest()}
    out = {}
    for root, dirs, files in os.walk(path):
        for d in dirs:
            out[os.path.relpath(os.path.join(root, d), path) + "/"] = None
        for f in files:
            full = os.path.join(root, f)
            out[os.path.relpath(full, path)] = hashlib.sha256(open(full, "rb").read()).hexdigest()
    return out


# 1. Unsupported architectures list what ptune loads.


@pytest.mark.parametrize(
    "fields",
    [
        {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": 8},
        {"architectures": ["BertModel"], "model_type": "bert", "hidden_size": 8},
        {"architectures": ["GemmaForCausalLM"], "model_type": "gemma", "hidden_size": 8},
    ],
)
def test_an_unsupported_architecture_names_it_and_every_one_ptune_loads(fields, tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps(fields))
    before = _snapshot(tmp_path)
    line = _error(capsys, ["info", f"--checkpoint={tmp_path}", "--no_tree"])
    assert f"model_type {fields['model_type']!r}" in line
    assert f"its architectures: {fields['architectures'][0]}" in line
    for name in (*hf.T5_ARCHITECTURES, *llama.ARCHITECTURES):
        assert name in line
    assert "T5/mT5 checkpoints only" not in line
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("text", ["[1, 2]", '"llama"', '{"architectures": "LlamaForCausalLM"}'])
def test_a_config_json_that_is_not_a_model_configuration_is_one_line(text, tmp_path, capsys):
    (tmp_path / "config.json").write_text(text)
    line = _error(capsys, ["info", f"--checkpoint={tmp_path}", "--no_tree"])
    assert f"{tmp_path / 'config.json'} " in line and "ptune loads T5/mT5" in line, line


# 2. `plan --fit` without a unit.


@pytest.mark.parametrize("budget", ["16", "16.5", " 500 "])
def test_a_fit_budget_without_a_unit_is_refused_before_any_work(budget, capsys):
    line = _error(capsys, ["plan", "--mesh_shape=1,1", f"--fit={budget}"])
    assert line == (
        f"ptune: error: --fit={budget.strip()} has no unit: give the per-device budget with one, e.g. "
        "16GiB, 500MiB, 16GB (B alone for bytes)"
    )


# 3. Files that are not what their name says.


def test_a_text_file_named_npy_is_not_a_numpy_array(tmp_path, capsys):
    path = tmp_path / "prompt.npy"
    path.write_text("0.1 0.2 0.3\n")
    with pytest.raises(UserError) as e:
        prompt_io.load_prompt_file(str(path))
    message = str(e.value)
    assert message == (
        f"prompt file {path} is not a numpy array (.npy) file: it does not start with numpy's "
        "header (write it with numpy.save)"
    )
    assert "allow_pickle" not in message
    out = tmp_path / "out.safetensors"
    line = _error(capsys, ["export", "--format=safetensors", f"--prompt={path}", f"--to={out}"])
    assert line == f"ptune: error: {message}" and not out.exists()
    # A real array of Python objects, and a truncated array, are not prompts either.
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(UserError, match="objects.npy: not a plain numpy array") as e:
        prompt_io.load_prompt_file(str(tmp_path / "objects.npy"))
    assert "allow_pickle" not in str(e.value)
    np.save(tmp_path / "whole.npy", np.zeros((50, 8), np.float32))
    (tmp_path / "cut.npy").write_bytes((tmp_path / "whole.npy").read_bytes()[:200])
    with pytest.raises(UserError, match="cut.npy: not a plain numpy array"):
        prompt_io.load_prompt_file(str(tmp_path / "cut.npy"))


@pytest.mark.parametrize("content", ["0.1 0.2 0.3\n", ""])
def test_a_text_file_named_safetensors_is_one_line(content, tmp_path, capsys):
    path = tmp_path / "prompt.safetensors"
    path.write_text(content)
    out = tmp_path / "out.npy"
    line = _error(capsys, ["export", "--format=npy", f"--prompt={path}", f"--to={out}"])
    assert line.startswith(f"ptune: error: prompt file {path} is not a readable safetensors file")
    assert not out.exists()


# 4. A PEFT adapter for a base model of another width.


@pytest.fixture
def prompt_8_wide(tmp_path):
    path = tmp_path / "prompt.npy"
    np.save(path, np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32))
    return str(path)


@pytest.mark.parametrize(
    "fields, width",
    [
        ({"architectures": ["T5ForConditionalGeneration"], "model_type": "t5", "d_model": 16}, 16),
        ({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 32}, 32),
    ],
)
def test_peft_export_refuses_a_base_model_of_another_width(
    fields, width, prompt_8_wide, tmp_path, capsys
):
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps(fields))
    out = tmp_path / "adapter"
    out.mkdir()
    (out / "keep.txt").write_text("an earlier export")
    before = _snapshot(out)
    argv = ["export", "--format=peft", f"--prompt={prompt_8_wide}", f"--to={out}"]
    if "LlamaForCausalLM" in fields["architectures"]:
        argv.append("--task_type=CAUSAL_LM")
    line = _error(capsys, [*argv, f"--base_model={base}", "--overwrite"])
    assert line == (
        f"ptune: error: --base_model {base} is {width} wide (its config.json), but the "
        "prompt's rows are 8 wide: PEFT cannot load this adapter onto it; export a prompt "
        "trained on that model, or name the model the prompt was trained on"
    )
    assert _snapshot(out) == before
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []
    # The right width, and a name with no local copy (only recorded), are written.
    (base / "config.json").write_text(json.dumps({**fields, "d_model": 8, "hidden_size": 8}))
    assert cli.main([*argv, f"--base_model={base}", "--overwrite"]) == 0
    assert export.export_prompt(
        prompt_8_wide, str(tmp_path / "named"), "peft", base_model="no-org/no-such-model"
    )


def test_peft_export_refuses_a_base_model_path_that_is_no_model_of_its_task(
    prompt_8_wide, tmp_path, capsys
):
    (tmp_path / "file").write_text("x")
    (tmp_path / "t5x").mkdir()  # a folder, but not a Hugging Face model's
    (tmp_path / "t5").mkdir()
    (tmp_path / "t5" / "config.json").write_text(
        json.dumps({"architectures": ["T5ForConditionalGeneration"], "d_model": 8})
    )
    out = tmp_path / "adapter"
    argv = ["export", "--format=peft", f"--prompt={prompt_8_wide}", f"--to={out}"]
    for base, extra, expected in (
        (tmp_path / "missing", [], "does not exist"),
        (tmp_path / "file", [], "is not a Hugging Face model directory (no config.json)"),
        (tmp_path / "t5x", [], "is not a Hugging Face model directory (no config.json)"),
        (
            tmp_path / "t5",
            ["--task_type=CAUSAL_LM"],
            "is a T5ForConditionalGeneration, not a model for --task_type CAUSAL_LM",
        ),
    ):
        line = _error(capsys, [*argv, f"--base_model={base}", *extra])
        assert line.startswith(f"ptune: error: --base_model {base} {expected}"), line
    assert not out.exists()


# 5. infer and similar: outputs checked before any work; requests cut, said once.


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A tiny byte-level T5 saved in ptune's format and one 16-wide prompt."""
    import jax.numpy as jnp

    from ptune.checkpoints.orbax_params import save_ptune
    from ptune.models import t5

    config = tiny_t5(**DEMO_TINY)
    tokens = jnp.ones((1, 4), jnp.int32)
    params = random_params(t5.Transformer(config), tokens, tokens, tokens, enable_dropout=False)
    root = tmp_path_factory.mktemp("served")
    save_ptune(params, config, str(root / "model"))
    np.save(root / "p.npy", np.random.default_rng(1).normal(size=(3, 16)).astype(np.float32))
    return root


def _infer_config(root, input_file, output_file, inputs=64):
    return infer.InferConfig(
        checkpoint_path=str(root / "model"),
        prompt_files={"ptune_demo": str(root / "p.npy")},
        input_file=str(input_file),
        output_file=str(output_file),
        task_feature_lengths={"inputs": inputs, "targets": 4},
        batch_size=4,
    )


def test_infer_refuses_an_output_that_is_its_input_or_a_directory(served, tmp_path):
    requests = tmp_path / "requests.jsonl"
    requests.write_text(json.dumps({"task": "ptune_demo", "inputs": "a good film"}) + "\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(requests)
    (tmp_path / "out").mkdir()
    before = _snapshot(tmp_path)
    served_before = _snapshot(served)
    for output, what in (
        (requests, "is INFER_INPUT_FILE"),
        (link, "is INFER_INPUT_FILE"),
        (served / "p.npy", "is PROMPT_FILES"),  # the prompt it serves
        (served / "model" / "ptune_config.json", "is inside INITIAL_CHECKPOINT_PATH"),
    ):
        with pytest.raises(UserError) as e:
            infer.run_infer(_infer_config(served, requests, output), progress=False)
        assert str(e.value) == (
            f"INFER_OUTPUT_FILE {output} {what}: writing the results would replace what it "
            "reads; name another output file"
        )
    assert _snapshot(served) == served_before
    # A missing checkpoint would fail later: the output is refused first, before any work.
    bad_model = dataclasses.replace(
        _infer_config(served, requests, tmp_path / "out"), checkpoint_path="/no/such/model"
    )
    with pytest.raises(UserError) as e:
        infer.run_infer(bad_model, progress=False)
    assert str(e.value) == (
        f"INFER_OUTPUT_FILE {tmp_path / 'out'} is a directory; name the JSONL file to write"
    )
    assert _snapshot(tmp_path) == before


def test_lengths_too_large_for_memory_are_one_line_and_write_nothing(served, tmp_path, capsys):
    requests = tmp_path / "requests.jsonl"
    requests.write_text(json.dumps({"task": "ptune_demo", "inputs": "a good film"}) + "\n")
    line = _error(
        capsys,
        [
            "infer",
            "--gin_file=runs/infer.gin",
            f"--gin.INITIAL_CHECKPOINT_PATH='{served / 'model'}'",
            f"--gin.PROMPT_FILES={{'ptune_demo': '{served / 'p.npy'}'}}",
            f"--gin.INFER_INPUT_FILE='{requests}'",
            f"--gin.INFER_OUTPUT_FILE='{tmp_path / 'out.jsonl'}'",
            "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 1000000}",  # 3.6 TiB of ids
        ],
    )
    assert line.startswith("ptune: error: out of memory (Unable to allocate "), line
    assert line.endswith(
        "reduce BATCH_SIZE, the feature lengths or NUM_BEAMS; `ptune plan` "
        "estimates what a run needs"
    )
    assert sorted(os.listdir(tmp_path)) == ["requests.jsonl"]


def test_infer_names_the_request_line_that_is_not_utf8_or_not_an_object(tmp_path):
    path = tmp_path / "requests.jsonl"
    good = json.dumps({"task": "ptune_demo", "inputs": "a good film"}).encode() + b"\n"
    path.write_bytes(good + b'{"task": "ptune_demo", "inputs": "\xff\xfe"}\n')
    with pytest.raises(UserError) as e:
        infer.read_requests(str(path))
    assert str(e.value) == f"{path}, line 2: not UTF-8 text"
    path.write_bytes(good + b'[{"task": "ptune_demo", "inputs": "x"}]\n')
    with pytest.raises(UserError) as e:
        infer.read_requests(str(path))
    assert str(e.value) == (
        f'{path}, line 2: a JSON list, expected an object like {{"task": ..., "inputs": ...}}'
    )


def test_infer_refuses_a_tsv_row_with_more_than_three_fields(tmp_path):
    path = tmp_path / "requests.tsv"
    path.write_text("ptune_demo\ta good film\nptune_demo\ta\ttab\tinside\n")
    with pytest.raises(UserError) as e:
        infer.read_requests(str(path))
    assert str(e.value) == (
        f"{path}, line 2: 4 tab-separated field(s), expected 2 or 3: "
        "'task<TAB>inputs[<TAB>prompt]' (inputs text holding a tab needs JSONL)"
    )
    path.write_text("ptune_demo\n")
    with pytest.raises(UserError, match="line 1: 1 tab-separated field"):
        infer.read_requests(str(path))
    path.write_text("ptune_demo\ta good film\tp\r\n")  # a Windows line ending is no field
    assert infer.read_requests(str(path))[0]["prompt"] == "p"


def test_infer_warns_once_how_many_requests_were_cut(served, tmp_path, caplog):
    requests = tmp_path / "requests.jsonl"
    texts = ["short", "x" * 40, "a good film", "y" * 100]
    requests.write_text(
        "".join(json.dumps({"task": "ptune_demo", "inputs": t}) + "\n" for t in texts)
    )
    output = tmp_path / "out.jsonl"
    with caplog.at_level(logging.WARNING, logger="ptune"):
        results = infer.run_infer(_infer_config(served, requests, output, 16), progress=False)
    assert len(results) == 4 and output.exists()
    cut = [r.getMessage() for r in caplog.records if "are cut to" in r.getMessage()]
    assert cut == [
        "2 of 4 requests are longer than TASK_FEATURE_LENGTHS['inputs'] and are cut to 16 "
        "tokens (lines 2, 4); raise TASK_FEATURE_LENGTHS['inputs'] to serve them whole"
    ]


def test_similar_refuses_a_json_path_that_is_a_directory(tmp_path, capsys):
    for name in ("a", "b"):
        np.save(tmp_path / f"{name}.npy", np.ones((2, 4), np.float32))
    (tmp_path / "out").mkdir()
    before = _snapshot(tmp_path)
    line = _error(
        capsys,
        [
            "similar",
            f"--prompts={tmp_path / 'a.npy'}",
            f"--target={tmp_path / 'b.npy'}",
            f"--json={tmp_path / 'out'}",
        ],
    )
    assert (
        line
        == f"ptune: error: --json {tmp_path / 'out'} is a directory; name the JSON file to write"
    )
    assert _snapshot(tmp_path) == before


# 6. An empty --task_file training file.


@pytest.mark.parametrize(
    "name, content, fault",
    [
        ("train.jsonl", "", "is empty (or blank lines only)"),
        ("train.jsonl", "\n  \n\t\n", "is empty (or blank lines only)"),
        ("train.tsv", "sentence\tlabel\n\n", "holds a header and no rows"),
    ],
)
def test_an_empty_task_file_is_refused_before_any_work(name, content, fault, tmp_path, capsys):
    train = tmp_path / name
    train.write_text(content)
    model_dir = tmp_path / "run"
    spec = (
        f"mine:train={train},validation={DEMO_DATA}/validation.jsonl,inputs=sentence,"
        "targets=label,labels=negative|positive,vocabulary=byte"
    )
    line = _error(
        capsys,
        [
            "train",
            "--gin_file=runs/demo.gin",
            f"--gin.MODEL_DIR='{model_dir}'",
            "--gin.MIXTURE_OR_TASK_NAME='mine'",
            f"--task_file={spec}",
        ],
    )
    assert line == f"ptune: error: task 'mine' train: file {train} {fault}"
    assert not model_dir.exists()


def test_explain_refuses_an_output_that_is_a_directory_before_reading_the_model(tmp_path, capsys):
    np.save(tmp_path / "p.npy", np.ones((2, 4), np.float32))
    (tmp_path / "out").mkdir()
    before = _snapshot(tmp_path)
    line = _error(
        capsys,
        [
            "explain",
            f"--prompt_file={tmp_path / 'p.npy'}",
            f"--checkpoint={tmp_path / 'no_model'}",
            f"--output={tmp_path / 'out'}",
        ],
    )
    assert line == (
        f"ptune: error: --output {tmp_path / 'out'} is a directory; name the JSON file to write"
    )
    assert _snapshot(tmp_path) == before


def test_explain_refuses_labels_that_name_no_label(tmp_path, capsys):
    np.save(tmp_path / "p.npy", np.ones((2, 4), np.float32))
    argv = ["explain", f"--prompt_file={tmp_path / 'p.npy'}", f"--checkpoint={tmp_path / 'm'}"]
    line = _error(capsys, [*argv, "--labels=,"])
    assert line == "ptune: error: --labels=',' names no label: give e.g. --labels=yes,no"
    assert sorted(os.listdir(tmp_path)) == ["p.npy"]
