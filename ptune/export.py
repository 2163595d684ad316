"""Prompt exports for other tools: a Hugging Face PEFT adapter directory, `.npy`, `.safetensors`.

    ptune export --format peft --prompt PROMPT.npy --to DIR [--base_model NAME] [--overwrite]

A trained prompt [P, E] is all a prompt-tuning adapter holds, so moving one between ptune and
PEFT is a change of container, not a conversion: PEFT's `PROMPT_TUNING` adapter for a
seq2seq T5 with `num_transformer_submodules=1` prepends its P virtual tokens to the encoder
input, which is ptune's `prefix` placement (same positions, same attention mask), so the
same values give the same logits. The way back needs nothing here: `prompts.from_file` reads
a PEFT adapter directory.

    DIR/adapter_model.safetensors   {"prompt_embeddings": float32 [P, E]}
    DIR/adapter_config.json         peft_type PROMPT_TUNING, task_type SEQ_2_SEQ_LM,
                                    num_virtual_tokens P, token_dim E,
                                    num_transformer_submodules 1, base_model_name_or_path

Every export is atomic (written beside its destination, then renamed into place) and refuses
to replace an existing destination unless `overwrite=True`. A `--base_model` found on this
machine (a directory, or a hub id in the local cache) must be a model of the task type, as
wide as the prompt (its config.json's d_model / hidden_size), checked before anything is
written; a path must be such a directory. Imports numpy and
safetensors only (and ptune's hub lookup for `--base_model`).
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional, Union

import numpy as np

from ptune import atomic
from ptune.checkpoints import prompt_io
from ptune.errors import UserError

FORMATS = ("peft", "npy", "safetensors")
PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_CONFIG = "adapter_config.json"
PEFT_KEY = "prompt_embeddings"
SAFETENSORS_KEY = "prompt"  # as `ptune.checkpoints.prompt_io` writes it


TASK_TYPES = ("SEQ_2_SEQ_LM", "CAUSAL_LM")  # T5's encoder prompt; a decoder-only model's


def peft_adapter_config(
    length: int, embed: int, base_model: Optional[str] = None, task_type: str = "SEQ_2_SEQ_LM"
) -> dict:
    """The adapter_config.json PEFT writes for a prompt-tuning adapter of [length, embed]
    (`task_type` SEQ_2_SEQ_LM for T5, CAUSAL_LM for a decoder-only model); fields PEFT fills
    from the base model when loading (`num_layers`, `num_attention_heads`) stay null."""
    if task_type not in TASK_TYPES:
        raise UserError(f"PEFT task type must be one of {', '.join(TASK_TYPES)}, got {task_type!r}")
    return {
        "peft_type": "PROMPT_TUNING",
        "task_type": task_type,
        "num_virtual_tokens": int(length),
        "token_dim": int(embed),
        "num_transformer_submodules": 1,
        "base_model_name_or_path": base_model,
        "num_layers": None,
        "num_attention_heads": None,
        "prompt_tuning_init": "RANDOM",
        "prompt_tuning_init_text": None,
        "tokenizer_name_or_path": None,
        "tokenizer_kwargs": None,
        "inference_mode": True,
        "revision": None,
        "modules_to_save": None,
        "auto_mapping": None,
    }


def _as_prompt(prompt: Union[str, os.PathLike, np.ndarray]) -> np.ndarray:
    if isinstance(prompt, (str, os.PathLike)):
        return prompt_io.load_prompt_file(os.fspath(prompt))
    value = np.asarray(prompt)
    if value.ndim != 2 or not np.issubdtype(value.dtype, np.floating):
        raise UserError(
            f"a prompt is a float matrix [length, embed], got {value.dtype} {value.shape}"
        )
    value = value.astype(np.float32)
    if not np.isfinite(value).all():
        raise UserError("the prompt holds NaN or infinite values")
    return value


def _check_destination(path: str, overwrite: bool, source: Any = None) -> None:
    """Refuses, before anything is written, a destination that is (or holds) the prompt being
    exported, one that exists without `overwrite`, and one whose directory cannot be written."""
    if isinstance(source, (str, os.PathLike)):
        target, read = os.path.realpath(path), os.path.realpath(os.fspath(source))
        if read == target or read.startswith(target + os.sep):
            raise UserError(
                f"--to {path} is the prompt being exported (--prompt {os.fspath(source)}): "
                "writing would replace it; name another destination"
            )
    if os.path.lexists(path) and not overwrite:
        raise UserError(f"{path} already exists; pass --overwrite to replace it")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        what = "is a file" if os.path.exists(parent) else "does not exist"
        raise UserError(f"cannot write {path}: its parent directory {parent} {what}")
    atomic.check_writable_dir(parent, f"--to {path}: its directory")


WIDTH_FIELDS = ("d_model", "hidden_size", "n_embd")  # a config.json's model width: T5, Llama, GPT-2


def _check_base_model(base_model: Optional[str], width: int, task_type: str) -> None:
    """A base model that is a local Hugging Face directory (or a hub id in the local cache)
    must be one PEFT can load the adapter onto: a model of the task type, as wide as the
    prompt. A path (absolute, or starting with ./ or ../) must be such a directory; a hub
    name with no local copy is only recorded."""
    if not base_model:
        return
    from ptune.checkpoints import hub

    name = os.fspath(base_model)
    is_path = os.path.isabs(name) or name.startswith(("./", "../")) or os.path.exists(name)
    if is_path and not os.path.exists(name):
        raise UserError(f"--base_model {name} does not exist")
    try:
        directory = hub.resolve(name)
    except UserError:
        if is_path:
            raise UserError(f"--base_model {name} does not exist") from None
        return  # not on this machine: recorded, not checked
    config = os.path.join(directory, "config.json")
    if not os.path.isfile(config):
        if is_path:
            raise UserError(
                f"--base_model {name} is not a Hugging Face model directory (no config.json): "
                "PEFT loads the adapter onto the model base_model_name_or_path names"
            )
        return
    try:
        with open(config) as f:
            fields = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"--base_model {base_model}: cannot read {config} ({e})") from e
    if not isinstance(fields, dict):
        raise UserError(f"--base_model {base_model}: {config} is not a JSON object")
    architectures = [str(a) for a in fields.get("architectures") or []]
    causal = any(a.endswith("ForCausalLM") for a in architectures)
    seq2seq = any(a.endswith("ForConditionalGeneration") for a in architectures)
    if (task_type == "CAUSAL_LM" and seq2seq) or (task_type == "SEQ_2_SEQ_LM" and causal):
        raise UserError(
            f"--base_model {base_model} is a {', '.join(architectures)}, not a model for "
            f"--task_type {task_type}"
        )
    stated = [fields[k] for k in WIDTH_FIELDS if k in fields]
    if stated and stated[0] != width:
        raise UserError(
            f"--base_model {base_model} is {stated[0]} wide (its config.json), but the prompt's "
            f"rows are {width} wide: PEFT cannot load this adapter onto it; export a prompt "
            "trained on that model, or name the model the prompt was trained on"
        )


def write_peft(
    prompt: Union[str, os.PathLike, np.ndarray],
    directory: str,
    *,
    base_model: Optional[str] = None,
    overwrite: bool = False,
    task_type: str = "SEQ_2_SEQ_LM",
) -> str:
    """Writes a PEFT prompt-tuning adapter directory that `peft.PeftModel.from_pretrained`
    loads onto a T5 (or, with task_type CAUSAL_LM, a decoder-only model) of width E.
    Returns the directory."""
    from safetensors.numpy import save_file

    peft_adapter_config(1, 1, task_type=task_type)  # a bad task type fails before writing
    value = _as_prompt(prompt)
    directory = os.fspath(directory)
    _check_destination(directory, overwrite, prompt)
    _check_base_model(base_model, value.shape[1], task_type)

    def write(tmp: str) -> None:
        save_file(
            {PEFT_KEY: np.ascontiguousarray(value)},
            os.path.join(tmp, PEFT_WEIGHTS),
            metadata={"format": "pt"},
        )
        with open(os.path.join(tmp, PEFT_CONFIG), "w") as f:
            config = peft_adapter_config(*value.shape, base_model=base_model, task_type=task_type)
            json.dump(config, f, indent=2)
            f.write("\n")

    return atomic.write_directory(directory, write, overwrite=True)


def write_file(
    prompt: Union[str, os.PathLike, np.ndarray], path: str, *, overwrite: bool = False
) -> str:
    """Writes a `.npy` or `.safetensors` file (key 'prompt'), by `path`'s extension."""
    from safetensors.numpy import save_file

    value = _as_prompt(prompt)
    path = os.fspath(path)
    if not path.endswith((".npy", ".safetensors")):
        raise UserError(f"{path}: the file name must end in .npy or .safetensors")
    _check_destination(path, overwrite, prompt)
    if os.path.isdir(path):
        raise UserError(f"{path} is a directory; a .npy or .safetensors export is one file")

    def write(tmp: str) -> None:
        if path.endswith(".npy"):
            with open(tmp, "wb") as f:
                np.save(f, value, allow_pickle=False)
        else:
            save_file({SAFETENSORS_KEY: np.ascontiguousarray(value)}, tmp)

    return atomic.write(path, write)


