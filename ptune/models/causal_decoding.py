"""Decoder-only decoding with a key/value cache (`llama.SelfAttention`'s `decode`): greedy,
sampled or beam-searched generation from a prefix (`generate`, `beam_search`), the prompt's
keys and values computed once (`prompt_cache`, stacked per bank: `stack_caches`) and shared
by the rows of a batch (`bank_cache`), and a bank's generation over them
(`PromptCacheGenerator`). Each call is one compiled program per shape: the prefill and the
token loop together.

    first, cache = prefill(prompt + tokens)        # once per row, the logits of its next token
    search.sample(step, cache, first=first)        # or, the cache rows and `first` repeated
    search.beam_search(step, cache, first=first)   # per beam, T5's beam search

The loops are `ptune.models.search`'s, the ones T5 decodes with. A cache holds, per layer,
keys and values [b, slots, kv_heads, head_dim], their validity [b, slots] and each row's next
slot `index` [b]; a row's real positions fill slots 0, 1, ... in order. The numerical core:
jax, flax; no TensorFlow, seqio or gin.
"""

from __future__ import annotations

import functools
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from ptune import buckets, prompts
from ptune.models import llama, search
from ptune.models.search import Decoding

Array = jax.Array
PyTree = Any


def _abstract(params: Any) -> tuple:
    """`params` as a hashable key of shapes and dtypes: (treedef, ShapeDtypeStruct leaves)."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    return treedef, tuple(jax.ShapeDtypeStruct(x.shape, x.dtype) for x in leaves)


def prompt_length(model: llama.CausalLM, params: Any) -> int:
    """How many positions `model`'s prompt module adds (0 without one); computes nothing."""
    if model.prompt_factory is None:
        return 0
    return _prompt_length(model, *_abstract(params))


@functools.lru_cache(maxsize=64)
def _prompt_length(model: llama.CausalLM, treedef, leaves: tuple) -> int:
    params = jax.tree_util.tree_unflatten(treedef, leaves)
    tokens = jnp.zeros((1, 1), jnp.int32)
    index = jnp.zeros((1,), jnp.int32) if prompts.takes_index(model.prompt_factory) else None
    out = jax.eval_shape(lambda p: model.apply({"params": p}, tokens, prompt_index=index), params)
    return out.shape[1] - 1


def init_cache(model: llama.CausalLM, params: Any, batch: int, length: int) -> Any:
    """An empty key/value cache for `batch` rows of `length` positions in all (prompt,
    input and generated tokens): zeros, shaped by tracing the model once per model, parameter
    shapes, batch and length (nothing is computed; later calls reuse the shapes)."""
    shapes = _cache_shapes(model, *_abstract(params), batch, length)
    return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


@functools.lru_cache(maxsize=64)
def _cache_shapes(model: llama.CausalLM, treedef, leaves: tuple, batch: int, length: int) -> Any:
    params = jax.tree_util.tree_unflatten(treedef, leaves)
    tokens = jnp.zeros((batch, length - prompt_length(model, params)), jnp.int32)
    index = jnp.zeros((batch,), jnp.int32) if prompts.takes_index(model.prompt_factory) else None

    def create(p):
        _, variables = model.apply(
            {"params": p}, tokens, decode=True, prompt_index=index, mutable=["cache"]
        )
        return variables["cache"]

    return jax.eval_shape(create, params)


def prompt_cache(
    config: llama.LlamaConfig, params: Any, prompt: Array, length: int, bos_id: Optional[int] = None
) -> Any:
    """The keys and values of `prompt` [P, E] alone (with `bos_id`: of that token followed by
    the prompt, placement "after_bos"), computed once, in a one-row cache of `length` slots:
    with a causal model and the prompt first, they do not depend on what follows. `params`
    are the model's, without a prompt."""
    placement = "prefix" if bos_id is None else "after_bos"
    model = llama.CausalLM(config, prompts.prompt_factory(int(prompt.shape[0]), placement))
    # [BOS,] the prompt and one invalid placeholder token, which the next write replaces.
    head = [] if bos_id is None else [bos_id]
    tokens = np.asarray([head + [0]], np.int32)
    valid = np.asarray([[True] * len(head) + [False]])
    return _prompt_cache(model, prompts.with_prompt(params, prompt), tokens, valid, length)


@functools.partial(jax.jit, static_argnames=("model", "length"))
def _prompt_cache(model, params, tokens, valid, length):
    cache = init_cache(model, params, 1, length)  # traced: the zeros are made in the program
    return _cached_apply(model, params, cache, tokens, valid, True, None)[1]


def stack_caches(config: llama.LlamaConfig, caches: list) -> Any:
    """One cache whose row k is `caches[k]`'s (one-row caches of the same length, one per
    prompt of a bank: `prompt_cache`): built once per bank and length, then `bank_cache`
    picks each request's row from it."""
    axis = _batch_axis(config)
    return jax.tree_util.tree_map(lambda *c: jnp.concatenate(c, axis=axis), *caches)


