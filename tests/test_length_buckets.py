"""Length buckets: each batch padded to the smallest bucket holding its longest example. Only
pad columns go, the examples and their order stay, and the loss, the prompt gradient and the
evaluation metrics equal fixed-length padding's."""

import jax
import numpy as np
import pytest

from conftest import DEMO_TINY, random_params, tiny_t5
from ptune import buckets, data, prompts, step, trainable
from ptune import evaluator as evaluator_lib
from ptune.errors import UserError
from ptune.models import t5

# float32: the cut batch drops only masked key columns, whose softmax weight is exactly 0, so
# only summation order may differ.
LOSS_RTOL = 1e-5
GRAD_RTOL = 1e-4


def test_default_buckets_are_powers_of_two_and_midpoints_up_to_the_feature_length():
    default = buckets.LengthBuckets()
    assert default.lengths("inputs", 512) == (32, 48, 64, 96, 128, 192, 256, 384, 512)
    assert default.lengths("inputs", 100) == (32, 48, 64, 96, 100)
    assert default.lengths("targets", 8) == (8,)
    assert default.width("inputs", 33, 512) == 48
    assert default.width("inputs", 64, 512) == 64
    assert default.width("inputs", 257, 512) == 384
    assert default.width("inputs", 700, 512) == 512
    assert buckets.LengthBuckets(smallest=8).lengths("targets", 20) == (8, 12, 16, 20)
    pow2 = buckets.LengthBuckets(midpoints=False)
    assert pow2.lengths("inputs", 512) == (32, 64, 128, 256, 512)
    assert pow2.width("inputs", 33, 512) == 64
    # Without a maximum (a decoding cache's length): the same series, as far as needed.
    rounded = {n: default.round_up(n) for n in (1, 32, 33, 49, 384, 385, 5000)}
    assert rounded == {1: 32, 32: 32, 33: 48, 49: 64, 384: 384, 385: 512, 5000: 6144}
    assert [pow2.round_up(n) for n in (33, 5000)] == [64, 8192]


def test_configured_buckets_are_sorted_and_capped():
    chosen = buckets.LengthBuckets(inputs=[256, 64, 1024, 64])
    assert chosen.lengths("inputs", 512) == (64, 256, 512)
    assert chosen.width("inputs", 65, 512) == 256
    assert chosen.lengths("targets", 8) == (8,)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"inputs": [64, 0]}, "LengthBuckets.inputs must be positive"),
        ({"targets": "64"}, "LengthBuckets.targets must be positive"),
        ({"smallest": 0}, "smallest must be >= 1"),
        ({"smallest": 2.5}, "smallest must be an integer"),
    ],
)
def test_bad_buckets_are_one_line_errors(kwargs, message):
    with pytest.raises(UserError, match=message):
        buckets.LengthBuckets(**kwargs)


def _batch(lengths, width, target_lengths, target_width, seed=0):
    rng = np.random.default_rng(seed)
    enc = np.zeros((len(lengths), width), np.int32)
    tgt = np.zeros((len(lengths), target_width), np.int32)
    for row, (n, m) in enumerate(zip(lengths, target_lengths)):
        enc[row, : n - 1] = rng.integers(3, 64, n - 1)
        enc[row, n - 1] = 1  # EOS
        tgt[row, : m - 1] = rng.integers(3, 64, m - 1)
        tgt[row, m - 1] = 1
    dec = np.concatenate([np.zeros_like(tgt[:, :1]), tgt[:, :-1]], axis=1)
    return {
        "encoder_input_tokens": enc,
        "decoder_input_tokens": dec,
        "decoder_target_tokens": tgt,
        "decoder_loss_weights": (tgt > 0).astype(np.int32),
    }


def test_cut_removes_only_pad_columns():
    batch = _batch([5, 19, 3], 128, [2, 3, 2], 8)
    assert buckets.longest_rows(batch) == {"inputs": 19, "targets": 3}
    cut = buckets.cut_to_buckets(batch, buckets.LengthBuckets(smallest=8))
    assert cut["encoder_input_tokens"].shape == (3, 24)  # 8, 12, 16, 24, 32, ...
    assert cut["decoder_target_tokens"].shape == (3, 8)
    for key, value in batch.items():
        width = cut[key].shape[1]
        np.testing.assert_array_equal(cut[key], value[:, :width])
        assert not value[:, width:].any(), key
    # Agreed (e.g. over hosts) lengths win over the batch's own.
    wider = buckets.cut_to_buckets(
        batch, buckets.LengthBuckets(smallest=8), {"inputs": 40, "targets": 3}
    )
    assert wider["encoder_input_tokens"].shape == (3, 48)


