"""The decoder-only family (`ptune.models.llama`) against transformers' PyTorch models:
logits on padded batches (Llama with Llama 3 RoPE scaling, Mistral without sliding window,
Qwen2 with q/k/v biases; grouped-query attention throughout), scanned layers, and parameter
counts of published models from their configs."""

import functools

import jax
import numpy as np
import pytest

from conftest import apply
from ptune import recipe
from ptune.checkpoints import hf_causal, prompt_io
from ptune.errors import UserError
from ptune.models import causal_decoding, llama

torch = pytest.importorskip("torch", reason="transformers parity needs the [test] extra")
transformers = pytest.importorskip("transformers", reason="needs the [test] extra")

TOLERANCE = 1e-4  # float32 on both sides, as the T5 parity tests
SMALL = dict(
    vocab_size=97,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    rms_norm_eps=1e-5,
)
CASES = {
    "llama3": (
        "LlamaForCausalLM",
        dict(
            SMALL,
            rope_theta=500000.0,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            },
            tie_word_embeddings=True,
        ),
    ),
    "mistral": ("MistralForCausalLM", dict(SMALL, sliding_window=None, rope_theta=10000.0)),
    "qwen2": (
        "Qwen2ForCausalLM",
        dict(SMALL, rope_theta=1000000.0, tie_word_embeddings=True, use_sliding_window=False),
    ),
}


def _hf_model(architecture, fields, seed=0):
    config_cls = getattr(transformers, architecture.replace("ForCausalLM", "Config"))
    config = config_cls(**fields)
    config.architectures = [architecture]
    torch.manual_seed(seed)
    model = getattr(transformers, architecture)(config).eval()
    with torch.no_grad():  # biases and norms start at 0 and 1: make every parameter matter
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def _varied_llama3(seed):
    """A Llama 3 with weights of std 0.5, not 0.02: a near-uniform model repeats one token,
    which would not show whether decoding reads the right positions -> (config, params)."""
    architecture, fields = CASES["llama3"]
    hf = _hf_model(architecture, dict(fields, initializer_range=0.5), seed=seed)
    config = llama.from_hf_config(hf.config.to_dict())
    return config, hf_causal.params_from_hf(
        {k: v.numpy() for k, v in hf.state_dict().items()}, config
    )


def _batch():
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 97, (3, 11))
    valid = np.ones((3, 11), bool)
    valid[1, 7:] = False  # right padding
    valid[2, 4:] = False
    tokens[~valid] = 0
    return tokens, valid


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_equal_transformers_on_padded_batches(case):
    architecture, fields = CASES[case]
    hf = _hf_model(architecture, fields)
    config = llama.from_hf_config(hf.config.to_dict())
    assert config.num_key_value_heads == 2 and config.head_dim == 8
    assert config.attention_bias == (case == "qwen2")
    state = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    params = hf_causal.params_from_hf(state, config)
    tokens, valid = _batch()
    with torch.no_grad():
        expected = hf(
            input_ids=torch.tensor(tokens), attention_mask=torch.tensor(valid.astype(np.int64))
        ).logits.numpy()
    got = jax.jit(lambda p: llama.CausalLM(config).apply({"params": p}, tokens, valid))(params)
    got = np.asarray(got)
    assert np.abs(got[valid] - expected[valid]).max() < TOLERANCE
    # Scanned layers (stacked on axis 1) compute the same.
    scanned = config.replace(scan_layers=True)
    got_scanned = apply(
        llama.CausalLM(scanned), {"params": hf_causal.params_from_hf(state, scanned)}, tokens, valid
    )
    np.testing.assert_allclose(np.asarray(got_scanned)[valid], got[valid], rtol=1e-5, atol=1e-5)


def test_the_rope_frequencies_equal_transformers():
    from transformers import modeling_rope_utils

    architecture, fields = CASES["llama3"]
    hf_config = transformers.LlamaConfig(**fields)
    inv, _ = modeling_rope_utils.ROPE_INIT_FUNCTIONS["llama3"](hf_config, "cpu")
    config = llama.from_hf_config({**hf_config.to_dict(), "architectures": [architecture]})
    np.testing.assert_allclose(llama.rope_frequencies(config), inv.numpy(), rtol=1e-6)


