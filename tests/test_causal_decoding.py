"""Decoder-only beam search and sampling (`ptune.models.causal_decoding` over the loops of
`ptune.models.search`, the ones T5 decodes with) on a tiny random Llama made by transformers:
beams against transformers' `generate`, samples against decoding by re-running the whole
model with the same keys, a served bank's beams and samples against each request decoded
with its prompt in its input, and `ptune infer` / `ptune eval` with beams and sampling.

The rows are seqio-style inputs of different lengths (text then EOS, which the layout drops
after a BOS), one batch, a soft prompt of 3 vectors in front; transformers reads each row
alone as `inputs_embeds` (the prompt's vectors, then the embedded BOS and text), so no
padding convention differs between the two."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO, tiny_hf_llama
from ptune import cli, family, model_config, prompts, recipe
from ptune import server as server_lib
from ptune.checkpoints import hf_causal
from ptune.models import causal_decoding, llama, search
from ptune.tasks import vocab

torch = pytest.importorskip("torch", reason="transformers parity needs the [test] extra")
transformers = pytest.importorskip("transformers", reason="needs the [test] extra")

TOLERANCE = 1e-4  # float32 on both sides, as the suite's other parity tests
BOS, INPUT_EOS, PROMPT, NEW = 1, 2, 3, 8  # the tiny Llama's BOS and EOS; prompt; new tokens
TASK = "ptune_demo"


@pytest.fixture(autouse=True)
def _tasks_back_on_their_vocabularies():
    yield
    vocab.use_tokenizer(None)


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    """Weights of std 0.2, not 0.02: a near-uniform model repeats one token and its beams
    all agree, which would show nothing; at 0.2 the beams part and meet again."""
    return tiny_hf_llama(tmp_path_factory.mktemp("hf") / "tiny-llama", initializer_range=0.2)


@pytest.fixture(scope="module")
def models(llama_dir):
    """(ptune's model with a prompt, its params, transformers' model, the prompt [P, E])."""
    config, frozen = hf_causal.load(llama_dir)
    frozen = jax.tree_util.tree_map(jnp.asarray, frozen)
    prompt = np.random.default_rng(1).uniform(-0.5, 0.5, (PROMPT, 32)).astype(np.float32)
    model = llama.CausalLM(config, prompts.prompt_factory(PROMPT), bos_id=BOS)
    hf = transformers.LlamaForCausalLM.from_pretrained(llama_dir).eval()
    return model, prompts.with_prompt(frozen, prompt), hf, prompt


def _inputs(lengths=(6, 3, 9, 1), width=10, seed=2) -> np.ndarray:
    """seqio inputs [len(lengths), width]: random text of each length, its EOS, padding."""
    rng = np.random.default_rng(seed)
    inputs = np.zeros((len(lengths), width), np.int32)
    for row, n in enumerate(lengths):
        inputs[row, :n] = rng.integers(3, 320, n)
        inputs[row, n] = INPUT_EOS
    return inputs


def _layout(inputs):
    """-> (tokens [b, l], valid [b, l]): BOS, text; what each row's new tokens follow."""
    empty = np.zeros((len(inputs), 0), np.int32)
    tokens, valid, _ = llama.seq2seq_layout(inputs, empty, BOS, True)
    return np.asarray(tokens), np.asarray(valid)


def _frequent_token(model, params, inputs) -> int:
    """The token greedy decoding produces most often after the first: as the EOS of a
    search, beams end at different lengths."""
    greedy = np.asarray(family.DECODER_ONLY.generate(model, params, inputs, NEW))
    ids, counts = np.unique(greedy[:, 1:], return_counts=True)
    return int(ids[np.argmax(counts)])


def _up_to(ids, eos) -> list:
    ids = [int(i) for i in ids]
    return ids[: ids.index(eos) + 1] if eos in ids else ids


def _embeds(hf, prompt, tokens):
    """transformers' input for one row: the prompt's vectors, then the embedded tokens."""
    ids = torch.tensor(np.asarray(tokens, np.int64))[None]
    with torch.no_grad():
        return torch.cat([torch.tensor(prompt)[None], hf.model.embed_tokens(ids)], dim=1)


def _hf_beams(hf, embeds, num_beams, eos, returned=1):
    with torch.no_grad():
        out = hf.generate(
            inputs_embeds=embeds,
            attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long),
            num_beams=num_beams,
            num_return_sequences=returned,
            do_sample=False,
            length_penalty=0.0,
            early_stopping="never",
            max_new_tokens=NEW,
            eos_token_id=eos,
            pad_token_id=0,
            output_scores=True,
            return_dict_in_generate=True,
        )
    return out.sequences.numpy(), out.sequences_scores.numpy()


