"""t5x checkpoints: the real tiny checkpoint written by t5x, layouts, and every bad input."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import msgpack
import numpy as np
import pytest
import tensorstore as ts
from flax import linen as nn
from flax import serialization, traverse_util

from conftest import SHARED_T5X_TINY, shared_path, tiny_t5
from ptune import checkpoints
from ptune.checkpoints import t5x, t5x_write
from ptune.errors import UserError
from ptune.models import t5

# The shape of ../shared/data/t5x_tiny_checkpoint (max distance 8 cannot be inferred).
TINY = tiny_t5(**SHARED_T5X_TINY)


@pytest.fixture(scope="module")
def tiny_path():
    return shared_path("t5x_tiny_checkpoint", "checkpoint_3")


@pytest.fixture(scope="module")
def tiny_params(tiny_path):
    config, params = checkpoints.load(tiny_path, TINY)
    assert config == TINY
    return params


@pytest.fixture
def tiny_copy(tiny_path, tmp_path):
    """A writable copy of the shared checkpoint (it is read-only where it lies)."""
    dst = tmp_path / "checkpoint_3"
    shutil.copytree(tiny_path, dst)
    for root, dirs, files in os.walk(dst):
        for name in dirs + files:
            os.chmod(os.path.join(root, name), 0o755)
    os.chmod(dst, 0o755)
    return dst


def _flat(params):
    return {"/".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(params).items()}


def test_every_array_lands_in_place(tiny_path, tiny_params):
    flat = _flat(tiny_params)
    emb = np.load(shared_path("t5x_tiny_checkpoint", "tiny_embeddings_32128x4.npy"))
    np.testing.assert_array_equal(flat["token_embedder/embedding"], emb)
    # Independent decoders: flax's msgpack restore for inline arrays, plain zarr specs else.
    with open(os.path.join(tiny_path, "checkpoint"), "rb") as f:
        raw = serialization.msgpack_restore(f.read())["optimizer"]["target"]
    expected = traverse_util.flatten_dict(t5.abstract_variables(TINY)["params"], sep="/")
    assert set(flat) == set(expected)
    for name, value in flat.items():
        node = raw
        for key in name.split("/"):
            node = node[key]
        if isinstance(node, dict):
            zarr = os.path.join(tiny_path, "target." + name.replace("/", "."))
            node = (
                ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": zarr}})
                .result()
                .read()
                .result()
            )
        np.testing.assert_array_equal(value, node, err_msg=name)
        assert value.dtype == np.float32


def test_forward_is_finite_and_deterministic(tiny_params):
    model = t5.Transformer(TINY)
    enc = jnp.array([[5, 9, 12, 1, 0, 0], [7, 1, 0, 0, 0, 0]])
    dec = jnp.array([[0, 3, 4], [0, 6, 0]])
    tgt = jnp.array([[3, 4, 1], [6, 1, 0]])
    apply = jax.jit(lambda p: model.apply({"params": p}, enc, dec, tgt, enable_dropout=False))
    a, b = apply(tiny_params), apply(tiny_params)
    assert a.shape == (2, 3, 32128) and bool(jnp.all(jnp.isfinite(a)))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_step_format_and_inferred_config(tiny_path):
    assert checkpoints.detect_format(tiny_path) == "t5x"
    assert checkpoints.detect_format(os.path.join(tiny_path, "checkpoint")) == "t5x"
    assert checkpoints.read_t5x_optimizer_step(tiny_path) == 3
    info = checkpoints.describe(tiny_path)
    # Shapes cannot give these; the assumed values are T5 1.1's (dropout: its fine-tuning 0.1).
    assert info.config == TINY.replace(relative_attention_max_distance=128, dropout_rate=0.1)
    assert set(info.assumed) == {
        "relative_attention_max_distance",
        "dropout_rate",
        "dtype",
        "mlp_activations",
    }
    assert info.parameter_count == t5.parameter_count(TINY) and info.step == 3


def test_scanned_bfloat16_load_stacks_layers_on_axis_1(tiny_path, tiny_params, tmp_path):
    config, scanned = checkpoints.load(tiny_path, TINY, scan_layers=True, dtype=jnp.bfloat16)
    assert config.scan_layers
    abstract = traverse_util.flatten_dict(
        jax.tree_util.tree_map(lambda x: x.shape, nn.unbox(t5.abstract_variables(config)["params"]))
    )
    flat, unscanned = _flat(scanned), _flat(tiny_params)
    assert {k: v.shape for k, v in flat.items()} == {"/".join(k): v for k, v in abstract.items()}
    assert all(v.dtype == jnp.bfloat16 for v in flat.values())
    wo = np.stack([unscanned[f"decoder/layers_{i}/mlp/wo/kernel"] for i in range(2)], axis=1)
    np.testing.assert_array_equal(flat["decoder/layers/mlp/wo/kernel"], wo.astype(jnp.bfloat16))
    # A checkpoint written scanned loads back unscanned, exactly.
    t5x_write.write_checkpoint(
        jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), scanned),
        str(tmp_path / "scanned"),
        step=7,
    )
    config, params = checkpoints.load(str(tmp_path / "scanned"), TINY)
    assert (
        not config.scan_layers
        and checkpoints.read_t5x_optimizer_step(str(tmp_path / "scanned")) == 7
    )
    for name, value in _flat(params).items():
        np.testing.assert_array_equal(
            value, unscanned[name].astype(jnp.bfloat16).astype(np.float32), err_msg=name
        )


def test_fresh_parameters_may_be_absent_and_nothing_else(tiny_params, tmp_path):
    params = jax.tree_util.tree_map(np.asarray, tiny_params)
    del params["decoder"]["logits_dense"]
    t5x_write.write_checkpoint(params, str(tmp_path / "c"))
    with pytest.raises(
        UserError,
        match=r"(?s)^checkpoint .*/c \(t5x\) does not match.*1 "
        r"missing.*missing: decoder/logits_dense/kernel",
    ):
        checkpoints.load(str(tmp_path / "c"), TINY)
    _, loaded = checkpoints.load(str(tmp_path / "c"), TINY, fresh=["decoder/logits_dense/.*"])
    assert "logits_dense" not in loaded["decoder"]


def test_config_disagreeing_with_shapes_lists_every_mismatch(tiny_path):
    with pytest.raises(UserError) as e:
        checkpoints.load(tiny_path, TINY.replace(mlp_dim=16, logits_via_embedding=True))
    message = str(e.value)
    first = message.splitlines()[0]
    assert tiny_path in first and "12 mis-shaped" in first and "1 unexpected" in first
    assert (
        "mis-shaped: encoder/layers_0/mlp/wi_0/kernel: checkpoint (4, 8) " in message
        and "vs model (4, 16)" in message
    )
    assert "unexpected: decoder/logits_dense/kernel" in message


def test_gcs_paths_become_gcs_tensorstore_specs():
    spec = t5x.zarr_spec(
        "gs://t5-data/pretrained_models/t5x/t5_1_1_lm100k_base/checkpoint_1100000",
        {
            "driver": "zarr",
            "kvstore": {"driver": "gfile", "path": "target.encoder.layers_0.mlp.wo.kernel"},
            "metadata": {"shape": [2]},
        },
    )
    assert spec == {
        "driver": "zarr",
        "metadata": {"shape": [2]},
        "kvstore": {
            "driver": "gcs",
            "bucket": "t5-data",
            "path": "pretrained_models/t5x/t5_1_1_lm100k_base/checkpoint_1100000/"
            "target.encoder.layers_0.mlp.wo.kernel",
        },
    }
    assert t5x.kvstore_spec("gs://bucket/dir/") == {
        "driver": "gcs",
        "bucket": "bucket",
        "path": "dir",
    }
    assert t5x.kvstore_spec("/ckpt", "a.b") == {"driver": "file", "path": "/ckpt/a.b"}


def _error(path, config=TINY) -> str:
    with pytest.raises(UserError) as e:
        checkpoints.load(str(path), config)
    return str(e.value)


def test_missing_path_and_directories_without_checkpoint(tmp_path):
    assert f"checkpoint path {tmp_path}/nope does not exist" in _error(tmp_path / "nope")
    assert f"no checkpoint found in {tmp_path}" in _error(tmp_path)
    (tmp_path / "checkpoint_1100000").mkdir()
    assert "holds checkpoint_1100000: pass one of those" in _error(tmp_path)


def test_truncated_and_garbage_msgpack(tiny_copy):
    file = tiny_copy / "checkpoint"
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])
    assert f"t5x checkpoint file {file} is truncated or corrupt" in _error(tiny_copy)
    file.write_bytes(b"\x93not a checkpoint")
    assert f"t5x checkpoint file {file} is truncated or corrupt" in _error(tiny_copy)


def test_missing_zarr_array_and_wrong_zarr_dtype(tiny_copy):
    shutil.rmtree(tiny_copy / "target.encoder.layers_1.mlp.wo.kernel")
    zarray = tiny_copy / "target.decoder.layers_0.mlp.wi_0.kernel" / ".zarray"
    meta = json.loads(zarray.read_text())
    zarray.write_text(json.dumps(meta | {"dtype": "<i4"}))
    message = _error(tiny_copy)
    assert message.startswith(f"t5x checkpoint {tiny_copy}: 2 parameter array(s) cannot")
    assert (
        f"encoder/layers_1/mlp/wo/kernel: cannot open zarr array "
        f"{tiny_copy}/target.encoder.layers_1.mlp.wo.kernel"
    ) in message
    assert "decoder/layers_0/mlp/wi_0/kernel" in message and "dtype" in message


def test_checkpoint_of_another_architecture(tmp_path):
    state = {
        "version": 3,
        "optimizer": {
            "target": {"bert": {"embeddings": {"word": np.zeros((4, 2), np.float32).tolist()}}},
            "state": {"step": 1},
        },
    }
    (tmp_path / "checkpoint").write_bytes(msgpack.packb(state))
    assert f"{tmp_path} is not a T5 encoder-decoder checkpoint" in (_error(tmp_path, config=None))
    message = _error(tmp_path)
    assert "unexpected: bert/embeddings/word" in message and "missing" in message


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_a_cast_load_equals_numpys_cast_of_every_array(tiny_path, tiny_params, dtype):
    """zarr arrays are cast by tensorstore as they are decoded (no float32 copy of a chunk);
    the result is numpy's round-to-nearest-even cast, bit for bit, inline arrays too."""
    _, params = checkpoints.load(tiny_path, TINY, dtype=dtype)
    cast, full = _flat(params), _flat(tiny_params)
    assert cast.keys() == full.keys() and len(cast) > 0
    for name, value in cast.items():
        assert value.dtype == dtype, name
        np.testing.assert_array_equal(
            value.view(np.uint16), full[name].astype(dtype).view(np.uint16), err_msg=name
        )
