"""Qwen3 (`Qwen3ForCausalLM`) in the decoder-only family: an RMSNorm over each head's queries
and keys before RoPE, heads wider than hidden / heads, tied or untied embeddings.

Against transformers' PyTorch model: logits on padded batches, without a prompt and with one
(transformers given `inputs_embeds` = the prompt then the token embeddings); greedy decoding
with the key/value cache; the published models' parameter counts from the shipped gin files
(and transformers' own count of the model built from the published config.json); prompt
tuning end to end through the commands on a tiny directory transformers wrote; and a prompt
`ptune export --format peft` writes, loaded by PEFT over the same model."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import apply, tiny_causal_run, tiny_hf_qwen3
from ptune import cli, ginconfig, model_config, prompts
from ptune.checkpoints import hf_causal, prompt_io
from ptune.errors import UserError
from ptune.models import causal_decoding, llama
from ptune.tasks import vocab

torch = pytest.importorskip("torch", reason="transformers parity needs the [test] extra")
transformers = pytest.importorskip("transformers", reason="needs the [test] extra")

TOLERANCE = 1e-4  # float32 on both sides, as the Llama and T5 parity tests
SMALL = dict(
    vocab_size=97,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,  # 4 heads x 16 = 64, twice the model width, as Qwen3-0.6B's
    max_position_embeddings=64,
    rms_norm_eps=1e-6,
    rope_theta=1000000.0,
)


def _hf_model(tied: bool, seed: int = 0, **changes):
    config = transformers.Qwen3Config(**dict(SMALL, tie_word_embeddings=tied, **changes))
    config.architectures = ["Qwen3ForCausalLM"]
    torch.manual_seed(seed)
    model = transformers.Qwen3ForCausalLM(config).eval()
    with torch.no_grad():  # norms start at 1: make q_norm and k_norm (and the others) matter
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def _ptune_side(hf, scan: bool = False):
    config = llama.from_hf_config(hf.config.to_dict()).replace(scan_layers=scan)
    state = {k: v.detach().numpy().copy() for k, v in hf.state_dict().items()}
    return config, hf_causal.params_from_hf(state, config)


def _batch():
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 97, (3, 11))
    valid = np.ones((3, 11), bool)
    valid[1, 7:] = False  # right padding
    valid[2, 4:] = False
    tokens[~valid] = 0
    return tokens, valid


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("prompt_length", [0, 4])
def test_logits_equal_transformers_with_and_without_a_prompt(tied, prompt_length):
    hf = _hf_model(tied, seed=1)
    config, params = _ptune_side(hf)
    assert config.qk_norm and config.head_dim == 16 and not config.attention_bias
    assert config.tie_word_embeddings == tied and ("lm_head" in params) != tied
    assert params["layers_1"]["self_attn"]["q_norm"]["scale"].shape == (16,)
    tokens, valid = _batch()
    factory = None
    embeds = hf.model.embed_tokens(torch.tensor(tokens))
    mask = valid
    if prompt_length:
        prompt = np.random.default_rng(2).uniform(-0.5, 0.5, (prompt_length, 32))
        prompt = prompt.astype(np.float32)
        factory = prompts.prompt_factory(prompt_length)
        params = prompts.with_prompt(params, prompt)
        # transformers' reference: the prompt's vectors in front of the token embeddings,
        # always attended, positions counted from the prompt's first vector.
        front = torch.tensor(prompt)[None].expand(3, -1, -1)
        embeds = torch.cat([front, embeds], dim=1)
        mask = np.concatenate([np.ones((3, prompt_length), bool), valid], axis=1)
    with torch.no_grad():
        expected = hf(
            inputs_embeds=embeds, attention_mask=torch.tensor(mask.astype(np.int64))
        ).logits.numpy()
    model = llama.CausalLM(config, factory)
    got = np.asarray(jax.jit(lambda p: model.apply({"params": p}, tokens, valid))(params))
    assert got.shape == expected.shape == (3, prompt_length + 11, 97)
    assert np.abs(got[mask] - expected[mask]).max() < TOLERANCE
    # Scanned layers (the norms' scales stacked on axis 1 too) compute the same.
    scanned, scanned_params = _ptune_side(hf, scan=True)
    if prompt_length:
        scanned_params = prompts.with_prompt(scanned_params, prompt)
    again = apply(llama.CausalLM(scanned, factory), {"params": scanned_params}, tokens, valid)
    np.testing.assert_allclose(np.asarray(again)[mask], got[mask], rtol=1e-5, atol=1e-5)


def test_greedy_decoding_with_the_cache_equals_rerunning_the_full_model():
    """The cache holds keys after k_norm and RoPE: each step's token equals the argmax of the
    whole sequence run again, for rows of 11, 7 and 4 tokens behind a 3-vector prompt."""
    # Weights of std 0.5: a near-uniform model repeats one token, which shows nothing.
    hf = _hf_model(False, seed=3, initializer_range=0.5)
    config, params = _ptune_side(hf)
    params = prompts.with_prompt(params, np.random.default_rng(4).uniform(-0.5, 0.5, (3, 32)))
    model = llama.CausalLM(config, prompts.prompt_factory(3))
    tokens, valid = _batch()
    got = np.asarray(causal_decoding.generate(model, params, tokens, valid, max_new_tokens=5))
    full = jax.jit(lambda p, t: model.apply({"params": p}, t))
    width = tokens.shape[1] + 5
    for row in range(3):
        sequence = list(tokens[row][valid[row]])
        for _ in range(5):
            padded = np.zeros((1, width), np.int32)
            padded[0, : len(sequence)] = sequence
            logits = full(params, padded)
            sequence.append(int(np.argmax(logits[0, 3 + len(sequence) - 1])))
        assert list(got[row]) == sequence[-5:], row
    assert len(set(got.ravel().tolist())) > 5  # varied tokens: the check has teeth


def test_a_qwen3_checkpoint_without_its_query_and_key_norms_is_refused():
    hf = _hf_model(True)
    config = llama.from_hf_config(hf.config.to_dict())
    state = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    del state["model.layers.0.self_attn.k_norm.weight"]
    state["model.layers.1.self_attn.q_norm.weight"] = np.ones(8, np.float32)
    with pytest.raises(UserError) as info:
        hf_causal.params_from_hf(state, config)
    text = str(info.value)
    assert "missing layers_0/self_attn/k_norm/scale" in text
    assert "model.layers.1.self_attn.q_norm.weight has shape (8,), expected (16,)" in text


def test_the_configuration_reads_as_transformers_does():
    fields = dict(PUBLISHED["Qwen3-0.6B"][0])
    del fields["head_dim"]  # transformers' Qwen3Config defaults it to 128, not 1024 / 16
    assert llama.from_hf_config(fields).head_dim == 128
    with pytest.raises(UserError, match="attention_bias on Qwen3ForCausalLM"):
        llama.from_hf_config(dict(fields, attention_bias=True))
    with pytest.raises(UserError, match="sliding-window attention"):
        llama.from_hf_config(dict(fields, use_sliding_window=True, sliding_window=4096))


# The published config.json of each model (Qwen/Qwen3-0.6B, Qwen/Qwen3-1.7B) and the
# parameter count of its checkpoint (tied embeddings counted once).
_QWEN3 = dict(
    architectures=["Qwen3ForCausalLM"],
    model_type="qwen3",
    attention_bias=False,
    attention_dropout=0.0,
    bos_token_id=151643,
    eos_token_id=151645,
    head_dim=128,
    hidden_act="silu",
    initializer_range=0.02,
    max_position_embeddings=40960,
    max_window_layers=28,
    num_attention_heads=16,
    num_hidden_layers=28,
    num_key_value_heads=8,
    rms_norm_eps=1e-6,
    rope_scaling=None,
    rope_theta=1000000,
    sliding_window=None,
    tie_word_embeddings=True,
    use_cache=True,
    use_sliding_window=False,
    vocab_size=151936,
)
PUBLISHED = {
    "Qwen3-0.6B": (dict(_QWEN3, hidden_size=1024, intermediate_size=3072), 596_049_920),
    "Qwen3-1.7B": (dict(_QWEN3, hidden_size=2048, intermediate_size=6144), 1_720_574_976),
}
GIN_FILES = {"Qwen3-0.6B": "qwen3_0_6b", "Qwen3-1.7B": "qwen3_1_7b"}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_the_model_files_are_the_published_models(name):
    """The gin file states the model config.json describes, and both count the published
    checkpoint's parameters, as transformers counts its model built from config.json."""
    fields, count = PUBLISHED[name]
    ginconfig.parse(ginconfig.GinArgs(files=[f"models/{GIN_FILES[name]}.gin"]))
    try:
        config = model_config.resolve_model_config(ginconfig.model_fields(), None)
    finally:
        ginconfig.gin.clear_config()
    assert config == llama.from_hf_config(fields)
    assert llama.parameter_count(config) == count
    with torch.device("meta"):  # shapes only
        hf = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**fields))
    assert sum(p.numel() for p in hf.parameters()) == count


