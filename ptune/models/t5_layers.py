"""T5's layers, parameter-compatible with t5x/flaxformer: the RMS layer norm, the token
embedding (also the tied output projection), relative-position biases, attention without
1/sqrt(head_dim) (with a key/value cache for decoding), and the gated or plain MLP. The stacks
that hold them are `ptune.models.t5` (parameter names there). Shapes in each docstring.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from ptune.models import attention, layers

Array = jax.Array

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": nn.relu,
    "gelu": functools.partial(nn.gelu, approximate=True),  # t5x's `nn.gelu`; HF "gelu_new"
    "gelu_exact": functools.partial(nn.gelu, approximate=False),
    "silu": nn.silu,
    "swish": nn.swish,
    "linear": lambda x: x,
}

# Large negative number for masked attention logits (t5x uses the same magnitude).
_MASK_VALUE = -1e10


class LayerNorm(nn.Module):
    """T5's RMS norm (no mean, no bias), computed in float32 with eps 1e-6."""

    dtype: Any = jnp.float32
    epsilon: float = 1e-6

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """[..., embed] -> [..., embed]"""
        x = jnp.asarray(x, jnp.float32)
        scale = layers.param(self, "scale", nn.initializers.ones, (x.shape[-1],), ("embed",))
        var = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
        y = x * jax.lax.rsqrt(var + self.epsilon)
        return jnp.asarray(y * jnp.asarray(scale, jnp.float32), self.dtype)


class Embed(nn.Module):
    """Token embedding table [vocab, embed], shared by encoder and decoder."""

    num_embeddings: int
    features: int
    dtype: Any = jnp.float32

    def setup(self):
        self.embedding = layers.param(
            self,
            "embedding",
            nn.initializers.normal(stddev=1.0),
            (self.num_embeddings, self.features),
            ("vocab", "embed"),
        )

    def __call__(self, ids: Array) -> Array:
        """ids [...] int -> [..., embed]"""
        return jnp.asarray(jnp.take(self.embedding, ids, axis=0), self.dtype)

    def attend(self, query: Array) -> Array:
        """query [..., embed] -> logits [..., vocab] (float32)."""
        return jnp.dot(jnp.asarray(query, jnp.float32), jnp.asarray(self.embedding, jnp.float32).T)


def relative_position_bucket(
    relative_position: np.ndarray, bidirectional: bool, num_buckets: int, max_distance: int
) -> np.ndarray:
    """T5's bucketing of `memory_position - query_position` (static numpy, int32).

    Half the buckets (per direction when bidirectional) hold exact small distances, the rest
    log-spaced distances up to `max_distance`; farther distances share the last bucket.
    """
    bucket = np.zeros_like(relative_position, dtype=np.int32)
    n = -relative_position
    if bidirectional:
        num_buckets //= 2
        bucket += (n < 0).astype(np.int32) * num_buckets
        n = np.abs(n)
    else:
        n = np.maximum(n, 0)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    # float32 with t5x's epsilon; agrees with Mesh TF / HF buckets (checked in tests).
    ratio = n.astype(np.float32) / np.float32(max(max_exact, 1)) + np.finfo(np.float32).eps
    large = max_exact + (
        np.log(ratio)
        / np.float32(np.log(max_distance / max(max_exact, 1)))
        * np.float32(num_buckets - max_exact)
    ).astype(np.int32)
    large = np.minimum(large, num_buckets - 1)
    bucket += np.where(is_small, n, large).astype(np.int32)
    return bucket


class RelativePositionBiases(nn.Module):
    """Per-head learned bias for each relative-position bucket, shared across a stack."""

    num_buckets: int
    max_distance: int
    num_heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, qlen: int, klen: int, bidirectional: bool) -> Array:
        """Returns the bias [1, heads, qlen, klen] (float32)."""
        context = np.arange(qlen, dtype=np.int32)[:, None]
        memory = np.arange(klen, dtype=np.int32)[None, :]
        buckets = relative_position_bucket(
            memory - context, bidirectional, self.num_buckets, self.max_distance
        )
        rel_embedding = layers.param(
            self,
            "rel_embedding",
            nn.initializers.variance_scaling(1.0, "fan_avg", "uniform"),
            (self.num_heads, self.num_buckets),
            ("heads", "relpos_buckets"),
        )
        bias = jnp.take(jnp.asarray(rel_embedding, jnp.float32), jnp.asarray(buckets), axis=1)
        return bias[None]


