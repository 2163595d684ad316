"""Prompt exports: `.npy` and `.safetensors`, written atomically.

Named after the original project's numpy checkpoints: the file stem is the parameter path
with dots, `encoder.prompt.prompt`, under `MODEL_DIR/numpy_checkpoints/checkpoint_<step>/`
(and `.../best/` for the best validation step). Either file loads with
`prompts.from_file` / `ptune eval --gin.PROMPT_FILE=...`.
"""

from __future__ import annotations

import os

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
