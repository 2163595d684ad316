"""SuperGLUE tasks: exact T5 strings from TFDS-shaped records, through the registered pipelines.

Expected strings are written out by hand from T5's format (task word, then `key: value` pairs in
T5's order), not produced by the code under test.
"""

import numpy as np
import pytest
import seqio
import tensorflow as tf
from superglue_records import (
    AXB,
    AXG,
    BOOLQ,
    CB,
    COPA,
    MULTIRC,
    RECORD,
    RECORD_TEXT,
    RTE,
    WIC,
    WSC,
    WSC_TEXT,
)
from task_support import evaluate, run, run_all, texts

from ptune.tasks import preprocessors, registry, superglue

pytestmark = pytest.mark.usefixtures("t5_vocab")


def test_multirc_keeps_its_grouping_ids():
    ex = run("taskless_super_glue_multirc_v102", MULTIRC)
    assert (ex["idx/paragraph"], ex["idx/question"], ex["idx/answer"]) == (3, 11, 2)


def test_record_gives_one_example_per_answer_with_all_answers():
    out = run_all("super_glue_record_v102", [RECORD], "train")
    assert [texts(ex) for ex in out] == [
        (f"record {RECORD_TEXT}", "The harbour"),
        (f"record {RECORD_TEXT}", "harbour"),
    ]
    for ex in out:
        assert [a.decode() for a in ex["answers"]] == ["The harbour", "harbour"]
        assert (ex["idx/passage"], ex["idx/query"]) == (5, 9)
    taskless = run_all("taskless_super_glue_record_v102", [RECORD], "train")
    assert [texts(ex)[0] for ex in taskless] == [RECORD_TEXT, RECORD_TEXT]


def test_record_highlight_after_punctuation_and_test_split_without_answers():
    record = dict(
        RECORD,
        passage='He said "go."\n@highlight\nThey went!\n@highlight\nDone',
        answers=np.array([], dtype=object),
    )
    [ex] = run_all("taskless_super_glue_record_v102", [record], "test")
    assert texts(ex) == (
        (
            "query: @placeholder stayed shut all day. entities: Ships, The harbour, harbour "
            'passage: He said "go." They went! Done'
        ),
        "<unk>",
    )
    assert list(ex["answers"]) == []


def test_wsc_trains_only_on_correct_referents_but_evaluates_all():
    wrong = dict(WSC, span1_text="Pete", span1_index=2, label=0)
    trained = run_all("super_glue_wsc_v102_simple_train", [wrong, WSC], "train")
    assert [texts(ex) for ex in trained] == [(f"wsc: {WSC_TEXT}", "Mark")]
    out = run_all("super_glue_wsc_v102_simple_eval", [wrong, WSC], "validation")
    assert [texts(ex)[1] for ex in out] == ["Pete", "Mark"]
    assert [int(ex["label"]) for ex in out] == [0, 1]


def test_wsc_hand_fixed_text_and_test_label():
    record = {
        "text": "The boy continued to whip the pony , and eventually the pony threw him over. "
        'John laughed out quite loud. "Good for him," he said. ',
        "span1_index": 1,
        "span2_index": 99,  # wrong in the data; T5 fixed this text by hand
        "span1_text": "boy",
        "span2_text": "him",
        "label": -1,
        "idx": 7,
    }
    ex = run("taskless_super_glue_wsc_v102_simple_eval", record, "test")
    assert texts(ex) == (
        (
            "The boy continued to whip the pony , and eventually the pony threw him over. "
            'John laughed out quite loud. "Good for *him* ," he said.'
        ),
        "boy",
    )


def test_wsc_mixture_trains_on_train_task_and_evaluates_eval_task():
    mixture = seqio.get_mixture_or_task("taskless_super_glue_wsc_v102")
    assert sorted(t.name for t in mixture.tasks) == [
        "taskless_super_glue_wsc_v102_simple_eval",
        "taskless_super_glue_wsc_v102_simple_train",
    ]
    assert registry.label_names("taskless_super_glue_wsc_v102") is None


def test_dpr_simple():
    record = {
        "sentence": "Bob asked Tom if he can lend some money.",
        "pronoun": "he",
        "candidates": ["Bob", "Tom"],
        "label": 1,
    }
    assert texts(run("dpr_v001_simple", record, "train")) == (
        "wsc: Bob asked Tom if *he* can lend some money.",
        "Tom",
    )
    assert texts(run("taskless_dpr_v001_simple", record, "train")) == (
        "Bob asked Tom if *he* can lend some money.",
        "Tom",
    )


