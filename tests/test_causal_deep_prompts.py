"""Deep (per-layer) prompts on a decoder-only model (prompts/deep.gin), P-tuning v2 style, as
T5's encoder takes them: layer 0's prompt goes in front of the embedded tokens, and at the
input of each later layer i the prompt positions' hidden states are layer i's prompt.

The reference is transformers' own Llama run layer by layer: its `model.layers[i]` called on
hidden states whose prompt positions are replaced before each layer i > 0, then `model.norm`
and `lm_head`. Cached greedy decoding equals decoding by recomputing the whole sequence, and
`ptune train` with deep.gin runs end to end over a Hugging Face Llama directory; what cannot
take a deep prompt (a bank of prompts: `ptune infer`; a PEFT adapter) refuses in one line."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import apply, tiny_causal_run, tiny_hf_llama
from ptune import cli, prompts
from ptune import server as server_lib
from ptune.checkpoints import hf_causal
from ptune.errors import UserError
from ptune.models import causal_decoding, llama
from ptune.tasks import vocab

torch = pytest.importorskip("torch", reason="transformers parity needs the [test] extra")
transformers = pytest.importorskip("transformers", reason="needs the [test] extra")

TOLERANCE = 1e-4  # float32 on both sides, as the other parity tests
LAYERS, P, E = 3, 4, 32
FIELDS = dict(
    vocab_size=97,
    hidden_size=E,
    intermediate_size=48,
    num_hidden_layers=LAYERS,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    tie_word_embeddings=False,
)


def _hf_llama(seed: int, **changes):
    config = transformers.LlamaConfig(**dict(FIELDS, **changes))
    config.architectures = ["LlamaForCausalLM"]
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():  # norms start at 1: make every parameter matter
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def _ptune_side(hf, scan: bool = False):
    config = llama.from_hf_config(hf.config.to_dict()).replace(scan_layers=scan)
    state = {k: v.detach().numpy().copy() for k, v in hf.state_dict().items()}
    return config, hf_causal.params_from_hf(state, config)


def _deep_prompt(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.5, 0.5, (LAYERS, P, E)).astype(np.float32)


def _batch():
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 97, (3, 11))
    valid = np.ones((3, 11), bool)
    valid[1, 7:] = False  # right padding
    valid[2, 4:] = False
    tokens[~valid] = 0
    return tokens, valid


def _transformers_layer_by_layer(hf, deep: np.ndarray, tokens, valid) -> np.ndarray:
    """transformers' Llama with a deep prompt: layer 0 reads the prompt then the token
    embeddings, and before each later layer i the prompt positions are set to prompt i."""
    from transformers.masking_utils import create_causal_mask

    b = tokens.shape[0]
    prompt = torch.tensor(deep)
    with torch.no_grad():
        embedded = hf.model.embed_tokens(torch.tensor(tokens))
        hidden = torch.cat([prompt[0][None].expand(b, -1, -1), embedded], dim=1)
        mask = torch.tensor(np.concatenate([np.ones((b, P), bool), valid], 1).astype(np.int64))
        positions = torch.arange(hidden.shape[1])[None]
        causal = create_causal_mask(
            config=hf.config,
            inputs_embeds=hidden,
            attention_mask=mask,
            past_key_values=None,
            position_ids=positions,
        )
        rotary = hf.model.rotary_emb(hidden, position_ids=positions)
        for i, layer in enumerate(hf.model.layers):
            if i > 0:
                hidden = torch.cat([prompt[i][None].expand(b, -1, -1), hidden[:, P:]], dim=1)
            hidden = layer(
                hidden, attention_mask=causal, position_ids=positions, position_embeddings=rotary
            )
        return hf.lm_head(hf.model.norm(hidden)).numpy()


def test_deep_prompt_logits_equal_transformers_llama_run_layer_by_layer():
    hf = _hf_llama(seed=1)
    deep = _deep_prompt(2)
    tokens, valid = _batch()
    expected = _transformers_layer_by_layer(hf, deep, tokens, valid)
    rows = np.concatenate([np.ones((3, P), bool), valid], axis=1)
    got = {}
    for scan in (False, True):
        config, params = _ptune_side(hf, scan)
        model = llama.CausalLM(config, prompts.deep_factory(P))
        params = prompts.with_prompt(params, deep)
        got[scan] = np.asarray(apply(model, {"params": params}, tokens, valid))
        assert got[scan].shape == expected.shape == (3, P + 11, 97)
        assert np.abs(got[scan][rows] - expected[rows]).max() < TOLERANCE, scan
    # The later layers' prompts matter: layer 0's alone (a plain prompt) is another model.
    config, params = _ptune_side(hf)
    plain = apply(
        llama.CausalLM(config, prompts.prompt_factory(P)),
        {"params": prompts.with_prompt(params, deep[0])},
        tokens,
        valid,
    )
    assert np.abs(np.asarray(plain)[rows] - expected[rows]).max() > 100 * TOLERANCE


def test_a_deep_prompt_of_one_layer_is_the_plain_prompt():
    hf = _hf_llama(seed=3, num_hidden_layers=1)
    config, params = _ptune_side(hf)
    deep = _deep_prompt(4)[:1]
    tokens, valid = _batch()
    got = apply(
        llama.CausalLM(config, prompts.deep_factory(P)),
        {"params": prompts.with_prompt(params, deep)},
        tokens,
        valid,
    )
    plain = apply(
        llama.CausalLM(config, prompts.prompt_factory(P)),
        {"params": prompts.with_prompt(params, deep[0])},
        tokens,
        valid,
    )
    np.testing.assert_array_equal(np.asarray(got), np.asarray(plain))


@pytest.mark.parametrize("scan", [False, True], ids=["unrolled", "scanned"])
def test_cached_greedy_decoding_with_a_deep_prompt_equals_recomputing_the_sequence(scan):
    """The first call runs the prompt through the model, so the cache holds each layer's keys
    and values of its own prompt; each step's token equals the argmax of the whole sequence
    (deep prompt, tokens, the tokens chosen so far) run again without a cache."""
    # Weights of std 0.5: a near-uniform model repeats one token, which shows nothing.
    hf = _hf_llama(seed=5, initializer_range=0.5)
    config, params = _ptune_side(hf, scan)
    params = prompts.with_prompt(params, _deep_prompt(6))
    model = llama.CausalLM(config, prompts.deep_factory(P))
    tokens, valid = _batch()  # rows of 11, 7 and 4 real tokens, right-padded
    got = np.asarray(causal_decoding.generate(model, params, tokens, valid, max_new_tokens=5))
    full = jax.jit(lambda p, t: model.apply({"params": p}, t))
    width = tokens.shape[1] + 5  # one compile: zeros after a causal sequence change nothing
    for row in range(3):
        sequence = list(tokens[row][valid[row]])
        for _ in range(5):
            padded = np.zeros((1, width), np.int32)
            padded[0, : len(sequence)] = sequence
            logits = full(params, padded)
            sequence.append(int(np.argmax(logits[0, P + len(sequence) - 1])))
        assert list(got[row]) == sequence[-5:], row
    assert len(set(got.ravel().tolist())) > 5  # varied tokens: the check has teeth


# End to end over a Hugging Face Llama directory, as tests/test_causal_runs.py.
TASK = "ptune_demo_rank_classification"
RUN = tiny_causal_run("prompts/deep.gin")


@pytest.fixture(autouse=True)
def _tasks_back_on_their_vocabularies():
    yield
    vocab.use_tokenizer(None)


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return tiny_hf_llama(tmp_path_factory.mktemp("hf") / "tiny-llama")


@pytest.fixture(scope="module")
def trained(llama_dir, tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("deep") / "run")
    argv = ["train", *RUN, f"--gin.INITIAL_CHECKPOINT_PATH='{llama_dir}'"]
    code = cli.main(argv + [f"--gin.MODEL_DIR='{model_dir}'"])
    vocab.use_tokenizer(None)
    return code, model_dir


def _error(capsys, argv) -> str:
    capsys.readouterr()
    assert cli.main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and lines[-1].startswith("ptune: error: ") and "Traceback" not in "".join(lines)
    return lines[-1]


def test_a_deep_prompt_trains_and_evaluates_over_a_hugging_face_llama(trained, llama_dir):
    code, model_dir = trained
    assert code == 0
    steps = os.path.join(model_dir, "numpy_checkpoints")
    exported = os.path.join(steps, "checkpoint_2", "encoder.prompt.prompt.npy")
    value = np.load(exported)
    assert value.shape == (2, 3, 32)  # the tiny Llama's 2 layers, 3 vectors each
    assert not np.array_equal(value[0], value[1])  # each layer's prompt its own
    summary = json.load(open(os.path.join(model_dir, "summary.json")))
    assert summary["trainable_params"] == 2 * 3 * 32
    assert json.load(open(os.path.join(model_dir, "run.json")))["prompt"]["deep"] is True
    lines = [json.loads(line) for line in open(os.path.join(model_dir, "metrics.jsonl"))]
    train = [x for x in lines if x["split"] == "train"]
    assert [x["step"] for x in train] == [1, 2] and all(np.isfinite(x["loss"]) for x in train)
    evals = [x for x in lines if x["split"] == f"validation/{TASK}"]
    assert [x["step"] for x in evals] == [2]
    # `ptune eval` reads the [layers, P, E] array and reproduces the run's evaluation.
    out = os.path.join(model_dir, "eval_out")
    argv = [
        "eval",
        "--gin_file=runs/eval.gin",
        f"--gin.MIXTURE_OR_TASK_NAME='{TASK}'",
        f"--gin.INITIAL_CHECKPOINT_PATH='{llama_dir}'",
        f"--gin.PROMPT_FILE='{exported}'",
        f"--gin.EVAL_OUTPUT_DIR='{out}'",
    ]
    assert cli.main(argv) == 0
    results = json.load(open(os.path.join(out, "eval_validation.json")))
    assert results["results"][TASK]["accuracy"] == pytest.approx(evals[-1]["accuracy"])


def test_what_cannot_take_a_deep_prompt_refuses_in_one_line(trained, llama_dir, tmp_path, capsys):
    """A bank of prompts (`ptune infer`, decoding from each prompt's keys and values) reads
    prompts [P, E] only, as for T5; PEFT has no per-layer hidden-state prompt; a deep prompt
    goes first, never after the BOS."""
    from conftest import REPO

    _, model_dir = trained
    exported = os.path.join(model_dir, "numpy_checkpoints", "best", "encoder.prompt.prompt.npy")
    line = _error(
        capsys,
        [
            "infer",
            "--gin_file=runs/infer.gin",
            "--gin.TASK_FEATURE_LENGTHS={'inputs': 40, 'targets': 4}",
            f"--gin.INITIAL_CHECKPOINT_PATH='{llama_dir}'",
            f"--gin.PROMPT_FILES={{'class_labels': '{exported}'}}",
            f"--gin.INFER_INPUT_FILE='{REPO}/tasks/data/demo/requests.jsonl'",
            f"--gin.INFER_OUTPUT_FILE='{tmp_path / 'out.jsonl'}'",
        ],
    )
    assert "holds a deep (per-layer) prompt (2, 3, 32)" in line
    assert not (tmp_path / "out.jsonl").exists()
    argv = ["export", "--format=peft", f"--prompt={exported}", f"--to={tmp_path / 'peft'}"]
    line = _error(capsys, argv + ["--task_type=CAUSAL_LM"])
    assert "PEFT has no equivalent for decoder-only models" in line
    assert not (tmp_path / "peft").exists()
    line = _error(
        capsys,
        ["train", *RUN, f"--gin.INITIAL_CHECKPOINT_PATH='{llama_dir}'"]
        + [
            f"--gin.MODEL_DIR='{tmp_path / 'run'}'",
            "--gin.prompts.PromptConfig.placement='after_bos'",
        ],
    )
    assert "deep prompts take prefix placement only" in line
    line = _error(
        capsys,
        [
            "eval",
            "--gin_file=runs/eval.gin",
            f"--gin.MIXTURE_OR_TASK_NAME='{TASK}'",
            f"--gin.INITIAL_CHECKPOINT_PATH='{llama_dir}'",
            f"--gin.PROMPT_FILE='{exported}'",
            f"--gin.EVAL_OUTPUT_DIR='{tmp_path / 'eval'}'",
            "--gin.prompts.PromptConfig.placement='after_bos'",
        ],
    )
    assert "is a deep prompt, which takes prefix placement only" in line
    with pytest.raises(UserError, match=r"a bank holds prompts \[length, embed\]"):
        server_lib.Bank.from_arrays({"deep": np.load(exported)})  # the server's own banks


def test_plan_counts_the_deep_prompt(llama_dir):
    proc = subprocess.run(
        [sys.executable, "-m", "ptune.cli", "plan", "--mesh_shape=2,1", *RUN[:6]]
        + [f"--gin.INITIAL_CHECKPOINT_PATH='{llama_dir}'", "--gin.MODEL_DIR='/nonexistent'"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "trainable params: 192 of " in proc.stdout  # 2 layers x 3 vectors x 32
