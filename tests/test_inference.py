"""Decoding, prompt banks, mixed-task batches, ensembling, prompt interpretation."""

import dataclasses
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ptune.tasks  # noqa: F401  registers the demo task
from conftest import DEMO_TINY, DROPOUT, random_params, tiny_t5
from ptune import decoding, evaluation, family, infer, interpret, prompts, recipe
from ptune import server as server_lib
from ptune.checkpoints.orbax_params import save_ptune
from ptune.errors import UserError
from ptune.models import t5

CFG = tiny_t5(**{**DEMO_TINY, "num_decoder_layers": 2}, dropout_rate=0.0)
MAX = 6


@pytest.fixture(scope="module")
def frozen():
    model = t5.Transformer(CFG)
    tokens = jnp.ones((1, 4), jnp.int32)
    return random_params(model, tokens, tokens, tokens, enable_dropout=False)


@pytest.fixture(scope="module")
def named_prompts():
    rng = np.random.default_rng(1)
    return {
        "a": rng.normal(size=(3, 16)).astype(np.float32),
        "b": rng.normal(size=(5, 16)).astype(np.float32),
    }


def _inputs(n=6, length=9, seed=0):
    enc = np.random.default_rng(seed).integers(3, 259, size=(n, length)).astype(np.int32)
    for r in range(n):
        enc[r, length - 1 - (r % 4) :] = 0
    return enc


def _single(frozen, prompt):
    return t5.Transformer(CFG, prompts.prompt_factory(len(prompt))), prompts.with_prompt(
        frozen, prompt
    )


def test_cached_decoding_equals_rerunning_the_full_decoder(frozen, named_prompts):
    model, params = _single(frozen, named_prompts["b"])
    enc = _inputs()
    cached = np.asarray(decoding.generate(model, params, enc, max_length=MAX, eos_id=-1))
    apply = jax.jit(
        lambda dec: model.apply(
            {"params": params}, enc, dec, jnp.ones_like(dec), enable_dropout=False
        )
    )
    dec = np.zeros((len(enc), MAX), np.int32)
    for i in range(MAX):  # uncached: the whole decoder again for every new position
        logits = np.asarray(apply(dec))
        nxt = logits[:, i].argmax(-1)
        if i + 1 < MAX:
            dec[:, i + 1] = nxt
        last = nxt
    np.testing.assert_array_equal(cached[:, :-1], dec[:, 1:])
    np.testing.assert_array_equal(cached[:, -1], last)


def test_beam_search_with_one_beam_is_greedy_and_scores_are_normalised(frozen, named_prompts):
    model, params = _single(frozen, named_prompts["a"])
    enc = _inputs()
    greedy = np.asarray(decoding.generate(model, params, enc, max_length=MAX))
    seqs, _ = decoding.beam_search(model, params, enc, max_length=MAX, num_beams=1, alpha=0.0)
    np.testing.assert_array_equal(np.asarray(seqs[:, 0]), greedy)
    seqs, scores = decoding.beam_search(model, params, enc, max_length=MAX, num_beams=3)
    seqs, scores = np.asarray(seqs), np.asarray(scores)
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first
    best = seqs[:, 0]
    logp = np.asarray(family.score(model, params, enc, best))
    lengths = (best > 0).sum(axis=1)
    np.testing.assert_allclose(scores[:, 0], logp / ((5.0 + lengths) / 6.0) ** 0.6, rtol=1e-4)


def test_scoring_and_decoding_never_drop_out(frozen, named_prompts):
    """A model configured with fine-tuning dropout (T5 1.1's and mT5's model files) scores
    (rank classification) and decodes as the same model without: dropout is training's."""
    model, params = _single(frozen, named_prompts["a"])
    dropped = t5.Transformer(CFG.replace(dropout_rate=DROPOUT), model.prompt_factory)
    enc = _inputs()
    targets = np.random.default_rng(4).integers(3, 259, size=(len(enc), 4)).astype(np.int32)
    np.testing.assert_array_equal(
        np.asarray(family.score(dropped, params, enc, targets)),
        np.asarray(family.score(model, params, enc, targets)),
    )
    np.testing.assert_array_equal(
        np.asarray(decoding.generate(dropped, params, enc, max_length=MAX)),
        np.asarray(decoding.generate(model, params, enc, max_length=MAX)),
    )


