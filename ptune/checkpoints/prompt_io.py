"""Prompt exports: `.npy` and `.safetensors`, written atomically.

Named after the original project's numpy checkpoints: the file stem is the parameter path
with dots, `encoder.prompt.prompt`, under `MODEL_DIR/numpy_checkpoints/checkpoint_<step>/`
(and `.../best/` for the best validation step). Either file loads with
`prompts.from_file` / `ptune eval --gin.PROMPT_FILE=...`.

A multi-task bank is one prompt per task, each as `<task>.npy` and `<task>.safetensors`, and
`bank.json` ({"tasks": [...]}, in the bank's order); `ptune infer` takes the directory as
PROMPT_FILES and serves each task with its prompt.
"""

from __future__ import annotations

import json
import os
from typing import Mapping

import numpy as np

from ptune import atomic, prompts

PROMPT_STEM = ".".join(prompts.PROMPT_PATH)


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


BANK_FILE = prompts.BANK_FILE


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
    from ptune.errors import UserError

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
