"""Writes parameters in the legacy t5x layout (msgpack `checkpoint` + gzip zarr arrays).

The layout `ptune.checkpoints.t5x` reads, as t5x itself writes it: arrays of rank >= 2 go to
zarr directories named by their dotted path (`target.encoder.layers_0.mlp.wo.kernel`) and are
referenced from the msgpack file by a relative tensorstore spec; small ones (layer norm
scales) are stored inline as flax-msgpack arrays. Used to build test and benchmark
checkpoints (for example a Base-size one to measure load memory) and to hand frozen models
back to t5x tooling. Arrays are written one at a time.
"""

from __future__ import annotations

import os
from typing import Mapping

import msgpack
import numpy as np
import tensorstore as ts
from flax import traverse_util

from ptune import atomic
from ptune.checkpoints.t5x import CHECKPOINT_FILE
from ptune.errors import UserError

_CHUNK_BYTES = 64 * 1024 * 1024  # t5x's target chunk size


def _pack_ndarray(array: np.ndarray) -> msgpack.ExtType:
    array = np.ascontiguousarray(array)
    data = msgpack.packb((array.shape, array.dtype.name, array.tobytes()), use_bin_type=True)
    return msgpack.ExtType(1, data)


def _chunks(shape: tuple[int, ...], itemsize: int) -> list[int]:
    """Halves the largest dimension until a chunk is at most 64 MiB (t5x's rule, simplified)."""
    chunks = list(shape)
    while int(np.prod(chunks)) * itemsize > _CHUNK_BYTES:
        i = int(np.argmax(chunks))
        chunks[i] = -(-chunks[i] // 2)
    return chunks


def write_checkpoint(params: Mapping, directory: str, step: int = 0) -> str:
    """Writes `params` (nested dict of arrays) as `directory` (a t5x `checkpoint_<step>`)."""
    if os.path.exists(os.path.join(directory, CHECKPOINT_FILE)):
        raise UserError(f"{directory} already holds a t5x checkpoint")
    os.makedirs(directory, exist_ok=True)
    target = {}
    for key, value in traverse_util.flatten_dict(dict(params)).items():
        array = np.asarray(value)
        if array.ndim < 2:
            target[key] = _pack_ndarray(array)
            continue
        relative = "target." + ".".join(key)
        metadata = {
            "chunks": _chunks(array.shape, array.dtype.itemsize),
            "compressor": {"id": "gzip", "level": 1},
            "dtype": array.dtype.str if array.dtype.name != "bfloat16" else "bfloat16",
            "shape": list(array.shape),
        }
        spec = {
            "driver": "zarr",
            "kvstore": {"driver": "file", "path": os.path.join(directory, relative)},
            "metadata": metadata,
        }
        store = ts.open(spec, create=True, open=True).result()
        store.write(array).result()
        target[key] = {
            "driver": "zarr",
            "kvstore": {"driver": "gfile", "path": relative},
            "metadata": metadata,
        }
        del array, store
    state = {
        "version": 3,
        "optimizer": {
            "target": traverse_util.unflatten_dict(target),
            "state": {"step": step, "param_states": {}},
        },
    }
    packed = msgpack.packb(state, use_bin_type=True)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(packed)

    atomic.write(os.path.join(directory, CHECKPOINT_FILE), write)
    return directory