def _hf_log_likelihood(hf, embeds, new_tokens) -> float:
    """log p(new_tokens | embeds) under transformers' model, teacher-forced."""
    ids = torch.tensor(np.asarray(new_tokens, np.int64))[None]
    with torch.no_grad():
        whole = torch.cat([embeds, hf.model.embed_tokens(ids)], dim=1)
        logits = hf(inputs_embeds=whole).logits[0, embeds.shape[1] - 1 : -1]
        logp = torch.log_softmax(logits.double(), dim=-1)
    return float(logp[torch.arange(len(new_tokens)), ids[0]].sum())


@pytest.mark.parametrize("num_beams", [2, 3])
def test_beams_without_an_eos_equal_transformers_beams(models, num_beams):
    """Every beam and its score, rows of 6, 3, 9 and 1 text tokens in one batch. With no EOS
    both searches keep, at each step, the k best of the 2k best continuations of the k live
    beams, and return the k live at `max_new_tokens` by their summed log-probability (T5's
    penalty with alpha 0 is 1; transformers' `length_penalty=0.0` divides by length ** 0):
    one definition."""
    model, params, hf, prompt = models
    hf.generation_config.eos_token_id = None  # the directory's EOS would end transformers'
    inputs = _inputs()
    tokens, valid = _layout(inputs)
    decode = search.Decoding(num_beams=num_beams, alpha=0.0)
    seqs, scores = causal_decoding.beam_search(model, params, tokens, valid, NEW, None, decode)
    seqs, scores = np.asarray(seqs), np.asarray(scores)
    for row in range(len(inputs)):
        embeds = _embeds(hf, prompt, tokens[row][valid[row]])
        expected, expected_scores = _hf_beams(hf, embeds, num_beams, None, returned=num_beams)
        np.testing.assert_array_equal(seqs[row], expected, err_msg=f"row {row}")
        np.testing.assert_allclose(scores[row], expected_scores, atol=TOLERANCE, rtol=0)
    # The best beam is not always the greedy continuation: a search happened.
    greedy = np.asarray(family.DECODER_ONLY.generate(model, params, inputs, NEW))
    assert (seqs[:, 0] != greedy).any()


@pytest.mark.parametrize("num_beams", [2, 3, 4])
def test_beams_with_an_eos_equal_transformers_beams_or_outscore_them(models, num_beams):
    """The best beam with an EOS, ptune's alpha 0 against transformers' `length_penalty=0.0,
    early_stopping="never"`: both score a sequence by its summed log-probability (the EOS's
    included), keep the k best non-EOS continuations live, and stop only when no live beam
    can beat the k-th finished one; the k live at max length compete with the finished.

    One rule differs: transformers finishes a candidate that ends in EOS only if it ranks
    among the k best of the step's 2k candidates; T5's search (t5x's, and ptune's for every
    family) finishes any of the 2k. The live beams are the same in both, so ptune's finished
    candidates include transformers': its best beam is transformers' or, when an EOS
    candidate of rank k..2k wins, a better one. That one is checked for what it claims: it
    ends in EOS, and its score is its log-likelihood under transformers' model."""
    model, params, hf, prompt = models
    inputs = _inputs()
    eos = _frequent_token(model, params, inputs)
    tokens, valid = _layout(inputs)
    decode = search.Decoding(num_beams=num_beams, alpha=0.0, eos_id=eos)
    seqs, scores = causal_decoding.beam_search(model, params, tokens, valid, NEW, None, decode)
    best = np.asarray(family.DECODER_ONLY.generate(model, params, inputs, NEW, decode))
    np.testing.assert_array_equal(best, np.asarray(seqs)[:, 0])  # the interface's choice
    agreed = []
    for row in range(len(inputs)):
        got, score = _up_to(best[row], eos), float(scores[row, 0])
        assert all(t == 0 for t in best[row][len(got) :])  # 0 after the EOS
        embeds = _embeds(hf, prompt, tokens[row][valid[row]])
        expected, expected_score = _hf_beams(hf, embeds, num_beams, eos)
        if got == _up_to(expected[0], eos):
            agreed.append(got)
            assert abs(score - float(expected_score[0])) < TOLERANCE, row
        else:
            assert got[-1] == eos and score > float(expected_score[0]) + TOLERANCE, row
            assert abs(score - _hf_log_likelihood(hf, embeds, got)) < TOLERANCE, row
    # Agreement includes beams an EOS ended early; the best beams end at several lengths.
    assert any(len(ids) < NEW and ids[-1] == eos for ids in agreed)
    assert len({len(_up_to(b, eos)) for b in best}) > 1