class MultiHeadAttention(nn.Module):
    """T5 attention: no 1/sqrt(head_dim) on the logits (folded into the query init).

    With `decode=True`, self-attention keeps a key/value cache of the full target length and
    consumes one position per call; cross-attention projects the encoder outputs once, on the
    cache-initialising call, and reuses them.
    """

    num_heads: int
    head_dim: int
    dtype: Any = jnp.float32
    dropout_rate: float = 0.0
    is_cross: bool = False

    @nn.compact
    def __call__(
        self,
        inputs_q: Array,
        inputs_kv: Optional[Array],
        mask: Optional[Array],
        bias: Optional[Array] = None,
        *,
        deterministic: bool = True,
        decode: bool = False,
    ) -> Array:
        """inputs_q [b, lq, e], inputs_kv [b, lk, e], mask [b|1, 1, lq, lk] bool,
        bias [1, h, lq, lk] -> [b, lq, e]."""
        features = self.num_heads * self.head_dim
        emb = inputs_q.shape[-1]
        base = nn.initializers.variance_scaling(1.0, "fan_in", "normal")
        depth_scaling = np.sqrt(self.head_dim).astype(np.float32)

        def query_init(*args):
            return base(*args) / depth_scaling

        dense = functools.partial(
            layers.Dense, features=features, kernel_axes=("embed", "joined_kv"), dtype=self.dtype
        )
        query = dense(kernel_init=query_init, name="query")(inputs_q)
        split = lambda x: x.reshape(x.shape[:-1] + (self.num_heads, self.head_dim))  # noqa: E731
        query = layers.constrain(split(query), ("batch", "length", "heads", "kv"))
        key_layer = dense(kernel_init=base, name="key")
        value_layer = dense(kernel_init=base, name="value")

        if decode and self.is_cross:
            have_cache = self.has_variable("cache", "cross_key")
            if not have_cache:
                k, v = split(key_layer(inputs_kv)), split(value_layer(inputs_kv))
            else:  # Keep the parameters referenced so the module's tree is the same.
                k = v = None
            cross_k = self.variable("cache", "cross_key", lambda: k)
            cross_v = self.variable("cache", "cross_value", lambda: v)
            key, value = cross_k.value, cross_v.value
        else:
            key = layers.constrain(split(key_layer(inputs_kv)), ("batch", "length", "heads", "kv"))
            value = layers.constrain(
                split(value_layer(inputs_kv)), ("batch", "length", "heads", "kv")
            )

        if decode and not self.is_cross:
            have_cache = self.has_variable("cache", "cached_key")
            cached_key = self.variable("cache", "cached_key", jnp.zeros, key.shape, key.dtype)
            cached_value = self.variable(
                "cache", "cached_value", jnp.zeros, value.shape, value.dtype
            )
            cache_index = self.variable(
                "cache", "cache_index", lambda: jnp.array(0, dtype=jnp.int32)
            )
            if have_cache:
                # One new position: write it at cache_index and attend over the filled prefix.
                batch, max_length = cached_key.value.shape[:2]
                if inputs_q.shape[1] != 1:
                    raise ValueError(
                        f"cached decoding consumes one position per call, got {inputs_q.shape[1]}"
                    )
                index = cache_index.value
                zero = jnp.zeros((), jnp.int32)
                cached_key.value = jax.lax.dynamic_update_slice(
                    cached_key.value, key.astype(cached_key.value.dtype), (zero, index, zero, zero)
                )
                cached_value.value = jax.lax.dynamic_update_slice(
                    cached_value.value,
                    value.astype(cached_value.value.dtype),
                    (zero, index, zero, zero),
                )
                cache_index.value = index + 1
                key, value = cached_key.value, cached_value.value
                mask = (jnp.arange(max_length) <= index)[None, None, None, :]
                if bias is not None:
                    bias = jax.lax.dynamic_slice_in_dim(bias, index, 1, axis=2)

        dropout = None
        if self.dropout_rate > 0.0 and not deterministic:
            # flax's draw for weights [b, h, q, k] broadcast over q: the same keep mask as
            # `nn.Dropout(rate, broadcast_dims=(-2,))` applied to the weights themselves.
            shape = (query.shape[0], self.num_heads, 1, key.shape[1])
            scaled = nn.Dropout(self.dropout_rate, broadcast_dims=(-2,))(
                jnp.ones(shape, jnp.float32), deterministic=False
            )
            dropout = (scaled > 0, 1.0 - self.dropout_rate)
        out = attention.attend(
            query,
            key,
            value,
            bias=bias,
            mask=mask,
            mask_value=_MASK_VALUE,
            dropout=dropout,
            dtype=self.dtype,
        )
        out = out.reshape(out.shape[:-2] + (features,))
        return layers.Dense(
            emb, kernel_axes=("joined_kv", "embed"), dtype=self.dtype, kernel_init=base, name="out"
        )(out)


class MlpBlock(nn.Module):
    """Gated (several activations, `wi_0`, `wi_1`, ...) or plain (`wi`) feed-forward block."""

    mlp_dim: int
    activations: tuple[str, ...]
    dtype: Any = jnp.float32
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x: Array, deterministic: bool = True) -> Array:
        """[b, l, e] -> [b, l, e]"""
        emb = x.shape[-1]
        hidden = None
        for i, act in enumerate(self.activations):
            name = "wi" if len(self.activations) == 1 else f"wi_{i}"
            h = ACTIVATIONS[act](
                layers.Dense(self.mlp_dim, ("embed", "mlp"), self.dtype, name=name)(x)
            )
            hidden = h if hidden is None else hidden * h
        hidden = layers.constrain(hidden, ("batch", "length", "mlp"))
        if self.dropout_rate > 0.0:
            hidden = nn.Dropout(self.dropout_rate, broadcast_dims=(-2,))(
                hidden, deterministic=deterministic
            )
        return layers.Dense(emb, ("mlp", "embed"), self.dtype, name="wo")(hidden)
