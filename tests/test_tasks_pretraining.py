"""T5's pretraining objectives (span corruption, prefix LM) and tasks over text corpora.

The expected counts are T5's rules restated here (round(n * density) noise tokens, clipped to
[1, n - 1], in max(1, round(noise / mean)) spans, multiplied in float32 as T5's mask does), and
every example is checked to interleave back into the tokens it was made from.
"""

import numpy as np
import pytest
import seqio
import tensorflow as tf

import ptune.tasks  # noqa: F401  (registers the built-in tasks, for the name clash)
from ptune.errors import UserError
from ptune.tasks import pretraining, registry, vocab

BYTES = vocab.output_features(pretraining.byte_vocabulary())
V = 359  # 3 special ids + 256 bytes + 100 extra ids


def expected_counts(n, density=0.15, mean=3.0):
    """(noise tokens, noise spans) of an n-token segment, by T5's rule."""
    if n == 1:
        return 0, 0  # cut from a 2-token mask whose first token is not noise
    noise = int(np.round(np.float32(n) * np.float32(density)))
    noise = min(max(noise, 1), n - 1)
    return noise, max(int(np.round(np.float32(noise) / np.float32(mean))), 1)


def documents(seed=0, count=60, longest=300):
    rng = np.random.default_rng(seed)
    return [rng.integers(3, 259, size=int(n)).tolist() for n in rng.integers(1, longest, count)]


def dataset(docs):
    return tf.data.Dataset.from_generator(
        lambda: ({"targets": d} for d in docs),
        output_signature={"targets": tf.TensorSpec([None], tf.int32)},
    )


def run(objective, docs, seed, sequence_length, features=BYTES, **options):
    with seqio.map_seed_manager(seed):
        ds = objective(dataset(docs), sequence_length, features, **options)
    return list(ds.as_numpy_iterator())


def sentinels(ids, vocab_size=V, extra_ids=100):
    return [int(i) for i in ids if i >= vocab_size - extra_ids]


def interleave(inputs, targets, vocab_size=V, extra_ids=100):
    """The tokens an example was made from: each sentinel in inputs replaced by what follows the
    same sentinel in targets."""
    spans, current = {}, None
    for i in targets:
        if i >= vocab_size - extra_ids:
            current = spans.setdefault(int(i), [])
        else:
            current.append(int(i))
    out = []
    for i in inputs:
        out += spans[int(i)] if i >= vocab_size - extra_ids else [int(i)]
    return out


def t5_helper(inputs_length, density=0.15, mean=3.0):
    """T5's random_spans_helper restated: Python floats, no clipping."""

    def lengths(n):
        noise = round(n * density)
        spans = round(noise / mean)
        return n - noise + spans + 1, noise + spans + 1

    tokens = inputs_length - 1
    while lengths(tokens + 1)[0] <= inputs_length:
        tokens += 1
    return tokens, lengths(tokens)[1]


# ----------------------------------------------------------------------------------------------
# Span corruption


def test_lengths_are_t5s_for_its_configured_512_inputs():
    # T5's C4 span corruption: inputs 512 -> 568 corpus tokens, targets 114, 28 sentinels.
    assert pretraining.span_corruption_lengths(512) == (568, 114, 28)


def test_lengths_differ_from_t5s_formula_only_where_float32_rounds_differently():
    for inputs_length in range(12, 600):
        ours = pretraining.span_corruption_lengths(inputs_length)
        tokens, targets = t5_helper(inputs_length)
        if (ours.tokens, ours.targets) != (tokens, targets):
            ties = [
                n
                for n in (tokens, tokens + 1)
                if round(n * 0.15) != np.round(np.float32(n) * np.float32(0.15))
            ]
            assert ties and ours.targets > targets, inputs_length


