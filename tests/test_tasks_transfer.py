"""Domain-transfer tasks: SQuAD -> MRQA, QQP <-> MRPC, from TFDS-shaped records."""

import pytest
import seqio
from task_support import evaluate, run, run_all, texts
from transfer_records import (
    MRPC,
    MRQA_BIOASQ,
    QQP,
    SQUAD,
)

from ptune.tasks import mrqa, registry

pytestmark = pytest.mark.usefixtures("t5_vocab")


def test_squad_pads_punctuation_and_keeps_all_answers():
    ex = run("squad_v010_allanswers", SQUAD)
    assert texts(ex) == (
        (
            "question: What is the school ' s character ? context: Architecturally , the school "
            "has a Catholic character . "
        ),
        "a Catholic character",
    )
    assert [a.decode() for a in ex["answers"]] == ["a Catholic character", "Catholic"]


def test_squad_metric_end_to_end():
    other = dict(SQUAD, id="x2", answers={"text": ["Paris"], "answer_start": [0]})
    metrics = evaluate(
        "squad_v010_allanswers", [SQUAD, other], predictions=["Catholic", "in Paris, France"]
    )
    # Ex 1 matches its second answer; ex 2: EM 0, token F1 P=1/3 R=1 -> 1/2.
    assert metrics == {"em": pytest.approx(50.0), "f1": pytest.approx(75.0)}


@pytest.mark.parametrize("name", mrqa.MRQA_SETS)
def test_mrqa_sets_read_tfds_test_split_as_validation_in_squad_format(name):
    task = seqio.get_mixture_or_task(f"mrqa_{name}_v100")
    assert task.splits == ("validation",)
    assert task.source.tfds_name == f"mrqa/{name}:1.0.0"
    ex = run(f"mrqa_{name}_v100", MRQA_BIOASQ)
    assert texts(ex) == (
        "question: What does hepcidin regulate ? context: Hepcidin regulates iron ( Fe ) absorption . ",
        "iron ( Fe ) absorption",
    )
    assert [a.decode() for a in ex["answers"]] == ["iron ( Fe ) absorption", "iron"]
    mixture = seqio.get_mixture_or_task(f"squad_to_{name}")
    assert sorted(t.name for t in mixture.tasks) == [f"mrqa_{name}_v100", "squad_v010_allanswers"]


def test_squad_to_mrqa_mixture_holds_all_six():
    mixture = seqio.get_mixture_or_task("squad_to_mrqa")
    assert len(mixture.tasks) == 7


@pytest.mark.parametrize(
    "name,record,text,target",
    [
        ("qqp", QQP, "question1: How do I learn Python? question2: What is the best way to learn Python?", "duplicate"),
        ("mrpc", MRPC, "sentence1: Amrozi accused his brother. sentence2: Referring to him as the witness, Amrozi accused his brother.", "equivalent"),
    ],
)  # fmt: skip
def test_glue_pair_formats(name, record, text, target):
    assert texts(run(f"glue_{name}_v200", record)) == (f"{name} {text}", target)
    assert texts(run(f"taskless_glue_{name}_v200", record)) == (text, target)
    assert texts(run(f"glue_{name}_v200", dict(record, label=0)))[1] == "not_" + target


def test_mrpc_from_qqp_reads_qqp_words_and_scores_accuracy_and_f1():
    name = "taskless_glue_mrpc_from_qqp_v200"
    assert texts(run(name, MRPC)) == texts(run("taskless_glue_mrpc_v200", MRPC))
    records = [dict(MRPC, label=1), dict(MRPC, label=0, idx=1), dict(MRPC, label=1, idx=2)]
    metrics = evaluate(name, records, predictions=["duplicate", "not_duplicate", "no idea"])
    # Predictions [1, 0, invalid -> wrong]: accuracy 2/3; F1 of class 1: TP 1, FN 1 -> 2/3.
    assert metrics == {"accuracy": pytest.approx(200 / 3), "f1": pytest.approx(200 / 3)}
    assert registry.label_names(name) == ["not_duplicate", "duplicate"]


def test_qqp_from_mrpc_and_zero_shot_mixtures():
    metrics = evaluate("glue_qqp_from_mrpc_v200", [QQP], predictions=["equivalent"])
    assert metrics == {"accuracy": 100.0, "f1": 100.0}
    for prefix in ("glue_", "taskless_glue_"):
        for src, tgt in (("qqp", "mrpc"), ("mrpc", "qqp")):
            mixture = seqio.get_mixture_or_task(f"{prefix}{tgt}_from_{src}_zeroshot_v200")
            assert sorted(t.name for t in mixture.tasks) == sorted(
                [f"{prefix}{src}_v200", f"{prefix}{tgt}_from_{src}_v200"]
            )
    # The cross-evaluation tasks only have the target's validation split: nothing to train on.
    assert seqio.get_mixture_or_task("glue_mrpc_from_qqp_v200").splits == ("validation",)


def test_glue_rank_classification():
    out = run_all("taskless_glue_qqp_v200_rank_classification", [QQP])
    assert [texts(ex)[1] for ex in out] == ["not_duplicate", "duplicate"]
    assert [bool(ex["is_correct"]) for ex in out] == [False, True]
