"""`ptune ensemble` evaluates its prompts as `ptune eval` is configured to: the eval config's
beam search and length buckets reach the decoding (an ensemble once decoded greedily with one
padded shape whatever eval.gin said)."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

import ptune.tasks  # noqa: F401  registers the demo task
from conftest import DEMO_TINY, random_params, tiny_t5
from ptune import cli, decoding
from ptune import server as server_lib
from ptune.checkpoints.orbax_params import save_ptune
from ptune.models import t5

CFG = tiny_t5(**DEMO_TINY)
TASK = "ptune_demo"  # generates its label: every batch is decoded


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny frozen T5 in ptune's format (it carries its configuration) and two prompts."""
    root = tmp_path_factory.mktemp("ensemble")
    tokens = jnp.ones((1, 4), jnp.int32)
    params = random_params(t5.Transformer(CFG), tokens, tokens, tokens, enable_dropout=False)
    save_ptune(params, CFG, str(root / "model"))
    rng = np.random.default_rng(1)
    files = []
    for name, length in (("a", 3), ("b", 5)):
        files.append(str(root / f"{name}.npy"))
        np.save(files[-1], rng.normal(size=(length, CFG.emb_dim)).astype(np.float32))
    return root, files


def _run(command, root, *extra):
    argv = [
        command,
        "--gin_file=runs/eval.gin",
        f"--gin.MIXTURE_OR_TASK_NAME='{TASK}'",
        f"--gin.INITIAL_CHECKPOINT_PATH='{root / 'model'}'",
        "--gin.BATCH_SIZE=4",
        *extra,
    ]
    assert cli.main(argv) == 0


def _ensemble(root, files, output, *extra):
    _run("ensemble", root, f"--prompt_files={','.join(files)}", f"--output={output}", *extra)
    return json.load(open(output))["results"]


def test_ensemble_decodes_with_the_eval_configs_beams(saved, tmp_path, monkeypatch):
    """num_beams=3 reaches the decoding, and each prompt scores as `ptune eval` with the same
    beams scores it alone."""
    root, files = saved
    beams = []
    search = decoding.beam_search

    def spy(*args, **kwargs):
        beams.append(kwargs["num_beams"])
        return search(*args, **kwargs)

    monkeypatch.setattr(decoding, "beam_search", spy)
    flag = "--gin.evaluation.EvalConfig.num_beams=3"
    table = _ensemble(root, files, tmp_path / "ensemble.json", flag)
    assert beams and set(beams) == {3}
    beams.clear()
    _run(
        "eval", root, f"--gin.PROMPT_FILE='{files[0]}'", f"--gin.EVAL_OUTPUT_DIR='{tmp_path}'", flag
    )
    assert beams and set(beams) == {3}
    alone = json.load(open(tmp_path / "eval_validation.json"))["results"]
    assert table["prompts"][0]["metrics"] == alone


def test_ensemble_pads_to_the_eval_configs_length_buckets(saved, tmp_path, monkeypatch):
    """LENGTH_BUCKETS=None pads every batch to one shape; the default buckets pad short
    batches less. The predictions, and so the table, do not change."""
    root, files = saved
    widths = []
    generate = server_lib.Server.generate

    def spy(self, encoder_input_tokens, *args, **kwargs):
        widths.append(np.shape(encoder_input_tokens)[1])
        return generate(self, encoder_input_tokens, *args, **kwargs)

    monkeypatch.setattr(server_lib.Server, "generate", spy)
    fixed = _ensemble(root, files, tmp_path / "fixed.json", "--gin.LENGTH_BUCKETS=None")
    one_shape = set(widths)
    assert len(one_shape) == 1
    widths.clear()
    bucketed = _ensemble(root, files, tmp_path / "bucketed.json")
    assert widths and min(widths) < min(one_shape)
    assert bucketed == fixed


def test_ensemble_refuses_a_prompt_twice_and_evals_prompt_settings(saved, tmp_path, capsys):
    root, files = saved
    base = [
        "ensemble",
        "--gin_file=runs/eval.gin",
        f"--gin.MIXTURE_OR_TASK_NAME='{TASK}'",
        f"--gin.INITIAL_CHECKPOINT_PATH='{root / 'model'}'",
        f"--output={tmp_path / 'out.json'}",
    ]
    for extra, expected in (
        ([f"--prompt_files={files[0]},{files[0]}"], f"names {files[0]} twice"),
        ([f"--prompt_files={','.join(files)}", "--gin.NO_PROMPT=True"], "PROMPT_FILE and NO"),
        (
            [f"--prompt_files={','.join(files)}", f"--gin.PROMPT_FILE='{files[0]}'"],
            "PROMPT_FILE and NO_PROMPT are for `ptune eval`",
        ),
    ):
        assert cli.main(base + extra) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], err
    assert not (tmp_path / "out.json").exists()
