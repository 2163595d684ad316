"""Strict restore: a checkpoint's arrays against the model's abstract parameter tree.

Every parameter of `t5.abstract_variables(config)` must come from the checkpoint unless the
caller names it in `fresh` (regexes over '/'-joined paths, e.g. `encoder/prompt/.*`); every
checkpoint entry must be a model parameter; every shape must agree. All disagreements are
collected into ONE `UserError` whose first line names the checkpoint, so a user sees the whole
problem at once and nothing falls back to random weights (the original prompt-tuning setup did,
silently, and runs were lost to it).

Arrays are then read one at a time, straight into the target dtype; with `shardings`, each
device's slice is read on its own through `jax.make_array_from_callback`, so no host holds the
whole model.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import re
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import numpy as np
from flax import linen as nn
from flax import traverse_util

from ptune.checkpoints import lazy_arrays
from ptune.checkpoints.lazy_arrays import LazyArray
from ptune.errors import UserError
from ptune.models import t5

# Published T5/mT5 tables have a multiple of 128 rows; a copy resized to its tokenizer
# (32,100 for T5) is at most this many rows short.
VOCAB_PAD_MULTIPLE = 128
ARCHITECTURE_HINTS = ("mlp_activations", "logits_via_embedding", "relative_attention_max_distance")


@dataclasses.dataclass
class CheckpointSource:
    """A checkpoint opened for reading: metadata only, no parameter read yet.

    arrays: t5x name -> LazyArray, in the checkpoint's own layer layout (scanned or not).
    hints: T5Config fields the checkpoint states outright (HF config.json).
    unexpected: entries that map to no T5 parameter, in the checkpoint's own naming.
    bulk_restore: for Orbax checkpoints, restores `{name: (dtype, sharding | None)}` in one
      call (much faster than per-array restores); None for the other formats.
    """

    path: str
    format: str
    arrays: dict[str, LazyArray]
    hints: dict[str, Any] = dataclasses.field(default_factory=dict)
    unexpected: list[str] = dataclasses.field(default_factory=list)
    step: Optional[int] = None
    vocab_padding: bool = False
    bulk_restore: Optional[Callable[[dict], dict]] = None

    @property
    def scanned(self) -> bool:
        return any(re.match(r"(encoder|decoder)/layers/", n) for n in self.arrays)


def flat_shapes(config: t5.T5Config) -> dict[str, tuple[int, ...]]:
    """'/'-joined name -> shape of every model parameter (abstract; allocates nothing)."""
    params = nn.unbox(t5.abstract_variables(config)["params"])
    return {"/".join(k): tuple(v.shape) for k, v in traverse_util.flatten_dict(params).items()}


def _is_fresh(name: str, fresh: Sequence[re.Pattern]) -> bool:
    scanned_name = re.sub(r"/layers_\d+/", "/layers/", name)
    return any(p.fullmatch(name) or p.fullmatch(scanned_name) for p in fresh)


def _pad_vocab(source: CheckpointSource, expected: Mapping[str, tuple]) -> dict[str, LazyArray]:
    arrays = dict(source.arrays)
    for name, axis in (("token_embedder/embedding", 0), ("decoder/logits_dense/kernel", 1)):
        if name in arrays and name in expected:
            have, want = arrays[name].shape, expected[name]
            if (
                len(have) == len(want) == 2
                and have[1 - axis] == want[1 - axis]
                and have[axis] < want[axis] < have[axis] + VOCAB_PAD_MULTIPLE
            ):
                arrays[name] = lazy_arrays.padded(arrays[name], axis, want[axis])
    return arrays


def check(
    source: CheckpointSource, config: t5.T5Config, fresh: Sequence[str] = ()
) -> dict[str, LazyArray]:
    """Checks the checkpoint strictly against `config`; returns the arrays re-laid-out for
    `config.scan_layers` (name -> LazyArray, fresh parameters absent)."""
    patterns = []
    for pattern in fresh:
        try:
            patterns.append(re.compile(pattern))
        except re.error as e:
            raise UserError(f"fresh: invalid regex {pattern!r}: {e}") from e
    expected = flat_shapes(config.replace(scan_layers=source.scanned))
    arrays = _pad_vocab(source, expected) if source.vocab_padding else dict(source.arrays)
    missing = [n for n in expected if n not in arrays and not _is_fresh(n, patterns)]
    unexpected = [n for n in arrays if n not in expected] + list(source.unexpected)
    misshaped = [
        f"{n}: checkpoint {arrays[n].shape} ({arrays[n].origin}) vs model {expected[n]}"
        for n in expected
        if n in arrays and arrays[n].shape != expected[n]
    ]
    bad_dtype = [
        f"{n}: dtype {arrays[n].dtype} in {arrays[n].origin} is not floating point"
        for n in expected
        if n in arrays
        and not np.issubdtype(arrays[n].dtype, np.floating)
        and arrays[n].dtype.name != "bfloat16"
    ]
    disagree = [
        f"{k}: checkpoint {source.hints[k]!r} vs config {getattr(config, k)!r}"
        for k in ARCHITECTURE_HINTS
        if k in source.hints and _normal(source.hints[k]) != _normal(getattr(config, k))
    ]
    counts = [
        (len(missing), "missing"),
        (len(unexpected), "unexpected"),
        (len(misshaped), "mis-shaped"),
        (len(bad_dtype), "wrongly typed"),
        (len(disagree), "disagreeing config fields"),
    ]
    if any(c for c, _ in counts):
        summary = ", ".join(f"{c} {what}" for c, what in counts if c)
        lines = [
            f"checkpoint {source.path} ({source.format}) does not match the model "
            f"configuration: {summary}"
        ]
        lines += [f"  missing: {n}" for n in missing]
        lines += [f"  unexpected: {n}" for n in unexpected]
        lines += [f"  mis-shaped: {m}" for m in misshaped]
        lines += [f"  wrong dtype: {m}" for m in bad_dtype]
        lines += [f"  config disagrees: {m}" for m in disagree]
        raise UserError("\n".join(lines))
    present = {n: a for n, a in arrays.items() if n in expected}
    if source.scanned == config.scan_layers:
        return present
    return relayout(present, config)


def _normal(value):
    return tuple(value) if isinstance(value, (list, tuple)) else value


def relayout(arrays: Mapping[str, LazyArray], config: t5.T5Config) -> dict[str, LazyArray]:
    """Stacks `layers_{i}` into `layers` on axis 1 (or unstacks) to match `config.scan_layers`."""
    out = {}
    for name in flat_shapes(config):
        if name in arrays:
            out[name] = arrays[name]
            continue
        scanned = re.match(r"(encoder|decoder)/layers/(.*)", name)
        unscanned = re.match(r"(encoder|decoder)/layers_(\d+)/(.*)", name)
        if scanned:
            stack, rest = scanned.groups()
            count = getattr(config, f"num_{stack}_layers")
            parts = [arrays.get(f"{stack}/layers_{i}/{rest}") for i in range(count)]
            if all(p is not None for p in parts):
                out[name] = lazy_arrays.stacked(parts, axis=1)
        elif unscanned:
            stack, i, rest = unscanned.groups()
            whole = arrays.get(f"{stack}/layers/{rest}")
            if whole is not None:
                out[name] = lazy_arrays.unstacked(whole, axis=1, i=int(i))
    return out


def _flat_shardings(shardings) -> dict[str, jax.sharding.Sharding]:
    leaves = jax.tree_util.tree_flatten_with_path(
        shardings, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding)
    )[0]
    return {"/".join(str(getattr(k, "key", k)) for k in path): leaf for path, leaf in leaves}


def materialize(arrays: Mapping[str, LazyArray], dtype, shardings=None) -> dict:
    """Reads every array into `dtype`, one at a time, largest first; returns the nested
    params dict.

    Without `shardings` each parameter becomes a jax array on the default device; with them
    (a pytree of `jax.sharding.Sharding` shaped like the params, extra entries such as the
    prompt's ignored) each addressable shard is read from storage separately.
    """
    flat_shardings = _flat_shardings(shardings) if shardings is not None else None
    out = {}
    # Largest first: a read briefly holds its chunk (compressed and decoded, in the stored
    # dtype) beside what is loaded, so the peak is lowest when the big reads come early.
    largest_first = sorted(arrays.items(), key=lambda item: -_stored_bytes(item[1]))
    unreturned = 0  # bytes read since the freed heap was last handed back
    for name, array in largest_first:
        if flat_shardings is None:
            out[name] = jax.device_put(array.read(None, dtype))
            continue
        if name not in flat_shardings:
            raise ValueError(f"shardings has no entry for parameter {name}")
        out[name] = jax.make_array_from_callback(
            array.shape, flat_shardings[name], lambda index, a=array: a.read(index, dtype)
        )
        unreturned += _stored_bytes(array)
        if unreturned >= RETURN_EVERY:
            _return_freed_memory()
            unreturned = 0
    return traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in out.items()})


def _stored_bytes(array: LazyArray) -> int:
    return int(np.prod(array.shape, dtype=np.int64)) * np.dtype(array.dtype).itemsize


@functools.cache
def _malloc_trim():
    """glibc's `malloc_trim`, or None (another C library, another system)."""
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


# Freed heap goes back after every 4 MiB read: each large array's read is followed by one
# (as after every array before), while the small ones at the end of a read share one. A trim
# walks the whole heap: after each of a tiny model's arrays, in a process that has compiled
# much (a notebook, the test suite), trims took longer than the reads.
RETURN_EVERY = 4 * 2**20


def _return_freed_memory() -> None:
    """Hands the heap pages freed by the last read back to the system. A read's decoded
    chunks are freed at once, but glibc keeps freed heap memory for reuse (and after the
    first large free it serves allocations up to 32 MiB from the heap), so without this the
    process's peak grows by the scraps of every parameter read (measured for a bfloat16 T5
    1.1 Base: benchmarks/checkpoint_load.py)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def bulk_targets(names: Sequence[str], dtype, shardings) -> dict[str, tuple[Any, Any]]:
    """{name: (dtype, sharding or None)} for a `CheckpointSource.bulk_restore` call."""
    flat = _flat_shardings(shardings) if shardings is not None else {}
    return {n: (dtype, flat.get(n)) for n in names}
