"""Prompts travel both ways between ptune and Hugging Face PEFT and compute the same logits.

ptune -> PEFT: `ptune export --format peft` -> `peft.PeftModel.from_pretrained(base, dir)`.
PEFT -> ptune: `peft_model.save_pretrained(dir)` -> `prompts.from_file(dir)`.
Both sides run the same weights: the suite's tiny random T5 1.1 built by transformers
(conftest's `hf_t5_dir`), saved as safetensors and loaded by ptune with `checkpoints.load`.
Tolerance: max abs logit difference < 1e-4 in float32 over real target positions, on inputs
with padding (PEFT prepends its virtual tokens before the padded tokens, ptune's prefix
placement does the same).
"""

import os

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from conftest import HF_T5_TINY, apply  # noqa: E402
from ptune import checkpoints, export, prompts  # noqa: E402
from ptune.models import t5  # noqa: E402

TOLERANCE = 1e-4
PROMPT_LENGTH = 6
VOCAB = HF_T5_TINY["vocab_size"]


@pytest.fixture(scope="module")
def peft():
    """PEFT, imported by this module's tests only: at collection every pytest-xdist worker
    would import it (about 3 CPU seconds each), and one runs these tests."""
    return pytest.importorskip("peft")


def _base(hf_dir):
    return transformers.T5ForConditionalGeneration.from_pretrained(str(hf_dir)).eval()


def _batch():
    """Encoder inputs with padding of different lengths; targets padded too."""
    rng = np.random.RandomState(1)
    enc = rng.randint(2, VOCAB, (3, 20)).astype(np.int32)
    enc[0, 14:] = 0
    enc[1, 4:] = 0
    tgt = rng.randint(2, VOCAB, (3, 7)).astype(np.int32)
    tgt[0, 5:] = 0
    tgt[2, 2:] = 0
    dec = np.concatenate([np.zeros((3, 1), np.int32), tgt[:, :-1]], axis=1)
    return enc, dec, tgt


def _ptune_logits(hf_dir, prompt):
    config, params = checkpoints.load(str(hf_dir))
    params = dict(params, encoder=dict(params["encoder"], prompt={"prompt": jnp.asarray(prompt)}))
    model = t5.Transformer(config, prompts.prompt_factory(prompt.shape[0]))
    enc, dec, tgt = _batch()
    return np.asarray(apply(model, {"params": params}, enc, dec, tgt, enable_dropout=False))


def _peft_logits(peft_model):
    enc, dec, tgt = (torch.tensor(a, dtype=torch.long) for a in _batch())
    with torch.no_grad():
        return peft_model(
            input_ids=enc,
            attention_mask=(enc > 0).long(),
            decoder_input_ids=dec,
            decoder_attention_mask=(tgt > 0).long(),
        ).logits.numpy()


def _max_difference(ours, theirs):
    valid = _batch()[2] > 0
    assert ours.shape == theirs.shape
    return float(np.abs(ours - theirs)[valid].max())


def test_ptune_prompt_exported_to_peft_gives_the_same_logits(peft, hf_t5_dir, tmp_path):
    prompt = np.random.RandomState(2).uniform(-0.5, 0.5, (PROMPT_LENGTH, 16)).astype(np.float32)
    np.save(tmp_path / "prompt.npy", prompt)
    adapter = str(tmp_path / "adapter")
    export.export_prompt(str(tmp_path / "prompt.npy"), adapter, "peft", base_model=str(hf_t5_dir))

    loaded = peft.PeftModel.from_pretrained(_base(hf_t5_dir), adapter).eval()
    config = loaded.peft_config["default"]
    assert (config.peft_type, config.task_type) == (
        peft.PeftType.PROMPT_TUNING,
        peft.TaskType.SEQ_2_SEQ_LM,
    )
    assert (config.num_virtual_tokens, config.token_dim, config.num_transformer_submodules) == (
        PROMPT_LENGTH,
        16,
        1,
    )
    assert config.base_model_name_or_path == str(hf_t5_dir)
    np.testing.assert_array_equal(
        loaded.prompt_encoder["default"].embedding.weight.detach().numpy(), prompt
    )
    assert _max_difference(_ptune_logits(hf_t5_dir, prompt), _peft_logits(loaded)) < TOLERANCE


def test_peft_saved_adapter_loads_as_a_ptune_prompt(peft, hf_t5_dir, tmp_path):
    peft_config = peft.PromptTuningConfig(
        task_type="SEQ_2_SEQ_LM",
        num_virtual_tokens=PROMPT_LENGTH,
        num_transformer_submodules=1,
        token_dim=16,
    )
    trained = peft.get_peft_model(_base(hf_t5_dir), peft_config).eval()
    torch.manual_seed(3)
    with torch.no_grad():
        trained.prompt_encoder["default"].embedding.weight.uniform_(-0.5, 0.5)
    expected = trained.prompt_encoder["default"].embedding.weight.detach().numpy().copy()
    adapter = str(tmp_path / "peft_adapter")
    trained.save_pretrained(adapter)
    assert os.path.isfile(os.path.join(adapter, "adapter_model.safetensors"))

    value = prompts.initialize(
        prompts.from_file(adapter),
        None,
        PROMPT_LENGTH,
        prompts.InitContext(embedding=np.zeros((VOCAB, 16))),
    )
    np.testing.assert_array_equal(value, expected)
    assert _max_difference(_ptune_logits(hf_t5_dir, value), _peft_logits(trained)) < TOLERANCE
