"""The original authors' released prompts (T5 1.1 LM-adapted Base, GLUE SST-2, MRPC, RTE) load
as prompts of the matching GLUE tasks: `ptune eval` runs them on local data in the official
GLUE TSV layout. The Base checkpoint cannot be downloaded here, so the frozen model is a
random one of Base's width (768) with one layer each side: this checks the tasks, the prompt
files and the command, not the published scores (95.07 / 89.7 F1 / 68.6)."""

import json

import numpy as np
import pytest
from glue_records import RELEASE

from conftest import random_frozen, shared_path, tiny_t5
from ptune import cli, recipe
from ptune.checkpoints.orbax_params import save_ptune

PROMPTS = {
    "sst2": "taskless_glue_sst2_v200",
    "mrpc": "taskless_glue_mrpc_v200",
    "rte": "taskless_glue_rte_v200",
}


@pytest.fixture(scope="module")
def base_width_model(tmp_path_factory):
    config = tiny_t5(
        vocab_size=32128,
        emb_dim=768,
        num_heads=2,
        head_dim=8,
        mlp_dim=16,
        num_encoder_layers=1,
        num_decoder_layers=1,
        logits_via_embedding=True,
    )
    path = str(tmp_path_factory.mktemp("model") / "base_width")
    save_ptune(random_frozen(recipe.assemble(config)), config, path, source="random")
    return path


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("glue")
    for path, text in RELEASE.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text, encoding="utf-8")
    return str(root)


@pytest.mark.parametrize("name", list(PROMPTS))
def test_released_prompt_evaluates_on_its_glue_task(
    name, base_width_model, glue_dir, tmp_path, capsys, monkeypatch
):
    prompt = shared_path("prompts", "t5_1_1_lm100k_base", f"{name}.npy")
    assert np.load(prompt).shape == (100, 768)
    code = cli.main(
        [
            "eval",
            "--gin_file=runs/eval.gin",
            f"--gin.MIXTURE_OR_TASK_NAME='{PROMPTS[name]}'",
            f"--gin.INITIAL_CHECKPOINT_PATH='{base_width_model}'",
            f"--gin.PROMPT_FILE='{prompt}'",
            "--gin.BATCH_SIZE=2",
            f"--gin.EVAL_OUTPUT_DIR='{tmp_path}'",
            f"--glue_dir={glue_dir}",
            f"--spm_path={shared_path('t5_vocab', 'sentencepiece.model')}",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    results = json.loads(captured.out)[PROMPTS[name]]
    assert "accuracy" in results and 0.0 <= results["accuracy"] <= 100.0
    assert json.load(open(tmp_path / "eval_validation.json"))["results"][PROMPTS[name]] == results
