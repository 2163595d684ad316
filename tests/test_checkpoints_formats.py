"""ptune's converted format, t5x's Orbax layout, the CLI, sharded loads, import hygiene."""

import os
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import traverse_util

from conftest import REPO, SHARED_T5X_TINY, shared_path, simulated_devices_env, tiny_t5
from ptune import checkpoints, cli
from ptune.errors import UserError
from ptune.models import t5

TINY = tiny_t5(**SHARED_T5X_TINY)


@pytest.fixture(scope="module")
def tiny_path():
    return shared_path("t5x_tiny_checkpoint", "checkpoint_3")


@pytest.fixture(scope="module")
def tiny_flat(tiny_path):
    _, params = checkpoints.load(tiny_path, TINY)
    return {"/".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(params).items()}


@pytest.fixture(scope="module")
def converted(tiny_path, tmp_path_factory):
    dst = str(tmp_path_factory.mktemp("conv") / "tiny")
    assert checkpoints.convert(tiny_path, dst, TINY) == dst
    return dst


def _flat(params):
    return {"/".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(params).items()}


def test_converted_checkpoint_restores_exactly_with_its_config(converted, tiny_flat):
    assert checkpoints.detect_format(converted) == "ptune"
    config, params = checkpoints.load(converted)
    assert config == TINY  # max distance 8 travelled in ptune_config.json
    flat = _flat(params)
    assert flat.keys() == tiny_flat.keys()
    for name, value in flat.items():
        np.testing.assert_array_equal(value, tiny_flat[name], err_msg=name)
    assert checkpoints.describe(converted).step == 3
    config, params = checkpoints.load(converted, scan_layers=True, dtype=jnp.bfloat16)
    kernel = params["encoder"]["layers"]["attention"]["query"]["kernel"]
    assert kernel.shape == (4, 2, 4) and kernel.dtype == jnp.bfloat16
    np.testing.assert_array_equal(
        np.asarray(kernel[:, 1]),
        tiny_flat["encoder/layers_1/attention/query/kernel"].astype(jnp.bfloat16),
    )


def test_convert_refuses_to_overwrite_and_leaves_nothing_on_failure(converted, tiny_path, tmp_path):
    with pytest.raises(UserError, match="already exists; pass --overwrite"):
        checkpoints.convert(tiny_path, converted, TINY)
    with pytest.raises(UserError, match="does not exist"):
        checkpoints.convert(str(tmp_path / "missing"), str(tmp_path / "out"))
    with pytest.raises(UserError, match="mis-shaped"):
        checkpoints.convert(tiny_path, str(tmp_path / "out"), TINY.replace(emb_dim=8))
    assert os.listdir(tmp_path) == []
    (tmp_path / "out").mkdir()
    checkpoints.convert(tiny_path, str(tmp_path / "out"), TINY, overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["out"]
    assert checkpoints.detect_format(str(tmp_path / "out")) == "ptune"
    checkpoints.convert(tiny_path, str(tmp_path / "out"), TINY, overwrite=True)  # its own
    # --overwrite never replaces the source, a folder holding it or one holding anything else.
    (tmp_path / "notes.txt").write_text("mine")
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    out = str(tmp_path / "out")
    for dst, why in (
        (out, "is the checkpoint being converted"),
        (str(tmp_path), "holds the checkpoint being converted"),
        (os.path.join(out, "params"), "is in the checkpoint being converted"),
    ):
        with pytest.raises(UserError, match=why):
            checkpoints.convert(out, dst, overwrite=True)
    with pytest.raises(UserError, match="holding notes.txt, out, not a ptune checkpoint"):
        checkpoints.convert(tiny_path, str(tmp_path), TINY, overwrite=True)
    with pytest.raises(UserError, match="is a file, not a ptune checkpoint"):
        checkpoints.convert(tiny_path, str(tmp_path / "notes.txt"), TINY, overwrite=True)
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_t5x_orbax_layout(tiny_flat, tmp_path):
    params = traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in tiny_flat.items()})
    state = {
        "target": params,
        "state": {
            "step": np.int64(1100000),
            "param_states": {"token_embedder": {"embedding": {"v": np.ones(4, np.float32)}}},
        },
    }
    ocp.PyTreeCheckpointer().save(str(tmp_path / "checkpoint_1100000"), state)
    path = str(tmp_path / "checkpoint_1100000")
    assert checkpoints.detect_format(path) == "t5x_orbax"
    config, loaded = checkpoints.load(path, TINY)
    for name, value in _flat(loaded).items():
        np.testing.assert_array_equal(value, tiny_flat[name], err_msg=name)
    assert checkpoints.describe(path, TINY).step == 1100000
    with pytest.raises(
        UserError,
        match=r"(?s)t5x_orbax\) does not match.*1 unexpected.*"
        r"unexpected: decoder/logits_dense/kernel",
    ):
        checkpoints.load(path, TINY.replace(logits_via_embedding=True))


