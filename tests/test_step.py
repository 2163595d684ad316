"""Frozen-model training: only the prompt changes, no optimizer state for frozen weights,
the paper's Adafactor as t5x computes it, the loss as t5x defines it."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from conftest import random_params, tiny_t5
from ptune import losses, optimizers, prompts, step, trainable
from ptune.errors import UserError
from ptune.models import t5

CFG = tiny_t5()
P = 4


def _batch():
    rng = np.random.default_rng(0)
    enc = rng.integers(3, 64, size=(4, 10)).astype(np.int32)
    enc[:, 7:] = 0
    tgt = np.array([[5, 1, 0], [6, 1, 0], [5, 1, 0], [6, 1, 0]], np.int32)
    dec = np.concatenate([np.zeros((4, 1), np.int32), tgt[:, :-1]], axis=1)
    return {"encoder_input_tokens": enc, "decoder_input_tokens": dec, "decoder_target_tokens": tgt}


@pytest.fixture(scope="module")
def setup():
    model = t5.Transformer(CFG, prompts.prompt_factory(P))
    b = _batch()
    params = random_params(
        model,
        b["encoder_input_tokens"],
        b["decoder_input_tokens"],
        b["decoder_target_tokens"],
        enable_dropout=False,
    )
    return model, params


def _run(model, params, patterns, steps, optimizer=None, frozen_dtype=None):
    mask = trainable.trainable_mask(params, patterns)
    train, frozen = trainable.partition(params, mask)
    frozen = trainable.cast_frozen(frozen, frozen_dtype)
    optimizer = optimizer or optimizers.prompt_tuning_adafactor()
    state = step.init_state(jax.tree_util.tree_map(jnp.array, train), optimizer)  # donated
    train_step = step.make_train_step(model, optimizer, seed=1)
    history = []
    batch = _batch()
    for _ in range(steps):
        state, metrics = train_step(state, frozen, batch)
        history.append(float(metrics["loss_sum"] / metrics["tokens"]))
    return state, frozen, history


def test_only_the_prompt_changes_and_frozen_weights_are_bit_identical(setup):
    model, params = setup
    original = jax.tree_util.tree_map(np.array, params)
    state, frozen, history = _run(model, params, trainable.PROMPT_ONLY, 6)
    final = traverse_util.flatten_dict(trainable.merge(state.params, frozen), sep="/")
    before = traverse_util.flatten_dict(original, sep="/")
    assert set(final) == set(before)
    assert not np.array_equal(final["encoder/prompt/prompt"], before["encoder/prompt/prompt"])
    for path, value in before.items():
        if path != "encoder/prompt/prompt":
            assert np.asarray(final[path]).tobytes() == value.tobytes(), path
    assert int(state.step) == 6


def test_frozen_leaves_have_no_optimizer_state(setup):
    model, params = setup
    mask = trainable.trainable_mask(params, trainable.PROMPT_ONLY)
    train, _ = trainable.partition(params, mask)
    opt_state = optimizers.prompt_tuning_adafactor().init(train)
    leaves = jax.tree_util.tree_leaves(opt_state)
    # The prompt [4, 8] is below Adafactor's factoring threshold: a full second moment.
    assert sum(np.size(x) for x in leaves) <= P * CFG.emb_dim + 8
    assert set(traverse_util.flatten_dict(train, sep="/")) == {"encoder/prompt/prompt"}


def test_trainable_count_line(setup):
    _, params = setup
    mask = trainable.trainable_mask(params, trainable.PROMPT_ONLY)
    total = t5.parameter_count(CFG) + P * CFG.emb_dim
    assert trainable.count(mask, params) == (32, total)
    assert trainable.summary_line(mask, params).startswith(f"trainable params: 32 of {total:,} (")


def test_pattern_that_matches_nothing_is_an_error(setup):
    _, params = setup
    with pytest.raises(UserError, match=r"pattern 'encoder/promt/.\*' matches no parameter"):
        trainable.trainable_mask(params, ["encoder/prompt/prompt", "encoder/promt/.*"])
    with pytest.raises(UserError, match="not a valid regex"):
        trainable.trainable_mask(params, ["encoder/("])
    with pytest.raises(UserError, match="empty"):
        trainable.trainable_mask(params, [])


def test_loss_falls_when_tuning_the_prompt(setup):
    _, params = setup
    model = t5.Transformer(CFG.replace(dropout_rate=0.0), prompts.prompt_factory(P))
    _, _, history = _run(model, params, trainable.PROMPT_ONLY, 30)
    assert history[-1] < history[0] - 0.3, history


def test_model_tuning_changes_every_weight(setup):
    model, params = setup
    state, frozen, _ = _run(model, params, trainable.EVERYTHING, 2)
    assert frozen == {}
    before = traverse_util.flatten_dict(params, sep="/")
    after = traverse_util.flatten_dict(state.params, sep="/")
    assert set(after) == set(before)
    unchanged = [p for p in before if np.array_equal(after[p], before[p])]
    assert not unchanged


def test_bfloat16_frozen_weights(setup):
    model, params = setup
    state, frozen, history = _run(
        model, params, trainable.PROMPT_ONLY, 3, frozen_dtype=jnp.bfloat16
    )
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree_util.tree_leaves(frozen))
    assert prompts.get_prompt(state.params).dtype == jnp.float32
    _, _, reference = _run(model, params, trainable.PROMPT_ONLY, 3)
    # bfloat16 weights (8 mantissa bits) move the per-token loss by ~1e-2 at most here.
    np.testing.assert_allclose(history, reference, atol=0.05)


def test_prompt_tuning_adafactor_matches_t5x_update_rule():
    """Two steps of the t5x Adafactor rule, written out by hand, for an unfactored [4, 8]
    prompt and a factored [256, 128] matrix."""
    rng = np.random.default_rng(0)
    params = {
        "a": rng.normal(size=(4, 8)).astype(np.float32),
        "b": rng.normal(size=(256, 128)).astype(np.float32),
    }
    grads = [
        {k: rng.normal(size=v.shape).astype(np.float32) for k, v in params.items()}
        for _ in range(2)
    ]
    opt = optimizers.prompt_tuning_adafactor()
    state = opt.init(params)
    current = params
    update = jax.jit(opt.update)  # one compiled call per step, not one per operation
    for g in grads:
        updates, state = update(g, state, current)
        current = optax.apply_updates(current, updates)

    lr, wd, eps = 0.3, 1e-5, 1e-30
    p = {k: v.astype(np.float64) for k, v in params.items()}
    v_full = np.zeros((4, 8))
    v_row, v_col = np.zeros(256), np.zeros(128)
    for t, g in enumerate(grads):
        decay = 1.0 - (t + 1.0) ** -0.8
        ga, gb = g["a"].astype(np.float64), g["b"].astype(np.float64)
        v_full = decay * v_full + (1 - decay) * (ga * ga + eps)
        ya = ga / np.sqrt(v_full)
        sq = gb * gb + eps
        v_row = decay * v_row + (1 - decay) * sq.mean(axis=1)
        v_col = decay * v_col + (1 - decay) * sq.mean(axis=0)
        yb = gb * (v_row / v_row.mean())[:, None] ** -0.5 * v_col[None, :] ** -0.5
        for key, y in (("a", ya), ("b", yb)):
            y = y / max(1.0, np.sqrt(np.mean(y * y)) / 1.0)
            p[key] = (1.0 - wd) * p[key] - lr * y
    for key in params:
        np.testing.assert_allclose(np.asarray(current[key]), p[key], rtol=2e-5, atol=2e-6)


def test_cross_entropy_z_loss_and_smoothing_by_hand():
    logits = jnp.array([[[2.0, 0.5, -1.0], [0.0, 0.0, 0.0]]])
    targets = jnp.array([[0, 2]])
    log_z0 = np.log(np.exp(2.0) + np.exp(0.5) + np.exp(-1.0))
    expected = [-(2.0 - log_z0) + 1e-4 * log_z0**2, np.log(3.0) + 1e-4 * np.log(3.0) ** 2]
    loss, z = losses.cross_entropy_with_z_loss(logits, targets, 1e-4)
    np.testing.assert_allclose(np.asarray(loss[0]), expected, rtol=1e-6)
    # Smoothing: a near-perfect prediction of the smoothed target scores ~0.
    conf, low = 0.9, 0.05
    perfect = jnp.log(jnp.array([[[conf, low, low]]]))
    loss, _ = losses.cross_entropy_with_z_loss(perfect, jnp.array([[0]]), 0.0, 0.1)
    assert abs(float(loss[0, 0])) < 1e-6


def test_loss_normalisation_modes():
    logits = jnp.zeros((2, 3, 4))
    targets = jnp.array([[1, 2, 0], [3, 0, 0]])
    per_token = np.log(4.0)
    total, metrics = losses.compute(logits, targets, z_loss=0.0, loss_normalizing_factor=None)
    np.testing.assert_allclose(float(total), 3 * per_token, rtol=1e-6)
    total, _ = losses.compute(logits, targets, z_loss=0.0)
    np.testing.assert_allclose(float(total), per_token, rtol=1e-6)
    total, _ = losses.compute(logits, targets, z_loss=0.0, loss_normalizing_factor=233472)
    np.testing.assert_allclose(float(total), 3 * per_token / 233472, rtol=1e-6)
    assert float(metrics["tokens"]) == 3.0
    with pytest.raises(ValueError, match="loss_normalizing_factor"):
        losses.compute(logits, targets, loss_normalizing_factor="TOKENS")


def test_each_optimizer_describes_what_it_was_built_from():
    """What a run records of its optimizer (run.json) and checks on resume: equal arguments
    give the very same transformation and description, another rate or warm-up another."""
    prompt = optimizers.prompt_tuning_adafactor()
    assert optimizers.prompt_tuning_adafactor(learning_rate=0.3) is prompt
    assert optimizers.describe(prompt)["learning_rate"] == 0.3
    assert optimizers.describe(optimizers.prompt_tuning_adafactor(0.5))["learning_rate"] == 0.5
    assert optimizers.describe(optimizers.model_tuning_adafactor())["multiply_by_parameter_scale"]
    pretraining = optimizers.pretraining_adafactor(warmup_steps=7)
    assert optimizers.pretraining_adafactor(warmup_steps=7) is pretraining
    assert optimizers.describe(pretraining)["warmup_steps"] == 7
    assert optimizers.describe(optax.adam(1e-3)) is None  # built elsewhere: not compared
