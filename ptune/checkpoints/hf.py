"""Hugging Face T5 / mT5 directories: `config.json` + `model.safetensors` (or shards).

Name mapping to t5x (HF `nn.Linear.weight` is [out, in], the transpose of a t5x kernel):

    shared.weight                                     token_embedder/embedding
    {stack}.block.{i}.layer.{j}.{SelfAttention|EncDecAttention}.{q,k,v,o}.weight  (.T)
        -> {stack}/layers_{i}/{attention|self_attention|encoder_decoder_attention}/
           {query,key,value,out}/kernel
    {stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight [buckets, heads]
        -> {stack}/relpos_bias/rel_embedding [heads, buckets]  (.T; block 0 only)
    {stack}.block.{i}.layer.{j}.layer_norm.weight     pre_*_layer_norm/scale
    {stack}.block.{i}.layer.{j}.DenseReluDense.{wi,wi_0,wi_1,wo}.weight  (.T)  mlp/.../kernel
    {stack}.final_layer_norm.weight                   {encoder_norm|decoder_norm}/scale
    lm_head.weight [vocab, embed]                     decoder/logits_dense/kernel (.T)

T5 1.0 vs 1.1 comes from config.json: `feed_forward_proj` ('relu', 'gated-gelu', ...) gives
the MLP; `tie_word_embeddings` (default true; transformers 5 writes `scale_decoder_outputs`
instead) tells whether logits are the embedding scaled by emb_dim**-0.5 (T5 1.0, ptune's
`logits_via_embedding`) or an unscaled output layer (T5 1.1: `lm_head.weight`, or `shared`
itself when a tied-but-unscaled copy saved none). `encoder/decoder.embed_tokens.weight` are
copies of `shared` and are ignored, as is the unused cross-attention relative bias some
copies carry. An embedding resized to its tokenizer (32,100 rows) is padded back with zero
rows to the next multiple of 128 (32,128), so that token ids keep their rows; the padded ids
get logit 0 and should be masked when decoding.

The safetensors format (8-byte little-endian header length, a JSON header of name ->
dtype/shape/byte range, raw little-endian data) is read here directly: one tensor (or one
row range) per read, bfloat16 included, which `safetensors.numpy` cannot hold. Pickled
`pytorch_model.bin` files are refused, never unpickled.
"""

from __future__ import annotations

import json
import os
import re
import struct

import jax.numpy as jnp
import numpy as np

from ptune.checkpoints import lazy_arrays
from ptune.checkpoints.lazy_arrays import LazyArray
from ptune.checkpoints.restore import VOCAB_PAD_MULTIPLE, CheckpointSource
from ptune.errors import UserError
from ptune.models import llama

CONFIG_FILE = "config.json"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
T5_MODEL_TYPES = ("t5", "mt5")
T5_ARCHITECTURES = ("T5ForConditionalGeneration", "MT5ForConditionalGeneration")
PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": jnp.bfloat16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}
_ACTIVATIONS = {
    "relu": "relu",
    "gelu_new": "gelu",
    "gelu": "gelu_exact",
    "silu": "silu",
    "swish": "silu",
}
_ATTENTION = {
    ("encoder", 0): "attention",
    ("decoder", 0): "self_attention",
    ("decoder", 1): "encoder_decoder_attention",
}
_ATTENTION_MODULE = {
    "attention": "SelfAttention",
    "self_attention": "SelfAttention",
    "encoder_decoder_attention": "EncDecAttention",
}
_NORMS = {
    ("encoder", 0): "pre_attention_layer_norm",
    ("encoder", 1): "pre_mlp_layer_norm",
    ("decoder", 0): "pre_self_attention_layer_norm",
    ("decoder", 1): "pre_cross_attention_layer_norm",
    ("decoder", 2): "pre_mlp_layer_norm",
}
_MLP_SUBLAYER = {"encoder": 1, "decoder": 2}
_PROJECTIONS = {"q": "query", "k": "key", "v": "value", "o": "out"}
_IGNORED = (
    "encoder.embed_tokens.weight",
    "decoder.embed_tokens.weight",
    "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",
)