def _rerun_decoding(model, params, inputs, decode, rng) -> np.ndarray:
    """The reference: the whole sequence through the model for every new token (no cache),
    the batch together, the same key split per token as `search.sample`, the same filter."""
    tokens, valid = _layout(inputs)
    b, width = tokens.shape
    lengths = valid.sum(axis=1)
    sequence = np.zeros((b, width + NEW), np.int32)
    sequence[:, :width] = tokens
    full = jax.jit(lambda p, t, v: model.apply({"params": p}, t, v))
    done, out = np.zeros(b, bool), np.zeros((b, NEW), np.int32)
    for step in range(NEW):
        steps = np.arange(width + NEW)[None]
        logits = full(params, sequence, steps < lengths[:, None])
        logits = logits[np.arange(b), PROMPT + lengths - 1]
        if decode.temperature == 0:
            nxt = np.asarray(jnp.argmax(logits, axis=-1))
        else:
            rng, sub = jax.random.split(rng)
            scaled = search.filter_logits(logits / decode.temperature, decode.top_k, decode.top_p)
            nxt = np.asarray(jax.random.categorical(sub, scaled, axis=-1))
        out[:, step] = np.where(done, 0, nxt)
        done |= out[:, step] == decode.eos_id
        sequence[np.arange(b), lengths] = out[:, step]
        lengths = lengths + 1
        if done.all():
            break
    return out


@pytest.mark.parametrize(
    "temperature, top_k, top_p, with_eos",
    [(0.0, 0, 1.0, True), (1.0, 0, 1.0, False), (0.7, 20, 0.9, True)],
    ids=["greedy", "sampled", "sampled-top-k-top-p"],
)
def test_sampling_with_the_cache_equals_rerunning_the_whole_model(
    models, temperature, top_k, top_p, with_eos
):
    model, params, _, _ = models
    inputs = _inputs()
    eos = _frequent_token(model, params, inputs) if with_eos else None
    decode = search.Decoding(temperature=temperature, top_k=top_k, top_p=top_p, eos_id=eos)
    rng = jax.random.PRNGKey(4)
    got = np.asarray(family.DECODER_ONLY.generate(model, params, inputs, NEW, decode, rng=rng))
    np.testing.assert_array_equal(got, _rerun_decoding(model, params, inputs, decode, rng))
    if temperature == 0:  # greedy is temperature 0, as it decodes without an EOS
        plain = np.asarray(family.DECODER_ONLY.generate(model, params, inputs, NEW))
        np.testing.assert_array_equal(got, server_lib.after_eos_zeroed(plain, eos))
    else:
        greedy = np.asarray(family.DECODER_ONLY.generate(model, params, inputs, NEW))
        assert (got != greedy).any()  # the draws matter
        other = family.DECODER_ONLY.generate(
            model, params, inputs, NEW, decode, rng=jax.random.PRNGKey(5)
        )
        assert (np.asarray(other) != got).any()  # and come from the key


def test_a_served_bank_decodes_beams_and_samples_from_its_prompts_keys_and_values(llama_dir):
    """Beams from the bank's keys and values (prompts of lengths 3 and 2, after the BOS)
    equal each request decoded alone with its prompt in its input; samples equal the whole
    batch decoded with the bank's prompts in its input, from the same key."""
    config, frozen = hf_causal.load(llama_dir)
    frozen = jax.tree_util.tree_map(jnp.asarray, frozen)
    rng = np.random.default_rng(3)
    bank = {n: rng.uniform(-0.5, 0.5, (n, 32)).astype(np.float32) for n in (3, 2)}
    layout = dict(bos_id=BOS, drop_input_eos=True)
    inputs = _inputs(lengths=(6, 3, 9, 4), seed=5)
    which = np.array([0, 1, 1, 0])
    probe = llama.CausalLM(config, prompts.prompt_factory(3, "after_bos"), **layout)
    eos = _frequent_token(probe, prompts.with_prompt(frozen, bank[3]), inputs)
    server = server_lib.Server(
        recipe.assemble(config, causal_layout=layout),
        frozen,
        server_lib.Bank.from_arrays({f"p{n}": p for n, p in bank.items()}, "after_bos"),
        batch_size=4,
        eos_id=eos,
    )
    got = server.generate(inputs, which, max_length=NEW, num_beams=3, alpha=0.0)
    assert len(server.generator.caches) == 1  # from the bank's keys and values
    decode = search.Decoding(num_beams=3, alpha=0.0, eos_id=eos)
    for row, k in enumerate(which):
        prompt = bank[(3, 2)[k]]
        model = llama.CausalLM(config, prompts.prompt_factory(len(prompt), "after_bos"), **layout)
        alone = family.DECODER_ONLY.generate(
            model, prompts.with_prompt(frozen, prompt), inputs[row : row + 1], NEW, decode
        )
        np.testing.assert_array_equal(got[row], np.asarray(alone)[0], err_msg=f"row {row}")
    assert len({len(_up_to(r, eos)) for r in got}) > 1  # the EOS ends rows at several lengths
    sampled = search.Decoding(temperature=1.0, eos_id=eos)
    key = jax.random.PRNGKey(6)
    cached = server.generator(inputs, which, NEW, sampled, rng=key)
    assert len(server.generator.caches) == 1
    recomputed = family.DECODER_ONLY.generate(
        server.model, server.params, inputs, NEW, sampled, rng=key, prompt_index=which
    )
    np.testing.assert_array_equal(np.asarray(cached), np.asarray(recomputed))
    assert (np.asarray(cached) != got).any()


