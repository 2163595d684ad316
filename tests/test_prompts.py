"""Prompt parameter, placements and initializers (real T5 vocabulary and released prompts)."""

import json
import logging
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from conftest import apply, random_params, shared_path, tiny_t5
from ptune import prompts
from ptune.checkpoints import prompt_io
from ptune.errors import UserError
from ptune.models import t5

CFG = tiny_t5(num_encoder_layers=1, num_decoder_layers=1, dropout_rate=0.0)


def _insert(placement, lengths=(3, 3)):
    """Embeddings that encode their source: input token t -> +t, prompt row r -> -(r + 1)."""
    tokens = np.array([[5, 6, 7, 0, 0], [8, 9, 0, 0, 0]])
    embedded = jnp.asarray(tokens[..., None].astype(np.float32))
    p = max(lengths)
    prompt = -(np.arange(p, dtype=np.float32) + 1)[None, :, None].repeat(2, axis=0)
    prompt_valid = np.arange(p)[None, :] < np.array(lengths)[:, None]
    out, valid = prompts.insert_prompt(
        embedded, jnp.asarray(tokens > 0), jnp.asarray(prompt), jnp.asarray(prompt_valid), placement
    )
    return np.asarray(out[..., 0]), np.asarray(valid)


def test_prefix_placement_and_mask():
    out, valid = _insert("prefix")
    np.testing.assert_array_equal(out[0, :6], [-1, -2, -3, 5, 6, 7])
    np.testing.assert_array_equal(valid[0], [1, 1, 1, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(out[1, :5], [-1, -2, -3, 8, 9])
    np.testing.assert_array_equal(valid[1], [1, 1, 1, 1, 1, 0, 0, 0])


def test_after_bos_and_suffix_placements():
    out, valid = _insert("after_bos")
    np.testing.assert_array_equal(out[0, :6], [5, -1, -2, -3, 6, 7])
    np.testing.assert_array_equal(valid[0], [1, 1, 1, 1, 1, 1, 0, 0])
    # Suffix: before the input's last real token (its EOS), as the original's before_eos=True.
    out, valid = _insert("suffix")
    np.testing.assert_array_equal(out[0, :6], [5, 6, -1, -2, -3, 7])
    np.testing.assert_array_equal(out[1, :5], [8, -1, -2, -3, 9])
    np.testing.assert_array_equal(valid[1], [1, 1, 1, 1, 1, 0, 0, 0])


def test_shorter_prompt_in_a_padded_bank_takes_only_its_own_length():
    out, valid = _insert("prefix", lengths=(3, 1))
    np.testing.assert_array_equal(out[1, :3], [-1, 8, 9])
    np.testing.assert_array_equal(valid[1], [1, 1, 1, 0, 0, 0, 0, 0])


def test_prompt_parameter_path_shape_axes_and_mask_growth():
    model = t5.Transformer(CFG, prompts.prompt_factory(5))
    variables = t5.abstract_variables(CFG, prompts.prompt_factory(5))
    boxed = variables["params"]["encoder"]["prompt"]["prompt"]
    assert boxed.value.shape == (5, 8)
    assert tuple(boxed.names) == ("prompt", "prompt_embed")
    assert t5.parameter_count(CFG) + 40 == sum(
        int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(nn.unbox(variables))
    )
    tokens = np.array([[3, 4, 5, 0]], np.int32)
    params = random_params(model, tokens, tokens, tokens, enable_dropout=False)
    encoded, valid = apply(
        model, {"params": params}, tokens, enable_dropout=False, method=t5.Transformer.encode
    )
    assert encoded.shape == (1, 9, 8)
    np.testing.assert_array_equal(np.asarray(valid), [[1] * 8 + [0]])


def test_prompt_changes_outputs_and_padding_stays_invisible():
    model = t5.Transformer(CFG, prompts.prompt_factory(4))
    enc = np.array([[3, 4, 5, 0, 0], [6, 7, 0, 0, 0]], np.int32)
    dec = np.array([[0, 9, 10], [0, 11, 12]], np.int32)
    tgt = np.array([[9, 10, 1], [11, 12, 1]], np.int32)
    params = random_params(model, enc, dec, tgt, enable_dropout=False)
    apply = jax.jit(lambda p, e: model.apply({"params": p}, e, dec, tgt, enable_dropout=False))
    base = np.asarray(apply(params, enc))
    padded = np.concatenate([enc, np.zeros((2, 4), np.int32)], axis=1)
    np.testing.assert_allclose(np.asarray(apply(params, padded)), base, atol=1e-6, rtol=1e-6)
    other = jax.tree_util.tree_map(lambda x: x, params)
    other["encoder"]["prompt"]["prompt"] = params["encoder"]["prompt"]["prompt"] + 1.0
    assert np.abs(np.asarray(apply(other, enc)) - base).max() > 1e-3


def test_packing_is_refused_with_a_prompt():
    model = t5.Transformer(CFG, prompts.prompt_factory(2))
    tokens = np.array([[3, 4]], np.int32)
    params = random_params(model, tokens, tokens, tokens, enable_dropout=False)
    with pytest.raises(ValueError, match="packed inputs .* cannot be used with a prompt"):
        model.apply(
            {"params": params},
            tokens,
            tokens,
            tokens,
            enable_dropout=False,
            encoder_segment_ids=np.ones_like(tokens),
            decoder_segment_ids=tokens > 0,
        )


@pytest.mark.parametrize("length", [0, -3, 2.5, True])
def test_bad_prompt_length(length):
    with pytest.raises(UserError, match="prompt length must be a positive integer"):
        prompts.prompt_factory(length)


# ------------------------------------------------------------------ initializers


@pytest.fixture(scope="module")
def t5_vocab():
    import seqio

    return seqio.SentencePieceVocabulary(
        shared_path("t5_vocab", "sentencepiece.model"), extra_ids=100
    )


@pytest.fixture(scope="module")
def tiny_embedding():
    return np.load(shared_path("t5x_tiny_checkpoint", "tiny_embeddings_32128x4.npy"))


def test_random_uniform_range():
    ctx = prompts.InitContext(embedding=np.zeros((10, 16)))
    value = prompts.initialize(prompts.random_uniform(), jax.random.PRNGKey(0), 100, ctx)
    assert value.shape == (100, 16) and value.dtype == np.float32
    assert value.min() >= -0.5 and value.max() <= 0.5 and value.std() > 0.2


def test_sampled_vocab_rows_are_distinct_frequent_tokens(tiny_embedding, t5_vocab):
    ctx = prompts.InitContext(embedding=tiny_embedding, vocabulary=t5_vocab)
    value = prompts.initialize(prompts.sampled_vocab(), jax.random.PRNGKey(3), 100, ctx)
    # Identify each row's source id in the real embedding table.
    ids = [int(np.flatnonzero((tiny_embedding == row).all(axis=1))[0]) for row in value]
    assert len(set(ids)) == 100
    assert all(3 <= i < 5000 for i in ids)
    again = prompts.initialize(prompts.sampled_vocab(), jax.random.PRNGKey(3), 100, ctx)
    np.testing.assert_array_equal(value, again)
    other = prompts.initialize(prompts.sampled_vocab(), jax.random.PRNGKey(4), 100, ctx)
    assert not np.array_equal(value, other)


def test_sampling_never_picks_sentinels_in_a_small_vocabulary():
    class Vocab:  # 10 real pieces and 4 sentinels
        vocab_size, extra_ids = 14, 4

    ctx = prompts.InitContext(
        embedding=np.arange(14 * 2, dtype=np.float32).reshape(14, 2), vocabulary=Vocab()
    )
    value = prompts.initialize(prompts.sampled_vocab(), jax.random.PRNGKey(0), 7, ctx)
    assert sorted(value[:, 0] // 2) == [3, 4, 5, 6, 7, 8, 9]
    with pytest.raises(UserError, match="cannot sample 8 distinct prompt rows"):
        prompts.initialize(prompts.sampled_vocab(), jax.random.PRNGKey(0), 8, ctx)


def test_class_labels_rows_are_subtoken_means(tiny_embedding, t5_vocab):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=shared_path("t5_vocab", "sentencepiece.model"))
    labels = ["True", "False", "not_entailment"]
    ctx = prompts.InitContext(embedding=tiny_embedding, vocabulary=t5_vocab)
    value = prompts.initialize(prompts.class_labels(labels), jax.random.PRNGKey(0), 10, ctx)
    for i, label in enumerate(labels):
        ids = sp.encode(label)
        np.testing.assert_allclose(value[i], tiny_embedding[ids].mean(axis=0), rtol=1e-6)
    assert len(sp.encode("False")) > 1  # the mean really averages several sub-tokens
    rest_ids = [int(np.flatnonzero((tiny_embedding == r).all(axis=1))[0]) for r in value[3:]]
    assert len(set(rest_ids)) == 7 and max(rest_ids) < 5000


def test_class_labels_from_the_task_and_extra_labels_dropped(tiny_embedding, t5_vocab, caplog):
    ctx = prompts.InitContext(
        embedding=tiny_embedding,
        vocabulary=t5_vocab,
        labels=["entailment", "neutral", "contradiction"],
    )
    with caplog.at_level(logging.WARNING):
        value = prompts.initialize(prompts.class_labels(), jax.random.PRNGKey(0), 2, ctx)
    assert "dropping labels ['contradiction']" in caplog.text
    ids = t5_vocab.encode("neutral")
    np.testing.assert_allclose(value[1], tiny_embedding[ids].mean(axis=0), rtol=1e-6)


def test_label_that_tokenizes_to_nothing(tiny_embedding, t5_vocab):
    ctx = prompts.InitContext(embedding=tiny_embedding, vocabulary=t5_vocab)
    with pytest.raises(UserError, match="class label '' tokenizes to nothing"):
        prompts.initialize(prompts.class_labels(["True", ""]), jax.random.PRNGKey(0), 5, ctx)


def test_class_labels_without_labels_is_sampled_vocabulary_said_in_the_log(
    tiny_embedding, t5_vocab, caplog
):
    # ReCoRD, WSC: no closed label set. The paper's fallback, not a stopped run.
    ctx = prompts.InitContext(embedding=tiny_embedding, vocabulary=t5_vocab)
    with caplog.at_level(logging.INFO):
        value = prompts.initialize(prompts.class_labels(), jax.random.PRNGKey(0), 5, ctx)
    sampled = prompts.initialize(prompts.sampled_vocab(), jax.random.PRNGKey(0), 5, ctx)
    np.testing.assert_array_equal(value, sampled)
    assert "no closed label set" in caplog.text


def test_from_text(tiny_embedding, t5_vocab):
    ctx = prompts.InitContext(embedding=tiny_embedding, vocabulary=t5_vocab)
    ids = t5_vocab.encode("Classify the sentiment")
    value = prompts.initialize(
        prompts.from_text("Classify the sentiment"), jax.random.PRNGKey(0), len(ids) + 2, ctx
    )
    np.testing.assert_array_equal(value[: len(ids)], tiny_embedding[ids])
    short = prompts.initialize(
        prompts.from_text("Classify the sentiment"), jax.random.PRNGKey(0), 2, ctx
    )
    np.testing.assert_array_equal(short, tiny_embedding[ids[:2]])


def test_from_file_round_trips(tmp_path):
    from safetensors.numpy import save_file

    value = np.random.default_rng(0).normal(size=(6, 8)).astype(np.float32)
    ctx = prompts.InitContext(embedding=np.zeros((20, 8), np.float32))
    np.save(tmp_path / "p.npy", value)
    save_file({"prompt": value}, str(tmp_path / "p.safetensors"))
    peft_dir = tmp_path / "adapter"
    peft_dir.mkdir()
    save_file({"prompt_embeddings": value}, str(peft_dir / "adapter_model.safetensors"))
    config = {"peft_type": "PROMPT_TUNING", "num_transformer_submodules": 1}
    (peft_dir / "adapter_config.json").write_text(json.dumps(config))
    for path in ("p.npy", "p.safetensors", "adapter"):
        got = prompts.initialize(
            prompts.from_file(str(tmp_path / path)), jax.random.PRNGKey(0), 6, ctx
        )
        np.testing.assert_array_equal(got, value)
    # What the adapter's configuration says it is decides whether it is a ptune prompt.
    for text, message in (
        (json.dumps({**config, "peft_type": "LORA"}), "is a 'LORA' adapter"),
        (json.dumps({**config, "num_transformer_submodules": 2}), "num_transformer_submodules 2"),
        ("[1]", "adapter_config.json is not a JSON object"),
        (None, "holds no adapter_config.json"),
    ):
        (peft_dir / "adapter_config.json").unlink(missing_ok=True)
        if text is not None:
            (peft_dir / "adapter_config.json").write_text(text)
        with pytest.raises(UserError, match=message):
            prompt_io.load_prompt_file(str(peft_dir))


def test_released_prompts_load():
    for task in ("sst2", "mrpc", "rte"):
        path = shared_path("prompts", "t5_1_1_lm100k_base", f"{task}.npy")
        ctx = prompts.InitContext(embedding=np.zeros((32128, 768), np.float32))
        value = prompts.initialize(prompts.from_file(path), jax.random.PRNGKey(0), 100, ctx)
        np.testing.assert_array_equal(value, np.load(path))
    path64 = shared_path("prompts", "prompt_5x256.npy")
    assert np.load(path64).dtype == np.float64
    value = prompt_io.load_prompt_file(path64)
    assert value.dtype == np.float32 and value.shape == (5, 256)
    np.testing.assert_allclose(value, np.load(path64), rtol=1e-6)


def test_a_saved_prompt_reads_back_where_it_was_written(tmp_path):
    value = np.random.default_rng(1).normal(size=(3, 8)).astype(np.float32)
    npy, safe = prompt_io.save_prompt(str(tmp_path), value)
    assert os.path.basename(npy) == ".".join(prompts.PROMPT_PATH) + ".npy"
    for path in (npy, safe):
        np.testing.assert_array_equal(prompt_io.load_prompt_file(path), value)


def test_the_prompts_load_without_the_checkpoint_package():
    """Importing the prompts must not bring `ptune.checkpoints` (Orbax, TensorStore) or the
    edge (TensorFlow, seqio, gin); prompt files are read through `prompt_io`, only when one
    is read."""
    code = (
        "import sys; import ptune.prompts as p; "
        "heavy = [m for m in ('ptune.checkpoints', 'orbax', 'tensorstore', 'tensorflow', "
        "'seqio', 'gin') if m in sys.modules]; "
        "print(heavy, hasattr(p, 'PromptConfig'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert out.strip().splitlines()[-1] == "[] True"


def test_from_file_bad_input(tmp_path):
    ctx = prompts.InitContext(embedding=np.zeros((20, 8), np.float32))
    init = lambda path, length=4: prompts.initialize(  # noqa: E731
        prompts.from_file(str(path)), jax.random.PRNGKey(0), length, ctx
    )
    np.save(tmp_path / "wide.npy", np.zeros((4, 9), np.float32))
    with pytest.raises(UserError, match=r"wide.npy: shape \(4, 9\) does not match .* \(4, 8\)"):
        init(tmp_path / "wide.npy")
    bad = np.zeros((4, 8), np.float32)
    bad[2, 3] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(UserError, match="nan.npy: 1 values are NaN or infinite"):
        init(tmp_path / "nan.npy")
    np.save(tmp_path / "pickle.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(UserError, match="pickle.npy: not a plain numpy array"):
        init(tmp_path / "pickle.npy")
    with pytest.raises(UserError, match="does not exist"):
        init(tmp_path / "missing.npy")
    (tmp_path / "prompt.txt").write_text("0 1 2")
    with pytest.raises(UserError, match="expected a .npy or .safetensors"):
        init(tmp_path / "prompt.txt")
