"""Postprocessors and metrics against values worked out by hand (no model, no vocabulary)."""

import random

import numpy as np
import pytest

from ptune.tasks import metrics, postprocessors


def test_class_id_maps_label_names_and_invalid_to_minus_one():
    post = postprocessors.class_id(("entailment", "contradiction", "neutral"))
    assert post("neutral") == 2
    assert post(b"entailment") == 0
    assert post("Neutral") == -1
    assert post("") == -1
    assert post("entailment.", example={}, is_target=False) == -1


def test_accuracy_counts_invalid_as_wrong():
    assert metrics.accuracy([0, 1, 1, 0], [0, 1, -1, 1]) == {"accuracy": 50.0}


def test_cb_mean_f1_over_three_classes():
    targets = [0, 0, 1, 2, 2, 2]
    predictions = [0, 1, 1, 2, 2, -1]
    # class 0: TP 1 FN 1 -> 2/3; class 1: TP 1 FP 1 -> 2/3; class 2: TP 2 FN 1 -> 4/5.
    result = metrics.mean_multiclass_f1(3)(targets, predictions)
    assert result == {"mean_3class_f1": pytest.approx(100 * (2 / 3 + 2 / 3 + 4 / 5) / 3)}
    # A class neither true nor predicted scores 0 (as scikit-learn's macro F1 did for T5).
    assert metrics.mean_multiclass_f1(3)([0, 1], [0, 1]) == {
        "mean_3class_f1": pytest.approx(200 / 3)
    }


def test_f1_with_invalid_predictions_counted_wrong():
    # Invalid predictions become the wrong class: [1, 1, 0, 0] -> TP 1, FP 1, FN 2.
    assert metrics.f1_score_with_invalid([1, 0, 1, 1], [1, -1, 0, 5]) == {"f1": pytest.approx(40.0)}
    assert metrics.f1_score_with_invalid([0, 0], [0, 0]) == {"f1": 0.0}


def test_multirc_f1a_and_grouped_exact_match():
    def t(value, group):
        return {"value": value, "group": group}

    targets = [t(1, (0, 0)), t(0, (0, 0)), t(1, (0, 0)), t(0, (0, 1)), t(1, (0, 1))]
    predictions = [{"value": v} for v in (1, 0, 1, 1, 1)]
    # Over all answers: TP 3, FP 1, FN 0 -> 6/7. Per question: (0,0) all right, (0,1) not.
    assert metrics.multirc_f1_over_all_answers(targets, predictions) == {
        "f1": pytest.approx(600 / 7)
    }
    em = metrics.mean_group_metric(metrics.all_match)(targets, predictions)
    assert em == {"exact_match": pytest.approx(50.0)}
    # An invalid prediction (-1) is wrong for F1 and breaks its question's exact match.
    predictions[0] = {"value": -1}
    assert metrics.mean_group_metric(metrics.all_match)(targets, predictions) == {
        "exact_match": 0.0
    }
    # Predictions become [0, 0, 1, 1, 1]: TP 2, FP 1, FN 1 -> 2/3.
    assert metrics.multirc_f1_over_all_answers(targets, predictions) == {
        "f1": pytest.approx(200 / 3)
    }


def test_multirc_postprocessor_groups_by_paragraph_and_question():
    example = {"idx/paragraph": np.int32(2), "idx/question": np.int32(7), "idx/answer": np.int32(1)}
    assert postprocessors.multirc("True", example=example, is_target=True) == {
        "value": 1,
        "group": (2, 7),
    }
    assert postprocessors.multirc("maybe", example=example, is_target=False) == {"value": -1}


def test_squad_normalisation_and_max_over_answers():
    assert metrics.normalize_squad("The  Quick, brown-fox!") == "quick brownfox"
    assert metrics.normalize_squad("An apple a day") == "apple day"
    result = metrics.squad(
        [["Denver Broncos", "the Broncos"], ["Paris"]], ["broncos", "in Paris, France"]
    )
    # Ex 1: "broncos" == "broncos" (second answer): EM 1, F1 1. Ex 2: EM 0, F1 P=1/3 R=1 -> 1/2.
    assert result == {"em": pytest.approx(50.0), "f1": pytest.approx(75.0)}
    assert metrics.squad([[]], ["anything"]) == {"em": 0.0, "f1": 0.0}


