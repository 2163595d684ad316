"""The offline demo task: shipped data, byte vocabulary, learnable labels, metrics."""

import collections
import os

import pytest
import seqio
from task_support import evaluate, run, run_all, texts

from ptune.tasks import demo, registry

# Written here, not imported: the rule a model has to learn.
POSITIVE = {"good", "great", "lovely", "excellent", "pleasant", "fun", "wonderful", "nice"}
NEGATIVE = {"bad", "awful", "boring", "terrible", "dull", "poor", "sad", "horrible"}


def test_shipped_data_is_what_the_generator_writes():
    assert {split: demo.read(split) for split in ("train", "validation")} == demo.generate()


def test_labels_follow_from_the_text_alone():
    rows = demo.read("train") + demo.read("validation")
    assert len(rows) == 480
    for row in rows:
        words = row["sentence"].rstrip(".").split()
        adjective = words[-1]
        assert adjective in POSITIVE | NEGATIVE
        positive = (adjective in POSITIVE) != ("not" in words)
        assert row["label"] == ("positive" if positive else "negative"), row


def test_splits_sizes_balance_and_disjointness():
    train, validation = demo.read("train"), demo.read("validation")
    assert (len(train), len(validation)) == (400, 80)
    assert collections.Counter(r["label"] for r in validation) == {"negative": 40, "positive": 40}
    assert not {r["sentence"] for r in train} & {r["sentence"] for r in validation}
    assert [r["idx"] for r in validation] == list(range(80))


def test_task_formats_taskless_on_bytes():
    record = {"sentence": "the soup was not very good.", "label": 0, "idx": 0}
    ex = run("ptune_demo", record)
    assert texts(ex) == ("sentence: the soup was not very good.", "negative")
    assert list(ex["inputs"]) == [b + 3 for b in b"sentence: the soup was not very good."] + [1]
    assert list(ex["targets"]) == [b + 3 for b in b"negative"] + [1]
    vocabulary = seqio.get_mixture_or_task("ptune_demo").output_features["inputs"].vocabulary
    assert isinstance(vocabulary, seqio.ByteVocabulary) and vocabulary.vocab_size == 259


def test_real_shipped_data_fits_the_demo_lengths():
    task = seqio.get_mixture_or_task("ptune_demo")
    assert set(demo.SPLITS) == {"train", "validation"}
    for split, size in demo.SPLITS.items():
        examples = list(task.get_dataset(split=split, shuffle=False).as_numpy_iterator())
        assert len(examples) == size
        assert max(len(ex["inputs"]) for ex in examples) <= demo.SEQUENCE_LENGTH["inputs"]
        assert max(len(ex["targets"]) for ex in examples) <= demo.SEQUENCE_LENGTH["targets"]
        assert {texts(ex)[1] for ex in examples} == {"negative", "positive"}


def test_label_names_for_the_class_label_initializer():
    assert demo.LABELS == ("negative", "positive")
    assert registry.label_names("ptune_demo") == ["negative", "positive"]
    assert registry.label_names("ptune_demo_rank_classification") == ["negative", "positive"]


def test_accuracy_end_to_end_with_an_invalid_prediction():
    records = [{"sentence": s, "label": l, "idx": i} for i, (s, l) in enumerate(
        [("the park is nice.", 1), ("his car was bad.", 0), ("the room is not fun.", 0), ("the game is fun.", 1)]
    )]  # fmt: skip
    metrics = evaluate(
        "ptune_demo", records, predictions=["positive", "negative", "positive", "posi"]
    )
    assert metrics == {"accuracy": 50.0}


def test_rank_classification_variant():
    record = {"sentence": "the park is nice.", "label": 1, "idx": 0}
    out = run_all("ptune_demo_rank_classification", [record])
    assert [texts(ex) for ex in out] == [
        ("sentence: the park is nice.", "negative"),
        ("sentence: the park is nice.", "positive"),
    ]
    assert [bool(ex["is_correct"]) for ex in out] == [False, True]
    records = [record, dict(record, label=0, idx=1)]
    metrics = evaluate("ptune_demo_rank_classification", records, scores=[-2.0, -1.0, -0.5, -3.0])
    assert metrics["accuracy"] == pytest.approx(100.0)


def test_rank_classification_trains_on_the_correct_label_and_evaluates_both():
    # T5's rank_classification mode="train" on the train split, mode="eval" elsewhere: fitting
    # the wrong label would teach the model to say it.
    task = seqio.get_mixture_or_task("ptune_demo_rank_classification")
    train = list(task.get_dataset(split="train", shuffle=False).as_numpy_iterator())
    rows = demo.read("train")
    assert [texts(ex) for ex in train] == [(f"sentence: {r['sentence']}", r["label"]) for r in rows]
    assert all(ex["is_correct"] for ex in train)
    validation = list(task.get_dataset(split="validation", shuffle=False).as_numpy_iterator())
    assert len(validation) == 2 * 80
    assert [texts(ex)[1] for ex in validation[:4]] == ["negative", "positive"] * 2
    assert [tuple(ex["idx"]) for ex in validation[:4]] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert sum(bool(ex["is_correct"]) for ex in validation) == 80


