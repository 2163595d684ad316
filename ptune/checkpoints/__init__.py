"""Pretrained T5 checkpoints: t5x (legacy and Orbax), Hugging Face safetensors, ptune's own.

    from ptune import checkpoints
    config, params = checkpoints.load(path)            # format auto-detected, strict
    checkpoints.detect_format(path)                    # 't5x' | 't5x_orbax' | 'hf' | 'ptune'
    checkpoints.read_t5x_optimizer_step(path)          # e.g. 1100000
    checkpoints.convert(src, dst)                      # ptune format (Orbax), fast to restore

The numerical core: imports jax, flax, numpy, msgpack, tensorstore and orbax only (never
TensorFlow, seqio, gin or torch).
"""

from ptune.checkpoints.config_infer import infer_config
from ptune.checkpoints.loading import (
    FORMATS,
    Description,
    convert,
    describe,
    detect_format,
    load,
    open_checkpoint,
)
from ptune.checkpoints.t5x import read_t5x_optimizer_step

__all__ = [
    "FORMATS",
    "Description",
    "convert",
    "describe",
    "detect_format",
    "infer_config",
    "load",
    "open_checkpoint",
    "read_t5x_optimizer_step",
]
