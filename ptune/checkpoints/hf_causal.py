"""Hugging Face decoder-only directories (Llama, Mistral, Qwen2): `config.json` +
`model.safetensors` or shards with `model.safetensors.index.json`.

The configuration comes from `config.json` (`ptune.models.llama.from_hf_config`); tensors
are read straight from the safetensors files (`hf.read_safetensors_index`: one tensor at a
time, bfloat16 included, cast to the target dtype as it is read) and mapped strictly onto
ptune's tree (`llama.params_from_hf`: every missing, unexpected or mis-shaped tensor named).
Pickled `pytorch_model.bin` files are refused, never unpickled.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from ptune.checkpoints import hf
from ptune.errors import UserError
from ptune.models import llama


def read_config(directory: str) -> llama.LlamaConfig:
    path = os.path.join(directory, hf.CONFIG_FILE)
    try:
        with open(path) as f:
            fields = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is not a readable config.json: {e}") from e
    return llama.from_hf_config(fields)


def load(directory: str, dtype: Any = np.float32, scan_layers: bool = False):
    """-> (LlamaConfig, parameters as numpy arrays in `dtype`)."""
    if not os.path.isdir(directory):
        raise UserError(f"{directory} is not a Hugging Face model directory")
    config = read_config(directory).replace(scan_layers=scan_layers)
    tensors = {}
    for path in hf.weight_files(directory, model_class="AutoModelForCausalLM"):
        for name, lazy in hf.read_safetensors_index(path).items():
            if name in tensors:
                raise UserError(f"{directory}: tensor {name} appears in two shards")
            tensors[name] = lazy
    read = {name: lazy.read(dtype=np.dtype(dtype)) for name, lazy in tensors.items()}
    return config, llama.params_from_hf(read, config)