def _polarity(words):
    """The demo's rule, on an opinion's words: the adjective's polarity, flipped by "not"."""
    adjective = words[-1]
    return (adjective in POSITIVE) != ("not" in words)


def test_pretraining_corpus_states_opinions_and_agreeing_reactions():
    documents = demo.corpus(documents=3000)
    assert documents == demo.corpus(documents=3000)  # the seed fixes it
    held_out = {r["sentence"] for r in demo.read("train") + demo.read("validation")}
    verdict_first = negated = 0
    for doc in documents:
        assert "sentence:" not in doc and len(doc.encode()) <= 143  # 144 bytes with EOS
        opinion, reaction = doc.split(". ", 1)
        words = opinion.split()
        assert words[-1] in POSITIVE | NEGATIVE, doc
        # no demo sentence, with or without the lead ("honestly, ")
        assert not any(opinion.endswith(s.rstrip(".")) for s in held_out), doc
        verdicts = [w for w in reaction.replace(",", " ").replace(".", " ").split()
                    if w in ("positive", "negative")]  # fmt: skip
        assert verdicts == ["positive" if _polarity(words) else "negative"], doc
        assert not doc.endswith(verdicts[0])  # never the demo's target shape
        verdict_first += reaction.startswith(verdicts[0])
        negated += "not" in words
    assert 0.25 < verdict_first / len(documents) < 0.35
    assert 0.2 < negated / len(documents) < 0.3  # demo.CORPUS_NEGATION


# The shifted domain's words, written here too.
CARE_POSITIVE = {"painless", "gentle", "caring", "thorough", "reassuring", "quick", "clean"}
CARE_POSITIVE |= {"effective"}
CARE_NEGATIVE = {"painful", "careless", "rushed", "cold", "confusing", "slow", "unhelpful"}
CARE_NEGATIVE |= {"dirty"}


def test_the_shifted_domain_has_the_demos_labels_over_words_the_demo_never_uses():
    """ptune_demo_shifted (the paper's Table 1 at this scale): the same grammar, labels and
    format over health care; its shipped data is what the generator writes."""
    shipped = {s: demo.read(s, demo.SHIFTED_DATA_DIR) for s in ("train", "validation")}
    assert shipped == demo.generate(domain=demo.CARE)
    rows = shipped["train"] + shipped["validation"]
    demo_words = {w for r in demo.read("train") for w in r["sentence"].rstrip(".").split()}
    for row in rows:
        words = row["sentence"].rstrip(".").split()
        assert words[-1] in CARE_POSITIVE | CARE_NEGATIVE and words[-1] not in demo_words, row
        positive = (words[-1] in CARE_POSITIVE) != ("not" in words)
        assert row["label"] == ("positive" if positive else "negative"), row
    assert collections.Counter(r["label"] for r in shipped["validation"]) == {
        "negative": 40,
        "positive": 40,
    }
    assert registry.label_names(demo.SHIFTED_TASK) == ["negative", "positive"]
    ex = run(demo.SHIFTED_TASK, {**rows[0], "label": 1})
    assert texts(ex) == (f"sentence: {rows[0]['sentence']}", "positive")
    rank = seqio.get_mixture_or_task(f"{demo.SHIFTED_TASK}_rank_classification")
    assert len(list(rank.get_dataset(split="validation", shuffle=False))) == 2 * 80


def test_a_two_domain_corpus_draws_each_document_from_either_and_holds_out_both():
    documents = demo.corpus(documents=2000, domains=(demo.REVIEWS, demo.CARE))
    held_out = {
        r["sentence"].rstrip(".")
        for d in (demo.DATA_DIR, demo.SHIFTED_DATA_DIR)
        for s in ("train", "validation")
        for r in demo.read(s, d)
    }
    care = 0
    for doc in documents:
        opinion = doc.split(". ", 1)[0]
        assert not any(opinion.endswith(s) for s in held_out), doc
        assert opinion.split()[-1] in POSITIVE | NEGATIVE | CARE_POSITIVE | CARE_NEGATIVE
        care += opinion.split()[-1] in CARE_POSITIVE | CARE_NEGATIVE
    assert 0.45 < care / len(documents) < 0.55


def test_the_pretrained_model_ships_and_its_absence_is_one_line(monkeypatch, tmp_path):
    from ptune import checkpoints
    from ptune.errors import UserError

    config, _ = checkpoints.load(demo.pretrained_model())
    assert (config.vocab_size, config.emb_dim, config.num_encoder_layers) == (384, 64, 2)
    size = sum(
        os.path.getsize(os.path.join(d, f))
        for d, _, names in os.walk(demo.PRETRAINED_MODEL)
        for f in names
    )
    assert size <= 10 * 2**20  # the limit for a model in the repository
    monkeypatch.setattr(demo, "PRETRAINED_MODEL", str(tmp_path / "model"))
    with pytest.raises(UserError, match="make pretrain-demo"):
        demo.pretrained_model()