def read_safetensors_index(path: str) -> dict[str, LazyArray]:
    """name -> LazyArray for one safetensors file (header only; no tensor is read)."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > size - 8:
                raise ValueError(f"header length {length} exceeds the file size {size}")
            header = json.loads(f.read(length))
    except (OSError, ValueError, struct.error) as e:
        raise UserError(f"{path} is not a readable safetensors file: {e}") from e
    data_start = 8 + length
    arrays = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = np.dtype(_DTYPES[info["dtype"]])
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(
                f"{path}: unsupported or malformed header entry {name!r}: {info}"
            ) from e
        if end - begin != dtype.itemsize * int(np.prod(shape)) or data_start + end > size:
            raise UserError(f"{path}: tensor {name!r} lies outside the file (truncated?)")
        arrays[name] = _tensor(path, name, dtype, shape, data_start + begin)
    return arrays


def _tensor(path: str, name: str, dtype: np.dtype, shape: tuple, offset: int) -> LazyArray:
    """Reads only the leading-axis row range of a slice (C order keeps it contiguous)."""
    row = dtype.itemsize * int(np.prod(shape[1:])) if shape else dtype.itemsize

    def read(index):
        if not shape:
            return np.fromfile(path, dtype, 1, offset=offset).reshape(())
        rows = index[0]
        count = (rows.stop - rows.start) * (row // dtype.itemsize)
        block = np.fromfile(path, dtype, count, offset=offset + rows.start * row)
        return block.reshape((rows.stop - rows.start,) + shape[1:])[(slice(None),) + index[1:]]

    return LazyArray(shape, dtype, read, f"{path}[{name}]")


def weight_files(directory: str, model_class: str = "T5ForConditionalGeneration") -> list[str]:
    """The safetensors files of an HF directory (one, or the shards its index names);
    pickles are refused with the conversion command (`model_class` loads them)."""
    index = os.path.join(directory, INDEX_FILE)
    if os.path.isfile(index):
        try:
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"{index} is not a valid safetensors index: {e}") from e
        files = sorted(set(weight_map.values()))
        absent = [f for f in files if not os.path.isfile(os.path.join(directory, f))]
        if absent:
            raise UserError(f"{index} names shard(s) that are missing: {', '.join(absent)}")
        return [os.path.join(directory, f) for f in files]
    single = os.path.join(directory, SINGLE_FILE)
    if os.path.isfile(single):
        return [single]
    if any(os.path.isfile(os.path.join(directory, p)) for p in PICKLE_FILES):
        raise UserError(
            f"{directory} holds only pytorch_model.bin, a Python pickle, which ptune never "
            "unpickles (loading a pickle can run arbitrary code). Convert it to safetensors "
            'where PyTorch is installed: python -c "from transformers import '
            f"{model_class} as M; M.from_pretrained('{directory}')"
            f".save_pretrained('{directory}-safetensors', safe_serialization=True)\""
        )
    raise UserError(f"{directory} has {CONFIG_FILE} but no {SINGLE_FILE} or {INDEX_FILE}")


def unsupported_architecture(path: str, fields) -> UserError:
    """The one error for a config.json of a model ptune does not load: it names what the file
    describes and every architecture ptune loads (T5/mT5 here, decoder-only in `llama`)."""
    fields = fields if isinstance(fields, dict) else {}
    architectures = fields.get("architectures") or []
    named = ", ".join(str(a) for a in architectures) if architectures else "none named"
    return UserError(
        f"{path} describes model_type {fields.get('model_type')!r}, not a T5/mT5 or a "
        f"decoder-only model ptune loads (its architectures: {named}); ptune loads T5/mT5 "
        f"({', '.join(T5_ARCHITECTURES)}) and decoder-only "
        f"{', '.join(llama.ARCHITECTURES)}"
    )


def read_config(directory: str) -> dict:
    """T5Config fields stated by config.json (the `hints` of the checkpoint)."""
    path = os.path.join(directory, CONFIG_FILE)
    try:
        with open(path) as f:
            hf = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {path}: {e}") from e
    if not isinstance(hf, dict) or hf.get("model_type") not in T5_MODEL_TYPES:
        raise unsupported_architecture(path, hf)
    epsilon = hf.get("layer_norm_epsilon", 1e-6)
    if abs(float(epsilon) - 1e-6) > 1e-12:
        raise UserError(
            f"{path}: layer_norm_epsilon {epsilon} is not T5's 1e-6, which ptune's model fixes"
        )
    proj = str(hf.get("feed_forward_proj", "relu"))
    parts = proj.split("-")
    gated = len(parts) == 2 and parts[0] == "gated"
    act = "gelu_new" if proj == "gated-gelu" else parts[-1]
    if act not in _ACTIVATIONS or (len(parts) == 2 and not gated) or len(parts) > 2:
        raise UserError(f"{path}: unsupported feed_forward_proj {proj!r}")
    activation = _ACTIVATIONS[act]
    scaled = hf.get("scale_decoder_outputs", hf.get("tie_word_embeddings", True))
    try:
        hints = {
            "emb_dim": int(hf["d_model"]),
            "num_heads": int(hf["num_heads"]),
            "head_dim": int(hf["d_kv"]),
            "mlp_dim": int(hf["d_ff"]),
            "num_encoder_layers": int(hf["num_layers"]),
            "num_decoder_layers": int(hf.get("num_decoder_layers") or hf["num_layers"]),
            "relative_attention_num_buckets": int(hf.get("relative_attention_num_buckets", 32)),
            "relative_attention_max_distance": int(hf.get("relative_attention_max_distance", 128)),
            "dropout_rate": float(hf.get("dropout_rate", 0.1)),
            "mlp_activations": (activation, "linear") if gated else (activation,),
            "logits_via_embedding": bool(scaled),
        }
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path}: missing or malformed T5 field {e}") from e
    return hints


def _map_name(name: str) -> tuple[str, bool] | None:
    """HF tensor name -> (t5x name, transpose?) or None when it is no T5 parameter."""
    if name == "shared.weight":
        return "token_embedder/embedding", False
    if name == "lm_head.weight":
        return "decoder/logits_dense/kernel", True
    m = re.fullmatch(r"(encoder|decoder)\.final_layer_norm\.weight", name)
    if m:
        return f"{m.group(1)}/{m.group(1)}_norm/scale", False
    m = re.fullmatch(r"(encoder|decoder)\.block\.(\d+)\.layer\.(\d+)\.(.+)\.weight", name)
    if not m:
        return None
    stack, block, sub, rest = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)
    prefix = f"{stack}/layers_{block}"
    if rest == "layer_norm" and (stack, sub) in _NORMS:
        return f"{prefix}/{_NORMS[stack, sub]}/scale", False
    attention = _ATTENTION.get((stack, sub))
    if attention:
        module = _ATTENTION_MODULE[attention]
        if rest == f"{module}.relative_attention_bias" and block == 0 and sub == 0:
            return f"{stack}/relpos_bias/rel_embedding", True
        p = re.fullmatch(rf"{module}\.([qkvo])", rest)
        if p:
            return f"{prefix}/{attention}/{_PROJECTIONS[p.group(1)]}/kernel", True
    if sub == _MLP_SUBLAYER[stack]:
        p = re.fullmatch(r"DenseReluDense\.(wi|wi_0|wi_1|wo)", rest)
        if p:
            return f"{prefix}/mlp/{p.group(1)}/kernel", True
    return None


def open_checkpoint(path: str) -> CheckpointSource:
    """Opens a HF directory (or a file inside it): config + tensor headers, no tensor data."""
    directory = os.path.dirname(path) if os.path.isfile(path) else path
    hints = read_config(directory)
    tensors: dict[str, LazyArray] = {}
    for file in weight_files(directory):
        tensors.update(read_safetensors_index(file))
    if "shared.weight" not in tensors and "encoder.embed_tokens.weight" in tensors:
        tensors["shared.weight"] = tensors.pop("encoder.embed_tokens.weight")
    if hints["logits_via_embedding"]:
        tensors.pop("lm_head.weight", None)  # a tied copy of shared.weight
    elif "lm_head.weight" not in tensors and "shared.weight" in tensors:
        tensors["lm_head.weight"] = tensors["shared.weight"]  # tied but unscaled
    arrays, unexpected = {}, []
    for name, tensor in tensors.items():
        mapped = _map_name(name)
        if mapped is None:
            if name not in _IGNORED:
                unexpected.append(f"{name} ({tensor.origin})")
            continue
        t5x_name, transpose = mapped
        arrays[t5x_name] = lazy_arrays.transposed(tensor) if transpose else tensor
    embedding = arrays.get("token_embedder/embedding")
    if embedding is not None and len(embedding.shape) == 2:
        rows = embedding.shape[0]
        hints["vocab_size"] = -(-rows // VOCAB_PAD_MULTIPLE) * VOCAB_PAD_MULTIPLE
    return CheckpointSource(
        path=directory,
        format="hf",
        arrays=arrays,
        hints=hints,
        unexpected=unexpected,
        vocab_padding=True,
    )
