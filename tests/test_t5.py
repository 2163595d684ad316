"""The T5 model: t5x parameter tree, logical axes, published sizes, masks, dropout, caching."""

import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from conftest import DROPOUT, REPO, apply, init_params, tiny_t5
from ptune.models import layers, t5, t5_layers

TINY_11 = tiny_t5(dropout_rate=DROPOUT)
TINY_10 = TINY_11.replace(mlp_activations=("relu",), logits_via_embedding=True)


def _flat(tree):
    return {
        "/".join(str(getattr(k, "key", k)) for k in path): leaf
        for path, leaf in jax.tree_util.tree_flatten_with_path(
            tree, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)
        )[0]
    }


def expected_tree(cfg: t5.T5Config, gated: bool, tied: bool) -> dict:
    """The t5x/flaxformer parameter list, written out from the issue's specification."""
    e, hd, m, v = cfg.emb_dim, cfg.num_heads * cfg.head_dim, cfg.mlp_dim, cfg.vocab_size
    rel = (cfg.num_heads, cfg.relative_attention_num_buckets)
    attn = {f"{n}/kernel": ((e, hd), ("embed", "joined_kv")) for n in ("query", "key", "value")}
    attn["out/kernel"] = ((hd, e), ("joined_kv", "embed"))
    wi = ["wi_0", "wi_1"] if gated else ["wi"]
    mlp = {f"{w}/kernel": ((e, m), ("embed", "mlp")) for w in wi}
    mlp["wo/kernel"] = ((m, e), ("mlp", "embed"))
    norm = ((e,), ("embed",))
    tree = {
        "token_embedder/embedding": ((v, e), ("vocab", "embed")),
        "encoder/relpos_bias/rel_embedding": (rel, ("heads", "relpos_buckets")),
        "encoder/encoder_norm/scale": norm,
        "decoder/relpos_bias/rel_embedding": (rel, ("heads", "relpos_buckets")),
        "decoder/decoder_norm/scale": norm,
    }
    if not tied:
        tree["decoder/logits_dense/kernel"] = ((e, v), ("embed", "vocab"))
    for i in range(cfg.num_encoder_layers):
        p = f"encoder/layers_{i}/"
        tree[p + "pre_attention_layer_norm/scale"] = norm
        tree[p + "pre_mlp_layer_norm/scale"] = norm
        tree.update({p + "attention/" + k: x for k, x in attn.items()})
        tree.update({p + "mlp/" + k: x for k, x in mlp.items()})
    for i in range(cfg.num_decoder_layers):
        p = f"decoder/layers_{i}/"
        for n in (
            "pre_self_attention_layer_norm",
            "pre_cross_attention_layer_norm",
            "pre_mlp_layer_norm",
        ):
            tree[p + n + "/scale"] = norm
        tree.update({p + "self_attention/" + k: x for k, x in attn.items()})
        tree.update({p + "encoder_decoder_attention/" + k: x for k, x in attn.items()})
        tree.update({p + "mlp/" + k: x for k, x in mlp.items()})
    return tree


@pytest.mark.parametrize("cfg,gated,tied", [(TINY_11, True, False), (TINY_10, False, True)])
def test_parameter_tree_names_shapes_and_axes(cfg, gated, tied):
    boxed = _flat(t5.abstract_variables(cfg)["params"])
    got = {k: (tuple(v.value.shape), tuple(v.names)) for k, v in boxed.items()}
    assert got == expected_tree(cfg, gated, tied)
    assert all(isinstance(v, nn.LogicallyPartitioned) for v in boxed.values())
    assert all(v.value.dtype == jnp.float32 for v in boxed.values())


@pytest.mark.parametrize(
    "size,count",
    [
        ("small", 76_961_152),
        ("base", 247_577_856),
        ("large", 783_150_080),
        ("xl", 2_849_757_184),
        ("xxl", 11_135_332_352),
    ],
)
def test_published_t5_1_1_parameter_counts_from_gin(size, count):
    import gin
    from ptune import ginconfig

    ginconfig.parse(ginconfig.GinArgs(files=[f"models/t5_1_1_{size}.gin"]))
    try:
        cfg = gin.get_configurable(t5.T5Config)()
    finally:
        gin.clear_config()
    assert t5.parameter_count(cfg) == count