# Published parameter counts, from each model's config.json.
PUBLISHED = {
    "TinyLlama-1.1B": (
        dict(
            architectures=["LlamaForCausalLM"],
            vocab_size=32000,
            hidden_size=2048,
            intermediate_size=5632,
            num_hidden_layers=22,
            num_attention_heads=32,
            num_key_value_heads=4,
            rms_norm_eps=1e-5,
            rope_theta=10000.0,
            tie_word_embeddings=False,
        ),
        1_100_048_384,
    ),
    "Llama-3.2-1B": (
        dict(
            architectures=["LlamaForCausalLM"],
            vocab_size=128256,
            hidden_size=2048,
            intermediate_size=8192,
            num_hidden_layers=16,
            num_attention_heads=32,
            num_key_value_heads=8,
            head_dim=64,
            rms_norm_eps=1e-5,
            rope_theta=500000.0,
            rope_scaling={
                "factor": 32.0,
                "high_freq_factor": 4.0,
                "low_freq_factor": 1.0,
                "original_max_position_embeddings": 8192,
                "rope_type": "llama3",
            },
            tie_word_embeddings=True,
        ),
        1_235_814_400,
    ),
    "Llama-3-8B": (
        dict(
            architectures=["LlamaForCausalLM"],
            vocab_size=128256,
            hidden_size=4096,
            intermediate_size=14336,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=8,
            rms_norm_eps=1e-5,
            rope_theta=500000.0,
            tie_word_embeddings=False,
        ),
        8_030_261_248,
    ),
    "Qwen2.5-0.5B": (
        dict(
            architectures=["Qwen2ForCausalLM"],
            vocab_size=151936,
            hidden_size=896,
            intermediate_size=4864,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
            rms_norm_eps=1e-6,
            rope_theta=1000000.0,
            tie_word_embeddings=True,
            use_sliding_window=False,
            sliding_window=32768,
        ),
        494_032_768,
    ),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_abstract_parameter_counts_equal_the_published_ones(name):
    fields, count = PUBLISHED[name]
    assert llama.parameter_count(llama.from_hf_config(fields)) == count


@pytest.mark.parametrize(
    "gin_file, name",
    [
        ("tinyllama_1_1b", "TinyLlama-1.1B"),
        ("llama3_2_1b", "Llama-3.2-1B"),
        ("llama3_8b", "Llama-3-8B"),
        ("qwen2_5_0_5b", "Qwen2.5-0.5B"),
    ],
)
def test_the_decoder_only_model_files_are_the_published_models(gin_file, name):
    from ptune import ginconfig, model_config

    ginconfig.parse(ginconfig.GinArgs(files=[f"models/{gin_file}.gin"]))
    try:
        config = model_config.resolve_model_config(ginconfig.model_fields(), None)
    finally:
        ginconfig.gin.clear_config()
    fields, count = PUBLISHED[name]
    published = llama.from_hf_config(fields)
    for field in llama.ARCHITECTURE_FIELDS:  # memory settings (scan, remat) aside
        assert getattr(config, field) == getattr(published, field), field
    assert llama.parameter_count(config) == count


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(architectures=["GPT2LMHeadModel"]), "not a supported decoder-only model"),
        (
            dict(architectures=["MistralForCausalLM"], sliding_window=4096),
            "sliding-window attention",
        ),
        (dict(hidden_act="gelu"), "only SwiGLU"),
        (dict(rope_scaling={"rope_type": "yarn", "factor": 4.0}), "rope scaling 'yarn'"),
        (dict(num_key_value_heads=3), "do not group evenly"),
    ],
)
def test_unsupported_configurations_are_one_line(change, message):
    fields = dict(PUBLISHED["TinyLlama-1.1B"][0], **change)
    with pytest.raises(UserError, match=message):
        llama.from_hf_config(fields)


