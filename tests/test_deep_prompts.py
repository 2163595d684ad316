"""Deep (per-layer) prompts on the encoder (prompts/deep.gin), P-tuning v2 style."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ptune.tasks  # noqa: F401  registers the tasks
from conftest import DEMO_TINY, DROPOUT, random_params, tiny_run_config, tiny_t5
from ptune import cli, evaluation, prompts, recipe, trainable, trainer
from ptune.checkpoints import prompt_io
from ptune.errors import UserError
from ptune.models import t5

P, E = 3, 8
TOKENS = np.array([[3, 4, 5, 6, 1, 0]], np.int32)  # batch 1: see the identity test
TARGETS = np.array([[9, 10, 1]], np.int32)


def _logits(config, factory, params, dropout_seed=None):
    model = t5.Transformer(config, factory)
    shifted = np.concatenate([np.zeros_like(TARGETS[:, :1]), TARGETS[:, :-1]], axis=1)
    rngs = None if dropout_seed is None else {"dropout": jax.random.PRNGKey(dropout_seed)}
    apply = jax.jit(
        lambda params, rngs: model.apply(
            {"params": params},
            TOKENS,
            shifted,
            TARGETS,
            enable_dropout=dropout_seed is not None,
            rngs=rngs,
        )
    )
    return np.asarray(apply(params, rngs))


def _params(config, factory, seed=0):
    return random_params(t5.Transformer(config, factory), TOKENS, TARGETS, TARGETS, seed=seed)


@pytest.mark.parametrize("dropout_seed", [None, 5])
def test_with_one_encoder_layer_deep_prompts_are_plain_prompt_tuning(dropout_seed):
    """No layer beyond the first: the deep prompt is the plain prefix prompt, exactly (with
    and without dropout)."""
    config = tiny_t5(num_encoder_layers=1, dropout_rate=DROPOUT)
    deep = _params(config, prompts.deep_factory(P))
    assert prompts.get_prompt(deep).shape == (1, P, E)
    plain = prompts.with_prompt(prompts.without_prompt(deep), prompts.get_prompt(deep)[0])
    np.testing.assert_array_equal(
        _logits(config, prompts.deep_factory(P), deep, dropout_seed),
        _logits(config, prompts.prompt_factory(P), plain, dropout_seed),
    )


def test_a_later_layers_prompt_replaces_exactly_that_layers_prompt_positions():
    """Identity: give layer 1 the very hidden states the plain model has at the prompt
    positions after layer 0; the deep model then computes the plain model's logits."""
    config = tiny_t5()  # 2 encoder layers
    plain = _params(config, prompts.prompt_factory(P), seed=1)
    model = t5.Transformer(config, prompts.prompt_factory(P))
    _, state = jax.jit(
        lambda p: model.apply(
            {"params": p},
            TOKENS,
            enable_dropout=False,
            method=t5.Transformer.encode,
            capture_intermediates=lambda mdl, name: mdl.name == "layers_0",
            mutable=["intermediates"],
        )
    )(plain)
    after_first = state["intermediates"]["encoder"]["layers_0"]["__call__"][0][0]  # [1, l, e]
    layers = jnp.stack([prompts.get_prompt(plain), after_first[0, :P]])
    deep = prompts.with_prompt(prompts.without_prompt(plain), layers)
    expected = _logits(config, prompts.prompt_factory(P), plain)
    np.testing.assert_allclose(
        _logits(config, prompts.deep_factory(P), deep), expected, rtol=1e-6, atol=1e-6
    )
    # ... and any other layer-1 prompt changes them: the replacement is real.
    other = prompts.with_prompt(deep, layers.at[1].add(1.0))
    assert not np.allclose(_logits(config, prompts.deep_factory(P), other), expected)


def _scanned(params, layers_key):
    """Unscanned `layers_i` subtrees -> one `layers` subtree stacked on axis 1."""
    out = dict(params)
    names = sorted(k for k in params if k.startswith("layers_"))
    out[layers_key] = jax.tree_util.tree_map(
        lambda *xs: jnp.stack(xs, axis=1), *(params[n] for n in names)
    )
    for n in names:
        del out[n]
    return out


def test_scanned_layers_give_the_unscanned_deep_prompt_result():
    config = tiny_t5()
    deep = _params(config, prompts.deep_factory(P), seed=2)
    scanned = dict(deep)
    scanned["encoder"] = _scanned(deep["encoder"], "layers")
    scanned["decoder"] = _scanned(deep["decoder"], "layers")
    np.testing.assert_allclose(
        _logits(config.replace(scan_layers=True), prompts.deep_factory(P), scanned),
        _logits(config, prompts.deep_factory(P), deep),
        rtol=1e-5,
        atol=1e-6,
    )


def test_trainable_parameters_are_layers_times_length_times_width_and_plan_counts_them():
    config = tiny_t5(num_encoder_layers=3)
    run = recipe.assemble(
        config, prompt_factory=prompts.deep_factory(P), trainable=trainable.PROMPT_ONLY
    )
    count, _ = trainable.count(run.mask, run.abstract_params)
    assert count == 3 * P * E
    boxed = run.boxed["encoder"]["prompt"]["prompt"]
    assert tuple(boxed.names) == ("layers", "prompt", "prompt_embed")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(deep=True, placement="suffix"), "deep prompts take prefix placement only"),
        (dict(deep=True, residual=prompts.Residual()), "do not combine yet"),
        (dict(deep=True, multi_task=prompts.MultiTask()), "do not combine yet"),
    ],
)
def test_unsupported_combinations_are_one_line(kwargs, message):
    with pytest.raises(UserError, match=message):
        prompts.PromptConfig(length=4, **kwargs)


def test_a_deep_run_exports_one_array_that_eval_reads_and_peft_export_refuses(tmp_path, capsys):
    cfg = tiny_run_config(
        tmp_path / "run",
        model=tiny_t5(**{**DEMO_TINY, "num_encoder_layers": 2}),
        prompt=prompts.PromptConfig(length=4, deep=True),
        train_steps=3,
    )
    result = trainer.train(cfg)
    exported = tmp_path / "run" / "numpy_checkpoints" / "checkpoint_3" / "encoder.prompt.prompt.npy"
    value = np.load(exported)
    assert value.shape == (2, 4, 16)
    np.testing.assert_array_equal(value, np.asarray(prompts.get_prompt(result.state.params)))
    assert json.load(open(tmp_path / "run" / "run.json"))["prompt"]["deep"] is True
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
    capsys.readouterr()  # the run's progress bar
    code = cli.main(
        ["export", "--format=peft", f"--prompt={exported}", f"--to={tmp_path / 'peft'}"]
    )
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "PEFT has no equivalent for T5 encoders" in lines[0]
    assert not (tmp_path / "peft").exists()
    with pytest.raises(UserError, match=r"holds a deep \(per-layer\) prompt"):
        prompt_io.load_prompt_file(str(exported))  # infer, similar, from_file: [P, E] only