def test_mixed_batch_equals_per_prompt_batches(frozen, named_prompts):
    bank = server_lib.Bank.from_arrays(named_prompts)
    server = server_lib.Server(recipe.assemble(CFG), frozen, bank, batch_size=4)
    enc = _inputs(n=7)
    names = ["a", "b", "b", "a", "b", "a", "a"]
    mixed = server_lib.serve_mixed(server, list(zip(names, enc)), max_length=MAX)
    singles = {
        n: server_lib.Server(recipe.assemble(CFG), frozen, server_lib.Bank.from_arrays({n: p}), 4)
        for n, p in named_prompts.items()
    }
    assert sorted(singles) == sorted(set(names))  # every prompt of the batch is compared
    for n, single in singles.items():  # what a single-adapter system must do per prompt
        rows = [i for i, x in enumerate(names) if x == n]
        alone = single.generate(enc[rows], np.zeros(len(rows), np.int32), max_length=MAX)
        np.testing.assert_array_equal(mixed[rows], alone)
    # Scores too, against the plain single-prompt model (no bank at all).
    targets = np.random.default_rng(3).integers(3, 259, size=(7, 4)).astype(np.int32)
    targets[:, -1] = 1
    index = np.array([bank.index(n) for n in names])
    mixed_scores = server.score(enc, targets, index)
    for n, p in named_prompts.items():
        model, params = _single(frozen, p)
        rows = [i for i, x in enumerate(names) if x == n]
        ref = np.asarray(family.score(model, params, enc[rows], targets[rows]))
        np.testing.assert_allclose(mixed_scores[rows], ref, rtol=1e-5, atol=1e-5)


def test_ensemble_of_copies_equals_the_prompt_alone(frozen, named_prompts):
    copies = {f"copy{i}": named_prompts["b"] for i in range(3)}
    server = server_lib.Server(
        recipe.assemble(CFG), frozen, server_lib.Bank.from_arrays(copies), batch_size=8
    )
    alone = server_lib.Server(
        recipe.assemble(CFG),
        frozen,
        server_lib.Bank.from_arrays({"b": named_prompts["b"]}),
        batch_size=8,
    )
    enc = _inputs(n=5)
    per_prompt, voted = server_lib.ensemble_generate(server, enc, [0, 1, 2], max_length=MAX)
    single = alone.generate(enc, np.zeros(5, np.int32), max_length=MAX)
    for m in range(3):
        np.testing.assert_array_equal(per_prompt[m], single)
    assert voted == [server_lib._strip(row) for row in single]
    targets = np.full((5, 3), 7, np.int32)
    _, mean = server_lib.ensemble_scores(server, enc, targets, [0, 1, 2])
    np.testing.assert_allclose(mean, alone.score(enc, targets, np.zeros(5, np.int32)), rtol=1e-6)


def test_majority_vote_breaks_ties_by_prompt_order():
    assert server_lib.majority_vote(
        [["x", "y", "y"], ["x", "y", "z"], ["z", "y", "z", "y"], ["q"]]
    ) == ["y", "x", "z", "q"]


def test_bank_bad_input(frozen, named_prompts):
    with pytest.raises(UserError, match="different embedding widths: a: 16, c: 8"):
        server_lib.Bank.from_arrays({"a": named_prompts["a"], "c": np.zeros((2, 8), np.float32)})
    server = server_lib.Server(
        recipe.assemble(CFG), frozen, server_lib.Bank.from_arrays(named_prompts), 4
    )
    with pytest.raises(UserError, match="prompt_index 2 at position 1 is out of range"):
        server.generate(_inputs(n=2), np.array([0, 2]), max_length=MAX)
    with pytest.raises(UserError, match="unknown prompt 'z'"):
        server.bank.index("z")


def test_explain_finds_the_tokens_a_prompt_was_initialised_from():
    import seqio

    vocab = seqio.ByteVocabulary()
    table = np.random.default_rng(0).normal(size=(384, 16)).astype(np.float32)
    ctx = prompts.InitContext(embedding=table, vocabulary=vocab)
    value = prompts.initialize(prompts.from_text("good"), jax.random.PRNGKey(0), 6, ctx)
    result = interpret.explain(value, table, vocab, labels=["good", "bad"], top_k=3)
    first = [p["neighbors"][0]["token"] for p in result["positions"][:4]]
    assert first == ["g", "o", "o", "d"]
    assert all(abs(p["neighbors"][0]["cosine"] - 1.0) < 1e-6 for p in result["positions"][:4])
    assert result["labels"]["good"]["positions"][:4] == [0, 1, 2, 3]
    assert "position   0: 'g' (1.000)" in interpret.format_text(result)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, frozen, named_prompts):
    root = tmp_path_factory.mktemp("serve")
    save_ptune(frozen, CFG, str(root / "model"))
    files = {}
    for name, value in named_prompts.items():
        files[name] = str(root / f"{name}.npy")
        np.save(files[name], value)
    return root, files


