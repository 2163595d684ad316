"""Arrays that are read from storage only when, and only as much as, they are needed.

Every reader (`t5x`, `hf`, `orbax_params`) describes a checkpoint as a flat dict of
`LazyArray`s keyed by t5x parameter names. Layout changes (HF's transposed weights, stacking
`layers_{i}` for a scanned model, padding a resized vocabulary) are lazy views that map an
index into the result to indices into their sources, so that a sharded restore reads only
the slice each device needs and an unsharded one holds at most one parameter in its source
dtype at a time, never a second copy of the model.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

import numpy as np

Index = tuple[slice, ...]


@dataclasses.dataclass(frozen=True)
class LazyArray:
    """`shape`, `dtype` (the stored dtype) and a reader of any rectangular slice.

    `reader(index)` gets one concrete `slice(start, stop)` per axis (step 1) and returns a
    numpy array of that slice in `dtype`. `origin` names the file (and entry) for messages.
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    reader: Callable[..., np.ndarray]
    origin: str
    casts: bool = False  # the reader takes (index, dtype) and casts as it reads

    def read(self, index: Optional[Sequence] = None, dtype=None) -> np.ndarray:
        """The slice `index` (slices or None per axis; None = everything), cast to `dtype`."""
        index = normalize_index(index, self.shape)
        out = np.asarray(self.reader(index, dtype) if self.casts else self.reader(index))
        expected = tuple(s.stop - s.start for s in index)
        if out.shape != expected:
            raise ValueError(f"{self.origin}: read {out.shape} for slice {expected}")
        if (dtype is not None and out.dtype != np.dtype(dtype)) or not is_aligned(out):
            cast = aligned_empty(out.shape, dtype if dtype is not None else out.dtype)
            np.copyto(cast, out, casting="unsafe")
            out = cast
        return out


# XLA's CPU client adopts a host buffer without copying when it is this aligned; otherwise it
# copies, and the freed numpy buffers stay in the heap (measured: ~20% of a model's size).
ALIGNMENT = 64


def aligned_empty(shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on an `ALIGNMENT` boundary."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buffer = np.empty(nbytes + ALIGNMENT, np.uint8)
    offset = (-buffer.ctypes.data) % ALIGNMENT
    return buffer[offset : offset + nbytes].view(dtype).reshape(shape)


def is_aligned(array: np.ndarray) -> bool:
    return array.flags.c_contiguous and array.ctypes.data % ALIGNMENT == 0


def normalize_index(index: Optional[Sequence], shape: tuple[int, ...]) -> Index:
    """Concrete `slice(start, stop)` per axis; what `jax.make_array_from_callback` passes
    (slices with None bounds, possibly fewer than the rank) becomes explicit."""
    index = tuple(index or ())
    if len(index) > len(shape):
        raise ValueError(f"index {index} has more axes than shape {shape}")
    index = index + (slice(None),) * (len(shape) - len(index))
    out = []
    for s, n in zip(index, shape):
        if not isinstance(s, slice):
            raise TypeError(f"only slices are supported, got {s!r}")
        start, stop, step = s.indices(n)
        if step != 1:
            raise ValueError(f"strided reads are not supported: {s!r}")
        out.append(slice(start, max(start, stop)))
    return tuple(out)


def in_memory(array: np.ndarray, origin: str) -> LazyArray:
    """An array that is already in host memory (inline in a t5x msgpack file)."""
    array = np.asarray(array)
    return LazyArray(tuple(array.shape), array.dtype, lambda index: array[index], origin)


def transposed(source: LazyArray) -> LazyArray:
    """The 2-D transpose: HF's `nn.Linear.weight` [out, in] is t5x's kernel [in, out]."""
    if len(source.shape) != 2:
        raise ValueError(f"{source.origin}: cannot transpose shape {source.shape}")

    def read(index: Index) -> np.ndarray:
        return np.ascontiguousarray(source.read(index[::-1]).T)

    return LazyArray(source.shape[::-1], source.dtype, read, source.origin)


def padded(source: LazyArray, axis: int, size: int) -> LazyArray:
    """Zero-padded along `axis` up to `size` (a vocabulary resized below its table size)."""
    n = source.shape[axis]
    if size < n:
        raise ValueError(f"{source.origin}: cannot pad axis {axis} of {n} down to {size}")
    shape = source.shape[:axis] + (size,) + source.shape[axis + 1 :]

    def read(index: Index) -> np.ndarray:
        out = np.zeros(tuple(s.stop - s.start for s in index), source.dtype)
        want = index[axis]
        start, stop = want.start, min(want.stop, n)
        if stop > start:
            inner = index[:axis] + (slice(start, stop),) + index[axis + 1 :]
            where = [slice(None)] * len(shape)
            where[axis] = slice(0, stop - start)
            out[tuple(where)] = source.read(inner)
        return out

    return LazyArray(shape, source.dtype, read, source.origin)


def stacked(layers: Sequence[LazyArray], axis: int) -> LazyArray:
    """Per-layer arrays stacked on `axis` (flaxformer's scanned layout uses axis 1)."""
    first = layers[0]
    shape = first.shape[:axis] + (len(layers),) + first.shape[axis:]
    dtype = np.result_type(*[layer.dtype for layer in layers])

    def read(index: Index) -> np.ndarray:
        inner = index[:axis] + index[axis + 1 :]
        parts = [layers[i].read(inner, dtype) for i in range(index[axis].start, index[axis].stop)]
        if not parts:
            return np.zeros(tuple(s.stop - s.start for s in index), dtype)
        return np.stack(parts, axis=axis)

    origin = first.origin if len(layers) == 1 else f"{first.origin} (+{len(layers) - 1} layers)"
    return LazyArray(shape, dtype, read, origin)


def unstacked(source: LazyArray, axis: int, i: int) -> LazyArray:
    """Layer `i` of an array stacked on `axis`."""
    shape = source.shape[:axis] + source.shape[axis + 1 :]

    def read(index: Index) -> np.ndarray:
        outer = index[:axis] + (slice(i, i + 1),) + index[axis:]
        return np.take(source.read(outer), 0, axis=axis)

    return LazyArray(shape, source.dtype, read, f"{source.origin}[layer {i}]")