def test_a_checkpoint_that_does_not_fit_names_every_problem():
    architecture, fields = CASES["mistral"]
    hf = _hf_model(architecture, fields)
    config = llama.from_hf_config(hf.config.to_dict())
    state = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    state["model.layers.0.mlp.gate_proj.weight"] = np.zeros((5, 5), np.float32)
    del state["model.norm.weight"]
    state["model.extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(UserError) as info:
        hf_causal.params_from_hf(state, config)
    text = str(info.value)
    assert "unexpected model.extra.weight" in text and "missing norm/scale" in text
    assert "model.layers.0.mlp.gate_proj.weight has shape" in text


def test_a_sharded_safetensors_directory_loads_strictly_and_pickles_are_refused(tmp_path):
    architecture, fields = CASES["qwen2"]
    model = _hf_model(architecture, fields, seed=1)
    model.save_pretrained(tmp_path / "qwen", safe_serialization=True, max_shard_size="20KB")
    assert (tmp_path / "qwen" / "model.safetensors.index.json").exists()
    config, params = hf_causal.load(str(tmp_path / "qwen"))
    tokens, valid = _batch()
    with torch.no_grad():
        expected = model(
            input_ids=torch.tensor(tokens), attention_mask=torch.tensor(valid.astype(np.int64))
        ).logits.numpy()
    got = np.asarray(apply(llama.CausalLM(config), {"params": params}, tokens, valid))
    assert np.abs(got[valid] - expected[valid]).max() < TOLERANCE
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "config.json").write_text(
        (tmp_path / "qwen" / "config.json").read_text()
    )
    (tmp_path / "pickled" / "pytorch_model.bin").write_bytes(b"not unpickled")
    with pytest.raises(UserError, match="a Python pickle, which ptune never unpickles"):
        hf_causal.load(str(tmp_path / "pickled"))


def _peft_prompt_tuning(seed: int, prompt_seed: int):
    """A random Llama 3-style model (`CASES["llama3"]`) under PEFT's CAUSAL_LM prompt tuning
    with a 5-token prompt drawn uniformly in [-0.5, 0.5] -> (ptune config, the state dict as
    numpy, the PEFT model in eval mode, the prompt [5, 32])."""
    peft = pytest.importorskip("peft", reason="needs the [test] extra")
    architecture, fields = CASES["llama3"]
    base = _hf_model(architecture, fields, seed=seed)
    state = {k: v.detach().numpy().copy() for k, v in base.state_dict().items()}
    config = llama.from_hf_config(base.config.to_dict())
    peft_model = peft.get_peft_model(
        base,
        peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=5, token_dim=32),
    ).eval()
    weight = peft_model.prompt_encoder["default"].embedding.weight
    torch.manual_seed(prompt_seed)
    with torch.no_grad():
        weight.uniform_(-0.5, 0.5)
    return config, state, peft_model, weight.detach().numpy().copy()


def test_prompt_tuning_logits_equal_pefts_for_a_causal_lm():
    """PEFT's prompt tuning (task_type CAUSAL_LM) over the same random weights: the prompt in
    front of the embedded tokens, always attended, positions from the prompt's first vector."""
    from ptune import prompts

    config, state, peft_model, prompt = _peft_prompt_tuning(seed=2, prompt_seed=4)
    tokens, valid = _batch()
    with torch.no_grad():
        expected = peft_model(
            input_ids=torch.tensor(tokens), attention_mask=torch.tensor(valid.astype(np.int64))
        ).logits.numpy()
    params = prompts.with_prompt(hf_causal.params_from_hf(state, config), prompt)
    model = llama.CausalLM(config, prompts.prompt_factory(5))
    got = np.asarray(apply(model, {"params": params}, tokens, valid))
    assert got.shape == expected.shape == (3, 5 + 11, 97)
    rows = np.concatenate([np.ones((3, 5), bool), valid], axis=1)
    assert np.abs(got[rows] - expected[rows]).max() < TOLERANCE


# A seqio batch: inputs and targets each end in EOS (2), right-padded with 0; a token 0
# inside row 1's input and target is real ("!" in Llama 3's and Qwen2's tokenizers): the
# last non-zero token marks the end.
SEQ2SEQ_INPUTS = np.array([[5, 6, 7, 2, 0, 0], [8, 0, 9, 2, 0, 0], [10, 11, 12, 13, 14, 2]])
SEQ2SEQ_TARGETS = np.array([[20, 21, 2, 0], [22, 0, 2, 0], [23, 24, 25, 2]])


def test_seq2seq_layout_puts_targets_right_after_the_input_text():
    tokens, valid, prefix = llama.seq2seq_layout(SEQ2SEQ_INPUTS, SEQ2SEQ_TARGETS, 1, True)
    assert np.asarray(tokens).tolist() == [
        [1, 5, 6, 7, 20, 21, 2, 0, 0, 0, 0],
        [1, 8, 0, 9, 22, 0, 2, 0, 0, 0, 0],
        [1, 10, 11, 12, 13, 14, 23, 24, 25, 2, 0],
    ]
    assert np.asarray(valid).sum(axis=1).tolist() == [7, 7, 10]
    assert np.asarray(prefix).tolist() == [4, 4, 6]
    tokens, _, prefix = llama.seq2seq_layout(SEQ2SEQ_INPUTS, SEQ2SEQ_TARGETS, None, False)
    assert np.asarray(tokens)[0].tolist() == [5, 6, 7, 2, 20, 21, 2, 0, 0, 0]
    assert np.asarray(prefix).tolist() == [4, 4, 6]


