"""GLUE tasks: T5's exact strings and ids, read from files in the official GLUE layout and from
TFDS-shaped records; STS-B's rounding and regression postprocessor; T5's GLUE metrics.

Expected strings are written out by hand from T5's format (task word, then `key: value` pairs
with the keys sorted; STS-B's score rounded to a multiple of 0.2), not produced by the code under
test. The TSV files below copy the layout of the official GLUE download, header rows included.
"""

import numpy as np
import pytest
import seqio
from glue_records import (
    BASES,
    CASES,
    RELEASE,
    STSB_HEAD,
)
from task_support import evaluate, run, run_all, texts

from ptune.errors import UserError
from ptune.tasks import glue_files, registry, sources

pytestmark = pytest.mark.usefixtures("t5_vocab")


@pytest.fixture
def glue_dir(tmp_path):
    for path, text in RELEASE.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text, encoding="utf-8")
    sources.set_glue_dir(str(tmp_path))
    yield tmp_path
    sources.set_glue_dir(None)


@pytest.mark.parametrize("config,split,path,records", [c[:4] for c in CASES])
def test_official_tsv_reads_as_tfds_records(glue_dir, config, split, path, records):
    assert glue_files.relative_path(config, split) == path
    assert glue_files.read(str(glue_dir / path), config, split) == records


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_official_tsv_gives_t5_strings_in_both_forms(glue_dir, case):
    config, split, _, records, text, word, target = case
    for prefix, inputs in (("glue_", f"{word} {text}"), ("taskless_glue_", text)):
        task = seqio.get_mixture_or_task(f"{prefix}{config}_v200")
        examples = list(task.get_dataset(split=split, shuffle=False).as_numpy_iterator())
        assert len(examples) == len(records)
        assert texts(examples[0]) == (inputs, target)


def test_exact_token_ids(glue_dir):
    task = seqio.get_mixture_or_task("glue_sst2_v200")
    [ex] = task.get_dataset(split="validation", shuffle=False).as_numpy_iterator()
    # T5's SentencePiece pieces: "▁" "s" "s" "t" "2" "▁sentence" ":" "▁it" "▁" "'" "s" "▁" "a"
    # "▁charming" "▁and" "▁often" "▁" "affecting" "▁journey" "▁" "." then EOS; "▁positive".
    assert list(ex["inputs"]) == [3, 7, 7, 17, 357, 7142, 10, 34, 3, 31, 7, 3, 9, 12216, 11, 557, 3, 13403, 2027, 3, 5, 1]  # fmt: skip
    assert list(ex["targets"]) == [1465, 1]
    ex = run("taskless_glue_rte_v200", BASES["rte"][0])
    assert list(ex["targets"]) == [59, 834, 35, 5756, 297, 1]  # "not_entailment"


def test_mnli_splits_follow_tfds(glue_dir):
    assert seqio.get_mixture_or_task("glue_mnli_v200").splits == (
        "train", "validation_matched", "validation_mismatched", "test_matched", "test_mismatched",
    )  # fmt: skip
    task = seqio.get_mixture_or_task("taskless_glue_mnli_v200")
    [matched] = task.get_dataset(split="validation_matched", shuffle=False).as_numpy_iterator()
    [test] = task.get_dataset(split="test_mismatched", shuffle=False).as_numpy_iterator()
    assert texts(matched)[1] == "neutral"
    assert texts(test) == ("hypothesis: You decided. premise: What have you decided?", "<unk>")
    assert seqio.get_mixture_or_task("glue_mnli_matched_v200").splits == ("validation", "test")
    assert seqio.get_mixture_or_task("glue_ax_v200").splits == ("test",)


