"""Tasks from plain JSONL/TSV files: registered without Python, exact T5-format ids, labels for
the class-label initializer, a rank-classification variant, and one-line errors for bad files."""

import dataclasses
import json
import os

import pytest
import seqio
from task_support import evaluate, texts

from ptune.errors import UserError
from ptune.tasks import files, registry, sources

ROWS = [
    {"question": "is water wet?", "answer": "yes", "id": 7},
    {"question": "is fire cold?", "answer": "no", "id": 8},
]


def byte_ids(text: str) -> list[int]:
    """seqio.ByteVocabulary: each UTF-8 byte + 3 (0 pad, 1 EOS, 2 UNK), then EOS."""
    return [b + 3 for b in text.encode()] + [1]


@pytest.fixture
def registered():
    """Names to unregister after the test, so other modules see only ptune's own tasks."""
    names = []
    yield names
    for name in names:
        seqio.TaskRegistry.remove(name)


@pytest.fixture
def jsonl(tmp_path):
    def write(name, rows):
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        return str(path)

    return write


def read(name: str, split: str) -> list[dict]:
    ds = seqio.get_mixture_or_task(name).get_dataset(split=split, shuffle=False)
    return list(ds.as_numpy_iterator())


def test_jsonl_task_in_t5_format_with_exact_ids(jsonl, registered):
    task = files.FileTask(
        name="qa_from_files",
        splits={"train": jsonl("train.jsonl", ROWS), "validation": jsonl("dev.jsonl", ROWS[:1])},
        inputs_field="question",
        targets_field="answer",
        label_names=("yes", "no"),
        vocabulary="byte",
        with_rank_classification=True,
    )
    registered += task.register()
    assert registered == ["qa_from_files", "qa_from_files_rank_classification"]
    train = read("qa_from_files", "train")
    assert [texts(ex) for ex in train] == [("is water wet?", "yes"), ("is fire cold?", "no")]
    assert list(train[0]["inputs"]) == byte_ids("is water wet?")
    assert list(train[0]["targets"]) == byte_ids("yes")
    assert registry.label_names("qa_from_files") == ["yes", "no"]
    assert registry.primary_metrics("qa_from_files") == {"qa_from_files": ("accuracy",)}
    # Rank classification: the correct label to train on, every label to evaluate.
    ranked = "qa_from_files_rank_classification"
    assert [texts(ex)[1] for ex in read(ranked, "train")] == ["yes", "no"]
    assert [texts(ex)[1] for ex in read(ranked, "validation")] == ["yes", "no"]
    assert [bool(ex["is_correct"]) for ex in read(ranked, "validation")] == [True, False]


@pytest.mark.usefixtures("t5_vocab")
def test_tsv_task_with_the_t5_vocabulary(tmp_path, registered):
    path = tmp_path / "sentiment.tsv"
    path.write_text("id\ttext\tlabel\n0\tgreat film !\tpositive\n1\tdull .\tnegative\n")
    registered += files.FileTask(
        name="sentiment_tsv",
        splits={"validation": str(path)},
        inputs_field="text",
        targets_field="label",
        label_names=["negative", "positive"],
    ).register()
    examples = read("sentiment_tsv", "validation")
    assert [texts(ex) for ex in examples] == [("great film !", "positive"), ("dull .", "negative")]
    assert list(examples[0]["targets"]) == [1465, 1]  # T5's "▁positive", EOS
    assert list(examples[1]["targets"]) == [2841, 1]  # "▁negative"
    records = [{"inputs": "a", "targets": "positive", "label": 1, "idx": 0}] * 2
    metrics = evaluate("sentiment_tsv", records, predictions=["positive", "positiv"])
    assert metrics == {"accuracy": 50.0}


def test_free_text_targets_score_exact_match(jsonl, registered):
    rows = [{"inputs": "2 + 2 =", "targets": "4"}, {"inputs": "3 + 3 =", "targets": "6"}]
    registered += files.FileTask(
        name="sums", splits={"validation": jsonl("v.jsonl", rows)}, vocabulary="byte"
    ).register()
    assert registry.label_names("sums") is None
    assert evaluate("sums", [{"inputs": "x", "targets": t, "label": -1, "idx": 0} for t in "46"], predictions=["4", "7"]) == {"accuracy": 50.0}  # fmt: skip