@pytest.mark.parametrize("bos_id", [1, None])
def test_prompt_tuning_loss_and_gradient_equal_pefts_for_a_causal_lm(bos_id):
    """The train step's loss (seqio batch -> `CausalLM.seq2seq` -> token cross-entropy over
    the targets, z-loss off) and its prompt gradient equal PEFT's on the same sequences,
    labels -100 everywhere but the targets."""
    from ptune import prompts, step

    config, state, peft_model, prompt = _peft_prompt_tuning(seed=3, prompt_seed=9)
    weight = peft_model.prompt_encoder["default"].embedding.weight
    tokens, valid, prefix = (
        np.asarray(x) for x in llama.seq2seq_layout(SEQ2SEQ_INPUTS, SEQ2SEQ_TARGETS, bos_id, True)
    )
    steps = np.arange(tokens.shape[1])[None]
    labels = np.where(valid & (steps >= prefix[:, None]), tokens, -100)
    out = peft_model(
        input_ids=torch.tensor(tokens),
        attention_mask=torch.tensor(valid.astype(np.int64)),
        labels=torch.tensor(labels),
    )
    out.loss.backward()
    expected_grad = weight.grad.numpy()

    model = llama.CausalLM(config, prompts.prompt_factory(5), bos_id=bos_id)
    batch = {
        "encoder_input_tokens": SEQ2SEQ_INPUTS,
        "decoder_input_tokens": np.zeros_like(SEQ2SEQ_TARGETS),
        "decoder_target_tokens": SEQ2SEQ_TARGETS,
    }
    frozen = hf_causal.params_from_hf(state, config)

    def loss(p):
        trainable = prompts.with_prompt({}, p)
        value, _ = step.loss_and_metrics(
            model, step.LossConfig(z_loss=0.0), trainable, frozen, batch, False, None
        )
        return value

    # one compiled call: run op by op, every operation would compile on its own
    value, grad = jax.jit(jax.value_and_grad(loss))(prompt)
    assert abs(float(value) - out.loss.item()) < 1e-5
    assert np.abs(np.asarray(grad) - expected_grad).max() < 1e-5
    assert np.abs(expected_grad).max() > 1e-3  # the prompt matters to the loss


@pytest.mark.parametrize("case, prompt, scan", [("llama3", 0, False), ("qwen2", 4, True)])
def test_greedy_decoding_with_the_cache_equals_rerunning_the_full_model(case, prompt, scan):
    from ptune import prompts

    architecture, fields = CASES[case]
    # Weights of std 0.5, not 0.02: a near-uniform model repeats one token, which would not
    # show whether each step reads the cache right.
    hf = _hf_model(architecture, dict(fields, initializer_range=0.5), seed=5)
    config = llama.from_hf_config(hf.config.to_dict()).replace(scan_layers=scan)
    params = hf_causal.params_from_hf({k: v.numpy() for k, v in hf.state_dict().items()}, config)
    factory = None
    if prompt:
        factory = prompts.prompt_factory(prompt)
        value = np.random.default_rng(6).uniform(-0.5, 0.5, (prompt, 32))
        params = prompts.with_prompt(params, value)
    model = llama.CausalLM(config, factory)
    tokens, valid = _batch()  # rows of 11, 7 and 4 real tokens, right-padded
    traced = causal_decoding._cache_shapes.cache_info().misses
    got = np.asarray(causal_decoding.generate(model, params, tokens, valid, max_new_tokens=5))
    again = np.asarray(causal_decoding.generate(model, params, tokens, valid, max_new_tokens=5))
    np.testing.assert_array_equal(again, got)
    # The cache's shapes come from tracing the model once, not once per call.
    assert causal_decoding._cache_shapes.cache_info().misses == traced + 1
    full = jax.jit(lambda p, t: model.apply({"params": p}, t))
    width = tokens.shape[1] + 5  # one compile: zeros after a causal sequence change nothing
    for row in range(3):  # the reference: each row alone, the whole sequence every step
        sequence = list(tokens[row][valid[row]])
        for _ in range(5):
            padded = np.zeros((1, width), np.int32)
            padded[0, : len(sequence)] = sequence
            logits = full(params, padded)
            sequence.append(int(np.argmax(logits[0, prompt + len(sequence) - 1])))
        assert list(got[row]) == sequence[-5:], row
    assert len(set(got.ravel().tolist())) > 5  # varied tokens: the check has teeth


