"""Dot-product attention (`ptune.models.attention`): the head-by-head form XLA's CPU backend
gets equals the batched form elsewhere, in values and gradients, with every option the T5 and
decoder-only models use; dropout keeps flax's mask; the position bias's custom gradient."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from conftest import tiny_t5
from ptune.models import attention, t5

MASK_VALUE = -1e10
KW = dict(mask_value=MASK_VALUE, scale=None, keep_prob=1.0, dtype=jnp.float32)


def _inputs(seed, b=2, q=5, k=7, h=4, g=4, d=3):
    rng = np.random.default_rng(seed)
    f = lambda *shape: jnp.asarray(rng.standard_normal(shape), jnp.float32)  # noqa: E731
    query, key, value = f(b, q, h, d), f(b, k, g, d), f(b, k, g, d)
    bias = f(1, h, q, k)
    mask = jnp.asarray(rng.random((b, 1, q, k)) < 0.8)
    return query, key, value, bias, mask


# (name, grouped key/value heads, bias, mask, scale, dropout): T5's encoder and decoder
# attention, a decoder-only model's grouped-query attention, and T5 with attention dropout.
CASES = {
    "t5": dict(g=4, bias=True, scale=None, dropout=False),
    "grouped-query": dict(g=2, bias=False, scale=np.sqrt(3.0), dropout=False),
    "dropout": dict(g=4, bias=True, scale=None, dropout=True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_head_by_head_equals_all_heads_at_once_in_values_and_gradients(case):
    """`_by_head` (XLA:CPU) against `_batched` (other platforms): outputs and the gradients of
    query, key, value and bias agree to 1e-6 (float32, the same products in other kernels:
    summation order only)."""
    opts = CASES[case]
    query, key, value, bias, mask = _inputs(0, g=opts["g"])
    keep = None
    if opts["dropout"]:
        keep = jnp.asarray(np.random.default_rng(1).random((2, 4, 1, 7)) < 0.7)
    bias = bias if opts["bias"] else None
    ct = jnp.asarray(np.random.default_rng(2).standard_normal(query.shape), jnp.float32)

    def run(form):
        def fn(q, k, v, b):
            return form(q, k, v, b, mask, keep, **dict(KW, scale=opts["scale"], keep_prob=0.7))

        out, vjp = jax.vjp(fn, query, key, value, bias)
        return (out, *vjp(ct))

    ours, theirs = (
        jax.jit(lambda: run(attention._by_head))(),
        jax.jit(lambda: run(attention._batched))(),
    )
    names = ("output", "query gradient", "key gradient", "value gradient", "bias gradient")
    for name, a, b in zip(names, ours, theirs):
        if b is None:
            continue
        assert a.shape == b.shape, name
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6, err_msg=name)
    # The mask and dropout take effect: the reference form changes without them.
    plain = attention._batched(
        query, key, value, bias, None, None, **dict(KW, scale=opts["scale"], keep_prob=0.7)
    )
    assert not np.allclose(np.asarray(ours[0]), np.asarray(plain), atol=1e-3)


def _dots(fn, *args) -> int:
    hlo = jax.jit(fn).lower(*args).compile().as_text()
    return len(re.findall(r"= [a-z0-9]+\[[\d,]*\]\S* dot\(", hlo))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="checks the CPU backend's lowering")
def test_on_cpu_attend_takes_the_heads_one_at_a_time_for_logits_of_64_x_64_or_more():
    """`attend` with every option, jitted: for 64 x 64 logits the CPU lowering computes 2
    products per head (4 heads: 8) and the batched form's values (1e-6); 32 x 64 logits, one
    query position (cached decoding), the batched form and `attend` within
    `batched_on_every_platform` compute 2 in all."""
    query, key, value, bias, mask = _inputs(3, q=64, k=64)
    keep = jnp.asarray(np.random.default_rng(4).random((2, 4, 1, 64)) < 0.7)

    def attend(q, k, v):
        n = q.shape[1]
        return attention.attend(
            q,
            k,
            v,
            bias=bias[:, :, :n],
            mask=mask[:, :, :n],
            mask_value=MASK_VALUE,
            dropout=(keep, 0.7),
        )

    def batched(q, k, v):
        return attention._batched(q, k, v, bias, mask, keep, **dict(KW, keep_prob=0.7))

    assert attention.BY_HEAD_MIN_LOGITS == 64 * 64
    assert _dots(attend, query, key, value) == 2 * 4
    assert _dots(attend, query[:, :32], key, value) == 2
    assert _dots(attend, query[:, :1], key, value) == 2
    assert _dots(batched, query, key, value) == 2
    with attention.batched_on_every_platform():  # `ptune plan`'s stand-in for accelerators
        assert _dots(lambda *a: attend(*a), query, key, value) == 2  # a new trace
    assert _dots(attend, query, key, value) == 2 * 4
    np.testing.assert_allclose(
        np.asarray(jax.jit(attend)(query, key, value)),
        np.asarray(batched(query, key, value)),
        rtol=1e-6,
        atol=1e-6,
    )


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="compares the CPU's two forms")
def test_a_t5_model_gives_the_same_logits_and_gradients_head_by_head_as_batched():
    """The tiny T5 on 80 input tokens (self-attention logits 80 x 80: head by head on a CPU)
    against the same model with `batched_on_every_platform`: logits and the gradient of a
    loss with respect to every parameter agree to 1e-5 (float32, summation order only)."""
    config = tiny_t5()
    model = t5.Transformer(config)
    rng = np.random.default_rng(5)
    enc = rng.integers(1, 64, size=(2, 80)).astype(np.int32)
    enc[1, 50:] = 0
    tgt = rng.integers(1, 64, size=(2, 6)).astype(np.int32)
    dec_in = np.concatenate([np.zeros((2, 1), np.int32), tgt[:, :-1]], axis=1)
    params = nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), enc, dec_in, tgt)["params"])

    def logits_and_gradients():
        def loss(p):
            logits = model.apply({"params": p}, enc, dec_in, tgt, enable_dropout=False)
            return jnp.sum(jax.nn.log_softmax(logits) * jax.nn.one_hot(tgt, 64)), logits

        (_, logits), grads = jax.value_and_grad(loss, has_aux=True)(params)
        return logits, grads

    compiled = jax.jit(logits_and_gradients).lower().compile()
    with attention.batched_on_every_platform():
        compiled_batched = jax.jit(lambda: logits_and_gradients()).lower().compile()
    # The encoder's self-attention went head by head in one, batched in the other.
    assert "bqd,bkd->bqk" in compiled.as_text()
    assert "bqd,bkd->bqk" not in compiled_batched.as_text()
    by_head, batched = compiled(), compiled_batched()
    np.testing.assert_allclose(np.asarray(by_head[0]), np.asarray(batched[0]), rtol=1e-5, atol=1e-5)
    flat = jax.tree_util.tree_leaves_with_path(by_head[1])
    for (path, a), b in zip(flat, jax.tree_util.tree_leaves(batched[1])):
        np.testing.assert_allclose(
            np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5, err_msg=jax.tree_util.keystr(path)
        )


def test_dropout_keeps_the_mask_flax_draws_for_the_weights():
    """The T5 attention draws its keep mask by applying `nn.Dropout` to ones [b, h, 1, k]:
    the same draw (same key, same broadcast shape) as `nn.Dropout(rate, broadcast_dims=(-2,))`
    on the weights [b, h, q, k] themselves, so the weights after dropout are flax's bit for
    bit."""
    rng = jax.random.PRNGKey(7)
    logits = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 5, 7))
    dropout = nn.Dropout(0.3, broadcast_dims=(-2,))
    weights = jax.nn.softmax(logits, axis=-1)
    theirs = dropout.apply({}, weights, deterministic=False, rngs={"dropout": rng})
    keep = dropout.apply({}, jnp.ones((2, 4, 1, 7)), deterministic=False, rngs={"dropout": rng})
    ours = attention._weights(logits, None, None, keep > 0, **dict(KW, keep_prob=0.7))
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    assert 0 < int(np.sum(np.asarray(keep) == 0)) < keep.size


@pytest.mark.parametrize("bias_shape", [(1, 2, 5, 7), (3, 2, 5, 7), (1, 2, 1, 7)])
def test_the_position_bias_add_and_its_gradients_equal_the_plain_add(bias_shape):
    """`attention.add_position_bias` only changes how the bias's gradient is summed over the
    batch (a CPU speed fix): the output and the logits' gradient are `+`'s bit for bit, the bias's
    gradient equal to float32 summation order (1e-6 relative, over 3 rows); a bias per row
    gets the cotangent itself, and a bias broadcast along other axes as well their sum."""
    rng = np.random.default_rng(1)
    logits = jnp.asarray(rng.standard_normal((3, 2, 5, 7)), jnp.float32)
    bias = jnp.asarray(rng.standard_normal(bias_shape), jnp.float32)
    ct = jnp.asarray(rng.standard_normal((3, 2, 5, 7)), jnp.float32)

    def outputs_and_gradients(fn):
        y, vjp = jax.vjp(fn, logits, bias)
        return (y, *vjp(ct))

    ours = jax.jit(lambda: outputs_and_gradients(attention.add_position_bias))()
    plain = jax.jit(lambda: outputs_and_gradients(jnp.add))()
    for name, a, b in zip(("output", "logits gradient"), ours[:2], plain[:2]):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), name)
    assert ours[2].shape == bias.shape
    np.testing.assert_allclose(np.asarray(ours[2]), np.asarray(plain[2]), rtol=1e-6, atol=1e-6)


def _causal_inputs(seed, b=2, q=16, k=16, h=4, g=2, d=8):
    rng = np.random.default_rng(seed)
    f = lambda *shape: jnp.asarray(rng.standard_normal(shape), jnp.float32)  # noqa: E731
    query, key, value = f(b, q, h, d), f(b, k, g, d), f(b, k, g, d)
    key_valid = np.ones((b, k), bool)
    key_valid[1, k - 5 :] = False  # a padded row
    # Row 0 from slot 0; row 1 continues a cache at slot k - q (its keys before are real).
    query_slot = np.stack([np.arange(q), np.arange(q) + k - q]).astype(np.int32)
    return query, key, value, jnp.asarray(query_slot), jnp.asarray(key_valid)


@pytest.mark.parametrize(
    "q, chunk_logits, chunks",
    [(64, 16 * 64, 4), (64, 32 * 64, 2), (64, 47 * 64, 2), (50, 16 * 64, 4)],
)
def test_causal_attention_in_query_chunks_equals_one_chunk(monkeypatch, q, chunk_logits, chunks):
    """`attend_causal` with queries in chunks (a remat'd `lax.map`) against one chunk, with
    grouped-query heads, a padded row and a row whose queries start past slot 0: outputs and
    the gradients of query, key and value agree to 1e-6 (float32, summation order only). The
    chunk is the largest power of two within `CHUNK_LOGITS` (47 x 64 logits: 32 rows); 50
    queries in chunks of 16 pad the last chunk."""
    query, key, value, query_slot, key_valid = _causal_inputs(0, q=q, k=64)
    ct = jnp.asarray(np.random.default_rng(1).standard_normal(query.shape), jnp.float32)

    def run():
        def fn(q, k, v):
            return attention.attend_causal(
                q, k, v, query_slot=query_slot, key_valid=key_valid, scale=np.sqrt(8.0)
            )

        out, vjp = jax.vjp(fn, query, key, value)
        return (out, *vjp(ct))

    whole = jax.jit(run)()
    monkeypatch.setattr(attention, "CHUNK_LOGITS", chunk_logits)
    lowered = jax.jit(lambda: run()).lower()
    assert f"tensor<{chunks}x2x{64 // chunks}x4x8xf32>" in lowered.as_text()  # the chunks
    chunked = lowered.compile()()
    names = ("output", "query gradient", "key gradient", "value gradient")
    for name, a, b in zip(names, chunked, whole):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6, err_msg=name)
    # The causal mask and the padding take effect: without them the output differs.
    open_mask = jnp.ones_like(key_valid)
    unmasked = attention.attend(
        query, key, value, mask=open_mask[:, None, None], mask_value=-1e10, scale=np.sqrt(8.0)
    )
    assert not np.allclose(np.asarray(whole[0]), np.asarray(unmasked), atol=1e-3)
    assert whole[0].shape == query.shape


def test_query_chunks_keep_attentions_training_memory_to_one_chunk(monkeypatch):
    """The gradient of causal attention over 512 x 512 logits (batch 2, 4 heads: 8 MiB of
    float32 scores) compiled in one chunk and in chunks of 64 queries: XLA's temporaries
    shrink by more than half (the scores of one chunk at a time)."""
    query, key, value, query_slot, key_valid = _causal_inputs(2, q=512, k=512)

    def temp_bytes():
        def loss(q, k, v):
            out = attention.attend_causal(
                q, k, v, query_slot=query_slot, key_valid=key_valid, scale=None
            )
            return jnp.sum(out**2)

        grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
        with attention.batched_on_every_platform():
            return grad.lower(query, key, value).compile().memory_analysis().temp_size_in_bytes

    whole = temp_bytes()
    monkeypatch.setattr(attention, "CHUNK_LOGITS", 64 * 512)  # chunks of 64 queries
    chunked = temp_bytes()
    assert whole > 2 * 4 * 512 * 512 * 4  # at least one [b, h, q, k] float32 array
    assert chunked < whole / 2, (chunked, whole)
