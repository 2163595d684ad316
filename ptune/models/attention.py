"""Dot-product attention after the projections: one function for T5 and the decoder-only models.

`attend_causal` (decoder-only models) takes long inputs in query chunks (`CHUNK_LOGITS`), each
recomputed in the backward pass, so attention's activation memory grows with the chunk, not
with the square of the length: TinyLlama prompt tuning at batch 8 x 2048 on one device needs
65.9 GiB in `ptune plan`'s estimate, 278.4 GiB with whole scores
(benchmarks/results/2026-12-05-plan-memory-cpu.md).

`attend` computes softmax(q·kᵀ [/ scale] + bias, masked) · v over every head. On XLA's CPU
backend it takes the heads one at a time (a [b, q, d] x [b, k, d] product each) once their
logits are 64 x 64 or more, elsewhere all heads in one batched product; the same values up to
summation order (tests/test_attention.py). Head by head, a T5 1.1 Small prompt-tuning step on
2 CPU cores takes 0.89-0.91x the time: XLA's batched [b, h, q, k] products ran at 15-35% of
the matmul peak, with layout copies around them
(benchmarks/results/2026-11-27-vm-2cpu-by-head.md). On GPUs and TPUs the batched form keeps
the large products and the heads' sharding, so the choice is made per platform at lowering
(`jax.lax.platform_dependent`), not from the host's default backend.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from typing import Any, Iterator, Optional

import jax
import jax.numpy as jnp

Array = jax.Array

# Causal attention takes its queries in chunks of at most this many logits per head and row
# (512 queries over 1,024 keys, 128 over 4,096), each chunk's scores recomputed in the backward
# pass: a layer's float32 [b, h, q, k] scores never exist at once, only one chunk's. Shorter
# inputs (up to about 724 x 724, so prompt 100 + inputs 512) take one chunk, as before.
CHUNK_LOGITS = 512 * 1024

# Head by head pays once each head's logits are this large: forward and backward on 2 CPU
# cores (batch 8, 6 heads of 64) take 0.83x the batched time at 64 x 64 and 128 x 128, 0.63x
# at 228 x 228, but 1.11x at 32 x 32 and 1.5x at 16 x 16; smaller programs also compile
# faster batched (benchmarks/results/2026-11-27-vm-2cpu-by-head.md).
BY_HEAD_MIN_LOGITS = 64 * 64

_BATCHED_EVERYWHERE = contextvars.ContextVar("batched_everywhere", default=False)


@contextlib.contextmanager
def batched_on_every_platform(on: bool = True) -> Iterator[None]:
    """Within: `attend` traces the batched form on CPUs too, for a program compiled on CPU
    devices as a stand-in for an accelerator's (`ptune plan`'s memory analysis); `on=False`
    keeps each platform's own form. It acts when a function is traced: a jitted function
    already traced outside keeps its cached form."""
    token = _BATCHED_EVERYWHERE.set(on)
    try:
        yield
    finally:
        _BATCHED_EVERYWHERE.reset(token)


def batched_everywhere() -> bool:
    """Whether `attend` now traces the batched form on CPUs too (`batched_on_every_platform`):
    part of what a cached compiled function was built under (`recipe.Run.train_step`)."""
    return _BATCHED_EVERYWHERE.get()


@jax.custom_vjp
def add_position_bias(logits: Array, bias: Array) -> Array:
    """logits [b, ..., q, k] + bias [1, ..., q, k] (the same for every row), as `+`, with the
    bias's gradient taken as a matmul of the rows' gradients [b, rest] with ones [b] rather
    than a sum over the batch. On XLA's CPU backend the sum became one reduction over every
    layer's logits gradient at once, 5% of a T5 1.1 Small model-tuning step; as matmuls the
    step is about 4% faster (benchmarks/results/2026-11-27-vm-2cpu.md). The same value up to
    summation order; a reduction over a data-sharded batch either way. A custom VJP: reverse
    mode only."""
    return logits + bias


def _add_position_bias_forward(logits, bias):
    return logits + bias, bias.shape


def _add_position_bias_backward(bias_shape, ct):
    if bias_shape[0] == 1 < ct.shape[0] and tuple(bias_shape[1:]) == ct.shape[1:]:
        rows = ct.reshape(ct.shape[0], -1)
        ones = jnp.ones(rows.shape[:1], rows.dtype)
        summed = jnp.dot(ones, rows, precision=jax.lax.Precision.HIGHEST)  # float32 on TPUs
        return ct, summed.reshape(bias_shape)
    broadcast = tuple(i for i, (n, m) in enumerate(zip(bias_shape, ct.shape)) if n != m)
    return ct, jnp.sum(ct, axis=broadcast, keepdims=True)


add_position_bias.defvjp(_add_position_bias_forward, _add_position_bias_backward)


def attend(
    query: Array,
    key: Array,
    value: Array,
    *,
    bias: Optional[Array] = None,
    mask: Optional[Array] = None,
    mask_value: float,
    scale: Optional[float] = None,
    dropout: Optional[tuple[Array, float]] = None,
    dtype: Any = jnp.float32,
) -> Array:
    """query [b, q, h, d], key and value [b, k, g, d] (g divides h: query head i reads
    key/value head i // (h / g)), bias [1, h, q, k], mask [b|1, 1|h, q, k] bool (False:
    logit replaced by `mask_value`), dropout (keep [b, h, 1, k] bool, keep probability)
    -> [b, q, h, d] in `dtype`.

    Logits in float32, divided by `scale` when given; the softmax's weights cast to `dtype`
    and, with dropout, kept where `keep` and divided by the keep probability (flax's
    `nn.Dropout`). One query position (cached decoding) and logits of fewer than
    `BY_HEAD_MIN_LOGITS` per head take the batched form everywhere.
    """
    keep, keep_prob = dropout if dropout is not None else (None, 1.0)
    args = (query, key, value, bias, mask, keep)
    opts = dict(mask_value=mask_value, scale=scale, keep_prob=keep_prob, dtype=dtype)
    batched = functools.partial(_batched, **opts)
    small = query.shape[1] == 1 or query.shape[1] * key.shape[1] < BY_HEAD_MIN_LOGITS
    if small or batched_everywhere():
        return batched(*args)
    return jax.lax.platform_dependent(
        *args, cpu=functools.partial(_by_head, **opts), default=batched
    )


def _weights(logits, bias, mask, keep, *, mask_value, scale, keep_prob, dtype):
    """Float32 logits [..., q, k] -> the attention weights in `dtype`."""
    if scale is not None:
        logits = logits / scale
    if bias is not None:
        logits = add_position_bias(logits, bias.astype(jnp.float32))
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.float32(mask_value))
    weights = jax.nn.softmax(logits, axis=-1).astype(dtype)
    if keep is not None:
        if keep_prob == 0.0:  # flax's edge case: no NaN gradients through weights / 0
            return jnp.zeros_like(weights)
        weights = jax.lax.select(
            jnp.broadcast_to(keep, weights.shape), weights / keep_prob, jnp.zeros_like(weights)
        )
    return weights


def _batched(query, key, value, bias, mask, keep, **opts):
    group = query.shape[2] // key.shape[2]
    if group > 1:
        key, value = (jnp.repeat(t, group, axis=2) for t in (key, value))
    logits = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32)
    weights = _weights(logits.astype(jnp.float32), bias, mask, keep, **opts)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, jnp.asarray(value, opts["dtype"]))


def _by_head(query, key, value, bias, mask, keep, **opts):
    group = query.shape[2] // key.shape[2]
    outs = []
    for i in range(query.shape[2]):
        head = lambda t: None if t is None else t[:, i if t.shape[1] > 1 else 0]  # noqa: E731
        k, v = key[:, :, i // group], value[:, :, i // group]
        logits = jnp.einsum("bqd,bkd->bqk", query[:, :, i], k, preferred_element_type=jnp.float32)
        weights = _weights(logits.astype(jnp.float32), head(bias), head(mask), head(keep), **opts)
        outs.append(jnp.einsum("bqk,bkd->bqd", weights, jnp.asarray(v, opts["dtype"])))
    return jnp.stack(outs, axis=2)


def query_chunk(keys: int) -> int:
    """The query rows `attend_causal` takes at once over `keys` keys: the largest power of two
    with at most `CHUNK_LOGITS` logits per head, at least 16."""
    return max(16, 1 << max(0, (CHUNK_LOGITS // keys).bit_length() - 1))


def attend_causal(
    query: Array,
    key: Array,
    value: Array,
    *,
    query_slot: Array,
    key_valid: Array,
    scale: Optional[float],
    dtype: Any = jnp.float32,
) -> Array:
    """Causal `attend`: query [b, q, h, d], key and value [b, k, g, d], query_slot [b, q]
    int (query i sees the keys at slots 0..query_slot[i]), key_valid [b, k] bool -> [b, q, h,
    d] in `dtype`.

    Queries go in chunks of a power of two rows, the most with at most `CHUNK_LOGITS` logits
    per head (at least 16), the last padded with rows whose outputs are dropped: a `lax.map`
    over chunks whose body is rematerialised, so only its inputs are kept for the backward
    pass. Each row's softmax is over all its keys, as in one chunk: the same values up to
    summation order (tests/test_attention.py).
    """
    b, length, h, d = query.shape
    chunk = query_chunk(key.shape[1])
    key_slot = jnp.arange(key.shape[1], dtype=jnp.int32)

    def attend_chunk(q_part: Array, slot_part: Array) -> Array:
        mask = (key_slot[None, None, :] <= slot_part[:, :, None]) & key_valid[:, None, :]
        return attend(
            q_part,
            key,
            value,
            mask=mask[:, None],
            mask_value=float(jnp.finfo(jnp.float32).min),
            scale=scale,
            dtype=dtype,
        )

    if chunk >= length:
        return attend_chunk(query, query_slot)
    pad = -length % chunk  # rows that see slot 0 only; their outputs are dropped
    query = jnp.pad(query, ((0, 0), (0, pad), (0, 0), (0, 0)))
    query_slot = jnp.pad(query_slot, ((0, 0), (0, pad)))
    n = (length + pad) // chunk
    parts = query.reshape(b, n, chunk, h, d).swapaxes(0, 1)
    slots = query_slot.reshape(b, n, chunk).swapaxes(0, 1)
    body = jax.checkpoint(lambda xs: attend_chunk(*xs), prevent_cse=False)
    out = jax.lax.map(body, (parts, slots))  # [n, b, chunk, h, d]
    return out.swapaxes(0, 1).reshape(b, n * chunk, h, d)[:, :length]