def test_decoding_from_precomputed_prompt_keys_and_values_equals_the_prompt_in_the_input():
    """A bank of two prompts (lengths 4 and 2), each prompt's keys/values computed once; a
    mixed batch decodes from them as each row would with its prompt in its input."""
    from ptune import prompts

    config, params = _varied_llama3(seed=7)
    rng = np.random.default_rng(8)
    bank = [rng.uniform(-0.5, 0.5, (n, 32)).astype(np.float32) for n in (4, 2)]
    tokens, valid = _batch()
    length = 4 + tokens.shape[1] + 5
    caches = causal_decoding.stack_caches(
        config, [causal_decoding.prompt_cache(config, params, p, length) for p in bank]
    )
    which = np.array([1, 0, 1])
    got = causal_decoding.generate(
        llama.CausalLM(config),
        params,
        tokens,
        valid,
        max_new_tokens=5,
        cache=causal_decoding.bank_cache(config, caches, which),
    )
    for row, k in enumerate(which):
        model = llama.CausalLM(config, prompts.prompt_factory(len(bank[k])))
        alone = causal_decoding.generate(
            model,
            prompts.with_prompt(params, bank[k]),
            tokens[row : row + 1],
            valid[row : row + 1],
            max_new_tokens=5,
        )
        np.testing.assert_array_equal(np.asarray(got[row]), np.asarray(alone[0]))
    assert len(set(np.asarray(got).ravel().tolist())) > 5


def test_the_server_computes_the_banks_keys_and_values_once_for_nearby_request_widths():
    """Requests 10 and 12 tokens wide (longest prompt 4, 5 new tokens) round up to one cache
    length: the bank's keys and values are computed once, and each row decodes as it would
    with its prompt in its input."""
    from ptune import prompts
    from ptune import server as server_lib

    config, params = _varied_llama3(seed=7)
    rng = np.random.default_rng(9)
    bank = {n: rng.uniform(-0.5, 0.5, (n, 32)).astype(np.float32) for n in (4, 2)}
    server = server_lib.Server(
        recipe.assemble(config, causal_layout=dict(bos_id=None, drop_input_eos=False)),
        params,
        server_lib.Bank.from_arrays({f"p{n}": p for n, p in bank.items()}),
        batch_size=2,
    )
    for width in (10, 12):
        tokens = rng.integers(2, 97, (2, width))
        tokens[0, width - 3 :] = 0  # right padding
        which = np.array([1, 0])
        got = server.generate(tokens, which, max_length=5)
        for row, prompt in enumerate((bank[2], bank[4])):
            alone = causal_decoding.generate(
                llama.CausalLM(config, prompts.prompt_factory(len(prompt))),
                prompts.with_prompt(params, prompt),
                tokens[row : row + 1],
                tokens[row : row + 1] != 0,
                max_new_tokens=5,
            )
            expected = server_lib.after_eos_zeroed(np.asarray(alone), 1)
            np.testing.assert_array_equal(got[row], expected[0])
    assert list(server.generator.caches) == [24]  # 4 + 10 + 5 and 4 + 12 + 5 both round to 24
    assert len(set(got.ravel().tolist())) > 5


