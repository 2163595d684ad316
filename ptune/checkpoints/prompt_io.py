"""Prompt files: `.npy` and `.safetensors`, written atomically and read back checked.

Named after the original project's numpy checkpoints: the file stem is the parameter path
with dots, `encoder.prompt.prompt`, under `MODEL_DIR/numpy_checkpoints/checkpoint_<step>/`
(and `.../best/` for the best validation step). Either file loads with
`prompts.from_file` / `ptune eval --gin.PROMPT_FILE=...`.

A multi-task bank is one prompt per task, each as `<task>.npy` and `<task>.safetensors`, and
`bank.json` ({"tasks": [...]}, in the bank's order); `ptune infer` takes the directory as
PROMPT_FILES and serves each task with its prompt.

`load_prompt_file` reads a prompt [P, E] (or a deep prompt [layers, P, E]) as float32 from
`.npy`, `.safetensors` or a PEFT prompt-tuning adapter directory, refusing pickles, NaN/inf
and other shapes. Imports only the prompt's slot (`ptune.prompts.slot`) of ptune's prompts,
so the initializers' `from_file` can read through it.
"""

from __future__ import annotations

import json
import os
from typing import Mapping, Sequence

import numpy as np

from ptune import atomic
from ptune.errors import UserError
from ptune.prompts.slot import PROMPT_PATH

PROMPT_STEM = ".".join(PROMPT_PATH)
BANK_FILE = "bank.json"  # a multi-task bank's manifest


def save_prompt(directory: str, prompt: np.ndarray, stem: str = PROMPT_STEM) -> list[str]:
    """Writes prompt [P, E] float32 as `<stem>.npy` and `<stem>.safetensors`; returns paths."""
    from safetensors.numpy import save_file

    value = np.asarray(prompt, dtype=np.float32)
    npy = os.path.join(directory, stem + ".npy")
    safe = os.path.join(directory, stem + ".safetensors")

    def write_npy(tmp):
        with open(tmp, "wb") as f:
            np.save(f, value, allow_pickle=False)

    atomic.write(npy, write_npy)
    atomic.write(safe, lambda tmp: save_file({"prompt": value}, tmp))
    return [npy, safe]


def step_directory(model_dir: str, step: int) -> str:
    return os.path.join(model_dir, "numpy_checkpoints", f"checkpoint_{step}")


def best_directory(model_dir: str) -> str:
    return os.path.join(model_dir, "numpy_checkpoints", "best")


def save_bank(directory: str, named: Mapping[str, np.ndarray]) -> list[str]:
    """Writes each task's prompt [P, E] as `<task>.npy`/`.safetensors` and `bank.json`."""
    paths = []
    for name, value in named.items():
        paths += save_prompt(directory, value, stem=name)
    manifest = os.path.join(directory, BANK_FILE)
    atomic.write_json(manifest, {"tasks": list(named)})
    return paths + [manifest]


def is_bank(path: str) -> bool:
    return os.path.isfile(os.path.join(path, BANK_FILE))


def read_bank(directory: str) -> dict[str, str]:
    """{task: prompt file} of a bank directory written by `save_bank`, in the bank's order."""
    manifest = os.path.join(directory, BANK_FILE)
    try:
        with open(manifest) as f:
            tasks = json.load(f)["tasks"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"prompt bank {directory}: unreadable {BANK_FILE} ({e})") from e
    files = {task: os.path.join(directory, f"{task}.npy") for task in tasks}
    missing = [f for f in files.values() if not os.path.isfile(f)]
    if missing:
        raise UserError(f"prompt bank {directory}: {missing[0]} is missing")
    return files