def export_prompt(
    prompt: Union[str, os.PathLike, np.ndarray],
    to: str,
    format: str,
    *,
    base_model: Optional[str] = None,
    overwrite: bool = False,
    task_type: str = "SEQ_2_SEQ_LM",
) -> str:
    """Exports `prompt` (an array [P, E] or any file `prompt_io.load_prompt_file` reads: .npy,
    .safetensors, a PEFT adapter directory) to `to` in `format` ('peft' | 'npy' |
    'safetensors'; PEFT adapters for `task_type` SEQ_2_SEQ_LM or CAUSAL_LM). Returns what was
    written."""
    if format not in FORMATS:
        raise UserError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    if format == "peft":
        if isinstance(prompt, (str, os.PathLike)):
            shape = prompt_io.load_prompt_file(os.fspath(prompt), deep=True).shape
            if len(shape) == 3:
                model = "T5 encoders" if task_type == "SEQ_2_SEQ_LM" else "decoder-only models"
                raise UserError(
                    f"{os.fspath(prompt)} is a deep (per-layer) prompt {shape}: PEFT has no "
                    f"equivalent for {model} (its prefix tuning adds keys and values to "
                    "attention, not hidden states at each layer's input); export it as .npy "
                    "or .safetensors"
                )
        return write_peft(
            prompt, to, base_model=base_model, overwrite=overwrite, task_type=task_type
        )
    if base_model is not None or task_type != "SEQ_2_SEQ_LM":
        raise UserError(
            "--base_model and --task_type are recorded in PEFT adapters only (--format peft)"
        )
    expected = "." + format
    if not os.fspath(to).endswith(expected):
        raise UserError(
            f"--format {format} writes a {expected} file; {to} does not end in {expected}"
        )
    return write_file(prompt, to, overwrite=overwrite)
