"""`ptune export` and `ptune.export`: file layout, atomicity and refusals (no torch needed;
the PEFT round trip itself is tests/test_peft_interop.py)."""

import json
import os

import numpy as np
import pytest
from safetensors.numpy import load_file

from ptune import cli, export, prompts
from ptune.checkpoints import prompt_io
from ptune.errors import UserError


@pytest.fixture
def prompt_file(tmp_path):
    value = np.random.RandomState(0).uniform(-0.5, 0.5, (5, 8)).astype(np.float32)
    path = tmp_path / "prompt.npy"
    np.save(path, value)
    return str(path), value


def _leftovers(directory):
    return [n for n in os.listdir(directory) if n.startswith((".tmp-export-", ".old-"))]


def test_peft_adapter_layout(prompt_file, tmp_path):
    path, value = prompt_file
    out = tmp_path / "adapter"
    export.export_prompt(path, str(out), "peft", base_model="google/t5-v1_1-small")
    assert sorted(os.listdir(out)) == ["adapter_config.json", "adapter_model.safetensors"]
    tensors = load_file(str(out / "adapter_model.safetensors"))
    assert list(tensors) == ["prompt_embeddings"]
    assert tensors["prompt_embeddings"].dtype == np.float32
    np.testing.assert_array_equal(tensors["prompt_embeddings"], value)
    config = json.loads((out / "adapter_config.json").read_text())
    assert {
        k: config[k]
        for k in (
            "peft_type",
            "task_type",
            "num_virtual_tokens",
            "token_dim",
            "num_transformer_submodules",
            "base_model_name_or_path",
        )
    } == {
        "peft_type": "PROMPT_TUNING",
        "task_type": "SEQ_2_SEQ_LM",
        "num_virtual_tokens": 5,
        "token_dim": 8,
        "num_transformer_submodules": 1,
        "base_model_name_or_path": "google/t5-v1_1-small",
    }
    # ptune reads its own export back through the prompt initializer.
    np.testing.assert_array_equal(prompts.from_file(str(out))(None, (5, 8), None), value)
    assert not _leftovers(tmp_path)


@pytest.mark.parametrize("suffix", [".npy", ".safetensors"])
def test_plain_files_round_trip(prompt_file, tmp_path, suffix):
    path, value = prompt_file
    out = str(tmp_path / f"exported{suffix}")
    assert export.export_prompt(path, out, suffix[1:]) == out
    np.testing.assert_array_equal(prompt_io.load_prompt_file(out), value)
    if suffix == ".safetensors":
        assert list(load_file(out)) == ["prompt"]


def test_refuses_to_overwrite_unless_asked(prompt_file, tmp_path):
    path, value = prompt_file
    out = tmp_path / "adapter"
    export.export_prompt(path, str(out), "peft")
    with pytest.raises(UserError, match=r"already exists; pass --overwrite"):
        export.export_prompt(np.zeros((3, 8), np.float32), str(out), "peft")
    np.testing.assert_array_equal(prompt_io.load_prompt_file(str(out)), value)
    export.export_prompt(np.ones((3, 8), np.float32), str(out), "peft", overwrite=True)
    np.testing.assert_array_equal(prompt_io.load_prompt_file(str(out)), np.ones((3, 8)))
    assert json.loads((out / "adapter_config.json").read_text())["num_virtual_tokens"] == 3
    assert not _leftovers(tmp_path)


def test_bad_inputs_are_one_line_user_errors(prompt_file, tmp_path):
    path, _ = prompt_file
    with pytest.raises(UserError, match=r"unknown export format 'onnx'"):
        export.export_prompt(path, str(tmp_path / "x"), "onnx")
    with pytest.raises(UserError, match=r"--format npy writes a .npy file"):
        export.export_prompt(path, str(tmp_path / "x.safetensors"), "npy")
    with pytest.raises(
        UserError, match=r"--base_model and --task_type are recorded in PEFT adapters only"
    ):
        export.export_prompt(path, str(tmp_path / "x.npy"), "npy", base_model="t5")
    with pytest.raises(UserError, match=r"prompt file .* does not exist"):
        export.export_prompt(str(tmp_path / "missing.npy"), str(tmp_path / "a"), "peft")
    with pytest.raises(UserError, match=r"parent directory .* does not exist"):
        export.export_prompt(path, str(tmp_path / "no" / "such" / "dir"), "peft")
    with pytest.raises(UserError, match=r"NaN or infinite"):
        export.export_prompt(np.full((2, 8), np.nan, np.float32), str(tmp_path / "a"), "peft")
    assert not os.path.exists(tmp_path / "a") and not _leftovers(tmp_path)


@pytest.mark.parametrize("fmt", ["peft", "npy"])
def test_the_destination_may_not_be_the_prompt_even_with_overwrite(prompt_file, tmp_path, fmt):
    """`--to` naming the prompt file itself (or a directory holding it) would replace the
    user's prompt with its export: refused before anything is written, the file intact."""
    path, value = prompt_file
    before = open(path, "rb").read()
    for to in (path, str(tmp_path)) if fmt == "peft" else (path,):
        with pytest.raises(UserError, match=r"is the prompt being exported"):
            export.export_prompt(path, to, fmt, overwrite=True)
    assert open(path, "rb").read() == before
    assert sorted(os.listdir(tmp_path)) == ["prompt.npy"]


def test_cli_export(prompt_file, tmp_path, capsys):
    path, value = prompt_file
    out = str(tmp_path / "adapter")
    assert (
        cli.main(
            [
                "export",
                "--format",
                "peft",
                "--prompt",
                path,
                "--to",
                out,
                "--base_model",
                "t5-small",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    np.testing.assert_array_equal(prompt_io.load_prompt_file(out), value)
    assert cli.main(["export", "--format", "peft", "--prompt", path, "--to", out]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ptune: error: ") and "--overwrite" in err
    # A PEFT adapter directory is a valid source too (PEFT -> .npy).
    npy = str(tmp_path / "back.npy")
    assert cli.main(["export", "--format", "npy", "--prompt", out, "--to", npy]) == 0
    np.testing.assert_array_equal(np.load(npy), value)