def test_cli_info_and_convert(tiny_path, tmp_path, capsys):
    assert cli.main(["info", "--checkpoint", tiny_path, "--no_tree"]) == 0
    out = capsys.readouterr().out
    assert "format: t5x" in out and "step: 3" in out
    assert "relative_attention_max_distance = 128  # assumed:" in out
    assert f"total_params: {t5.parameter_count(TINY)}" in out
    assert (
        cli.main(
            ["info", f"--checkpoint={tiny_path}", "--gin_file=models/t5_1_1_tiny.gin", "--no_tree"]
        )
        == 0
    )
    assert "relative_attention_max_distance = 8\n" in capsys.readouterr().out
    dst = str(tmp_path / "tiny")
    assert (
        cli.main(["convert", "--from", tiny_path, "--to", dst, "--gin_file=models/t5_1_1_tiny.gin"])
        == 0
    )
    assert f"wrote {dst}" in capsys.readouterr().out
    assert cli.main(["convert", "--from", tiny_path, "--to", dst]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ptune: error: ") and err.count("\n") == 1 and "--overwrite" in err
    assert cli.main(["info", "--checkpoint", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err == (
        f"ptune: error: checkpoint path {tmp_path}/nope does not exist\n"
    )


def _run(code: str, devices: int = 1) -> str:
    env = simulated_devices_env(devices)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_importing_checkpoints_pulls_in_no_tensorflow_seqio_gin_or_torch():
    out = _run("""
        import sys
        from ptune import checkpoints
        print(sorted(m for m in ('tensorflow', 'seqio', 'gin', 'torch') if m in sys.modules))
    """)
    assert out.strip() == "[]"


def test_sharded_load_reads_slices_into_sharded_arrays(tiny_path, converted):
    """Four simulated CPU devices; every array sharded or replicated by a NamedSharding."""
    out = _run(
        f"""
        import jax, numpy as np
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
        from flax import linen as nn, traverse_util
        from ptune import checkpoints
        from ptune.checkpoints import lazy_arrays
        from ptune.models import t5
        config = t5.T5Config(vocab_size=32128, emb_dim=4, num_heads=2, num_encoder_layers=2,
            num_decoder_layers=2, head_dim=2, mlp_dim=8, mlp_activations=("gelu", "linear"),
            relative_attention_num_buckets=4, relative_attention_max_distance=8,
            logits_via_embedding=False)
        mesh = Mesh(np.array(jax.devices()).reshape(4), ("model",))
        shapes = traverse_util.flatten_dict(jax.tree_util.tree_map(lambda x: x.shape,
            nn.unbox(t5.abstract_variables(config)["params"])))
        def spec(shape):
            axis = [i for i, n in enumerate(shape) if n % 4 == 0]
            parts = [None] * len(shape)
            if axis: parts[axis[0]] = "model"
            return NamedSharding(mesh, P(*parts))
        shardings = traverse_util.unflatten_dict({{k: spec(v) for k, v in shapes.items()}})
        reads = []
        original = lazy_arrays.LazyArray.read
        def counting(self, index=None, dtype=None):
            out = original(self, index, dtype); reads.append(out.size); return out
        lazy_arrays.LazyArray.read = counting
        _, ref = checkpoints.load({tiny_path!r}, config)
        full = max(reads); reads.clear()
        for path in ({tiny_path!r}, {converted!r}):
            _, params = checkpoints.load(path, config, shardings=shardings)
            for k, v in traverse_util.flatten_dict(params).items():
                r = traverse_util.flatten_dict(ref)[k]
                assert v.sharding == traverse_util.flatten_dict(shardings)[k], k
                np.testing.assert_array_equal(np.asarray(v), np.asarray(r))
        emb = params["token_embedder"]["embedding"]
        print(len(jax.devices()), full, max(reads), emb.addressable_shards[0].data.shape)
    """,
        devices=4,
    )
    devices, full, largest_sharded_read, shard = out.split(maxsplit=3)
    assert devices == "4" and shard.strip() == "(8032, 4)"
    assert int(full) == 32128 * 4 and int(largest_sharded_read) == 32128 * 4 // 4