def test_test_split_label_minus_one_becomes_unk():
    ex = run("taskless_super_glue_boolq_v102", dict(BOOLQ, label=-1), "test")
    assert texts(ex)[1] == "<unk>"
    ranked = run_all(
        "taskless_super_glue_boolq_v102_rank_classification", [dict(BOOLQ, label=-1)], "test"
    )
    assert [bool(ex["is_correct"]) for ex in ranked] == [False, False]


def test_sentinel_variant_appends_and_prepends_extra_id_0():
    plain = run("super_glue_rte_v102", RTE)
    ex = run("super_glue_rte_v102_1_sentinel", RTE)
    assert texts(ex) == texts(plain)
    assert list(ex["inputs"]) == list(plain["inputs"][:-1]) + [32099, 1]
    assert list(ex["targets"]) == [32099] + list(plain["targets"])
    # Truncation keeps the sentinel and EOS and counts what it cut.
    short = run("super_glue_rte_v102_1_sentinel", RTE, sequence_length={"inputs": 6, "targets": 8})
    assert list(short["inputs"]) == list(plain["inputs"][:4]) + [32099, 1]
    assert short["inputs_truncated"] == len(plain["inputs"]) - 5
    assert short["targets_truncated"] == 0
    # The sentinel is stripped before the label is read.
    post = seqio.get_mixture_or_task("super_glue_rte_v102_1_sentinel").postprocessor
    assert post("<extra_id_0> not_entailment", example=ex, is_target=False) == 1
    assert post("not_entailment", example=ex, is_target=True) == 1


def test_wsc_sentinel_names_follow_t5():
    for name in (
        "super_glue_wsc_v102_simple_1_sentinel_train",
        "taskless_super_glue_wsc_v102_simple_1_sentinel_eval",
    ):
        assert name in registry.list_tasks()


@pytest.mark.parametrize("config", list(superglue.GLUE_STYLE))
def test_rank_classification_scores_every_label(config):
    record = {"boolq": BOOLQ, "cb": CB, "copa": COPA, "multirc": MULTIRC, "rte": RTE, "wic": WIC,
              "axb": AXB, "axg": AXG}[config]  # fmt: skip
    split = "test" if config in ("axb", "axg") else "validation"
    name = f"taskless_super_glue_{config}_v102_rank_classification"
    out = run_all(name, [record], split)
    labels = registry.label_names(name)
    generative = run(f"taskless_super_glue_{config}_v102", record, split)
    assert [texts(ex) for ex in out] == [(texts(generative)[0], label) for label in labels]
    assert [tuple(ex["idx"]) for ex in out] == [(0, k) for k in range(len(labels))]
    assert [bool(ex["is_correct"]) for ex in out] == [
        k == record["label"] for k in range(len(labels))
    ]


@pytest.mark.parametrize("prefix", ["", "taskless_"])
def test_rank_classification_trains_on_the_correct_choice_only(prefix):
    copa = dict(COPA, label=1, idx=1)
    name = f"{prefix}super_glue_copa_v102_rank_classification"
    train = run_all(name, [COPA, copa, dict(COPA, label=-1, idx=2)], "train")
    # One example per labelled record, its correct choice; none for an unlabelled one.
    assert [texts(ex)[1] for ex in train] == ["choice1", "choice2"]
    assert [bool(ex["is_correct"]) for ex in train] == [True, True]
    assert [tuple(ex["idx"]) for ex in train] == [(0, 0), (1, 1)]
    evaluated = run_all(name, [COPA, copa], "validation")
    assert [texts(ex)[1] for ex in evaluated] == ["choice1", "choice2", "choice1", "choice2"]


def test_rank_classification_metric_end_to_end():
    records = [dict(BOOLQ, label=1, idx=0), dict(BOOLQ, label=0, idx=1)]
    # Candidates in order (ex0: False, True), (ex1: False, True); picks True then True.
    metrics = evaluate(
        "taskless_super_glue_boolq_v102_rank_classification",
        records,
        scores=[-3.0, -1.0, -2.0, -0.5],
    )
    assert metrics["accuracy"] == pytest.approx(50.0)
    assert metrics["f1"] == pytest.approx(100 * 2 / 3)


def test_cb_metrics_end_to_end_with_invalid_prediction():
    records = [dict(CB, label=0), dict(CB, label=1), dict(CB, label=2)]
    metrics = evaluate(
        "taskless_super_glue_cb_v102", records, predictions=["entailment", "maybe", "neutral"]
    )
    # Per-class F1: entailment 1, contradiction 0 (never predicted), neutral 1.
    assert metrics["mean_3class_f1"] == pytest.approx(200 / 3)
    assert metrics["accuracy"] == pytest.approx(200 / 3)