def bank_cache(config: llama.LlamaConfig, stacked: Any, prompt_index: Array) -> Any:
    """A batch's cache from a bank's (`stack_caches`): row i starts from prompt
    `prompt_index[i]`'s keys and values (one compiled gather)."""
    return _rows(stacked, jnp.asarray(prompt_index, jnp.int32), _batch_axis(config))


@functools.partial(jax.jit, static_argnames=("axis",))
def _rows(stacked, index, axis):
    return jax.tree_util.tree_map(lambda c: jnp.take(c, index, axis=axis), stacked)


def generate(
    model: llama.CausalLM,
    params: Any,
    tokens: Array,
    valid: Array,
    max_new_tokens: int,
    cache: Optional[Any] = None,
    decode: Decoding = Decoding(),
    *,
    rng: Optional[Array] = None,
    prompt_index: Optional[Array] = None,
) -> Array:
    """Decoding with the key/value cache as `decode` says: greedy (the default), sampled from
    `rng`, or the best of its beams (`beam_search`). tokens [b, l] right-padded with `valid`
    [b, l] -> the next `max_new_tokens` tokens of each row [b, max_new_tokens], 0 after the
    row's `decode.eos_id` (without one, every row decodes them all). One compiled program
    per model, shapes and decoding: the prefill and the token loop.

    Without `cache`, each row reads the model's prompt (if any; of a bank, row i's
    `prompt_index[i]`) + its tokens. With `cache` (`prompt_cache`/`bank_cache`: each row's
    prompt already in it, computed once), the rows continue from it and `model` takes no
    prompt. Rows of different lengths decode together."""
    if decode.num_beams > 1:
        beams, _ = beam_search(
            model, params, tokens, valid, max_new_tokens, cache, decode, prompt_index=prompt_index
        )
        return beams[:, 0]
    index = None if prompt_index is None else jnp.asarray(prompt_index, jnp.int32)
    return _sample(model, params, tokens, valid, cache, index, rng, decode, max_new_tokens)


def beam_search(
    model: llama.CausalLM,
    params: Any,
    tokens: Array,
    valid: Array,
    max_new_tokens: int,
    cache: Optional[Any] = None,
    decode: Decoding = Decoding(num_beams=4),
    *,
    prompt_index: Optional[Array] = None,
) -> tuple[Array, Array]:
    """`search.beam_search` after one prefill: each row's prompt and tokens are read once (as
    `generate` reads them), then its cache rows and first logits are repeated per beam ->
    (tokens [b, num_beams, max_new_tokens], scores [b, num_beams]), best first."""
    index = None if prompt_index is None else jnp.asarray(prompt_index, jnp.int32)
    return _beams(model, params, tokens, valid, cache, index, decode, max_new_tokens)


def _prefill(model, params, tokens, valid, max_new_tokens, cache, prompt_index):
    """Reads each row's prompt (unless `cache` holds it) and tokens into the cache ->
    (the logits of each row's first new token [b, vocab], the cache). Traced inside the
    decoding programs."""
    b, length = tokens.shape
    valid = jnp.asarray(valid, bool)
    if cache is None:
        prompt = prompt_length(model, params)
        cache = init_cache(model, params, b, prompt + length + max_new_tokens)
    before = _filled(cache)
    logits, cache = _cached_apply(model, params, cache, tokens, valid, True, prompt_index)
    # Each row's last real position among the logits: the prompt (its own length, in a bank
    # of prompts of different lengths) and its tokens fill slots from the first, in order.
    last = _filled(cache) - before - 1
    return jnp.take_along_axis(logits, last[:, None, None], axis=1)[:, 0], cache


def _stepper(model: llama.CausalLM, params: Any) -> search.Step:
    """One new token per row against the cache (`search.Step`): tokens [n] -> (logits
    [n, vocab], cache)."""

    def step(tokens, cache):
        ones = jnp.ones((tokens.shape[0], 1), bool)
        logits, cache = _cached_apply(model, params, cache, tokens[:, None], ones, False, None)
        return logits[:, 0], cache

    return step


@functools.partial(jax.jit, static_argnames=("model", "decode", "max_new_tokens"))
def _sample(model, params, tokens, valid, cache, prompt_index, rng, decode, max_new_tokens):
    first, cache = _prefill(model, params, tokens, valid, max_new_tokens, cache, prompt_index)
    return search.sample(
        _stepper(model, params),
        cache,
        decode,
        batch=first.shape[0],
        max_length=max_new_tokens,
        rng=rng,
        first=first,
    )


@functools.partial(jax.jit, static_argnames=("model", "decode", "max_new_tokens"))
def _beams(model, params, tokens, valid, cache, prompt_index, decode, max_new_tokens):
    first, cache = _prefill(model, params, tokens, valid, max_new_tokens, cache, prompt_index)
    k, axis = decode.num_beams, _batch_axis(model.config)
    cache = jax.tree_util.tree_map(lambda c: jnp.repeat(c, k, axis=axis), cache)
    return search.beam_search(
        _stepper(model, params),
        cache,
        decode,
        batch=first.shape[0],
        max_length=max_new_tokens,
        batch_axis_of=lambda leaf: axis,
        first=jnp.repeat(first, k, axis=0),
    )