@pytest.mark.parametrize(
    "gin_file,count",
    [
        # Hugging Face's num_parameters() for t5-small/base/large and mt5-small/base.
        ("t5_1_0_small", 60_506_624),
        ("t5_1_0_base", 222_903_552),
        ("t5_1_0_large", 737_668_096),
        ("mt5_small", 300_176_768),
        ("mt5_base", 582_401_280),
    ],
)
def test_t5_1_0_and_mt5_counts(gin_file, count):
    import gin
    from ptune import ginconfig

    ginconfig.parse(ginconfig.GinArgs(files=[f"models/{gin_file}.gin"]))
    try:
        cfg = gin.get_configurable(t5.T5Config)()
    finally:
        gin.clear_config()
    assert t5.parameter_count(cfg) == count


def test_every_model_gin_file_parses():
    import gin
    from ptune import ginconfig

    files = sorted(os.listdir(os.path.join(REPO, "gin", "models")))
    assert len(files) >= 17
    decoder_only = [name for name in files if "llama" in name or "qwen" in name]
    # Checked against the published counts in test_llama.py and test_qwen3.py.
    assert len(decoder_only) == 6
    for name in sorted(set(files) - set(decoder_only)):
        ginconfig.parse(ginconfig.GinArgs(files=[f"models/{name}"]))
        cfg = gin.get_configurable(t5.T5Config)()
        assert t5.parameter_count(cfg) > 0, name  # counted over scanned layers: fast
        gin.clear_config()


def test_scanned_parameters_are_stacked_on_axis_1():
    cfg = TINY_11.replace(scan_layers=True)
    boxed = _flat(t5.abstract_variables(cfg)["params"])
    q = boxed["encoder/layers/attention/query/kernel"]
    assert q.value.shape == (8, 2, 8) and tuple(q.names) == ("embed", "layers", "joined_kv")
    n = boxed["decoder/layers/pre_mlp_layer_norm/scale"]
    assert n.value.shape == (8, 2) and tuple(n.names) == ("embed", "layers")
    assert t5.parameter_count(cfg) == t5.parameter_count(TINY_11)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="unknown activation 'swiglu'"):
        tiny_t5(mlp_activations=("swiglu",))
    with pytest.raises(ValueError, match="not divisible by num_heads=3"):
        tiny_t5(emb_dim=8, num_heads=3, head_dim=None)
    with pytest.raises(ValueError, match="num_heads must be a positive integer"):
        tiny_t5(num_heads=0)
    assert tiny_t5(emb_dim=12, num_heads=3, head_dim=None).head_dim == 4


