"""The decoding loops every model family shares: greedy and sampled decoding, and beam search
with T5's brevity penalty, each one `jax.lax.while_loop` over the family's step function

    step(tokens [n], cache) -> (logits [n, vocab], cache)

which feeds each row's last token and returns the logits of its next one. A family whose
prefill already produced the first logits (a decoder-only model reading its prompt and input)
hands them in as `first` [n, vocab], and the loop starts from them; otherwise the first step
reads token 0 (T5's decoder start). Beam search keeps `num_beams` rows per example, example-
major (row b * k + j is example b's beam j), and reorders every cache leaf along the axis that
`batch_axis_of(leaf)` names (None: a leaf shared by every row).

Every output is 0 after its row's EOS (`eos_id`; None: no id ends a row, and every row decodes
`max_length` tokens); ids at or past `vocab_limit` never decode. Everything here is jittable
with static lengths. The numerical core: jax only; no TensorFlow, seqio or gin.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp

from ptune.models.layers import limit_vocab

Array = jax.Array
PyTree = Any
Step = Callable[[Array, PyTree], tuple[Array, PyTree]]


@dataclasses.dataclass(frozen=True)
class Decoding:
    """How generation decodes: greedily (the default), the best of `num_beams` beams with
    T5's length penalty `alpha`, or sampled (`temperature` > 0, then top-k / top-p); ids at or
    past `vocab_limit` (embedding rows beyond the tokenizer's vocabulary) never decode.
    `eos_id`: the tokenizer's end of sequence, which ends a row; None: the family's own (T5's
    1; a decoder-only model has none, and every row decodes max_length tokens)."""

    num_beams: int = 1
    alpha: float = 0.6
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    vocab_limit: Optional[int] = None
    eos_id: Optional[int] = None


PARAMETER_NAMES = {n: n for n in ("num_beams", "temperature", "top_k", "top_p")}


def check_decoding(
    num_beams: int,
    temperature: float,
    top_k: int,
    top_p: float,
    names: Mapping[str, str] = PARAMETER_NAMES,
) -> None:
    """Refuses settings that cannot decode, and sampling settings that greedy decoding would
    silently ignore: one UserError naming the settings as the user spelt them (`names`: the
    gin names for `ptune infer`, which checks before any work; the Python API's parameter
    names by default, as `Server.generate` checks)."""
    from ptune.errors import UserError

    n = names
    if num_beams < 1:
        raise UserError(f"{n['num_beams']} must be at least 1, got {num_beams}")
    if temperature < 0 or top_k < 0:
        raise UserError(
            f"{n['temperature']} and {n['top_k']} must be >= 0, got {temperature} and {top_k}"
        )
    if not 0 < top_p <= 1:
        raise UserError(
            f"{n['top_p']} must be in (0, 1], got {top_p:g}"
            + (": sampling from no token" if top_p == 0 else "")
        )
    if temperature == 0 and (top_k or top_p < 1):
        raise UserError(
            f"{n['top_k']} ({top_k}) and {n['top_p']} ({top_p}) shape sampling, but "
            f"{n['temperature']} is 0 (greedy decoding would ignore them): set "
            f"{n['temperature']} > 0 to sample"
        )
    if num_beams > 1 and temperature > 0:
        raise UserError(
            f"choose beam search ({n['num_beams']} > 1) or sampling ({n['temperature']} > 0)"
        )


def filter_logits(logits: Array, top_k: int, top_p: float) -> Array:
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


def brevity_penalty(length, alpha: float):
    """T5's length normalisation: ((5 + length) / 6) ** alpha (alpha 0.6 by default)."""
    return ((5.0 + length) / 6.0) ** alpha


def _eos(decode: Decoding) -> int:
    return -1 if decode.eos_id is None else decode.eos_id  # -1: no id ends a row


def sample(
    step: Step,
    cache: PyTree,
    decode: Decoding,
    *,
    batch: int,
    max_length: int,
    rng: Optional[Array] = None,
    first: Optional[Array] = None,
) -> Array:
    """Greedy (temperature 0) or sampled decoding -> tokens [batch, max_length].

    Sampling splits `rng` (default PRNGKey(0)) once per token and draws every row's token
    from the new key; the loop stops once every row has ended."""
    eos = _eos(decode)
    if rng is None:
        rng = jax.random.PRNGKey(0)

    def choose(i, logits, done, out, rng):
        logits = limit_vocab(logits, decode.vocab_limit)
        if decode.temperature == 0.0:
            nxt = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        else:
            rng, sub = jax.random.split(rng)
            filtered = filter_logits(logits / decode.temperature, decode.top_k, decode.top_p)
            nxt = jax.random.categorical(sub, filtered, axis=-1).astype(jnp.int32)
        nxt = jnp.where(done, 0, nxt)
        out = jax.lax.dynamic_update_slice_in_dim(out, nxt[:, None], i, axis=1)
        return i + 1, nxt, done | (nxt == eos), out, rng

    def body(carry):
        i, token, done, out, cache, rng = carry
        logits, cache = step(token, cache)
        i, token, done, out, rng = choose(i, logits, done, out, rng)
        return i, token, done, out, cache, rng

    def cond(carry):
        i, _, done, *_ = carry
        return (i < max_length) & ~jnp.all(done)

    i, token = jnp.zeros((), jnp.int32), jnp.zeros((batch,), jnp.int32)
    done, out = jnp.zeros((batch,), bool), jnp.zeros((batch, max_length), jnp.int32)
    if first is not None:
        i, token, done, out, rng = choose(i, first, done, out, rng)
    return jax.lax.while_loop(cond, body, (i, token, done, out, cache, rng))[3]


def gather_beams(tree: PyTree, flat_index: Array, batch_axis_of: Callable) -> PyTree:
    """Reorders the batch*beam axis of every cache leaf by `flat_index` [b * k]."""

    def gather(leaf):
        axis = batch_axis_of(leaf)
        return leaf if axis is None else jnp.take(leaf, flat_index, axis=axis)

    return jax.tree_util.tree_map(gather, tree)


def beam_search(
    step: Step,
    cache: PyTree,
    decode: Decoding,
    *,
    batch: int,
    max_length: int,
    batch_axis_of: Callable,
    first: Optional[Array] = None,
) -> tuple[Array, Array]:
    """Beam search with T5's length penalty -> (tokens [batch, num_beams, max_length],
    scores [batch, num_beams]), best first. `cache` (and `first`) hold batch * num_beams rows.

    A score is the sequence log-probability / brevity_penalty(length, alpha). Each step takes
    the 2k best continuations of the k live beams: those ending in EOS join the finished
    (the best k kept), the best k others stay live. Beams still live at max_length (no EOS)
    compete, scored at max_length, for the slots that finished beams leave. With alpha = 0
    and one beam this is greedy decoding."""
    b, k, length = batch, decode.num_beams, max_length
    alpha, eos = decode.alpha, _eos(decode)
    neg = jnp.float32(-1e9)
    positions = jnp.arange(length)

    def update(i, logits, live_seqs, live_logp, fin_seqs, fin_scores):
        """The step's beams from the logits [b * k, vocab] of the live ones -> (i + 1, live
        and finished beams, each new live beam's parent row [b * k])."""
        logits = limit_vocab(logits.astype(jnp.float32), decode.vocab_limit)
        logp = jax.nn.log_softmax(logits, axis=-1).reshape(b, k, -1)
        vocab = logp.shape[-1]
        candidates = (live_logp[:, :, None] + logp).reshape(b, k * vocab)
        top_logp, top_index = jax.lax.top_k(candidates, 2 * k)  # [b, 2k]
        source = top_index // vocab
        token = (top_index % vocab).astype(jnp.int32)
        seqs = jnp.take_along_axis(live_seqs, source[..., None], axis=1)
        seqs = jnp.where(positions[None, None, :] == i, token[..., None], seqs)
        is_eos = token == eos
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
        return (i + 1, live_seqs, live_logp, fin_seqs, fin_scores), flat

    def body(carry):
        i, live_seqs, live_logp, fin_seqs, fin_scores, cache = carry
        previous = jax.lax.dynamic_index_in_dim(
            live_seqs, jnp.maximum(i - 1, 0), axis=2, keepdims=False
        )
        last = jnp.where(i == 0, 0, previous)
        logits, cache = step(last.reshape(b * k), cache)
        beams, flat = update(i, logits, live_seqs, live_logp, fin_seqs, fin_scores)
        return (*beams, gather_beams(cache, flat, batch_axis_of))

    def cond(carry):
        i, _, live_logp, _, fin_scores, _ = carry
        # Log-probabilities only fall, and the penalty is largest at max_length: once every
        # finished slot beats the best live beam's bound, nothing can change the result.
        best_live = live_logp[:, 0] / brevity_penalty(float(length), alpha)
        settled = jnp.all(fin_scores[:, -1] > best_live) if alpha >= 0 else False
        return (i < length) & ~settled

    live_logp = jnp.tile(jnp.array([0.0] + [-1e9] * (k - 1), jnp.float32)[None], (b, 1))
    beams = (
        jnp.zeros((), jnp.int32),
        jnp.zeros((b, k, length), jnp.int32),
        live_logp,
        jnp.zeros((b, k, length), jnp.int32),
        jnp.full((b, k), neg),
    )
    if first is not None:  # every row of an example holds the same cache: nothing to reorder
        beams, _ = update(*beams[:1], first, *beams[1:])
    _, live_seqs, live_logp, fin_seqs, fin_scores, _ = jax.lax.while_loop(
        cond, body, (*beams, cache)
    )
    # Empty finished slots are filled by the beams still live at max_length (no EOS).
    live_scores = jnp.where(
        live_logp > neg / 2, live_logp / brevity_penalty(float(length), alpha), neg
    )
    scores, keep = jax.lax.top_k(jnp.concatenate([fin_scores, live_scores], axis=1), k)
    seqs = jnp.take_along_axis(
        jnp.concatenate([fin_seqs, live_seqs], axis=1), keep[..., None], axis=1
    )
    return seqs, scores