@pytest.mark.parametrize("inputs_length", [64, 172])
def test_examples_fill_the_lengths_and_interleave_back_into_the_corpus(inputs_length):
    # 172: T5's formula says targets 38, but its mask makes 40 (a float32 tie); ours says 40.
    lengths = pretraining.span_corruption_lengths(inputs_length)
    docs = documents()
    sequence_length = {"inputs": inputs_length, "targets": lengths.targets}
    examples = run(pretraining.span_corruption, docs, 3, sequence_length)
    rebuilt = []
    for ex in examples:
        segment = interleave(ex["inputs"], ex["targets"])
        rebuilt += segment
        n = len(segment)
        assert n <= lengths.tokens
        assert len(ex["inputs"]) + 1 <= inputs_length and len(ex["targets"]) + 1 <= lengths.targets
        noise, spans = expected_counts(n)
        order = list(range(V - 1, V - 1 - spans, -1))
        assert sentinels(ex["inputs"]) == order and sentinels(ex["targets"]) == order
        assert len(ex["targets"]) - spans == noise
        if n >= 2:  # spans alternate from non-noise and end in noise
            assert ex["inputs"][0] < V - 100 and ex["inputs"][-1] >= V - 100
            assert ex["targets"][0] == V - 1 and ex["targets"][-1] == segment[-1]
    assert rebuilt == [t for d in docs for t in d]
    full = [ex for ex in examples if len(interleave(ex["inputs"], ex["targets"])) == lengths.tokens]
    assert len(full) >= len(examples) - 1  # documents are concatenated: one short tail
    assert {len(ex["inputs"]) + 1 for ex in full} == {inputs_length}
    assert {len(ex["targets"]) + 1 for ex in full} == {lengths.targets}


def test_long_sequences_have_spans_of_mean_length_3_and_noise_density_015():
    lengths = pretraining.span_corruption_lengths(512)
    docs = documents(seed=1, count=40, longest=2000)
    examples = run(pretraining.span_corruption, docs, 0, {"inputs": 512, "targets": 114})
    span_lengths, noise, total = [], 0, 0
    for ex in examples[:-1]:
        targets = list(ex["targets"])
        starts = [i for i, t in enumerate(targets) if t >= V - 100] + [len(targets)]
        span_lengths += [b - a - 1 for a, b in zip(starts, starts[1:])]
        noise += len(targets) - (len(starts) - 1)
        total += lengths.tokens
    assert noise / total == pytest.approx(round(568 * 0.15) / 568)
    assert np.mean(span_lengths) == pytest.approx(3.0, abs=0.1)
    assert min(span_lengths) == 1 and max(span_lengths) > 6  # random lengths, not all 3


def test_noise_mask_counts_for_every_length():
    mask_fn = tf.function(
        lambda n, seeds: pretraining.random_spans_noise_mask(n, 0.15, seeds),
        input_signature=[tf.TensorSpec([], tf.int32), tf.TensorSpec([2, 2], tf.int64)],
    )
    for n in range(1, 160):
        mask = mask_fn(n, tf.constant([[n, 1], [n, 2]], tf.int64)).numpy()
        noise, spans = expected_counts(n)
        runs = int(np.sum(mask[1:] & ~mask[:-1])) + int(mask[0])
        assert (len(mask), int(mask.sum()), runs) == (n, noise, spans), n
        assert not mask[0] and (n == 1 or mask[-1])


def test_a_seed_fixes_the_examples_and_another_seed_changes_them():
    docs = documents(count=20)
    sequence_length = {"inputs": 64, "targets": 14}
    first = run(pretraining.span_corruption, docs, 7, sequence_length)
    again = run(pretraining.span_corruption, docs, 7, sequence_length)
    other = run(pretraining.span_corruption, docs, 8, sequence_length)
    as_lists = lambda exs: [(list(e["inputs"]), list(e["targets"])) for e in exs]
    assert as_lists(first) == as_lists(again)
    assert as_lists(first) != as_lists(other)


# ----------------------------------------------------------------------------------------------
# Prefix LM


def test_prefix_lm_splits_each_segment_at_a_random_point():
    docs = documents(count=40) + [[42]]
    sequence_length = {"inputs": 64, "targets": 63}
    examples = run(pretraining.prefix_lm, docs, 0, sequence_length)
    segments = [list(ex["inputs"]) + list(ex["targets"]) for ex in examples]
    assert [t for s in segments for t in s] == [t for d in docs for t in d]
    for ex, segment in zip(examples, segments):
        assert len(segment) <= 63
        if len(segment) >= 2:
            assert 1 <= len(ex["inputs"]) <= len(segment) - 1
    assert (len(examples[-1]["inputs"]), list(examples[-1]["targets"])) == (0, [42])
    full = [len(ex["inputs"]) for ex, s in zip(examples, segments) if len(s) == 63]
    assert len(set(full)) > len(full) // 3  # split points vary
    other = run(pretraining.prefix_lm, docs, 1, sequence_length)
    assert [len(ex["inputs"]) for ex in other] != [len(ex["inputs"]) for ex in examples]
    again = run(pretraining.prefix_lm, docs, 0, sequence_length)
    assert [list(ex["inputs"]) for ex in again] == [list(ex["inputs"]) for ex in examples]