def test_relative_position_buckets_match_t5_definition():
    # Written from the T5 paper / Mesh TF definition in float64 (independent of the model code).
    def reference(rel, bidirectional, num_buckets, max_distance):
        ret, n = 0, -rel
        if bidirectional:
            num_buckets //= 2
            ret += num_buckets if n < 0 else 0
            n = abs(n)
        else:
            n = max(n, 0)
        max_exact = num_buckets // 2
        if n < max_exact:
            return ret + n
        large = max_exact + int(
            math.log(n / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
        )
        return ret + min(large, num_buckets - 1)

    rel = np.arange(-300, 301)
    for bidirectional in (True, False):
        for nb, md in ((32, 128), (4, 8), (8, 16), (64, 256)):
            got = t5_layers.relative_position_bucket(rel, bidirectional, nb, md)
            want = [reference(int(r), bidirectional, nb, md) for r in rel]
            np.testing.assert_array_equal(got, want)


@pytest.fixture(scope="module")
def tiny():
    model = t5.Transformer(TINY_11)
    rng = np.random.default_rng(0)
    enc = rng.integers(1, 64, size=(3, 12)).astype(np.int32)
    enc[0, 9:] = 0
    enc[1, 5:] = 0
    dec_tgt = rng.integers(1, 64, size=(3, 7)).astype(np.int32)
    dec_tgt[0, 5:] = 0
    dec_in = np.concatenate([np.zeros((3, 1), np.int32), dec_tgt[:, :-1]], axis=1)
    params = init_params(model, enc, dec_in, dec_tgt, seed=1, enable_dropout=False)

    @jax.jit
    def logits(params, enc, dec_in, dec_tgt):
        return model.apply({"params": params}, enc, dec_in, dec_tgt, enable_dropout=False)

    return model, params, logits, enc, dec_in, dec_tgt


def test_forward_is_deterministic_and_finite(tiny):
    model, params, logits, enc, dec_in, dec_tgt = tiny
    a = logits(params, enc, dec_in, dec_tgt)
    b = logits(params, enc, dec_in, dec_tgt)
    assert a.shape == (3, 7, 64) and a.dtype == jnp.float32
    assert np.isfinite(np.asarray(a)).all()
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_encoder_padding_changes_nothing(tiny):
    model, params, logits, enc, dec_in, dec_tgt = tiny
    base = np.asarray(logits(params, enc, dec_in, dec_tgt))
    longer = np.concatenate([enc, np.zeros((3, 5), np.int32)], axis=1)
    valid = dec_tgt > 0  # logits at padded target positions are not defined
    # The padded key columns get softmax weight exactly 0; only XLA's summation order over
    # the longer shape differs, so the project's cross-shape float32 tolerance applies (as
    # tests/test_length_buckets.py's LOSS_RTOL; 1e-6 relative failed here at 1.8e-6, the
    # same at commit a0d444b, on a machine whose XLA:CPU code differs from the one it passed on).
    np.testing.assert_allclose(
        np.asarray(logits(params, longer, dec_in, dec_tgt))[valid],
        base[valid],
        atol=1e-6,
        rtol=1e-5,
    )


def test_decoder_padding_and_causality(tiny):
    model, params, logits, enc, dec_in, dec_tgt = tiny
    base = np.asarray(logits(params, enc, dec_in, dec_tgt))
    # Row 0 has targets padded from position 5: its decoder inputs there change nothing.
    changed = dec_in.copy()
    changed[0, 5:] = [7, 9]
    out = np.asarray(logits(params, enc, changed, dec_tgt))
    np.testing.assert_allclose(out[0, :5], base[0, :5], atol=1e-6, rtol=1e-6)
    # Causal: changing the decoder input at position 3 changes nothing before it, but does
    # change position 3 itself.
    changed = dec_in.copy()
    changed[:, 3] = (changed[:, 3] % 63) + 1
    out = np.asarray(logits(params, enc, changed, dec_tgt))
    np.testing.assert_allclose(out[:, :3], base[:, :3], atol=1e-6, rtol=1e-6)
    assert np.abs(out[1:, 3] - base[1:, 3]).max() > 1e-4


def test_dropout_on_and_off(tiny):
    model, params, logits, enc, dec_in, dec_tgt = tiny

    def run(seed, enable):
        return np.asarray(
            apply(
                model,
                {"params": params},
                enc,
                dec_in,
                dec_tgt,
                enable_dropout=enable,
                rngs={"dropout": jax.random.PRNGKey(seed)},
            )
        )

    off = run(0, False)
    np.testing.assert_array_equal(off, run(1, False))
    on0, on0_again, on1 = run(0, True), run(0, True), run(1, True)
    np.testing.assert_array_equal(on0, on0_again)
    assert np.abs(on0 - off).max() > 1e-3 and np.abs(on0 - on1).max() > 1e-3
    no_dropout = t5.Transformer(TINY_11.replace(dropout_rate=0.0))
    np.testing.assert_allclose(
        np.asarray(
            apply(
                no_dropout,
                {"params": params},
                enc,
                dec_in,
                dec_tgt,
                enable_dropout=True,
                rngs={"dropout": jax.random.PRNGKey(0)},
            )
        ),
        off,
        atol=1e-6,
        rtol=1e-6,
    )


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("shape", [(7, 3), (2, 5, 3), (2, 4, 6, 3)])
def test_dense_layers_gradients_equal_the_plain_matmuls_bit_for_bit(shape, dtype):
    """`layers.project` only reorders how the kernel's gradient is laid out (a CPU speed fix): its
    output and both gradients are the plain `jnp.dot`'s, bit for bit."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(shape), dtype)
    kernel = jnp.asarray(rng.standard_normal((shape[-1], 4)), dtype)
    ct = jnp.asarray(rng.standard_normal(shape[:-1] + (4,)), dtype)

    def outputs_and_gradients(fn):
        y, vjp = jax.vjp(fn, x, kernel)
        return (y, *vjp(ct))

    ours = jax.jit(lambda: outputs_and_gradients(layers.project))()
    plain = jax.jit(lambda: outputs_and_gradients(jnp.dot))()
    assert len(ours) == len(plain) == 3  # zip below would stop at the shorter
    for name, a, b in zip(("output", "input gradient", "kernel gradient"), ours, plain):
        assert a.dtype == b.dtype and a.shape == b.shape, name
        np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32), name)


def test_scanned_model_equals_unscanned(tiny):
    model, params, logits, enc, dec_in, dec_tgt = tiny
    scanned_model = t5.Transformer(TINY_11.replace(scan_layers=True))

    def stack(prefix, n):
        layers = [params[prefix][f"layers_{i}"] for i in range(n)]
        return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs, axis=1), *layers)

    scanned = {
        "token_embedder": params["token_embedder"],
        "encoder": {k: v for k, v in params["encoder"].items() if not k.startswith("layers_")},
        "decoder": {k: v for k, v in params["decoder"].items() if not k.startswith("layers_")},
    }
    scanned["encoder"]["layers"] = stack("encoder", 2)
    scanned["decoder"]["layers"] = stack("decoder", 2)
    out = apply(scanned_model, {"params": scanned}, enc, dec_in, dec_tgt, enable_dropout=False)
    np.testing.assert_allclose(
        np.asarray(out), np.asarray(logits(params, enc, dec_in, dec_tgt)), atol=1e-5, rtol=1e-5
    )


def test_cached_decoding_matches_full_decoder(tiny):
    model, params, logits, enc, dec_in, dec_tgt = tiny
    full = np.asarray(logits(params, enc, dec_in, np.ones_like(dec_tgt)))
    encoded, valid = apply(
        model, {"params": params}, enc, enable_dropout=False, method=t5.Transformer.encode
    )
    length = dec_in.shape[1]
    _, variables = apply(
        model,
        {"params": params},
        encoded,
        valid,
        np.zeros_like(dec_in),
        enable_dropout=False,
        decode=True,
        mutable=["cache"],
        method=t5.Transformer.decode,
    )
    cache = variables["cache"]
    steps = []
    one_token = jax.jit(
        lambda variables, token: model.apply(
            variables,
            None,
            valid,
            token,
            enable_dropout=False,
            decode=True,
            max_decode_length=length,
            mutable=["cache"],
            method=t5.Transformer.decode,
        )
    )
    for i in range(length):
        out, variables = one_token({"params": params, "cache": cache}, dec_in[:, i : i + 1])
        cache = variables["cache"]
        steps.append(np.asarray(out[:, 0]))
    np.testing.assert_allclose(np.stack(steps, axis=1), full, atol=1e-5, rtol=1e-5)


def test_bfloat16_activations_stay_close_to_float32(tiny):
    model, params, logits, enc, dec_in, dec_tgt = tiny
    bf16 = t5.Transformer(TINY_11.replace(dtype="bfloat16"))
    out = apply(bf16, {"params": params}, enc, dec_in, dec_tgt, enable_dropout=False)
    assert out.dtype == jnp.float32
    ref = np.asarray(logits(params, enc, dec_in, dec_tgt))
    # bfloat16 has 8 mantissa bits; on logits of magnitude ~1 expect errors ~1e-2.
    assert np.abs(np.asarray(out) - ref).max() < 0.1


def _ptune(*args):
    return subprocess.run(
        [sys.executable, "-m", "ptune.cli", *args],
        capture_output=True,
        text=True,
        cwd="/",
        timeout=120,
    )


def test_cli_info_xxl_total_params_abstractly(capsys):
    from ptune import cli

    capsys.readouterr()
    code = cli.main(["info", "--gin_file=models/t5_1_1_xxl.gin"])
    out = capsys.readouterr()
    assert code == 0, out.err
    lines = out.out.strip().splitlines()
    assert lines[-1] == "total_params: 11135332352"
    # models/t5_1_1_xxl.gin scans its layers: 24 stacked on axis 1 (flaxformer's layout).
    assert any(
        line.split()[:4] == ["encoder/layers/mlp/wi_1/kernel", "(4096,", "24,", "10240)"]
        for line in lines
    )


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--gin_file=models/missing.gin"], "gin file 'models/missing.gin' not found"),
        (
            ["--gin_file=models/t5_1_1_tiny.gin", "--gin.t5.T5Config.mlp_activations=('foo',)"],
            "unknown activation 'foo'",
        ),
        (
            [
                "--gin_file=models/t5_1_1_tiny.gin",
                "--gin.t5.T5Config.head_dim=None",
                "--gin.t5.T5Config.num_heads=3",
            ],
            "not divisible by num_heads=3",
        ),
        (["--gin_file=models/t5_1_1_tiny.gin", "--gin.MODEL_DIR"], "malformed gin flag"),
        (
            ["--gin_file=models/t5_1_1_tiny.gin", "--gin_bindings=t5.T5Config.emb_dim = = 3"],
            "gin binding",
        ),
    ],
)
def test_cli_bad_input_is_one_line(args, needle, capsys):
    from ptune import cli

    capsys.readouterr()
    assert cli.main(["info", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err, err


def test_a_bad_input_is_the_only_line_a_fresh_process_prints():
    """The same in a new process: nothing else reaches stderr (TensorFlow's start-up lines,
    a traceback)."""
    proc = _ptune("info", "--gin_file=models/t5_1_1_tiny.gin", "--gin.t5.T5Config.num_heads=0")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "num_heads must be a positive" in proc.stderr, (
        proc.stderr
    )