def test_infer_file_with_named_prompts(saved, tmp_path):
    root, files = saved
    requests = tmp_path / "requests.jsonl"
    requests.write_text(
        json.dumps({"task": "ptune_demo", "inputs": "the film was good", "prompt": "a"})
        + "\n\n"
        + json.dumps({"task": "ptune_demo", "inputs": "it was dull", "prompt": "b"})
        + "\n"
    )
    cfg = infer.InferConfig(
        checkpoint_path=str(root / "model"),
        prompt_files=files,
        input_file=str(requests),
        output_file=str(tmp_path / "out.jsonl"),
        task_feature_lengths={"inputs": 64, "targets": MAX},
        batch_size=4,
    )
    results = infer.run_infer(cfg, progress=False)
    written = [json.loads(line) for line in open(tmp_path / "out.jsonl")]
    assert written == results and [r["line"] for r in results] == [1, 3]
    # Length buckets (the default) serve these short requests at 32 tokens, not 64; fixed
    # padding to 64 gives the same predictions.
    assert cfg.length_buckets is not None
    fixed = dataclasses.replace(cfg, length_buckets=None, output_file=str(tmp_path / "fixed.jsonl"))
    assert infer.run_infer(fixed, progress=False) == results
    assert [r["prompt"] for r in results] == ["a", "b"]
    # The same request through the plain single-prompt model gives the same text.
    import seqio

    vocab = seqio.ByteVocabulary()
    model, params = _single(frozen_from(root), np.load(files["b"]))
    tokens = server_lib.tokenize(vocab, "it was dull", 32)[None]
    ids = np.asarray(
        decoding.generate(model, params, tokens, max_length=MAX, vocab_limit=vocab.vocab_size)
    )[0]
    assert results[1]["prediction"] == vocab.decode([int(i) for i in ids])


def frozen_from(root):
    return recipe.assemble(CFG).load_frozen(str(root / "model"))


@pytest.mark.parametrize(
    "content,needle",
    [
        ("", "holds no requests"),
        ('{"inputs": "x"}\n', "line 1: no task name"),
        (
            '{"task": "ptune_demo", "inputs": "x"}\n{"task": "ptune_demo"\n',
            "line 2: not valid JSON",
        ),
        ('{"task": "ptune_demo", "inputs": "x", "prompt": "zz"}\n', "line 1: no prompt named 'zz'"),
        ('{"task": "ptune_dem", "inputs": "x", "prompt": "a"}\n', "line 1: .*ptune_demo"),
    ],
)
def test_infer_bad_input_names_the_line(saved, tmp_path, content, needle):
    root, files = saved
    path = tmp_path / "in.jsonl"
    path.write_text(content)
    cfg = infer.InferConfig(
        checkpoint_path=str(root / "model"),
        prompt_files=files,
        input_file=str(path),
        output_file=str(tmp_path / "o.jsonl"),
    )
    with pytest.raises(UserError, match=needle):
        infer.run_infer(cfg, progress=False)
    assert not (tmp_path / "o.jsonl").exists()


def test_tsv_requests(tmp_path):
    path = tmp_path / "in.tsv"
    path.write_text("ptune_demo\tthe film was good\tb\n\nptune_demo\tit was dull\n")
    got = infer.read_requests(str(path))
    assert [(r["task"], r["inputs"], r.get("prompt"), r["line"]) for r in got] == [
        ("ptune_demo", "the film was good", "b", 1),
        ("ptune_demo", "it was dull", None, 3),
    ]
    path.write_text("\tno task\n")
    with pytest.raises(UserError, match="line 1: expected 'task<TAB>inputs"):
        infer.read_requests(str(path))


def test_ensemble_table(saved, tmp_path):
    root, files = saved
    copy = str(tmp_path / "a_copy.npy")  # the same prompt under another name (one path twice
    shutil.copy(files["a"], copy)  # is refused: it would vote twice)
    cfg = infer.EnsembleConfig(
        eval=evaluation.EvalConfig(
            mixture_or_task_name="ptune_demo_rank_classification",
            checkpoint_path=str(root / "model"),
            eval_feature_lengths={"inputs": 64, "targets": 9},
            batch_size=32,
        ),
        prompt_files=[files["a"], files["b"], copy],
    )
    table = infer.run_ensemble(cfg)
    a, b, a2 = (p["metrics"] for p in table["prompts"])
    assert a == a2
    key = "ptune_demo_rank_classification/accuracy"
    assert table["average"][key] == pytest.approx(
        (
            2 * a["ptune_demo_rank_classification"]["accuracy"]
            + b["ptune_demo_rank_classification"]["accuracy"]
        )
        / 3
    )
    text = infer.format_table(table)
    assert text.splitlines()[-1].startswith("| Ensemble |") and "| Average |" in text


def test_ids_past_the_vocabulary_are_never_generated(frozen, named_prompts):
    # Make id 300 (an embedding padding row for a 259-id byte vocabulary) the likeliest first
    # token: its output column twice the column of the token greedy decoding picks first (the
    # largest of the first position's logits, so a positive one).
    enc = _inputs(n=3)
    index = np.zeros(3, np.int32)
    bank = server_lib.Bank.from_arrays(named_prompts)
    first = server_lib.Server(recipe.assemble(CFG), frozen, bank, 4).generate(
        enc, index, max_length=1
    )[0, 0]
    params = jax.tree_util.tree_map(np.array, frozen)
    kernel = params["decoder"]["logits_dense"]["kernel"]
    kernel[:, 300] = 2 * kernel[:, first]
    unlimited = server_lib.Server(recipe.assemble(CFG), params, bank, 4)
    limited = server_lib.Server(recipe.assemble(CFG), params, bank, 4, vocab_limit=259)
    assert (unlimited.generate(enc, index, max_length=MAX) == 300).any()
    for beams in (1, 3):
        out = limited.generate(enc, index, max_length=MAX, num_beams=beams)
        assert out.max() < 259 and (out > 0).any()
