"""Hugging Face decoder-only directories (Llama, Mistral, Qwen2): `config.json` +
`model.safetensors` or shards with `model.safetensors.index.json`.

The configuration comes from `config.json` (`ptune.models.llama.from_hf_config`). Names and
shapes are checked strictly against it first (`llama.hf_sources`: every missing, unexpected
or mis-shaped tensor named), then tensors are read straight from the safetensors files
(`hf.read_safetensors_index`; bfloat16 included, cast to the target dtype as it is read),
with a device mesh each device reading only its own slices.
Pickled `pytorch_model.bin` files are refused, never unpickled.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Optional

import jax
import numpy as np

from ptune.checkpoints import hf, hub
from ptune.errors import UserError
from ptune.models import llama


def is_causal_dir(path: str) -> bool:
    """Whether `path` (a directory, or a hub id in the local cache) is a Hugging Face
    decoder-only checkpoint: its config.json names a decoder-only architecture (or
    model_type) ptune knows or refuses by name; T5 directories are not."""
    path = hub.resolve(path) if isinstance(path, str) else path
    config = os.path.join(os.fspath(path), hf.CONFIG_FILE)
    if not os.path.isfile(config):
        return False
    try:
        with open(config) as f:
            fields = json.load(f)
    except (OSError, ValueError):
        return False
    architectures = fields.get("architectures") or []
    return any(a.endswith("ForCausalLM") for a in architectures) or (
        fields.get("model_type") in llama.MODEL_TYPES
    )


def read_config(directory: str) -> llama.LlamaConfig:
    path = os.path.join(directory, hf.CONFIG_FILE)
    try:
        with open(path) as f:
            fields = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is not a readable config.json: {e}") from e
    if not isinstance(fields, dict) or not set(fields.get("architectures") or []) & set(
        llama.ARCHITECTURES
    ):
        raise hf.unsupported_architecture(path, fields)
    return llama.from_hf_config(fields)


def tensors(directory: str) -> dict:
    """{transformers name: LazyArray} of a directory's safetensors files (none read yet)."""
    out = {}
    for path in hf.weight_files(directory, model_class="AutoModelForCausalLM"):
        for name, lazy in hf.read_safetensors_index(path).items():
            if name in out:
                raise UserError(f"{directory}: tensor {name} appears in two shards")
            out[name] = lazy
    return out


def check(directory: str, config: llama.LlamaConfig) -> None:
    """Checks the directory's tensor names and shapes against `config` strictly (one error
    naming every problem), reading no tensor."""
    lazies = tensors(hub.resolve(directory))
    llama.hf_sources({name: lazy.shape for name, lazy in lazies.items()}, config)


def load(
    directory: str,
    dtype: Any = np.float32,
    scan_layers: bool = False,
    shardings: Optional[Any] = None,
):
    """-> (LlamaConfig, parameters in `dtype`), checked strictly against the configuration
    before any tensor is read (`llama.hf_sources`). Without `shardings`: numpy arrays. With
    `shardings` (a tree shaped like the parameters): jax arrays, each device reading only
    its own slice of each tensor from the files, cast as it is read."""
    directory = hub.resolve(directory)
    if not os.path.isdir(directory):
        raise UserError(f"{directory} is not a Hugging Face model directory")
    config = read_config(directory).replace(scan_layers=scan_layers)
    lazies = tensors(directory)
    sources = llama.hf_sources({name: lazy.shape for name, lazy in lazies.items()}, config)
    dtype = np.dtype(dtype)

    def read(parts, index=None):
        """The slice `index` of one parameter (a tuple of slices; None: all of it)."""
        if len(parts) > 1:  # scanned: layers stacked on axis 1
            rest = None if index is None else index[:1] + index[2:]
            chosen = parts if index is None else parts[index[1]]
            return np.stack([read([p], rest) for p in chosen], axis=1)
        ((name, transposed),) = parts
        if transposed:
            return lazies[name].read(None if index is None else index[::-1], dtype=dtype).T
        return lazies[name].read(index, dtype=dtype)

    if shardings is None:
        return config, llama.nest({path: read(parts) for path, parts in sources.items()})
    flat_shardings = dict(llama.flat(shardings))
    missing = sorted(set(sources) ^ set(flat_shardings))
    if missing:
        raise ValueError(f"shardings do not match the checkpoint's parameters: {missing[:4]}")
    params = {}
    for path, parts in sources.items():
        shape = _shape(lazies, parts)
        params[path] = jax.make_array_from_callback(
            shape, flat_shardings[path], functools.partial(read, parts)
        )
    return config, llama.nest(params)


def _shape(lazies, parts) -> tuple:
    name, transposed = parts[0]
    shape = tuple(lazies[name].shape)[::-1] if transposed else tuple(lazies[name].shape)
    return shape if len(parts) == 1 else shape[:1] + (len(parts),) + shape[1:]