def test_record_takes_best_answer_and_counts_each_query_once():
    targets = [
        {"value": ["The harbour", "harbour"], "group": (0, 0)},
        {"value": ["The harbour", "harbour"], "group": (0, 0)},
        {"value": ["Ships"], "group": (0, 1)},
    ]
    predictions = [{"value": "the Harbour!"}, {"value": "nothing"}, {"value": "ships waiting"}]
    # Query (0,0): EM 1, F1 1 (duplicate ignored). Query (0,1): EM 0, F1 P=1/2 R=1 -> 2/3.
    assert metrics.record(targets, predictions) == {
        "em": pytest.approx(50.0),
        "f1": pytest.approx(100 * (1 + 2 / 3) / 2),
    }


def test_record_postprocessor():
    example = {"answers": np.array([b"The harbour", b"harbour"]), "idx/passage": 3, "idx/query": 4}
    assert postprocessors.record("x", example=example, is_target=True) == {
        "value": ["The harbour", "harbour"],
        "group": (3, 4),
    }
    assert postprocessors.record("harbour", example=example) == {"value": "harbour"}


def test_qa_postprocessor_returns_all_answers_for_targets():
    example = {"answers": np.array([b"Denver Broncos", b"Broncos"])}
    assert postprocessors.qa("Broncos", example=example, is_target=True) == [
        "Denver Broncos",
        "Broncos",
    ]
    assert postprocessors.qa("Broncos", example=example, is_target=False) == "Broncos"


@pytest.mark.parametrize(
    "prediction,referent,expected",
    [
        ("Dog", "the dog", 1),  # case and determiners ignored
        ("the cat", "the dog", 0),
        ("fuzzy bunny", "bunny", 1),  # one word set contains the other
        ("bunny", "the fuzzy bunny", 1),
        ("Bob", "Bob's hat", 0),  # a possessive never matches a plain noun
        # Nothing left after dropping case and determiners: -1, wrong whatever the label.
        ("", "the dog", -1),
        ("  ", "the dog", -1),
        ("The", "the dog", -1),
        ("an", "an apple", -1),
        ("their these", "the dog", -1),
    ],
)
def test_wsc_simple_matching(prediction, referent, expected):
    example = {"targets_pretokenized": referent.encode(), "label": np.int32(1)}
    assert postprocessors.wsc_simple(prediction, example=example, is_target=False) == expected
    assert postprocessors.wsc_simple(referent, example=example, is_target=True) == 1


def test_wsc_empty_prediction_is_wrong_on_a_wrong_candidate():
    # The candidate "the cat" is not the referent (label 0): saying nothing must not score.
    example = {"targets_pretokenized": b"the cat", "label": np.int32(0)}
    target = postprocessors.wsc_simple("the cat", example=example, is_target=True)
    predictions = [postprocessors.wsc_simple(p, example=example) for p in ("", "the", "cat")]
    assert [metrics.accuracy([target], [p]) for p in predictions] == [
        {"accuracy": 0.0},
        {"accuracy": 0.0},
        {"accuracy": 0.0},
    ]
    assert metrics.accuracy([target], [postprocessors.wsc_simple("a dog", example=example)]) == {
        "accuracy": 100.0
    }


def test_matthews_correlation_binary_and_with_invalid_predictions():
    # TP 2, TN 2, FP 1, FN 1: (2*2 - 1*1) / sqrt(3*3*3*3) = 1/3.
    assert metrics.matthews_corrcoef([1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 1]) == {
        "matthews_corrcoef": pytest.approx(100 / 3)
    }
    # An invalid prediction (-1) is its own class, as scikit-learn counts it: confusion
    # (true 1: pred 1 once, pred -1 once; true 0: pred 0 twice); c=3, s=4, t=(0,2,2), p=(1,2,1):
    # (3*4 - 6) / sqrt((16 - 6) * (16 - 8)) = 6 / sqrt(80).
    assert metrics.matthews_corrcoef([1, 1, 0, 0], [1, -1, 0, 0]) == {
        "matthews_corrcoef": pytest.approx(100 * 6 / 80**0.5)
    }
    # A single predicted class leaves nothing to correlate: 0, not NaN.
    assert metrics.matthews_corrcoef([1, 0, 1], [1, 1, 1]) == {"matthews_corrcoef": 0.0}