@pytest.mark.parametrize("placement, bos_id", [("after_bos", 96), ("prefix", None)])
def test_the_server_decodes_as_each_request_with_its_prompt_in_its_input(placement, bos_id):
    """seqio-style requests (text, then EOS, which the layout drops) over a bank of prompts of
    lengths 4 and 2: after the BOS, from keys and values that hold the BOS and the prompt; or
    first, with no BOS. A batch with an empty input text (only its EOS) decodes too, each row
    as the model with the row's prompt in its input does, and scores targets as it does."""
    from ptune import prompts
    from ptune import server as server_lib

    config, params = _varied_llama3(seed=11)
    rng = np.random.default_rng(12)
    bank = {n: rng.uniform(-0.5, 0.5, (n, 32)).astype(np.float32) for n in (4, 2)}
    layout = dict(bos_id=bos_id, drop_input_eos=True)
    server = server_lib.Server(
        recipe.assemble(config, causal_layout=layout),
        params,
        server_lib.Bank.from_arrays({f"p{n}": p for n, p in bank.items()}, placement),
        batch_size=3,
    )
    tokens = np.zeros((3, 9), np.int32)
    tokens[0, :8] = [*rng.integers(3, 96, 7), 1]
    tokens[1, :4] = [*rng.integers(3, 96, 3), 1]
    tokens[2, :1] = [1]  # an empty text: only its EOS
    which = np.array([1, 0, 1])

    @functools.cache  # rows 0 and 1 are compared twice: decoded (compiled) once
    def alone(row):
        prompt = bank[(4, 2)[which[row]]]
        model = llama.CausalLM(config, prompts.prompt_factory(len(prompt), placement), **layout)
        out = causal_decoding.seq2seq_generate(
            model, prompts.with_prompt(params, prompt), tokens[row : row + 1], 5
        )
        return server_lib.after_eos_zeroed(np.asarray(out), 1)[0]

    got = server.generate(tokens[:2], which[:2], max_length=5)  # 2 requests + a padding row
    assert len(server.generator.caches) == 1  # from the bank's keys and values
    for row in range(2):
        np.testing.assert_array_equal(got[row], alone(row))
    got = server.generate(tokens, which, max_length=5)
    for row in range(3):
        np.testing.assert_array_equal(got[row], alone(row))
    assert len(set(got[:2].ravel().tolist())) > 4
    # Scores: each target token's log-probability where the whole sequence (the row's prompt,
    # [BOS,] its text without the EOS, then the target) predicts it.
    targets = np.zeros((3, 4), np.int32)
    targets[:, :3] = [*rng.integers(3, 96, (3, 2)).T, np.ones(3, np.int32)]
    scores = server.score(tokens, targets, which)
    for row in range(3):
        prompt = bank[(4, 2)[which[row]]]
        model = llama.CausalLM(config, prompts.prompt_factory(len(prompt), placement))
        head = [] if bos_id is None else [bos_id]
        text = [int(t) for t in tokens[row] if t][:-1]
        target = [int(t) for t in targets[row] if t]
        sequence = np.asarray([head + text + target], np.int32)
        # jitted: one compile per row instead of one per operation
        logits = jax.jit(model.apply)({"params": prompts.with_prompt(params, prompt)}, sequence)[0]
        start = len(prompt) + len(head) + len(text) - 1  # predicts the first target token
        log_probs = jax.nn.log_softmax(logits[start : start + len(target)], axis=-1)
        expected = sum(float(log_probs[j, t]) for j, t in enumerate(target))
        np.testing.assert_allclose(scores[row], expected, rtol=1e-5)


def test_prompts_move_between_ptune_and_peft_for_a_causal_lm(tmp_path):
    """ptune -> PEFT: a CAUSAL_LM adapter PEFT loads and computes ptune's logits with; and
    PEFT -> ptune: the adapter PEFT saves reads back as the same prompt."""
    peft = pytest.importorskip("peft", reason="needs the [test] extra")
    from ptune import export, prompts

    architecture, fields = CASES["qwen2"]
    base = _hf_model(architecture, fields, seed=9)
    config = llama.from_hf_config(base.config.to_dict())
    params = hf_causal.params_from_hf(
        {k: v.numpy().copy() for k, v in base.state_dict().items()}, config
    )
    prompt = np.random.default_rng(10).uniform(-0.5, 0.5, (3, 32)).astype(np.float32)
    adapter = str(tmp_path / "adapter")
    export.export_prompt(prompt, adapter, "peft", task_type="CAUSAL_LM")
    loaded = peft.PeftModel.from_pretrained(base, adapter).eval()
    assert loaded.peft_config["default"].task_type == peft.TaskType.CAUSAL_LM
    tokens, valid = _batch()
    with torch.no_grad():
        expected = loaded(
            input_ids=torch.tensor(tokens), attention_mask=torch.tensor(valid.astype(np.int64))
        ).logits.numpy()
    model = llama.CausalLM(config, prompts.prompt_factory(3))
    got = np.asarray(apply(model, {"params": prompts.with_prompt(params, prompt)}, tokens, valid))
    rows = np.concatenate([np.ones((3, 3), bool), valid], axis=1)
    assert np.abs(got[rows] - expected[rows]).max() < TOLERANCE
    loaded.save_pretrained(str(tmp_path / "saved"))
    np.testing.assert_array_equal(prompt_io.load_prompt_file(str(tmp_path / "saved")), prompt)
    with pytest.raises(UserError, match="PEFT task type must be one of"):
        export.export_prompt(prompt, str(tmp_path / "x"), "peft", task_type="TOKEN_CLS")
    assert not (tmp_path / "x").exists()