@pytest.mark.parametrize(
    "path,content,message",
    [
        ("SST-2/dev.tsv", "sentence\tlabel\ngood .\t1\nbad .\n", r"SST-2/dev.tsv:3: 1 tab-separated fields where 2 are expected \(sentence, label\)"),
        ("SST-2/dev.tsv", "sentence\tlabel\ngood .\tpos\n", r"SST-2/dev.tsv:2: label 'pos' is not one of negative, positive or a class number 0-1"),
        ("RTE/dev.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentails\n", r"RTE/dev.tsv:2: label 'entails' is not one of"),
        ("QQP/dev.tsv", "id\tquestion1\tquestion2\tis_duplicate\n0\ta\tb\t2\n", r"QQP/dev.tsv:2: label '2' is not one of not_duplicate, duplicate"),
        ("STS-B/dev.tsv", f"{STSB_HEAD}\tscore\n0\tg\tf\ty\to\ts\ts\ta\tb\thigh\n", r"STS-B/dev.tsv:2: score 'high' is not a number"),
        ("QNLI/dev.tsv", "index\tquestion\tsentence\n0\ta\tb\n", r"QNLI/dev.tsv: no column 'label' in the header \(index, question, sentence\)"),
        ("CoLA/dev.tsv", "gj04\t1\tThe sailors rode.\n", r"CoLA/dev.tsv:1: 3 tab-separated fields where 4 are expected"),
    ],
)  # fmt: skip
def test_bad_tsv_rows_are_one_error_naming_file_and_line(glue_dir, path, content, message):
    (glue_dir / path).write_text(content, encoding="utf-8")
    config = {
        "SST-2": "sst2",
        "RTE": "rte",
        "QQP": "qqp",
        "STS-B": "stsb",
        "QNLI": "qnli",
        "CoLA": "cola",
    }[path.split("/")[0]]
    task = seqio.get_mixture_or_task(f"glue_{config}_v200")
    with pytest.raises(UserError, match=message) as error:
        task.get_dataset(split="validation", shuffle=False)
    assert "\n" not in str(error.value)


def test_check_task_data_for_the_glue_directory(glue_dir, tmp_path):
    sources.check_task_data("glue_sst2_v200")
    # QNLI, RTE and WNLI ship train.tsv and test.tsv too; here only dev.tsv exists.
    with pytest.raises(UserError) as error:
        sources.check_task_data("taskless_glue_v200_proportional", splits=["train", "validation"])
    assert str(error.value) == (
        "data for taskless_glue_v200_proportional is missing: "
        f"{glue_dir / 'QNLI' / 'train.tsv'} (GLUE qnli); {glue_dir / 'RTE' / 'train.tsv'} (GLUE rte)"
    )
    sources.check_task_data("glue_rte_v200", splits=["validation"])
    sources.set_glue_dir(str(tmp_path / "missing"))
    with pytest.raises(
        UserError, match=r"the --glue_dir / PTUNE_GLUE_DIR directory .*missing does not exist"
    ):
        sources.check_task_data("glue_rte_v200")


@pytest.mark.parametrize(
    "score,target",
    [
        (5.0, "5.0"),
        (0.0, "0.0"),
        (1.8, "1.8"),
        (3.9, "4.0"),
        (2.5, "2.4"),
        (0.7, "0.8"),
        (4.5, "4.4"),
    ],
)
def test_stsb_target_is_the_score_rounded_to_a_fifth_half_to_even(score, target):
    # T5: tf.round(label * 5) / 5 on the float32 label, one decimal. Products at .5 round to
    # even: 2.5 * 5 = 12.5 -> 12 -> "2.4"; 0.7 * 5 = 3.5 in float32 -> 4 -> "0.8".
    record = dict(BASES["stsb"][0], label=np.float32(score))
    assert texts(run("glue_stsb_v200", record))[1] == target


def test_stsb_scores_pearson_and_spearman_of_parsed_floats():
    records = [
        dict(BASES["stsb"][0], label=np.float32(s), idx=i) for i, s in enumerate((1.0, 2.0, 3.0))
    ]
    metrics = evaluate("taskless_glue_stsb_v200", records, predictions=["1.0", "2.0", "4.0"])
    # Pearson of (1, 2, 3) and (1, 2, 4): 9 / sqrt(84); the ranks agree exactly.
    assert metrics == {
        "pearson_corrcoef": pytest.approx(100 * 9 / 84**0.5),
        "spearman_corrcoef": pytest.approx(100.0),
    }
    post = seqio.get_mixture_or_task("glue_stsb_v200").postprocessor
    assert post("3.8", example={}, is_target=False) == 3.8
    assert post("very similar", example={}, is_target=False) == -1.0