def _batch_axis(config: llama.LlamaConfig) -> int:
    """The rows' axis of every cache leaf: scanned caches carry the layer axis first."""
    return 1 if config.scan_layers else 0


def _filled(cache: Any) -> Array:
    """[b]: how many slots of each row a cache holds (the same in every layer)."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(cache):
        if getattr(path[-1], "key", None) == "index":
            return leaf[0] if leaf.ndim == 2 else leaf  # scanned: the layer axis first
    raise ValueError("not a decoding cache: it has no index")


# seqio's inputs as one sequence per row (no targets), in one compiled call per shape.
_layout = jax.jit(llama.seq2seq_layout, static_argnums=(2, 3))


def seq2seq_generate(
    model: llama.CausalLM,
    params: Any,
    encoder_input_tokens: Array,
    max_length: int,
    decode: Decoding = Decoding(),
    *,
    rng: Optional[Array] = None,
    prompt_index: Optional[Array] = None,
) -> Array:
    """Targets for seqio inputs [b, li] (`seq2seq_layout` without targets, so each row
    continues right after its input text) -> [b, max_length], decoded as `generate` does."""
    inputs = jnp.asarray(encoder_input_tokens, jnp.int32)
    empty = jnp.zeros((inputs.shape[0], 0), jnp.int32)
    tokens, valid, _ = _layout(inputs, empty, model.bos_id, model.drop_input_eos)
    return generate(
        model, params, tokens, valid, max_length, None, decode, rng=rng, prompt_index=prompt_index
    )


@functools.partial(jax.jit, static_argnames=("model", "add_prompt"))
def _cached_apply(model, params, cache, tokens, valid, add_prompt, prompt_index):
    """One compiled call per shape: (logits, the updated cache)."""
    logits, variables = model.apply(
        {"params": params, "cache": cache},
        tokens,
        valid,
        decode=True,
        add_prompt=add_prompt,
        prompt_index=prompt_index,
        mutable=["cache"],
    )
    return logits, variables["cache"]


# The decoder-only key/value cache lengths a bank's prompts are computed for: powers of two
# and their midpoints (from 16), so requests of nearby widths and output lengths share the
# bank's keys and values and the compiled decoding step; at most a third of a cache is slots
# no row reaches.
def _cache_length(needed: int) -> int:
    return buckets.LengthBuckets(smallest=16).round_up(needed)


class PromptCacheGenerator:
    """A decoder-only bank's generation: each row continues from its prompt's keys and values
    (after the BOS with placement "after_bos"), computed once per cache length for the whole
    bank (`prompt_cache`; `caches` {length: the bank's caches, stacked: `stack_caches`}).
    Recomputed with each request instead: a prompt after the first token of a model without a
    BOS, and a batch with a request whose input text is empty (its first new token reads the
    prompt's last position, which the cache holds only as keys and values). Beams and samples
    decode from the same caches: each row's input is read once, then its cache rows repeat
    per beam."""

    def __init__(self, family: Any, model: llama.CausalLM, frozen: PyTree, bank: Any):
        self.family, self.model, self.bank = family, model, bank
        self.params = jax.device_put(prompts.with_prompt(frozen, bank.prompts))
        self.frozen = jax.device_put(frozen)
        self.bare = llama.CausalLM(model.config, None, model.bos_id, model.drop_input_eos)
        self.bos = model.bos_id if bank.placement == "after_bos" else None
        self.caches: dict[int, Any] = {}

    def __call__(self, inputs, prompt_index, max_length: int, decode: Any, rng=None):
        model, bank, bos = self.model, self.bank, self.bos
        inputs = jnp.asarray(inputs, jnp.int32)
        empty = jnp.zeros((inputs.shape[0], 0), jnp.int32)
        layout = _layout(inputs, empty, model.bos_id, model.drop_input_eos)[:2]
        sequence, valid = jax.device_get(layout)
        if bos is not None:  # each prompt's cache starts with the BOS
            sequence, valid = sequence[:, 1:], valid[:, 1:]
        requests = jax.device_get(inputs).any(axis=1)  # padding rows are all 0
        if (bank.placement != "prefix" and bos is None) or (requests & ~valid.any(axis=1)).any():
            return self.family.generate(
                model, self.params, inputs, max_length, decode, rng=rng, prompt_index=prompt_index
            )
        length = _cache_length(
            max(bank.lengths) + (bos is not None) + sequence.shape[1] + max_length
        )
        if length not in self.caches:
            self.caches[length] = stack_caches(
                model.config,
                [
                    prompt_cache(model.config, self.frozen, p[:n], length, bos)
                    for p, n in zip(bank.prompts, bank.lengths)
                ],
            )
        cache = bank_cache(model.config, self.caches[length], prompt_index)
        return generate(self.bare, self.frozen, sequence, valid, max_length, cache, decode, rng=rng)
