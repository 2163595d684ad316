"""GLUE tasks: T5's exact strings and ids, read from files in the official GLUE layout and from
TFDS-shaped records; STS-B's rounding and regression postprocessor; T5's GLUE metrics.

Expected strings are written out by hand from T5's format (task word, then `key: value` pairs
with the keys sorted; STS-B's score rounded to a multiple of 0.2), not produced by the code under
test. The TSV files below copy the layout of the official GLUE download, header rows included.
"""

import numpy as np
import pytest
import seqio
from test_tasks_support import evaluate, run, run_all, t5_vocab, texts  # noqa: F401

from ptune.errors import UserError
from ptune.tasks import glue_files, registry, sources

pytestmark = pytest.mark.usefixtures("t5_vocab")

MNLI_PARSES = "( ( x ) )\t( ( y ) )\t(ROOT (S x))\t(ROOT (S y))"
MNLI_HEAD = "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\tsentence2_parse\tsentence1\tsentence2"
STSB_HEAD = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2"
MRPC_HEAD = "#1 ID\t#2 ID\t#1 String\t#2 String"
PREMISE = "Conceptually cream skimming has two basic dimensions - product and geography."
HYPOTHESIS = "Product and geography are what make cream skimming work. "
AMROZI = 'Amrozi accused his brother , whom he called " the witness " , of deliberately distorting his evidence .'
REFERRING = 'Referring to him as only " the witness " , Amrozi accused his brother of deliberately distorting his evidence .'

# The official GLUE download's files (one or two rows each), by path under the GLUE directory.
RELEASE = {
    # CoLA's train and dev files have no header: source, label, original mark, sentence.
    "CoLA/train.tsv": "gj04\t1\t\tOur friends won't buy this analysis, let alone the next one we propose.\ngj04\t0\t*\tThey drank the pub.\n",
    "CoLA/dev.tsv": "gj04\t1\t\tThe sailors rode the breeze clear of the rocks.\n",
    "CoLA/test.tsv": "index\tsentence\n0\tBill whistled past the house.\n",
    "SST-2/train.tsv": "sentence\tlabel\nhide new secretions from the parental units \t0\n",
    "SST-2/dev.tsv": "sentence\tlabel\nit 's a charming and often affecting journey . \t1\n",
    "SST-2/test.tsv": "index\tsentence\n0\tuneasy mishmash of styles and genres .\n",
    # MRPC's train/dev headers keep the byte-order mark of Microsoft's original file.
    "MRPC/train.tsv": f"\ufeffQuality\t{MRPC_HEAD}\n1\t702876\t702977\t{AMROZI}\t{REFERRING}\n",
    "MRPC/dev.tsv": f"\ufeffQuality\t{MRPC_HEAD}\n0\t1\t2\tHe left .\tShe stayed .\n",
    "MRPC/test.tsv": f"index\t{MRPC_HEAD}\n0\t1089874\t1089925\tPCCW 's chief operating officer resigned .\tThe officer left PCCW .\n",
    "QQP/train.tsv": "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n133273\t213221\t213222\tHow is the life of a math student?\tWhich level of preparation is enough?\t0\n",
    "QQP/dev.tsv": "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n1\t3\t4\tHow do I learn Python?\tWhat is the best way to learn Python?\t1\n",
    "QQP/test.tsv": "id\tquestion1\tquestion2\n0\tWhy am I mentally very lonely?\tHow can I be less lonely?\n",
    "STS-B/train.tsv": f"{STSB_HEAD}\tscore\n0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane is taking off.\tAn air plane is taking off.\t5.000\n",
    "STS-B/dev.tsv": f"{STSB_HEAD}\tscore\n0\tmain-captions\tMSRvid\t2012test\t0000\tnone\tnone\tA man with a hard hat is dancing.\tA man wearing a hard hat is dancing.\t2.500\n",
    "STS-B/test.tsv": f"{STSB_HEAD}\n0\tmain-news\theadlines\t2016\t0000\tnone\tnone\tA cat sleeps.\tA dog barks.\n",
    "MNLI/train.tsv": f"{MNLI_HEAD}\tlabel1\tgold_label\n0\t31193\t31193n\tgovernment\t{MNLI_PARSES}\t{PREMISE}\t{HYPOTHESIS}\tneutral\tneutral\n",
    "MNLI/dev_matched.tsv": f"{MNLI_HEAD}\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label\n0\t63735\t63735n\tslate\t{MNLI_PARSES}\tThe new rights are nice enough\tEveryone really likes the newest benefits \tneutral\tneutral\tneutral\tneutral\tneutral\tneutral\n",
    "MNLI/dev_mismatched.tsv": f"{MNLI_HEAD}\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label\n0\t75290\t75290c\tletters\t{MNLI_PARSES}\tYour contribution helped make it possible.\tYour contributions were of no help.\tcontradiction\tcontradiction\tcontradiction\tcontradiction\tcontradiction\tcontradiction\n",
    "MNLI/test_matched.tsv": f"{MNLI_HEAD}\n0\t31493\t31493\ttravel\t{MNLI_PARSES}\tHierbas is a liqueur.\tHierbas is a drink.\n",
    "MNLI/test_mismatched.tsv": f"{MNLI_HEAD}\n0\t1\t1\tfiction\t{MNLI_PARSES}\tWhat have you decided?\tYou decided.\n",
    "QNLI/dev.tsv": "index\tquestion\tsentence\tlabel\n0\tWhat came into force after the new constitution was herald?\tAs of that day, the new constitution heralding the Second Republic came into force.\tentailment\n",
    "RTE/dev.tsv": "index\tsentence1\tsentence2\tlabel\n0\tDana Reeve, the widow of the actor Christopher Reeve, has died of lung cancer at age 44.\tChristopher Reeve had an accident.\tnot_entailment\n",
    "WNLI/dev.tsv": "index\tsentence1\tsentence2\tlabel\n0\tThe drain is clogged with hair. It has to be cleaned.\tThe hair has to be cleaned.\t0\n",
    "diagnostic/diagnostic.tsv": "index\tsentence1\tsentence2\n0\tThe cat sat on the mat.\tThe cat did not sit on the mat.\n",
}  # fmt: skip