def test_multirc_metrics_end_to_end_group_by_question():
    def answer(question, answer_idx, label):
        return dict(
            MULTIRC, label=label, idx={"paragraph": 0, "question": question, "answer": answer_idx}
        )

    records = [answer(0, 0, 1), answer(0, 1, 0), answer(1, 2, 1), answer(1, 3, 1)]
    metrics = evaluate(
        "taskless_super_glue_multirc_v102", records, predictions=["True", "False", "True", "False"]
    )
    # F1a over answers: TP 2, FP 0, FN 1 -> 0.8; EM: question 0 right, question 1 wrong.
    assert metrics["f1"] == pytest.approx(80.0)
    assert metrics["exact_match"] == pytest.approx(50.0)


def test_record_metric_end_to_end_counts_each_query_once():
    other = dict(RECORD, answers=["Ships"], idx={"passage": 5, "query": 10})
    # Examples: query 9 twice (one per answer), query 10 once.
    metrics = evaluate(
        "taskless_super_glue_record_v102",
        [RECORD, other],
        predictions=["the Harbour!", "nothing", "ships waiting"],
    )
    assert metrics["em"] == pytest.approx(50.0)
    assert metrics["f1"] == pytest.approx(100 * (1 + 2 / 3) / 2)


def test_wsc_metric_end_to_end():
    wrong = dict(WSC, span1_text="Pete", span1_index=2, label=0)
    metrics = evaluate(
        "taskless_super_glue_wsc_v102_simple_eval", [WSC, wrong], predictions=["mark", "Mark"]
    )
    assert metrics["accuracy"] == pytest.approx(100.0)


def test_missing_field_names_task_and_field():
    record = {k: v for k, v in BOOLQ.items() if k != "passage"}
    with pytest.raises(
        ValueError, match=r"taskless_super_glue_boolq_v102: record is missing field 'passage'"
    ):
        run("taskless_super_glue_boolq_v102", record)
    record = dict(MULTIRC, idx={"paragraph": 0, "answer": 1})
    with pytest.raises(ValueError, match=r"super_glue_multirc_v102: .* field 'idx/question'"):
        run("super_glue_multirc_v102", record)


def test_empty_and_non_ascii_strings_pass():
    ex = run("taskless_super_glue_boolq_v102", dict(BOOLQ, question="", passage=""))
    assert texts(ex) == ("passage:  question: ", "True")
    premise = "Der Bär aß Crème brûlée — 美味しい."
    ex = run("super_glue_cb_v102", dict(CB, premise=premise))
    assert texts(ex)[0] == f"cb hypothesis: the language was peeled down premise: {premise}"
    assert ex["inputs"][-1] == 1 and len(ex["inputs"]) > 10


def test_overlong_inputs_are_truncated_with_a_count():
    long = dict(BOOLQ, passage=" ".join(["word"] * 600))
    lengths = {"inputs": 32, "targets": 4}
    out = run_all("taskless_super_glue_boolq_v102", [long, BOOLQ], sequence_length=lengths)
    full = run("taskless_super_glue_boolq_v102", long)
    fits = run("taskless_super_glue_boolq_v102", BOOLQ)
    assert list(out[0]["inputs"]) == list(full["inputs"][:31]) + [1]
    assert out[0]["inputs_truncated"] == len(full["inputs"]) - 32
    assert list(out[1]["inputs"]) == list(fits["inputs"]) and out[1]["inputs_truncated"] == 0
    counts = {k: [ex[k] for ex in out] for k in ("inputs_truncated", "targets_truncated")}
    assert preprocessors.count_truncated(tf.data.Dataset.from_tensor_slices(counts)) == (
        2,
        {
            "inputs": {"examples": 1, "tokens": len(full["inputs"]) - 32},
            "targets": {"examples": 0, "tokens": 0},
        },
    )


def test_mixtures_use_t5_rates():
    mixture = seqio.get_mixture_or_task("taskless_super_glue_v102_proportional")
    rates = {t.name: mixture.get_rate(t) for t in mixture.tasks}
    assert rates["taskless_super_glue_record_v102"] == 138_854
    assert rates["taskless_super_glue_cb_v102"] == 250
    assert rates["taskless_super_glue_wsc_v102_simple_train"] == 259
    assert rates["taskless_dpr_v001_simple"] == 1_322
    assert rates["taskless_super_glue_axb_v102"] == 0
    assert len(rates) == 12
    sentinel = seqio.get_mixture_or_task("super_glue_v102_proportional_sentinel")
    assert {t.name for t in sentinel.tasks} == {
        registry.sentinel_name(n) for n in superglue.MIXING_RATES
    }
