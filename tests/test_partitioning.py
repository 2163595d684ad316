"""Sharded training on 8 simulated CPU devices equals one device: meshes 1x8, 2x4, 4x2, 8x1 give
the same loss and the same updated prompt; each parameter is sharded as the rules say; the
prompt is replicated; the batch is split along `data`; bad meshes, rules and batch sizes are
one clear error each.

The 8 devices exist only in a subprocess (`XLA_FLAGS` must be set before jax starts), so the
rest of the suite keeps its one device. The subprocess is this file run as a script.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import DROPOUT, simulated_devices_env, tiny_t5

# Sharding changes the order of float32 reductions (all-reduce of partial sums), nothing else.
RTOL, ATOL = 1e-5, 1e-6
MESHES = [(1, 8), (2, 4), (4, 2), (8, 1)]
STEPS = 3


def _worker() -> dict:
    import jax
    from flax import linen as nn

    from ptune import optimizers, partitioning, prompts, step, trainable
    from ptune.models import t5

    assert jax.device_count() == 8, jax.devices()
    cfg = tiny_t5(  # dropout on: its masks must not depend on the mesh either
        emb_dim=16,
        num_heads=8,
        head_dim=2,
        num_encoder_layers=1,
        num_decoder_layers=1,
        dropout_rate=DROPOUT,
    )
    model = t5.Transformer(cfg, prompts.prompt_factory(4))
    rng = np.random.default_rng(0)
    enc = rng.integers(3, 64, size=(8, 12)).astype(np.int32)
    enc[:, 9:] = 0
    tgt = rng.integers(3, 64, size=(8, 4)).astype(np.int32)
    dec = np.concatenate([np.zeros((8, 1), np.int32), tgt[:, :-1]], axis=1)
    batch = {"encoder_input_tokens": enc, "decoder_input_tokens": dec, "decoder_target_tokens": tgt}
    boxed = t5.abstract_variables(cfg, prompts.prompt_factory(4))["params"]
    params = nn.unbox(
        jax.jit(lambda k: model.init(k, enc, dec, tgt, enable_dropout=False))(
            jax.random.PRNGKey(0)
        )["params"]
    )
    host_params = jax.tree_util.tree_map(np.asarray, params)

    def run(mesh_shape, patterns, optimizer):
        """mesh_shape None: the plain single-device step, no partitioner at all."""
        mask = trainable.trainable_mask(host_params, patterns)
        train, frozen = trainable.partition(host_params, mask)
        state = step.init_state(train, optimizer)
        if mesh_shape is None:
            part = None
            train_step = step.make_train_step(model, optimizer, seed=1)
        else:
            part = partitioning.Partitioner.create(partitioning.MeshConfig(mesh_shape=mesh_shape))
            state_sh, frozen_sh = step.train_shardings(part, optimizer, boxed, mask)
            frozen = part.put(frozen, frozen_sh)
            state = part.put(jax.device_get(state), state_sh)
            train_step = step.make_train_step(
                model, optimizer, seed=1, partitioner=part, in_shardings=(state_sh, frozen_sh)
            )
        losses = []
        global_batch = None
        for _ in range(STEPS):
            global_batch = part.shard_batch(batch) if part else jax.device_put(batch)
            state, metrics = train_step(state, frozen, global_batch)
            losses.append(float(metrics["loss_sum"] / metrics["tokens"]))
        flat = lambda tree: {  # noqa: E731
            "/".join(str(getattr(k, "key", k)) for k in p): v
            for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]
        }
        spec = lambda x: list(getattr(getattr(x, "sharding", None), "spec", []))  # noqa: E731
        specs = {k: spec(v) for k, v in {**flat(state.params), **flat(frozen)}.items()}
        opt_specs = {k: [spec(v), list(v.shape)] for k, v in flat(state.opt_state).items()}
        return {
            "losses": losses,
            "params": {k: np.asarray(v).tolist() for k, v in flat(state.params).items()},
            "specs": specs,
            "opt_specs": opt_specs,
            "batch_spec": spec(global_batch["encoder_input_tokens"]),
            "batch_shard_rows": [
                s.data.shape[0] for s in global_batch["encoder_input_tokens"].addressable_shards
            ],
            "uneven": part.uneven(boxed) if part else [],
        }

    paper = optimizers.prompt_tuning_adafactor()
    out = {"single": run(None, trainable.PROMPT_ONLY, paper)}
    for shape in MESHES:
        out["x".join(map(str, shape))] = run(shape, trainable.PROMPT_ONLY, paper)
    # Model tuning: Adafactor factors every matrix >= 8 wide, so v_row / v_col appear.
    factored = optimizers.adafactor(1e-3, min_dim_size_to_factor=8)
    out["model_single"] = run(None, trainable.EVERYTHING, factored)
    out["model_2x4"] = run((2, 4), trainable.EVERYTHING, factored)
    out["shapes"] = {
        "/".join(str(getattr(k, "key", k)) for k in p): list(v.names)
        for p, v in jax.tree_util.tree_flatten_with_path(
            boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)
        )[0]
    }
    return out


@pytest.fixture(scope="module")
def results():
    env = simulated_devices_env(8)
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mesh", ["x".join(map(str, s)) for s in MESHES])
def test_every_mesh_gives_the_single_device_loss_and_prompt(results, mesh):
    single, sharded = results["single"], results[mesh]
    np.testing.assert_allclose(sharded["losses"], single["losses"], rtol=RTOL, atol=ATOL)
    assert single["losses"][-1] != single["losses"][0]  # the prompt did move
    for name, value in single["params"].items():
        np.testing.assert_allclose(
            sharded["params"][name], value, rtol=RTOL, atol=ATOL, err_msg=name
        )


@pytest.mark.parametrize("mesh", ["x".join(map(str, s)) for s in MESHES])
def test_each_parameter_is_sharded_as_the_rules_say(results, mesh):
    data, model = map(int, mesh.split("x"))
    rules = dict(
        [
            ("batch", "data"),
            ("vocab", "model"),
            ("mlp", "model"),
            ("heads", "model"),
            ("joined_kv", "model"),
        ]
    )
    specs = results[mesh]["specs"]
    assert set(specs) == set(results["shapes"])
    for name, axes in results["shapes"].items():
        expected = [rules.get(a) for a in axes]
        got = specs[name] + [None] * (len(axes) - len(specs[name]))
        assert got == expected, (name, axes, got)
    assert specs["encoder/prompt/prompt"] in ([], [None, None])  # replicated
    assert results[mesh]["uneven"] == []
    assert results[mesh]["batch_spec"][0] == "data"
    assert results[mesh]["batch_shard_rows"] == [8 // data] * 8


def test_model_tuning_with_factored_adafactor_matches_one_device(results):
    single, sharded = results["model_single"], results["model_2x4"]
    np.testing.assert_allclose(sharded["losses"], single["losses"], rtol=RTOL, atol=ATOL)
    for name, value in single["params"].items():
        np.testing.assert_allclose(
            sharded["params"][name], value, rtol=RTOL, atol=ATOL, err_msg=name
        )
    # Full-shape optimizer leaves follow their parameter; factored v_row / v_col replicate.
    specs = sharded["specs"]
    followed = factored = 0
    for path, (spec, shape) in sharded["opt_specs"].items():
        owner = [p for p in specs if path.endswith("/" + p) or ("/" + p + "/") in path]
        param_shape = np.shape(single["params"][owner[0]]) if owner else None
        if owner and list(param_shape) == shape:
            assert spec == specs[owner[0]], path
            followed += 1
        else:
            assert all(s is None for s in spec), path
            factored += "v_row" in path or "v_col" in path
    assert followed and factored


def test_bad_meshes_rules_and_batch_sizes_are_one_clear_error():
    from ptune import partitioning
    from ptune.errors import UserError

    with pytest.raises(UserError, match=r"mesh_shape 2x4 needs 8 devices but there are 1"):
        partitioning.create_mesh(partitioning.MeshConfig(mesh_shape=(2, 4)))
    with pytest.raises(UserError, match=r"num_partitions=3 does not divide the 8 devices"):
        partitioning.MeshConfig(num_partitions=3).shape(8)
    rules = list(partitioning.STANDARD_RULES)
    with pytest.raises(UserError, match=r"unknown logical axis 'mlp_activations'"):
        partitioning.validate_rules(rules + [("mlp_activations", None)])
    with pytest.raises(UserError, match=r"'heads' maps to mesh axis 'tensor', which does not"):
        partitioning.validate_rules([r if r[0] != "heads" else ("heads", "tensor") for r in rules])
    with pytest.raises(UserError, match=r"no rule for logical axis 'prompt'"):
        partitioning.validate_rules([r for r in rules if r[0] != "prompt"])
    part = partitioning.Partitioner.create()
    with pytest.raises(UserError, match=r"batch size 6 is not divisible by the processes"):
        import unittest.mock as mock

        with mock.patch("jax.process_count", return_value=4):
            part.check_batch_size(6)


def test_batch_not_divisible_by_the_data_axis(results):
    assert (
        "batch_error" in results and "not divisible by the data axis (8)" in results["batch_error"]
    )


if __name__ == "__main__":
    out = _worker()
    from ptune import partitioning

    try:
        partitioning.Partitioner.create(partitioning.MeshConfig(mesh_shape=(8, 1))).shard_batch(
            {"encoder_input_tokens": np.zeros((12, 4), np.int32)}
        )
    except Exception as e:  # noqa: BLE001  reported to the test
        out["batch_error"] = f"{type(e).__name__}: {e}"
    print(json.dumps(out))