# (config, split, file, the TFDS-shaped records it holds, T5 inputs without the task word,
# task word, target of the first record).
CASES = [
    ("cola", "train", "CoLA/train.tsv",
     [{"sentence": "Our friends won't buy this analysis, let alone the next one we propose.", "label": 1, "idx": 0},
      {"sentence": "They drank the pub.", "label": 0, "idx": 1}],
     "sentence: Our friends won't buy this analysis, let alone the next one we propose.", "cola", "acceptable"),
    ("cola", "test", "CoLA/test.tsv", [{"sentence": "Bill whistled past the house.", "label": -1, "idx": 0}],
     "sentence: Bill whistled past the house.", "cola", "<unk>"),
    ("sst2", "validation", "SST-2/dev.tsv",
     [{"sentence": "it 's a charming and often affecting journey . ", "label": 1, "idx": 0}],
     "sentence: it 's a charming and often affecting journey . ", "sst2", "positive"),
    ("mrpc", "validation", "MRPC/dev.tsv", [{"sentence1": "He left .", "sentence2": "She stayed .", "label": 0, "idx": 0}],
     "sentence1: He left . sentence2: She stayed .", "mrpc", "not_equivalent"),
    ("mrpc", "train", "MRPC/train.tsv", [{"sentence1": AMROZI, "sentence2": REFERRING, "label": 1, "idx": 0}],
     f"sentence1: {AMROZI} sentence2: {REFERRING}", "mrpc", "equivalent"),
    ("mrpc", "test", "MRPC/test.tsv",
     [{"sentence1": "PCCW 's chief operating officer resigned .", "sentence2": "The officer left PCCW .", "label": -1, "idx": 0}],
     "sentence1: PCCW 's chief operating officer resigned . sentence2: The officer left PCCW .", "mrpc", "<unk>"),
    ("qqp", "validation", "QQP/dev.tsv",
     [{"question1": "How do I learn Python?", "question2": "What is the best way to learn Python?", "label": 1, "idx": 0}],
     "question1: How do I learn Python? question2: What is the best way to learn Python?", "qqp", "duplicate"),
    ("stsb", "validation", "STS-B/dev.tsv",
     [{"sentence1": "A man with a hard hat is dancing.", "sentence2": "A man wearing a hard hat is dancing.", "label": 2.5, "idx": 0}],
     "sentence1: A man with a hard hat is dancing. sentence2: A man wearing a hard hat is dancing.", "stsb", "2.4"),
    ("stsb", "test", "STS-B/test.tsv",
     [{"sentence1": "A cat sleeps.", "sentence2": "A dog barks.", "label": -1.0, "idx": 0}],
     "sentence1: A cat sleeps. sentence2: A dog barks.", "stsb", "-1.0"),
    ("mnli", "train", "MNLI/train.tsv", [{"premise": PREMISE, "hypothesis": HYPOTHESIS, "label": 1, "idx": 0}],
     f"hypothesis: {HYPOTHESIS} premise: {PREMISE}", "mnli", "neutral"),
    ("mnli_matched", "validation", "MNLI/dev_matched.tsv",
     [{"premise": "The new rights are nice enough", "hypothesis": "Everyone really likes the newest benefits ", "label": 1, "idx": 0}],
     "hypothesis: Everyone really likes the newest benefits  premise: The new rights are nice enough", "mnli", "neutral"),
    ("mnli_mismatched", "validation", "MNLI/dev_mismatched.tsv",
     [{"premise": "Your contribution helped make it possible.", "hypothesis": "Your contributions were of no help.", "label": 2, "idx": 0}],
     "hypothesis: Your contributions were of no help. premise: Your contribution helped make it possible.", "mnli", "contradiction"),
    ("qnli", "validation", "QNLI/dev.tsv",
     [{"question": "What came into force after the new constitution was herald?",
       "sentence": "As of that day, the new constitution heralding the Second Republic came into force.", "label": 0, "idx": 0}],
     "question: What came into force after the new constitution was herald? sentence: As of that day, the new constitution heralding the Second Republic came into force.",
     "qnli", "entailment"),
    ("rte", "validation", "RTE/dev.tsv",
     [{"sentence1": "Dana Reeve, the widow of the actor Christopher Reeve, has died of lung cancer at age 44.",
       "sentence2": "Christopher Reeve had an accident.", "label": 1, "idx": 0}],
     "sentence1: Dana Reeve, the widow of the actor Christopher Reeve, has died of lung cancer at age 44. sentence2: Christopher Reeve had an accident.",
     "rte", "not_entailment"),
    ("wnli", "validation", "WNLI/dev.tsv",
     [{"sentence1": "The drain is clogged with hair. It has to be cleaned.", "sentence2": "The hair has to be cleaned.", "label": 0, "idx": 0}],
     "sentence1: The drain is clogged with hair. It has to be cleaned. sentence2: The hair has to be cleaned.", "wnli", "not_entailment"),
    ("ax", "test", "diagnostic/diagnostic.tsv",
     [{"premise": "The cat sat on the mat.", "hypothesis": "The cat did not sit on the mat.", "label": -1, "idx": 0}],
     "hypothesis: The cat did not sit on the mat. premise: The cat sat on the mat.", "mnli", "<unk>"),
]  # fmt: skip

# The first labelled case of each config (the diagnostic has none), for test_tasks_all.py:
# config -> (record, split, inputs without the task word, target, task word).
BASES = {}
for _config, _split, _, _records, _text, _word, _target in CASES:
    if _config == "ax" or not _split.startswith("test"):
        BASES.setdefault(_config, (_records[0], _split, _text, _target, _word))


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
