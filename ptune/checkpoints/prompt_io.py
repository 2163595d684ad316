"""Prompt exports: `.npy` and `.safetensors`, written atomically.

Named after the original project's numpy checkpoints: the file stem is the parameter path
with dots, `encoder.prompt.prompt`, under `MODEL_DIR/numpy_checkpoints/checkpoint_<step>/`
(and `.../best/` for the best validation step). Either file loads with
`prompts.from_file` / `ptune eval --gin.PROMPT_FILE=...`.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

PROMPT_STEM = "encoder.prompt.prompt"


def _atomic_write(path: str, write) -> None:
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_prompt(directory: str, prompt: np.ndarray, stem: str = PROMPT_STEM) -> list[str]:
    """Writes prompt [P, E] float32 as `<stem>.npy` and `<stem>.safetensors`; returns paths."""
    from safetensors.numpy import save_file

    value = np.asarray(prompt, dtype=np.float32)
    npy = os.path.join(directory, stem + ".npy")
    safe = os.path.join(directory, stem + ".safetensors")

    def write_npy(tmp):
        with open(tmp, "wb") as f:
            np.save(f, value, allow_pickle=False)

    _atomic_write(npy, write_npy)
    _atomic_write(safe, lambda tmp: save_file({"prompt": value}, tmp))
    return [npy, safe]


def step_directory(model_dir: str, step: int) -> str:
    return os.path.join(model_dir, "numpy_checkpoints", f"checkpoint_{step}")
