"""Hugging Face decoder-only directories (Llama, Mistral, Qwen2, Qwen3): `config.json` +
`model.safetensors` or shards with `model.safetensors.index.json`.

The configuration comes from `config.json` (`ptune.models.llama.from_hf_config`). Names and
shapes are checked strictly against it first (`hf_sources`: every missing, unexpected
or mis-shaped tensor named), then tensors are read straight from the safetensors files
(`hf.read_safetensors_index`; bfloat16 included, cast to the target dtype as it is read),
with a device mesh each device reading only its own slices. The weight mapping:

    model.embed_tokens.weight                    -> embed_tokens
    model.layers.{i}.{self_attn|mlp}.{p}.weight  -> layers_{i}/{self_attn|mlp}/{p}/kernel (.T)
    model.layers.{i}.self_attn.{p}.bias          -> layers_{i}/self_attn/{p}/bias
    model.layers.{i}.{norm}.weight               -> layers_{i}/{norm}/scale
    model.layers.{i}.self_attn.{q|k}_norm.weight -> layers_{i}/self_attn/{q|k}_norm/scale
    model.norm.weight, lm_head.weight            -> norm/scale, lm_head/kernel (.T)

(with `scan_layers`: stacked on axis 1 as `layers/...`). `params_from_hf` maps an in-memory
state dict the same way.
Pickled `pytorch_model.bin` files are refused, never unpickled.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Mapping, Optional

import jax
import numpy as np
from flax import linen as nn
from flax import traverse_util

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
    if not isinstance(fields, dict):  # not a model's configuration: `hf` says so
        return False
    architectures = fields.get("architectures") or []
    if not isinstance(architectures, list):
        architectures = [architectures]
    return any(str(a).endswith("ForCausalLM") for a in architectures) or (
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
    hf_sources({name: lazy.shape for name, lazy in lazies.items()}, config)


def load(
    directory: str,
    dtype: Any = np.float32,
    scan_layers: bool = False,
    shardings: Optional[Any] = None,
):
    """-> (LlamaConfig, parameters in `dtype`), checked strictly against the configuration
    before any tensor is read (`hf_sources`). Without `shardings`: numpy arrays. With
    `shardings` (a tree shaped like the parameters): jax arrays, each device reading only
    its own slice of each tensor from the files, cast as it is read."""
    directory = hub.resolve(directory)
    if not os.path.isdir(directory):
        raise UserError(f"{directory} is not a Hugging Face model directory")
    config = read_config(directory).replace(scan_layers=scan_layers)
    lazies = tensors(directory)
    sources = hf_sources({name: lazy.shape for name, lazy in lazies.items()}, config)
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
        params = {path: read(parts) for path, parts in sources.items()}
        return config, traverse_util.unflatten_dict(params, sep="/")
    flat_shardings = traverse_util.flatten_dict(shardings, sep="/")
    missing = sorted(set(sources) ^ set(flat_shardings))
    if missing:
        raise ValueError(f"shardings do not match the checkpoint's parameters: {missing[:4]}")
    params = {}
    for path, parts in sources.items():
        shape = _shape(lazies, parts)
        params[path] = jax.make_array_from_callback(
            shape, flat_shardings[path], functools.partial(read, parts)
        )
    return config, traverse_util.unflatten_dict(params, sep="/")


def _shape(lazies, parts) -> tuple:
    name, transposed = parts[0]
    shape = tuple(lazies[name].shape)[::-1] if transposed else tuple(lazies[name].shape)
    return shape if len(parts) == 1 else shape[:1] + (len(parts),) + shape[1:]


def hf_sources(shapes: Mapping[str, tuple], config: llama.LlamaConfig) -> dict[str, list]:
    """Where each ptune parameter comes from, checked strictly against transformers' state
    dict names and shapes (one error lists every missing, unexpected or mis-shaped tensor;
    `lm_head.weight` is ignored with tied embeddings) before anything is read.

    shapes: {transformers name: shape} -> {ptune path: [(name, transposed), ...]}: one
    source, or with `scan_layers` one per layer, stacked on axis 1 (`layers/...`)."""
    expected = {
        name: tuple(x.shape)
        for name, x in traverse_util.flatten_dict(
            nn.unbox(llama.abstract_params(config.replace(scan_layers=False))), sep="/"
        ).items()
    }
    found, problems = {}, []
    for name, shape in shapes.items():
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # a saved copy of the tied embedding
        target = _ptune_name(name)
        if target is None or target not in expected:
            problems.append(f"unexpected {name}")
            continue
        transposed = target.endswith("kernel")
        shape = tuple(shape)[::-1] if transposed else tuple(shape)
        if shape != expected[target]:
            shown = shape[::-1] if transposed else shape
            problems.append(f"{name} has shape {shown}, expected {expected[target]}")
            continue
        found[target] = (name, transposed)
    problems += [f"missing {n}" for n in sorted(set(expected) - set(found))]
    if problems:
        raise UserError("the checkpoint does not fit the model: " + "; ".join(problems[:8]))
    if not config.scan_layers:
        return {path: [source] for path, source in found.items()}
    out: dict[str, list] = {}
    for path, source in sorted(found.items(), key=lambda item: _layer_order(item[0])):
        head, _, rest = path.partition("/")
        key = f"layers/{rest}" if head.startswith("layers_") else path
        out.setdefault(key, []).append(source)
    return out


def _layer_order(path: str) -> tuple:
    head, _, rest = path.partition("/")
    return (int(head[7:]), rest) if head.startswith("layers_") else (-1, path)


def params_from_hf(state: Mapping[str, Any], config: llama.LlamaConfig) -> dict:
    """transformers' state dict (names -> arrays, or anything `np.asarray` reads) ->
    ptune's parameter tree, strictly (`hf_sources`)."""
    sources = hf_sources({name: tuple(np.shape(v)) for name, v in state.items()}, config)

    def read(name, transposed):
        value = np.asarray(state[name])
        return value.T if transposed else value

    return traverse_util.unflatten_dict(
        {
            path: read(*parts[0]) if len(parts) == 1 else np.stack([read(*p) for p in parts], 1)
            for path, parts in sources.items()
        },
        sep="/",
    )


def _ptune_name(name: str) -> Optional[str]:
    """`model.layers.3.self_attn.q_proj.weight` -> `layers_3/self_attn/q_proj/kernel`."""
    parts = name.split(".")
    if name == "model.embed_tokens.weight":
        return "embed_tokens"
    if name == "model.norm.weight":
        return "norm/scale"
    if name == "lm_head.weight":
        return "lm_head/kernel"
    if len(parts) < 5 or parts[:2] != ["model", "layers"] or not parts[2].isdigit():
        return None
    layer, rest = f"layers_{parts[2]}", parts[3:]
    if rest in (["input_layernorm", "weight"], ["post_attention_layernorm", "weight"]):
        return f"{layer}/{rest[0]}/scale"
    if rest in (["self_attn", "q_norm", "weight"], ["self_attn", "k_norm", "weight"]):
        return f"{layer}/self_attn/{rest[1]}/scale"
    if len(rest) == 3 and rest[0] in ("self_attn", "mlp") and rest[2] in ("weight", "bias"):
        return f"{layer}/{rest[0]}/{rest[1]}/{'kernel' if rest[2] == 'weight' else 'bias'}"
    return None
