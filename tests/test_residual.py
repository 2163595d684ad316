"""Residual reparameterisation (prompts/residual.gin): P + MLP(P) while training, the
materialised prompt everywhere else."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ptune.tasks  # noqa: F401  registers the tasks
from conftest import DEMO_TINY, init_params, random_params, tiny_run_config, tiny_t5
from ptune import evaluation, prompts, trainable, trainer
from ptune.errors import UserError
from ptune.models import t5

CFG = tiny_t5()  # emb 8
TOKENS = np.array([[3, 4, 5, 1, 0, 0], [6, 7, 1, 0, 0, 0]], np.int32)
TARGETS = np.array([[9, 10, 1], [11, 1, 0]], np.int32)


def _logits(factory, params):
    model = t5.Transformer(CFG, factory)
    shifted = np.concatenate([np.zeros_like(TARGETS[:, :1]), TARGETS[:, :-1]], axis=1)
    apply = jax.jit(
        lambda params: model.apply(
            {"params": params}, TOKENS, shifted, TARGETS, enable_dropout=False
        )
    )
    return np.asarray(apply(params))


def _init(factory, seed=0):
    """Random weights (`random_params`); the test about the zero output layer takes flax's
    initializers (`init_params`)."""
    return random_params(t5.Transformer(CFG, factory), TOKENS, TARGETS, TARGETS, seed=seed)


def _reference(mlp, p):
    """The paper's formula, written out in float64 numpy: P + LN(W_up relu(W_down P + b) + b)."""
    mlp = {k: np.asarray(v, np.float64) for k, v in mlp.items()}
    p = np.asarray(p, np.float64)
    out = np.maximum(p @ mlp["down_kernel"] + mlp["down_bias"], 0) @ mlp["up_kernel"]
    out = out + mlp["up_bias"]
    if "norm_scale" in mlp:
        out = (out - out.mean(-1, keepdims=True)) / np.sqrt(out.var(-1, keepdims=True) + 1e-5)
        out = out * mlp["norm_scale"] + mlp["norm_bias"]
    return p + out


@pytest.mark.parametrize("layer_norm", [True, False])
def test_parameters_and_the_formula(layer_norm):
    residual = prompts.Residual(bottleneck=3, layer_norm=layer_norm)
    params = _init(prompts.prompt_factory(5, residual=residual))
    module = params["encoder"]["prompt"]
    shapes = {k: v.shape for k, v in module["residual"].items()}
    expected = {"down_kernel": (8, 3), "down_bias": (3,), "up_kernel": (3, 8), "up_bias": (8,)}
    if layer_norm:
        expected.update(norm_scale=(8,), norm_bias=(8,))
    assert shapes == expected
    # Randomise every MLP parameter (biases and norm start at 0/1) so each one matters.
    leaves, tree = jax.tree_util.tree_flatten(module["residual"])
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    mlp = jax.tree_util.tree_unflatten(
        tree, [jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)]
    )
    got = np.asarray(prompts.apply_residual(mlp, module["prompt"]))
    np.testing.assert_allclose(got, _reference(mlp, module["prompt"]), rtol=1e-5, atol=1e-5)
    # The whole prompt module trains; nothing else.
    mask = trainable.trainable_mask(params, trainable.PROMPT_ONLY)
    assert sorted(k for k, v in mask.items() if v) == sorted(
        ["encoder/prompt/prompt"] + [f"encoder/prompt/residual/{k}" for k in expected]
    )


def test_a_zero_output_layer_equals_plain_prompt_tuning_at_step_zero():
    residual = prompts.Residual(bottleneck=4, zero_output=True)
    model = t5.Transformer(CFG, prompts.prompt_factory(3, residual=residual))
    params = init_params(model, TOKENS, TARGETS, TARGETS)
    plain = prompts.with_prompt(prompts.without_prompt(params), prompts.get_prompt(params))
    np.testing.assert_array_equal(
        _logits(prompts.prompt_factory(3, residual=residual), params),
        _logits(prompts.prompt_factory(3), plain),
    )


def test_the_materialised_prompt_reproduces_the_training_logits():
    residual = prompts.Residual(bottleneck=4)
    factory = prompts.prompt_factory(3, placement="suffix", residual=residual)
    params = _init(factory, seed=2)
    params["encoder"]["prompt"]["residual"]["up_bias"] = jnp.full((8,), 0.25)
    materialised = prompts.effective_prompt(params)
    assert not np.allclose(materialised, prompts.get_prompt(params))  # the MLP matters
    plain = prompts.with_prompt(prompts.without_prompt(params), materialised)
    # The same float32 formula (`apply_residual`); inside the jitted model XLA may fuse and
    # round it differently from the materialisation (measured 1.5e-6 on logits near 1).
    np.testing.assert_allclose(
        _logits(factory, params),
        _logits(prompts.prompt_factory(3, placement="suffix"), plain),
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.parametrize("width", [0, -3, True, 2.5])
def test_a_bottleneck_below_one_is_refused(width):
    with pytest.raises(UserError, match="residual bottleneck width must be a positive integer"):
        prompts.Residual(bottleneck=width)


def test_a_residual_run_trains_the_mlp_and_exports_the_materialised_prompt(tmp_path):
    residual = prompts.Residual(bottleneck=6)
    cfg = tiny_run_config(
        tmp_path / "run",
        prompt=prompts.PromptConfig(length=4, residual=residual),
        eval_period=3,
        train_steps=3,
    )
    result = trainer.train(cfg)
    params = result.state.params
    module = params["encoder"]["prompt"]
    assert set(module) == {"prompt", "residual"}
    summary = json.load(open(tmp_path / "run" / "summary.json"))
    e = DEMO_TINY["emb_dim"]
    assert summary["trainable_params"] == 4 * e + (e * 6 + 6 + 6 * e + e) + 2 * e
    assert json.load(open(tmp_path / "run" / "run.json"))["prompt"]["residual"] == (
        dataclasses.asdict(residual)
    )
    exported = tmp_path / "run" / "numpy_checkpoints" / "checkpoint_3" / "encoder.prompt.prompt.npy"
    np.testing.assert_array_equal(np.load(exported), np.asarray(prompts.effective_prompt(params)))
    assert not np.allclose(np.load(exported), np.asarray(module["prompt"]))
    # `ptune eval` of the exported plain prompt scores what training scored.
    results = evaluation.run_eval(
        evaluation.EvalConfig(
            mixture_or_task_name=cfg.mixture_or_task_name,
            checkpoint_path=str(tmp_path / "run" / "random_init"),
            prompt_file=str(exported),
            eval_feature_lengths=dict(cfg.eval_feature_lengths),
            batch_size=cfg.eval_batch_size,
            output_dir=str(tmp_path / "eval"),
        )
    )
    assert results == result.eval
    # Resuming with another residual configuration is another run.
    other = dataclasses.replace(
        cfg, prompt=prompts.PromptConfig(length=4, residual=prompts.Residual(bottleneck=7))
    )
    with pytest.raises(UserError, match=r"different configuration \(changed: prompt\)"):
        trainer.train(other)