def test_pearson_and_spearman_correlations():
    # Pearson: deviations (-1, 0, 1) and (-4/3, -1/3, 5/3): 3 / sqrt(2 * 42/9) = 9 / sqrt(84).
    assert metrics.pearson_corrcoef([1.0, 2.0, 3.0], [1.0, 2.0, 4.0]) == {
        "pearson_corrcoef": pytest.approx(100 * 9 / 84**0.5)
    }
    assert metrics.spearman_corrcoef([1.0, 2.0, 3.0], [1.0, 2.0, 4.0]) == {
        "spearman_corrcoef": pytest.approx(100.0)
    }
    # Tied predictions share rank 1.5: ranks (1, 2, 3, 4) vs (1.5, 1.5, 3, 4) -> 4.5 / sqrt(22.5).
    assert metrics.spearman_corrcoef([1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 2.0, 3.0]) == {
        "spearman_corrcoef": pytest.approx(100 * 4.5 / 22.5**0.5)
    }
    # One pair has no correlation: NaN rather than scipy's exception, so evaluation goes on.
    assert np.isnan(metrics.pearson_corrcoef([1.0], [2.0])["pearson_corrcoef"])
    assert np.isnan(metrics.spearman_corrcoef([1.0], [2.0])["spearman_corrcoef"])


@pytest.mark.parametrize(
    "text,expected",
    [("3.8", 3.8), (b"0.0", 0.0), (" 4.2 ", 4.2), ("5", 5.0), ("3.8 out of 5", -1.0), ("", -1.0)],
)
def test_string_to_float_as_t5(text, expected):
    assert postprocessors.string_to_float(text) == expected


def test_rank_classification_picks_highest_score_in_any_order():
    rows = [
        (((0, 0), False, 1.0, 2), -3.0),
        (((0, 1), True, 1.0, 2), -1.0),  # ex 0: picks 1, right
        (((1, 0), True, 1.0, 2), -1.0),
        (((1, 1), False, 1.0, 2), -0.5),  # ex 1: picks 1, wrong
        (((2, 0), True, 1.0, 2), -0.2),
        (((2, 1), False, 1.0, 2), -4.0),  # ex 2: picks 0, right
    ]
    random.Random(0).shuffle(rows)
    targets, scores = zip(*rows)
    # True classes [1, 0, 0], predicted [1, 1, 0]: class-1 F1 = 2 / (2 + 1) .
    result = metrics.rank_classification(list(targets), list(scores), num_classes=2)
    assert result == {"accuracy": pytest.approx(200 / 3), "f1": pytest.approx(200 / 3)}
    three = metrics.rank_classification_metric(3)
    targets = [((0, k), k == 2, 1.0, 1) for k in range(3)]
    assert three(targets, [-5.0, -4.0, -1.0]) == {
        "accuracy": 100.0,
        "mean_3class_f1": pytest.approx(100 / 3),
    }


def test_rank_classification_postprocessor():
    example = {
        "idx": np.array([4, 1]),
        "is_correct": np.True_,
        "weight": np.float32(1),
        "targets": np.array([10998, 1]),
    }
    assert postprocessors.rank_classification(None, example=example, is_target=True) == (
        (4, 1),
        True,
        1.0,
        2,
    )
    assert postprocessors.rank_classification(-2.5, example=example) == -2.5


def test_sentinel_is_stripped_before_the_wrapped_postprocessor():
    post = postprocessors.strip_sentinel(postprocessors.class_id(("False", "True")))
    assert post("<extra_id_0> True") == 1
    assert post("<extra_id_0>False") == 0
    assert post("True") == 1
    assert postprocessors.strip_sentinel(None)("<extra_id_0> Mark") == "Mark"


def test_relabel_translates_predictions_only():
    to_mrpc = postprocessors.relabel(
        {"duplicate": "equivalent"}, postprocessors.class_id(("not_equivalent", "equivalent"))
    )
    assert to_mrpc("duplicate") == 1
    assert to_mrpc("not_duplicate") == 0
    assert to_mrpc("equivalent") == 1
    assert to_mrpc("maybe") == -1
    assert to_mrpc("not_equivalent", example={}, is_target=True) == 0