def test_info_and_plan_read_the_model_files(capsys):
    for name, gin_file in GIN_FILES.items():
        capsys.readouterr()
        assert cli.main(["info", f"--gin_file=models/{gin_file}.gin", "--no_tree"]) == 0
        out = capsys.readouterr().out
        assert "qk_norm = True" in out and f"total_params: {PUBLISHED[name][1]}" in out
    # The training step of Qwen3-0.6B compiled from shapes alone, on 2 simulated devices.
    proc = subprocess.run(
        [sys.executable, "-m", "ptune.cli", "plan", "--mesh_shape=2,1"]
        + ["--gin_file=models/qwen3_0_6b.gin", *RUN[:5], "--gin.MODEL_DIR='/nonexistent'"]
        + ["--gin.llama.LlamaConfig.scan_layers=True"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "model: 28 layers, emb 1024" in proc.stdout
    assert "trainable params: 3,072 of 596,052,992" in proc.stdout


# End to end, as tests/test_causal_runs.py runs a Llama: the paper's recipe, a few steps.
TASK = "ptune_demo_rank_classification"
RUN = tiny_causal_run()


@pytest.fixture(autouse=True)
def _tasks_back_on_their_vocabularies():
    yield
    vocab.use_tokenizer(None)


@pytest.fixture(scope="module")
def qwen3_dir(tmp_path_factory):
    return tiny_hf_qwen3(tmp_path_factory.mktemp("hf") / "tiny-qwen3")


@pytest.fixture(scope="module")
def trained(qwen3_dir, tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("qwen3") / "run")
    argv = ["train", *RUN, f"--gin.INITIAL_CHECKPOINT_PATH='{qwen3_dir}'"]
    code = cli.main(argv + [f"--gin.MODEL_DIR='{model_dir}'"])
    vocab.use_tokenizer(None)
    return code, model_dir


def test_prompt_tuning_trains_and_evaluates_over_a_hugging_face_qwen3(trained, qwen3_dir):
    code, model_dir = trained
    assert code == 0
    steps = os.path.join(model_dir, "numpy_checkpoints")
    best = os.path.join(steps, "best", "encoder.prompt.prompt.npy")
    assert np.load(best).shape == (3, 32)
    lines = [json.loads(line) for line in open(os.path.join(model_dir, "metrics.jsonl"))]
    train = [x for x in lines if x["split"] == "train"]
    assert [x["step"] for x in train] == [1, 2] and all(np.isfinite(x["loss"]) for x in train)
    evals = [x for x in lines if x["split"] == f"validation/{TASK}"]
    assert [x["step"] for x in evals] == [2] and 0 <= evals[-1]["accuracy"] <= 100
    summary = json.load(open(os.path.join(model_dir, "summary.json")))
    assert summary["model"].startswith("decoder-only emb 32, 2 layers")
    assert summary["trainable_params"] == 3 * 32
    # `ptune eval` of the step's prompt reproduces the run's own evaluation.
    out = os.path.join(model_dir, "eval_out")
    prompt = os.path.join(steps, "checkpoint_2", "encoder.prompt.prompt.npy")
    argv = [
        "eval",
        "--gin_file=runs/eval.gin",
        f"--gin.MIXTURE_OR_TASK_NAME='{TASK}'",
        f"--gin.INITIAL_CHECKPOINT_PATH='{qwen3_dir}'",
        f"--gin.PROMPT_FILE='{prompt}'",
        f"--gin.EVAL_OUTPUT_DIR='{out}'",
    ]
    assert cli.main(argv) == 0
    results = json.load(open(os.path.join(out, "eval_validation.json")))
    assert results["results"][TASK]["accuracy"] == pytest.approx(evals[-1]["accuracy"])


def test_a_prompt_exported_for_peft_gives_the_same_logits_over_qwen3(qwen3_dir, tmp_path):
    """`ptune export --format peft --task_type CAUSAL_LM` -> `PeftModel.from_pretrained` over
    transformers' Qwen3 from the same directory: PEFT's logits equal ptune's; the adapter PEFT
    saves again reads back as the same prompt."""
    peft = pytest.importorskip("peft", reason="needs the [test] extra")
    prompt = np.random.default_rng(5).uniform(-0.5, 0.5, (3, 32)).astype(np.float32)
    np.save(tmp_path / "prompt.npy", prompt)
    adapter = str(tmp_path / "adapter")
    argv = ["export", "--format=peft", f"--prompt={tmp_path / 'prompt.npy'}", f"--to={adapter}"]
    assert cli.main(argv + ["--task_type=CAUSAL_LM", f"--base_model={qwen3_dir}"]) == 0
    base = transformers.Qwen3ForCausalLM.from_pretrained(qwen3_dir).eval()
    loaded = peft.PeftModel.from_pretrained(base, adapter).eval()
    assert loaded.peft_config["default"].task_type == peft.TaskType.CAUSAL_LM
    tokens, valid = _batch()
    with torch.no_grad():
        expected = loaded(
            input_ids=torch.tensor(tokens), attention_mask=torch.tensor(valid.astype(np.int64))
        ).logits.numpy()
    config, frozen = hf_causal.load(qwen3_dir)
    model = llama.CausalLM(config, prompts.prompt_factory(3))
    got = np.asarray(apply(model, {"params": prompts.with_prompt(frozen, prompt)}, tokens, valid))
    rows = np.concatenate([np.ones((3, 3), bool), valid], axis=1)
    assert got.shape == expected.shape == (3, 3 + 11, 336)
    assert np.abs(got[rows] - expected[rows]).max() < TOLERANCE
    loaded.save_pretrained(str(tmp_path / "saved"))
    np.testing.assert_array_equal(prompt_io.load_prompt_file(str(tmp_path / "saved")), prompt)