@pytest.mark.parametrize(
    "line,message",
    [
        ('{"question": "is it?", "answer": "yes"', r"bad.jsonl:2: not valid JSON"),
        ('{"question": "is it?"}', r"bad.jsonl:2: field 'answer' is missing"),
        ('{"question": 3, "answer": "yes"}', r"bad.jsonl:2: field 'question' is an integer, expected a string"),
        ('{"question": "is it?", "answer": "maybe"}', r"bad.jsonl:2: target 'maybe' is not one of yes, no"),
    ],
)  # fmt: skip
def test_bad_jsonl_line_is_one_error_at_read(tmp_path, registered, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n" + line + "\n")
    registered += files.parse_spec(
        f"bad_lines:train={path},inputs=question,targets=answer,labels=yes|no,vocabulary=byte"
    ).register()
    with pytest.raises(UserError, match=message):
        seqio.get_mixture_or_task("bad_lines").get_dataset(split="train", shuffle=False)


def test_bad_tsv_row_is_one_error_at_read(tmp_path, registered):
    path = tmp_path / "rows.tsv"
    path.write_text("text\tlabel\ngood\tpositive\nno label here\n")
    registered += files.FileTask("rows", {"train": str(path)}, "text", "label").register()
    with pytest.raises(UserError, match=r"rows.tsv:3: 1 tab-separated fields where 2"):
        seqio.get_mixture_or_task("rows").get_dataset(split="train", shuffle=False)


def test_invalid_tasks_fail_at_registration_naming_task_and_cause(jsonl, tmp_path):
    good = jsonl("good.jsonl", ROWS)
    (tmp_path / "h.tsv").write_text("text\tlabel\n")
    (tmp_path / "rows.txt").write_text("")
    (tmp_path / "d.jsonl").mkdir()
    cases = [
        (dict(splits={"train": str(tmp_path / "none.jsonl")}), r"task 'mine' train: file .*none.jsonl not found"),
        (dict(splits={"train": str(tmp_path / "rows.txt")}), r"task 'mine': cannot tell the format of .*rows.txt"),
        (dict(splits={"dev": good}), r"task 'mine': unknown split 'dev'"),
        (dict(splits={"train": str(tmp_path)}), r"task 'mine' train: .* is a directory, not a file"),
        (dict(splits={"train": str(tmp_path / "d.jsonl")}), r"train: .*d.jsonl is a directory, not a file"),
        (dict(splits={}), r"task 'mine': no files"),
        (dict(splits={"train": str(tmp_path / "h.tsv")}, inputs_field="sentence"), r"h.tsv:1: no column 'sentence' in the header \(text, label\)"),
        (dict(splits={"train": good}, vocabulary="gpt2"), r"vocabulary 'gpt2' is not t5 or byte"),
        (dict(splits={"train": good}, with_rank_classification=True), r"rank classification needs label_names"),
        (dict(splits={"train": good}, label_names=("yes",)), r"label_names must be two or more distinct"),
        (dict(splits={"train": good}, name="super_glue_rte_v102"), r"task 'super_glue_rte_v102': the name is taken"),
        (dict(splits={"train": good}, name="my task"), r"task 'my task': a name has only letters"),
    ]  # fmt: skip
    for fields, message in cases:
        task = files.FileTask(**{"name": "mine", **fields})
        with pytest.raises(UserError, match=message):
            task.register()
    assert "mine" not in registry.list_tasks()


def test_parse_spec():
    task = files.parse_spec(
        "my_task:train=a.jsonl,validation=b.jsonl,inputs=question,targets=answer,"
        "labels=yes|no,vocabulary=byte,rank_classification=true"
    )
    assert task == files.FileTask(
        name="my_task",
        splits={"train": "a.jsonl", "validation": "b.jsonl"},
        inputs_field="question",
        targets_field="answer",
        label_names=("yes", "no"),
        vocabulary="byte",
        with_rank_classification=True,
    )
    assert files.parse_spec("t:test=c.tsv,format=tsv") == files.FileTask(
        name="t", splits={"test": "c.tsv"}, format="tsv"
    )
    for spec, message in [
        ("no_colon", r"expected NAME:train=FILE"),
        ("t:train", r"'train' is not KEY=VALUE"),
        ("t:train=a.jsonl,color=red", r"unknown key 'color' \(keys: train, validation, test, "),
        ("t:rank_classification=yes", r"rank_classification='yes' is not true or false"),
    ]:
        with pytest.raises(UserError, match=message):
            files.parse_spec(spec)


def test_file_task_is_a_frozen_dataclass_of_plain_fields():
    task = files.FileTask(name="t", splits={"train": "a.jsonl"})
    assert [f.name for f in dataclasses.fields(task)] == [
        "name", "splits", "inputs_field", "targets_field", "format", "label_names",
        "vocabulary", "with_rank_classification",
    ]  # fmt: skip
    with pytest.raises(dataclasses.FrozenInstanceError):
        task.name = "u"


def test_check_task_data_and_re_registration(jsonl, registered):
    path = jsonl("t.jsonl", ROWS)
    task = files.FileTask("checked", {"train": path}, "question", "answer", vocabulary="byte")
    registered += task.register()
    sources.check_task_data("checked")
    registered += task.register()  # the same name again replaces it
    os.remove(path)
    with pytest.raises(UserError, match=r"data for checked is missing: .*t.jsonl \(task checked\)"):
        sources.check_task_data("checked")
