"""T5 decoding with a key/value cache: greedy, sampled, beam search (scoring of given
targets, for either family, is `ptune.family.score`).

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
from ptune.models.layers import limit_vocab

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


def _step(model, params, cache, encoded_valid, tokens, max_length):
    """tokens [b] -> (logits [b, vocab], cache)"""
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
    batch = encoder_input_tokens.shape[0]
    cache = init_cache(model, params, encoded, valid, max_length)
    if rng is None:
        rng = jax.random.PRNGKey(0)

    def body(carry):
        i, token, done, out, cache, rng = carry
        logits, cache = _step(model, params, cache, valid, token, max_length)
        logits = limit_vocab(logits, vocab_limit)
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

    init = (
        jnp.zeros((), jnp.int32),
        jnp.zeros((batch,), jnp.int32),
        jnp.zeros((batch,), bool),
        jnp.zeros((batch, max_length), jnp.int32),
        cache,
        rng,
    )
    return jax.lax.while_loop(cond, body, init)[3]


def brevity_penalty(length, alpha: float):
    """T5's length normalisation: ((5 + length) / 6) ** alpha (alpha 0.6 by default)."""
    return ((5.0 + length) / 6.0) ** alpha


def _gather_beams(tree: PyTree, flat_index: Array, batch_axis_of) -> PyTree:
    """Reorders the batch*beam axis of every cache leaf by `flat_index` [b * k]."""

    def gather(leaf):
        axis = batch_axis_of(leaf)
        return leaf if axis is None else jnp.take(leaf, flat_index, axis=axis)

    return jax.tree_util.tree_map(gather, tree)


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
    best first; a score is the sequence log-probability / brevity_penalty(length, alpha).
    Beams still live at max_length (no EOS) compete, scored at max_length, for the slots
    that finished beams leave. With alpha = 0 and one beam this is greedy decoding.
    """
    b, k, length = encoder_input_tokens.shape[0], num_beams, max_length
    encoded, valid = encode(model, params, encoder_input_tokens, prompt_index)
    encoded = jnp.repeat(encoded, k, axis=0)
    valid = jnp.repeat(valid, k, axis=0)
    cache = init_cache(model, params, encoded, valid, length)
    scanned = model.config.scan_layers

    def batch_axis_of(leaf):
        if scanned:
            return 1 if leaf.ndim >= 2 else None
        return 0 if leaf.ndim >= 1 else None

    neg = jnp.float32(-1e9)
    positions = jnp.arange(length)

    def body(carry):
        i, live_seqs, live_logp, fin_seqs, fin_scores, cache = carry
        previous = jax.lax.dynamic_index_in_dim(
            live_seqs, jnp.maximum(i - 1, 0), axis=2, keepdims=False
        )
        last = jnp.where(i == 0, 0, previous)
        logits, cache = _step(model, params, cache, valid, last.reshape(b * k), length)
        logits = limit_vocab(logits.astype(jnp.float32), vocab_limit)
        logp = jax.nn.log_softmax(logits, axis=-1).reshape(b, k, -1)
        vocab = logp.shape[-1]
        candidates = (live_logp[:, :, None] + logp).reshape(b, k * vocab)
        top_logp, top_index = jax.lax.top_k(candidates, 2 * k)  # [b, 2k]
        source = top_index // vocab
        token = (top_index % vocab).astype(jnp.int32)
        seqs = jnp.take_along_axis(live_seqs, source[..., None], axis=1)
        seqs = jnp.where(positions[None, None, :] == i, token[..., None], seqs)
        is_eos = token == eos_id
        # Finished: merge new EOS-ending candidates with those kept so far; keep the best k.
        new_scores = jnp.where(is_eos, top_logp / brevity_penalty(i + 1.0, alpha), neg)
        all_scores = jnp.concatenate([fin_scores, new_scores], axis=1)
        all_seqs = jnp.concatenate([fin_seqs, seqs], axis=1)
        fin_scores, keep = jax.lax.top_k(all_scores, k)
        fin_seqs = jnp.take_along_axis(all_seqs, keep[..., None], axis=1)
        # Live: the best k candidates that did not end.
        live_logp, keep = jax.lax.top_k(jnp.where(is_eos, neg, top_logp), k)
        live_seqs = jnp.take_along_axis(seqs, keep[..., None], axis=1)
        parent = jnp.take_along_axis(source, keep, axis=1)  # [b, k]
        flat = (jnp.arange(b)[:, None] * k + parent).reshape(-1)
        cache = _gather_beams(cache, flat, batch_axis_of)
        return i + 1, live_seqs, live_logp, fin_seqs, fin_scores, cache

    def cond(carry):
        i, _, live_logp, _, fin_scores, _ = carry
        # Log-probabilities only fall, and the penalty is largest at max_length: once every
        # finished slot beats the best live beam's bound, nothing can change the result.
        best_live = live_logp[:, 0] / brevity_penalty(float(length), alpha)
        settled = jnp.all(fin_scores[:, -1] > best_live) if alpha >= 0 else False
        return (i < length) & ~settled

    live_logp = jnp.tile(jnp.array([0.0] + [-1e9] * (k - 1), jnp.float32)[None], (b, 1))
    init = (
        jnp.zeros((), jnp.int32),
        jnp.zeros((b, k, length), jnp.int32),
        live_logp,
        jnp.zeros((b, k, length), jnp.int32),
        jnp.full((b, k), neg),
        cache,
    )
    _, live_seqs, live_logp, fin_seqs, fin_scores, _ = jax.lax.while_loop(cond, body, init)
    # Empty finished slots are filled by the beams still live at max_length (no EOS).
    live_scores = jnp.where(
        live_logp > neg / 2, live_logp / brevity_penalty(float(length), alpha), neg
    )
    scores, keep = jax.lax.top_k(jnp.concatenate([fin_scores, live_scores], axis=1), k)
    seqs = jnp.take_along_axis(
        jnp.concatenate([fin_seqs, live_seqs], axis=1), keep[..., None], axis=1
    )
    return seqs, scores