def test_cola_scores_matthews_correlation_with_invalid_predictions():
    sentence = BASES["cola"][0]["sentence"]
    records = [
        {"sentence": sentence, "label": label, "idx": i} for i, label in enumerate((1, 1, 0, 0))
    ]
    metrics = evaluate(
        "glue_cola_v200",
        records,
        predictions=["acceptable", "fine", "unacceptable", "unacceptable"],
    )
    # "fine" is invalid (-1), a class of its own: 6 / sqrt(80), as in test_tasks_metrics.
    assert metrics == {"matthews_corrcoef": pytest.approx(100 * 6 / 80**0.5)}


def test_mnli_rank_classification_trains_on_the_correct_label_only():
    record = BASES["mnli"][0]  # neutral
    train = run_all("taskless_glue_mnli_v200_rank_classification", [record], "train")
    assert [texts(ex)[1] for ex in train] == ["neutral"]
    evaluated = run_all(
        "taskless_glue_mnli_matched_v200_rank_classification", [record], "validation"
    )
    assert [texts(ex)[1] for ex in evaluated] == ["entailment", "neutral", "contradiction"]
    assert [bool(ex["is_correct"]) for ex in evaluated] == [False, True, False]


def test_every_t5_glue_config_is_registered_as_v200_in_both_forms():
    configs = (
        "cola",
        "sst2",
        "mrpc",
        "qqp",
        "stsb",
        "mnli",
        "mnli_matched",
        "mnli_mismatched",
        "qnli",
        "rte",
        "wnli",
        "ax",
    )
    names = registry.list_tasks()
    for prefix in ("glue_", "taskless_glue_"):
        for config in configs:
            assert f"{prefix}{config}_v200" in names
            assert (
                seqio.get_mixture_or_task(f"{prefix}{config}_v200").source.tfds_name
                == f"glue/{config}:2.0.0"
            )
    # T5's v002 names read glue:1.0.0; ptune does not claim them.
    assert not [n for n in names if n.startswith(("glue_", "taskless_glue_")) and "v002" in n]
    assert "glue_stsb_v200_rank_classification" not in names  # regression, no labels.


def test_glue_primary_metrics_and_mixture_rates():
    assert registry.primary_metrics("glue_cola_v200") == {"glue_cola_v200": ("matthews_corrcoef",)}
    assert registry.primary_metrics("taskless_glue_stsb_v200") == {
        "taskless_glue_stsb_v200": ("pearson_corrcoef", "spearman_corrcoef")
    }
    assert registry.primary_metrics("glue_mrpc_v200") == {"glue_mrpc_v200": ("f1", "accuracy")}
    assert registry.primary_metrics("glue_ax_v200") == {}
    assert registry.primary_metrics("glue_mnli_and_dev_v200") == {
        f"glue_mnli{s}_v200": ("accuracy",) for s in ("", "_matched", "_mismatched")
    }
    mixture = seqio.get_mixture_or_task("glue_v200_proportional")
    rates = {t.name: mixture.get_rate(t) for t in mixture.tasks}
    assert rates["glue_qqp_v200"] == 363_846 and rates["glue_mnli_v200"] == 392_702
    assert rates["glue_ax_v200"] == 0 and "glue_wnli_v200" not in rates
    assert len(rates) == 11


@pytest.mark.parametrize(
    "task,labels",
    [
        ("taskless_glue_sst2_v200", ["negative", "positive"]),
        ("taskless_glue_mrpc_v200", ["not_equivalent", "equivalent"]),
        ("taskless_glue_rte_v200", ["entailment", "not_entailment"]),
    ],
)
def test_tasks_for_the_released_sst2_mrpc_rte_prompts(task, labels):
    # The original authors evaluated sst2.npy on `taskless_glue_sst2_v200_examples` (glue:2.0.0,
    # no task word); these are the same tasks without the TensorBoard examples.
    assert registry.label_names(task) == labels
    assert seqio.get_mixture_or_task(task).splits == ("train", "validation", "test")