def test_documents_longer_than_65536_tokens_give_one_aligned_chunk():
    doc = (np.arange(70000) % 256 + 3).tolist()
    chunks = set()
    for seed in range(6):
        examples = run(pretraining.prefix_lm, [doc], seed, {"inputs": 4097, "targets": 4096})
        tokens = [t for ex in examples for t in list(ex["inputs"]) + list(ex["targets"])]
        assert tokens in (doc[:65536], doc[65536:])
        chunks.add(len(tokens))
    assert chunks == {65536, 70000 - 65536}


# ----------------------------------------------------------------------------------------------
# Tasks over text files


@pytest.fixture
def corpus(tmp_path):
    """Registers a corpus task over given lines; unregisters it afterwards, so that the count of
    built-in tasks elsewhere is not disturbed."""
    names = []

    def make(lines, name="test_pretraining_corpus", **fields):
        path = tmp_path / f"{name}.txt"
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        task = pretraining.CorpusTask(name=name, splits={"train": str(path)}, **fields)
        names.append(task.register())
        return seqio.get_mixture_or_task(name)

    yield make
    for name in names:
        seqio.TaskRegistry.remove(name)


LINES = [
    "Prompt tuning trains a few vectors and leaves the model as it was.",
    "",
    "Spans of text are hidden behind sentinels; the model writes them back — café, naïve.",
    "A short line.",
]


def test_byte_corpus_task_corrupts_spans_with_sentinels_that_are_no_byte(corpus):
    task = corpus(LINES, vocabulary="byte")
    vocabulary = task.output_features["targets"].vocabulary
    assert (vocabulary.vocab_size, vocabulary.extra_ids) == (V, 100)
    assert registry.get_task_or_mixture("test_pretraining_corpus") is task
    assert "test_pretraining_corpus" in pretraining.registered()
    sequence_length = {"inputs": 64, "targets": 14}
    ds = task.get_dataset(sequence_length, split="train", shuffle=False, seed=0)
    examples = list(ds.as_numpy_iterator())
    rebuilt = []
    for ex in examples:
        assert ex["inputs"][-1] == 1 and ex["targets"][-1] == 1  # EOS
        assert len(ex["inputs"]) <= 64 and len(ex["targets"]) <= 14
        assert ex["inputs_truncated"] == 0 and ex["targets_truncated"] == 0
        assert min(sentinels(ex["inputs"])) >= 259
        rebuilt += interleave(ex["inputs"][:-1], ex["targets"][:-1])
    assert vocabulary.decode(rebuilt) == "".join(LINES)


def test_byte_corpus_task_for_prefix_lm(corpus):
    task = corpus(LINES, vocabulary="byte", objective="prefix_lm")
    ds = task.get_dataset({"inputs": 32, "targets": 32}, split="train", shuffle=False, seed=0)
    examples = list(ds.as_numpy_iterator())
    text = b"".join(
        bytes(i - 3 for i in ex[k][:-1]) for ex in examples for k in ("inputs", "targets")
    )
    assert text.decode() == "".join(LINES)
    assert all(len(ex["inputs"]) >= 2 for ex in examples)  # at least one token and EOS


def test_t5_vocabulary_sentinels_are_extra_ids_counting_down(corpus, t5_vocab):
    task = corpus(LINES, vocabulary="t5")
    ds = task.get_dataset({"inputs": 32, "targets": 8}, split="train", shuffle=False, seed=0)
    first = next(ds.as_numpy_iterator())
    vocabulary = vocab.get_vocabulary()
    spans = len(sentinels(first["inputs"], 32100))
    assert sentinels(first["inputs"], 32100) == list(range(32099, 32099 - spans, -1))
    assert [vocabulary.decode([i]) for i in sentinels(first["targets"], 32100)] == [
        f"<extra_id_{k}>" for k in range(spans)
    ]


