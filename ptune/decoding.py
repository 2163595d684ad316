"""T5 decoding with a key/value cache: greedy, sampled, beam search, each the shared loop
of `ptune.models.search` over the decoder's step (scoring of given targets, for either
family, is `ptune.family.score`).

The encoder runs once; the decoder consumes one position per step against its cache (see
`t5_layers.MultiHeadAttention`), with the prompt in place on the encoder side. Everything here
is jittable with static lengths. Token id 0 starts decoding (T5's convention) and is padding;
decoding stops at `eos_id`, after which outputs are 0.
"""

from __future__ import annotations

import functools
from typing import Any, Optional

import jax
import jax.numpy as jnp

from ptune.models import search, t5

Array = jax.Array
PyTree = Any


def encode(
    model: t5.Transformer,
    params: PyTree,
    encoder_input_tokens: Array,
    prompt_index: Optional[Array] = None,
) -> tuple[Array, Array]:
    """-> (encoded [b, ls', e], encoded_valid [b, ls'])"""
    return model.apply(
        {"params": params},
        encoder_input_tokens,
        enable_dropout=False,
        prompt_index=prompt_index,
        method=t5.Transformer.encode,
    )


def init_cache(
    model: t5.Transformer, params: PyTree, encoded: Array, encoded_valid: Array, max_length: int
) -> PyTree:
    """The decoder cache for `max_length` positions, cross-attention keys/values filled."""
    dummy = jnp.zeros((encoded.shape[0], max_length), jnp.int32)
    _, variables = model.apply(
        {"params": params},
        encoded,
        encoded_valid,
        dummy,
        enable_dropout=False,
        decode=True,
        mutable=["cache"],
        method=t5.Transformer.decode,
    )
    return variables["cache"]


def _stepper(model, params, encoded_valid, max_length) -> search.Step:
    """The decoder's step (`search.Step`): tokens [b] -> (logits [b, vocab], cache)."""

    def step(tokens, cache):
        return _step(model, params, cache, encoded_valid, tokens, max_length)

    return step


def _step(model, params, cache, encoded_valid, tokens, max_length):
    logits, variables = model.apply(
        {"params": params, "cache": cache},
        None,
        encoded_valid,
        tokens[:, None],
        enable_dropout=False,
        decode=True,
        max_decode_length=max_length,
        mutable=["cache"],
        method=t5.Transformer.decode,
    )
    return logits[:, 0], variables["cache"]


@functools.partial(
    jax.jit,
    static_argnames=(
        "model",
        "max_length",
        "eos_id",
        "temperature",
        "top_k",
        "top_p",
        "vocab_limit",
    ),
)
def generate(
    model: t5.Transformer,
    params: PyTree,
    encoder_input_tokens: Array,
    *,
    max_length: int,
    eos_id: int = 1,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    rng: Optional[Array] = None,
    prompt_index: Optional[Array] = None,
    vocab_limit: Optional[int] = None,
) -> Array:
    """Greedy (temperature 0) or sampled decoding with the KV cache.

    encoder_input_tokens [b, ls] -> tokens [b, max_length] (0 after EOS); only ids below
    `vocab_limit` (the tokenizer's size, when given) are generated.
    """
    encoded, valid = encode(model, params, encoder_input_tokens, prompt_index)
    cache = init_cache(model, params, encoded, valid, max_length)
    decode = search.Decoding(
        temperature=temperature, top_k=top_k, top_p=top_p, vocab_limit=vocab_limit, eos_id=eos_id
    )
    step = _stepper(model, params, valid, max_length)
    batch = encoder_input_tokens.shape[0]
    return search.sample(step, cache, decode, batch=batch, max_length=max_length, rng=rng)


@functools.partial(
    jax.jit,
    static_argnames=("model", "max_length", "num_beams", "alpha", "eos_id", "vocab_limit"),
)
def beam_search(
    model: t5.Transformer,
    params: PyTree,
    encoder_input_tokens: Array,
    *,
    max_length: int,
    num_beams: int = 4,
    alpha: float = 0.6,
    eos_id: int = 1,
    prompt_index: Optional[Array] = None,
    vocab_limit: Optional[int] = None,
) -> tuple[Array, Array]:
    """Beam search with the KV cache and T5's length penalty.

    encoder_input_tokens [b, ls] -> (tokens [b, num_beams, max_length], scores [b, num_beams]),
    best first, as `search.beam_search` defines them: a score is the sequence log-probability
    / brevity_penalty(length, alpha). With alpha = 0 and one beam this is greedy decoding.
    """
    b, k = encoder_input_tokens.shape[0], num_beams
    encoded, valid = encode(model, params, encoder_input_tokens, prompt_index)
    encoded = jnp.repeat(encoded, k, axis=0)
    valid = jnp.repeat(valid, k, axis=0)
    cache = init_cache(model, params, encoded, valid, max_length)
    scanned = model.config.scan_layers

    def batch_axis_of(leaf):
        if scanned:
            return 1 if leaf.ndim >= 2 else None
        return 0 if leaf.ndim >= 1 else None

    decode = search.Decoding(num_beams=k, alpha=alpha, vocab_limit=vocab_limit, eos_id=eos_id)
    step = _stepper(model, params, valid, max_length)
    return search.beam_search(
        step, cache, decode, batch=b, max_length=max_length, batch_axis_of=batch_axis_of
    )