def test_infer_and_eval_of_a_decoder_only_model_decode_with_beams_and_sampling(
    llama_dir, tmp_path, monkeypatch
):
    """`ptune infer` with NUM_BEAMS=2 serves each request as beam search over it alone (its
    prompt in its input, the tokenizer's EOS); with TEMPERATURE=0.7 it samples; `ptune eval`
    of a generation task decodes its predictions with the configured beams."""
    from ptune import infer

    files = {}
    for n, name in enumerate(("class_labels", "sampled_vocab")):
        files[name] = tmp_path / f"{name}.npy"
        np.save(files[name], np.random.default_rng(n).uniform(-0.5, 0.5, (3, 32)))
    common = [
        f"--gin.INITIAL_CHECKPOINT_PATH='{llama_dir}'",
        "--gin.TASK_FEATURE_LENGTHS={'inputs': 40, 'targets': 4}",
    ]

    def run_infer(flag, name):
        out = tmp_path / f"{name}.jsonl"
        argv = [
            "infer",
            "--gin_file=runs/infer.gin",
            *common,
            f"--gin.PROMPT_FILES={ {k: str(v) for k, v in files.items()} }",
            f"--gin.INFER_INPUT_FILE='{REPO}/tasks/data/demo/requests.jsonl'",
            f"--gin.INFER_OUTPUT_FILE='{out}'",
            flag,
        ]
        assert cli.main(argv) == 0
        return [json.loads(line) for line in open(out)]

    beams = run_infer("--gin.NUM_BEAMS=2", "beams")
    sampled = run_infer("--gin.TEMPERATURE=0.7", "sampled")
    assert len(beams) == len(sampled) == 4
    config = model_config.resolve_model_config(None, llama_dir)
    frozen = recipe.load_frozen(config, llama_dir)
    tokenizer = vocab.active_tokenizer()
    decode = search.Decoding(
        num_beams=2, alpha=0.6, eos_id=tokenizer.eos_id, vocab_limit=tokenizer.vocab_size
    )
    for r in beams:
        model = llama.CausalLM(config, prompts.prompt_factory(3), bos_id=BOS)
        tokens = infer._tokenize(tokenizer, r["inputs"], 40)[None]
        value = np.load(files[r["prompt"]])
        alone = family.DECODER_ONLY.generate(
            model, prompts.with_prompt(frozen, value), tokens, 4, decode
        )
        assert r["prediction"] == tokenizer.decode([int(i) for i in np.asarray(alone)[0]])
    assert all(isinstance(r["prediction"], str) for r in sampled)
    assert [r["prediction"] for r in sampled] != [r["prediction"] for r in beams]

    searched = []
    original = causal_decoding.beam_search

    def spy(*args, **kwargs):
        searched.append(args[6].num_beams)
        return original(*args, **kwargs)

    monkeypatch.setattr(causal_decoding, "beam_search", spy)
    argv = [
        "eval",
        "--gin_file=runs/eval.gin",
        f"--gin.INITIAL_CHECKPOINT_PATH='{llama_dir}'",
        "--gin.EVAL_FEATURE_LENGTHS={'inputs': 40, 'targets': 4}",
        f"--gin.MIXTURE_OR_TASK_NAME='{TASK}'",
        f"--gin.PROMPT_FILE='{files['class_labels']}'",
        f"--gin.EVAL_OUTPUT_DIR='{tmp_path}'",
        "--gin.LENGTH_BUCKETS=None",
        "--gin.NUM_BEAMS=2",
    ]
    assert cli.main(argv) == 0
    results = json.load(open(tmp_path / "eval_validation.json"))["results"]
    assert 0 <= results[TASK]["accuracy"] <= 100
    assert searched and set(searched) == {2}