def test_registering_again_replaces_the_task(corpus):
    corpus(LINES, vocabulary="byte")
    task = corpus(LINES, vocabulary="byte", objective="prefix_lm")
    assert seqio.get_mixture_or_task("test_pretraining_corpus") is task


# ----------------------------------------------------------------------------------------------
# Bad input: one UserError naming the cause, raised while the pipeline is built


@pytest.mark.parametrize(
    "options, cause",
    [
        ({"noise_density": 0.0}, "noise density 0.0 is not in"),
        ({"noise_density": 1.0}, "noise density 1.0 is not in"),
        ({"noise_density": -0.1}, "noise density -0.1 is not in"),
        ({"mean_noise_span_length": 0.5}, "mean noise span length 0.5 is below 1"),
        ({"noise_density": 0.9}, "non-noise tokens for"),
    ],
)
def test_bad_noise_settings(options, cause):
    with pytest.raises(UserError, match=cause):
        pretraining.span_corruption(dataset([]), {"inputs": 64, "targets": 64}, BYTES, **options)


def test_a_vocabulary_without_room_for_the_sentinels():
    demo_bytes = vocab.output_features(vocab.get_byte_vocabulary())  # no extra ids
    with pytest.raises(UserError, match="has 0 extra ids but inputs length 64 makes up to 3"):
        pretraining.span_corruption(dataset([]), {"inputs": 64, "targets": 14}, demo_bytes)
    need = pretraining.span_corruption_lengths(4096)
    assert need.spans > 100
    with pytest.raises(UserError, match=f"has 100 extra ids .* up to {need.spans} noise spans"):
        pretraining.span_corruption(dataset([]), {"inputs": 4096, "targets": 4096}, BYTES)


@pytest.mark.parametrize(
    "objective, sequence_length, cause",
    [
        (pretraining.span_corruption, {"inputs": 64, "targets": 13}, "targets length 13 is short"),
        (pretraining.span_corruption, None, "needs sequence lengths"),
        (pretraining.span_corruption, {"inputs": 1, "targets": 8}, "inputs length 1 is below 2"),
        (pretraining.prefix_lm, {"inputs": 64, "targets": 62}, "targets length 62 is short"),
        (pretraining.prefix_lm, {"inputs": 64}, "needs sequence lengths"),
    ],
)
def test_lengths_the_objective_cannot_fit(objective, sequence_length, cause):
    with pytest.raises(UserError, match=cause):
        objective(dataset([]), sequence_length, BYTES)


def test_inputs_and_targets_must_share_a_vocabulary():
    mixed = {"inputs": vocab.output_features()["inputs"], "targets": BYTES["targets"]}
    with pytest.raises(UserError, match="share one vocabulary"):
        pretraining.prefix_lm(dataset([]), {"inputs": 8, "targets": 8}, mixed)


@pytest.mark.parametrize(
    "content, fields, cause",
    [
        (None, {}, "train: file .*missing.txt not found"),
        ("", {}, "train: no text in .*empty"),
        ("\n  \n\t\n", {}, "train: no text in .*blank lines"),
        ("text\n", {"objective": "mlm"}, "objective 'mlm' is not one of"),
        ("text\n", {"vocabulary": "gpt2"}, "vocabulary 'gpt2' is not t5 or byte"),
        ("text\n", {"noise_density": 1.5}, "noise density 1.5 is not in"),
        ("text\n", {"name": "ptune_demo"}, "name is taken by a registered task"),
        ("text\n", {"name": "has space"}, "a name has only letters"),
    ],
)
def test_bad_corpus_tasks(tmp_path, content, fields, cause):
    path = tmp_path / ("missing.txt" if content is None else "corpus.txt")
    if content is not None:
        path.write_text(content)
    task = pretraining.CorpusTask(
        **{"name": "test_pretraining_bad", "splits": {"train": str(path)}, **fields}
    )
    with pytest.raises(UserError, match=cause):
        task.register()
    assert "test_pretraining_bad" not in seqio.TaskRegistry.names()


def test_a_pattern_that_matches_no_file(tmp_path):
    task = pretraining.CorpusTask(
        name="test_pretraining_bad", splits={"train": f"{tmp_path}/*.txt"}
    )
    with pytest.raises(UserError, match=r"train: no file matches .*\*\.txt"):
        task.register()
