"""Decoding with a key/value cache, and scoring of given targets.

The encoder runs once; the decoder consumes one position per step against its cache (see
`t5.MultiHeadAttention`), with the prompt in place on the encoder side. Everything here is
jittable with static lengths. Token id 0 starts decoding (T5's convention) and is padding;
decoding stops at `eos_id`, after which outputs are 0.
"""

from __future__ import annotations

import functools
from typing import Any, Optional

import jax
import jax.numpy as jnp

from ptune.models import t5

Array = jax.Array
PyTree = Any


def encode(model: t5.Transformer, params: PyTree, encoder_input_tokens: Array,
           prompt_index: Optional[Array] = None) -> tuple[Array, Array]:
    """-> (encoded [b, ls', e], encoded_valid [b, ls'])"""
    return model.apply({"params": params}, encoder_input_tokens, enable_dropout=False,
                       prompt_index=prompt_index, method=t5.Transformer.encode)


def init_cache(model: t5.Transformer, params: PyTree, encoded: Array, encoded_valid: Array,
               max_length: int) -> PyTree:
    """The decoder cache for `max_length` positions, cross-attention keys/values filled."""
    dummy = jnp.zeros((encoded.shape[0], max_length), jnp.int32)
    _, variables = model.apply({"params": params}, encoded, encoded_valid, dummy,
                               enable_dropout=False, decode=True, mutable=["cache"],
                               method=t5.Transformer.decode)
    return variables["cache"]


def _step(model, params, cache, encoded_valid, tokens, max_length):
    """tokens [b] -> (logits [b, vocab], cache)"""
    logits, variables = model.apply({"params": params, "cache": cache}, None, encoded_valid,
                                    tokens[:, None], enable_dropout=False, decode=True,
                                    max_decode_length=max_length, mutable=["cache"],
                                    method=t5.Transformer.decode)
    return logits[:, 0], variables["cache"]


def _filter_logits(logits: Array, top_k: int, top_p: float) -> Array:
    """Masks logits [b, v] outside the top-k set and the top-p nucleus."""
    neg = jnp.finfo(logits.dtype).min
    if top_k > 0:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, neg, logits)
    if 0.0 < top_p < 1.0:
        sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
        cumulative = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
        # Keep the smallest prefix whose mass reaches top_p (always at least one token).
        keep = jnp.sum(cumulative < top_p, axis=-1, keepdims=True)
        threshold = jnp.take_along_axis(sorted_logits, keep, axis=-1)
        logits = jnp.where(logits < threshold, neg, logits)
    return logits


@functools.partial(jax.jit, static_argnames=("model", "max_length", "eos_id", "temperature",
                                              "top_k", "top_p"))
def generate(model: t5.Transformer, params: PyTree, encoder_input_tokens: Array, *,
             max_length: int, eos_id: int = 1, temperature: float = 0.0, top_k: int = 0,
             top_p: float = 1.0, rng: Optional[Array] = None,
             prompt_index: Optional[Array] = None) -> Array:
    """Greedy (temperature 0) or sampled decoding with the KV cache.

    encoder_input_tokens [b, ls] -> tokens [b, max_length] (0 after EOS).
    """
    encoded, valid = encode(model, params, encoder_input_tokens, prompt_index)
    batch = encoder_input_tokens.shape[0]
    cache = init_cache(model, params, encoded, valid, max_length)
    if rng is None:
        rng = jax.random.PRNGKey(0)

    def body(carry):
        i, token, done, out, cache, rng = carry
        logits, cache = _step(model, params, cache, valid, token, max_length)
        if temperature == 0.0:
            nxt = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        else:
            rng, sub = jax.random.split(rng)
            filtered = _filter_logits(logits / temperature, top_k, top_p)
            nxt = jax.random.categorical(sub, filtered, axis=-1).astype(jnp.int32)
        nxt = jnp.where(done, 0, nxt)
        out = jax.lax.dynamic_update_slice_in_dim(out, nxt[:, None], i, axis=1)
        return i + 1, nxt, done | (nxt == eos_id), out, cache, rng

    def cond(carry):
        i, _, done, *_ = carry
        return (i < max_length) & ~jnp.all(done)

    init = (jnp.zeros((), jnp.int32), jnp.zeros((batch,), jnp.int32),
            jnp.zeros((batch,), bool), jnp.zeros((batch, max_length), jnp.int32), cache, rng)
    return jax.lax.while_loop(cond, body, init)[3]


@functools.partial(jax.jit, static_argnames=("model",))
def score(model: t5.Transformer, params: PyTree, encoder_input_tokens: Array,
          decoder_input_tokens: Array, decoder_target_tokens: Array,
          prompt_index: Optional[Array] = None) -> Array:
    """Log-likelihood of each target sequence: -> [b] (sum over real target tokens)."""
    logits = model.apply({"params": params}, encoder_input_tokens, decoder_input_tokens,
                         decoder_target_tokens, enable_dropout=False, prompt_index=prompt_index)
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    token = jnp.take_along_axis(log_probs, decoder_target_tokens[..., None], axis=-1)[..., 0]
    return jnp.sum(token * (decoder_target_tokens > 0), axis=-1)