@pytest.mark.parametrize("placement", ["prefix", "suffix"])
def test_loss_and_prompt_gradient_equal_fixed_padding(placement):
    """A batch padded to 128 and the same batch cut to its 32-token bucket give the same loss
    and prompt gradient (prefix, and suffix where the prompt sits before EOS)."""
    config = tiny_t5()
    model = t5.Transformer(config, prompts.prompt_factory(4, placement))
    fixed = _batch([7, 21, 12, 30], 128, [2, 3, 2, 2], 8)
    cut = buckets.cut_to_buckets(fixed, buckets.LengthBuckets())
    assert cut["encoder_input_tokens"].shape[1] == 32
    keys = ("encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens")
    params = random_params(model, *(cut[k] for k in keys), enable_dropout=False)
    mask = trainable.trainable_mask(params, trainable.PROMPT_ONLY)
    train, frozen = trainable.partition(params, mask)

    @jax.jit  # one compile per width; op by op, every primitive would compile on its own
    def value_and_grad(batch):
        return jax.value_and_grad(
            lambda p: step.loss_and_metrics(
                model, step.LossConfig(), p, frozen, batch, False, None
            ),
            has_aux=True,
        )(train)

    def loss_and_grad(batch):
        (loss, metrics), grads = value_and_grad(batch)
        return float(loss), float(metrics["tokens"]), jax.tree_util.tree_leaves(grads)

    loss_fixed, tokens_fixed, grads_fixed = loss_and_grad(fixed)
    loss_cut, tokens_cut, grads_cut = loss_and_grad(cut)
    assert tokens_fixed == tokens_cut == 9
    np.testing.assert_allclose(loss_cut, loss_fixed, rtol=LOSS_RTOL)
    for a, b in zip(grads_cut, grads_fixed):
        assert np.abs(np.asarray(b)).max() > 0
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=GRAD_RTOL, atol=1e-7)


def _rows(batch):
    """Each row's real tokens, so batches of different widths compare."""
    return [
        tuple(tuple(int(t) for t in np.trim_zeros(row, "b")) for row in batch[key])
        for key in ("encoder_input_tokens", "decoder_target_tokens")
    ]


def test_training_batches_keep_their_examples_and_order():
    kwargs = dict(seed=3, split="train")
    lengths = {"inputs": 256, "targets": 8}
    fixed = data.train_batches("ptune_demo_rank_classification", lengths, 8, **kwargs)
    bucketed = data.train_batches(
        "ptune_demo_rank_classification", lengths, 8, buckets=buckets.LengthBuckets(), **kwargs
    )
    widths = set()
    for _ in range(6):
        a, b = next(fixed), next(bucketed)
        assert a["encoder_input_tokens"].shape == (8, 256)
        widths.add(b["encoder_input_tokens"].shape[1])
        assert _rows(a) == _rows(b)
        assert b["encoder_input_tokens"].shape[1] in buckets.LengthBuckets().lengths("inputs", 256)
    assert max(widths) < 256  # the demo's inputs are short: padding went away


def test_evaluation_metrics_equal_fixed_padding():
    """Evaluating with buckets scores every example exactly as one padded shape does."""
    config = tiny_t5(**DEMO_TINY)
    model = t5.Transformer(config, prompts.prompt_factory(4))
    params = random_params(
        model,
        np.ones((1, 8), np.int32),
        np.ones((1, 4), np.int32),
        np.ones((1, 4), np.int32),
        seed=1,
        enable_dropout=False,
    )
    results = {}
    shapes = {}
    for name, chosen in (("fixed", None), ("buckets", buckets.LengthBuckets(inputs=[32, 40, 48]))):
        evaluator = evaluator_lib.Evaluation(
            "ptune_demo_rank_classification", None, 4, buckets=chosen
        )
        seen = set()
        original = evaluator._batches

        def recording(ds, original=original, seen=seen):
            for indices, batch in original(ds):
                seen.add(batch["encoder_input_tokens"].shape[1])
                yield indices, batch

        evaluator._batches = recording
        results[name] = evaluator(model, params)
        shapes[name] = seen
    assert len(shapes["fixed"]) == 1
    assert max(shapes["buckets"]) <= max(shapes["fixed"])
    assert len(shapes["buckets"]) > 1 or max(shapes["buckets"]) < max(shapes["fixed"])
    for task, metrics in results["fixed"].items():
        for metric, value in metrics.items():
            assert results["buckets"][task][metric] == pytest.approx(value, rel=1e-6), metric


def test_training_with_buckets_follows_the_fixed_length_run(tmp_path):
    """Three steps of the tiny demo run (dropout 0), bucketed by default and fixed with
    length_buckets=None, both in stream order (grouping by length regroups the batches by
    design; `test_length_grouping`): the same losses at every step, to float tolerance."""
    import json

    from conftest import tiny_run_config
    from ptune import trainer

    losses = {}
    for name, chosen in (("buckets", buckets.LengthBuckets(smallest=8)), ("fixed", None)):
        cfg = tiny_run_config(
            tmp_path / name,
            task_feature_lengths={"inputs": 128, "targets": 8},
            train_steps=3,
            eval_period=0,
            log_period=1,
            length_buckets=chosen,
            group_by_length=0,
            model=tiny_t5(**DEMO_TINY, dropout_rate=0.0),
        )
        trainer.train(cfg)
        with open(tmp_path / name / "metrics.jsonl") as f:
            losses[name] = [json.loads(line)["loss"] for line in f]
    assert len(losses["fixed"]) == 3
    np.testing.assert_allclose(losses["buckets"], losses["fixed"], rtol=LOSS_RTOL)
    assert trainer.TrainConfig(model_dir="x", mixture_or_task_name="y").length_buckets == (
        buckets.LengthBuckets()
    )