def load_prompt_file(path: str, deep: bool = False) -> np.ndarray:
    """Reads a prompt [P, E] (with `deep`, also a deep prompt [layers, P, E]) as float32;
    refuses pickles, NaN/inf and other shapes."""
    if not os.path.exists(path):
        parent = os.path.dirname(os.path.abspath(path))
        if os.path.isfile(os.path.join(parent, BANK_FILE)):
            held = sorted(n[:-4] for n in os.listdir(parent) if n.endswith(".npy"))
            raise UserError(
                f"prompt file {path} does not exist: the prompt bank {parent} holds the "
                f"tasks {', '.join(held)}"
            )
        raise UserError(f"prompt file {path} does not exist")
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, BANK_FILE)):
        raise UserError(
            f"{path} is a multi-task prompt bank: name one task's prompt "
            f"({os.path.join(path, '<task>.npy')}), or pass the directory to `ptune infer`"
        )
    if os.path.isdir(path):
        adapter = os.path.join(path, "adapter_model.safetensors")
        if not os.path.isfile(adapter):
            raise UserError(
                f"prompt directory {path} holds no adapter_model.safetensors "
                "(a PEFT prompt-tuning adapter)"
            )
        _check_peft_config(path)
        value = _read_safetensors(adapter, preferred=("prompt_embeddings",))
    elif path.endswith(".npy"):
        value = _read_npy(path)
    elif path.endswith(".safetensors"):
        value = _read_safetensors(path, preferred=("prompt", "prompt_embeddings"))
    else:
        raise UserError(
            f"prompt file {path}: expected a .npy or .safetensors file or a PEFT adapter directory"
        )
    if value.ndim == 3 and not deep:
        raise UserError(
            f"prompt file {path} holds a deep (per-layer) prompt {value.shape}: `ptune eval` "
            "reads it; this command takes a prompt [length, embed]"
        )
    if value.ndim not in ((2, 3) if deep else (2,)):
        raise UserError(
            f"prompt file {path}: expected a matrix [length, embed], got shape {value.shape}"
        )
    if not np.issubdtype(value.dtype, np.floating):
        raise UserError(f"prompt file {path}: expected floating point values, got {value.dtype}")
    value = value.astype(np.float32)
    if not np.isfinite(value).all():
        bad = int(np.sum(~np.isfinite(value)))
        raise UserError(f"prompt file {path}: {bad} values are NaN or infinite")
    return value


def _check_peft_config(directory: str) -> None:
    """A PEFT adapter is a ptune prompt when its adapter_config.json says prompt tuning with
    one set of virtual tokens (in front of the input; PEFT's seq2seq default of 2 puts a
    second set in front of the decoder's, which ptune's prompts do not have)."""
    path = os.path.join(directory, "adapter_config.json")
    where = f"PEFT adapter {directory}"
    if not os.path.isfile(path):
        raise UserError(f"{where} holds no adapter_config.json: cannot tell what it adapts")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as e:  # UnicodeDecodeError is a ValueError
        raise UserError(f"{where}: cannot read adapter_config.json ({e})") from e
    if not isinstance(config, dict):
        raise UserError(f"{where}: adapter_config.json is not a JSON object")
    if config.get("peft_type") != "PROMPT_TUNING":
        raise UserError(
            f"{where} is a {config.get('peft_type')!r} adapter; ptune reads PROMPT_TUNING ones"
        )
    if config.get("num_transformer_submodules") not in (None, 1):
        raise UserError(
            f"{where} has num_transformer_submodules {config['num_transformer_submodules']}: "
            "its virtual tokens go in front of the decoder's inputs too, which ptune's prompts "
            "do not; export with num_transformer_submodules=1"
        )


NPY_MAGIC = b"\x93NUMPY"  # how every .npy file begins (numpy.lib.format)


def _read_npy(path: str) -> np.ndarray:
    """A .npy file's array; anything else (a text file named .npy, a truncated or pickled
    array) is one `UserError` naming the file. numpy reads a file without its magic as a
    pickle and suggests `allow_pickle`, advice ptune never gives: it never unpickles."""
    try:
        with open(path, "rb") as f:
            magic = f.read(len(NPY_MAGIC))
    except OSError as e:
        raise UserError(f"prompt file {path} cannot be read ({e.strerror})") from e
    if magic != NPY_MAGIC:
        raise UserError(
            f"prompt file {path} is not a numpy array (.npy) file: it does not start with "
            "numpy's header (write it with numpy.save)"
        )
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e):  # an array of Python objects
            raise UserError(
                f"prompt file {path}: not a plain numpy array (it holds Python objects, "
                "which ptune never unpickles)"
            ) from e
        raise UserError(f"prompt file {path}: not a plain numpy array ({e})") from e
    except (OSError, EOFError) as e:
        raise UserError(f"prompt file {path}: not a plain numpy array (truncated: {e})") from e


def _read_safetensors(path: str, preferred: Sequence[str]) -> np.ndarray:
    from safetensors.numpy import load_file

    try:
        tensors = load_file(path)
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise UserError(f"prompt file {path} is not a readable safetensors file ({e})") from e
    for key in preferred:
        if key in tensors:
            return tensors[key]
    if len(tensors) == 1:
        return next(iter(tensors.values()))
    raise UserError(
        f"prompt file {path}: holds {sorted(tensors)}; expected one tensor or one "
        f"named {' or '.join(preferred)}"
    )
