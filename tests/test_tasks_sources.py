"""Offline data: the official SuperGLUE JSONL release read locally yields the same examples as
TFDS's feature shapes; malformed or missing files are one error naming file and line; TFDS data
and manual directories are honoured when set after import."""

import json

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
    OFFICIAL,
    RECORD_PASSAGE,
    RTE,
    WIC,
    WSC,
)
from task_support import run_all, texts

from ptune.errors import UserError
from ptune.tasks import readers, sources, superglue_files

# The same records in TFDS super_glue/*:1.0.2 shapes, written by hand.
TFDS_SHAPED = {
    "boolq": [BOOLQ],
    "cb": [CB],
    "copa": [COPA],
    "multirc": [
        MULTIRC,
        dict(MULTIRC, answer="Her dog", label=0, idx={"paragraph": 3, "question": 11, "answer": 3}),
    ],
    "record": [
        {
            "passage": RECORD_PASSAGE,
            "query": "@placeholder stayed shut all day.",
            "entities": ["Ships", "The harbour", "harbour"],
            "answers": ["The harbour", "harbour"],
            "idx": {"passage": 5, "query": 9},
        }
    ],
    "rte": [RTE],
    "wic": [WIC],
    "wsc.fixed": [WSC],
    "axb": [AXB],
    "axg": [AXG],
}


def _split(config):
    return "test" if config in ("axb", "axg") else "validation"


@pytest.mark.parametrize("config", list(OFFICIAL))
def test_official_record_converts_to_tfds_shape(config):
    converted = superglue_files.convert_record(config, OFFICIAL[config], "f:1", _split(config))
    assert list(converted) == TFDS_SHAPED[config]


@pytest.fixture
def superglue_dir(tmp_path):
    for config, row in OFFICIAL.items():
        path = tmp_path / superglue_files.relative_path(config, _split(config))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(row) + "\n\n", encoding="utf-8")
    unlabelled = {k: v for k, v in OFFICIAL["boolq"].items() if k != "label"}
    (tmp_path / "BoolQ" / "test.jsonl").write_text(json.dumps(unlabelled) + "\n")
    sources.set_superglue_dir(str(tmp_path))
    yield tmp_path
    sources.set_superglue_dir(None)


TASKS = {
    "boolq": "taskless_super_glue_boolq_v102",
    "cb": "super_glue_cb_v102",
    "copa": "taskless_super_glue_copa_v102",
    "multirc": "super_glue_multirc_v102",
    "record": "taskless_super_glue_record_v102",
    "rte": "taskless_super_glue_rte_v102_rank_classification",
    "wic": "super_glue_wic_v102",
    "wsc.fixed": "taskless_super_glue_wsc_v102_simple_eval",
    "axb": "super_glue_axb_v102",
    "axg": "taskless_super_glue_axg_v102_1_sentinel",
}


@pytest.mark.usefixtures("t5_vocab")
@pytest.mark.parametrize("config", list(TASKS))
def test_local_jsonl_yields_the_same_examples_as_tfds_shape(config, superglue_dir):
    task = seqio.get_mixture_or_task(TASKS[config])
    split = _split(config)
    local = list(task.get_dataset(split=split, shuffle=False).as_numpy_iterator())
    injected = run_all(TASKS[config], TFDS_SHAPED[config], split)
    assert len(local) == len(injected) > 0
    for a, b in zip(local, injected):
        assert texts(a) == texts(b)
        assert list(a["inputs"]) == list(b["inputs"]) and list(a["targets"]) == list(b["targets"])


@pytest.mark.usefixtures("t5_vocab")
def test_local_test_split_without_labels(superglue_dir):
    task = seqio.get_mixture_or_task("taskless_super_glue_boolq_v102")
    [ex] = task.get_dataset(split="test", shuffle=False).as_numpy_iterator()
    assert texts(ex)[1] == "<unk>"


def _write_lines(path, *lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


GOOD_BOOLQ = json.dumps(OFFICIAL["boolq"])


@pytest.mark.parametrize(
    "bad_line,message",
    [
        (GOOD_BOOLQ[:60], r"BoolQ/train.jsonl:3: not valid JSON \(Unterminated string"),
        ("[1, 2]", r"BoolQ/train.jsonl:3: a JSON object is expected, found a list"),
        (json.dumps({**OFFICIAL["boolq"], "passage": 5}), r"BoolQ/train.jsonl:3: field 'passage' is an integer, expected a string"),
        (json.dumps({**OFFICIAL["boolq"], "label": "yes"}), r"BoolQ/train.jsonl:3: field 'label' is a string, expected a boolean"),
        (json.dumps({k: v for k, v in OFFICIAL["boolq"].items() if k != "label"}), r"BoolQ/train.jsonl:3: field 'label' is missing"),
    ],
)  # fmt: skip
def test_malformed_jsonl_line_is_one_error_naming_file_and_line(superglue_dir, bad_line, message):
    _write_lines(superglue_dir / "BoolQ" / "train.jsonl", GOOD_BOOLQ, "", bad_line, GOOD_BOOLQ)
    task = seqio.get_mixture_or_task("taskless_super_glue_boolq_v102")
    # Raised while the pipeline is built, before TensorFlow reads a record: no traceback from
    # a tf.data thread, no waiting on a pipeline that cannot deliver.
    with pytest.raises(UserError, match=message) as error:
        task.get_dataset(split="train", shuffle=False)
    assert "\n" not in str(error.value)


def test_truncated_record_fails_while_a_training_pipeline_is_built(superglue_dir):
    # What training does (seqio.get_dataset, shuffled, repeated): the error comes from the
    # call itself, before any batch is requested from TensorFlow.
    _write_lines(superglue_dir / "BoolQ" / "train.jsonl", GOOD_BOOLQ, GOOD_BOOLQ[:-20])
    with pytest.raises(UserError, match=r"BoolQ/train.jsonl:2: not valid JSON"):
        seqio.get_dataset(
            "taskless_super_glue_boolq_v102_rank_classification",
            task_feature_lengths={"inputs": 64, "targets": 8},
            dataset_split="train",
            shuffle=True,
            num_epochs=None,
            feature_converter=seqio.EncDecFeatureConverter(pack=False),
        )


def test_malformed_nested_records_name_the_line(superglue_dir):
    record = OFFICIAL["record"]
    bad_entity = {**record, "passage": {**record["passage"], "entities": [{"start": 0}]}}
    _write_lines(superglue_dir / "ReCoRD" / "val.jsonl", json.dumps(bad_entity))
    with pytest.raises(UserError, match=r"ReCoRD/val.jsonl:1: field 'end' is missing"):
        superglue_files.read(str(superglue_dir / "ReCoRD" / "val.jsonl"), "record", "validation")
    multirc = json.loads(json.dumps(OFFICIAL["multirc"]))
    multirc["passage"]["questions"][0]["answers"][1]["label"] = 2
    _write_lines(superglue_dir / "MultiRC" / "val.jsonl", json.dumps(multirc))
    with pytest.raises(UserError, match=r"MultiRC/val.jsonl:1: answer label 2 is not 0 or 1"):
        seqio.get_mixture_or_task("super_glue_multirc_v102").source.get_dataset("validation")
    wsc = {
        **OFFICIAL["wsc.fixed"],
        "target": {**OFFICIAL["wsc.fixed"]["target"], "span1_index": "0"},
    }
    _write_lines(superglue_dir / "WSC" / "val.jsonl", json.dumps(wsc))
    with pytest.raises(UserError, match=r"WSC/val.jsonl:1: field 'target.span1_index' is a string"):
        superglue_files.read(str(superglue_dir / "WSC" / "val.jsonl"), "wsc.fixed", "validation")


def test_lines_are_counted_as_text_mode_reads_them_and_bad_bytes_are_named(tmp_path):
    path = tmp_path / "rows.tsv"
    # A byte-order mark, then "\r\n", a lone "\r" and "\n" line ends, and a blank line.
    path.write_bytes(b'\xef\xbb\xbfa\tb\r\n1\t"2\r3\t4\n\n5\t6\t7\n')
    assert list(readers.tsv_rows(str(path))) == [
        (f"{path}:2", {"a": "1", "b": '"2'}),
        (f"{path}:3", {"a": "3", "b": "4"}),
        (f"{path}:5", {"a": "5", "b": "6"}),
    ]
    path.write_bytes(b'{"a": 1}\r\n{"a": "caf\xe9"}\n')
    with pytest.raises(
        UserError, match=r"rows.tsv:2: not UTF-8 text \(invalid continuation byte\)"
    ):
        list(readers.jsonl_rows(str(path)))


def test_local_missing_file_and_bad_label(superglue_dir):
    with pytest.raises(UserError, match=r"SuperGLUE wic train: file .*WiC/train.jsonl not found"):
        seqio.get_mixture_or_task("super_glue_wic_v102").source.get_dataset("train")
    bad = dict(OFFICIAL["rte"], label="maybe")
    with pytest.raises(
        UserError, match=r"f:1: label 'maybe' is not one of entailment, not_entailment"
    ):
        list(superglue_files.convert_record("rte", bad, "f:1", "validation"))


def test_wsc_spans_repaired_as_tfds_does():
    def convert(**target):
        row = dict(OFFICIAL["wsc.fixed"], target=dict(OFFICIAL["wsc.fixed"]["target"], **target))
        [ex] = superglue_files.convert_record("wsc.fixed", row, "f:1", "validation")
        return ex

    assert convert(span1_text="mark.")["span1_text"] == "Mark"
    assert convert(span1_text="Kamenev and Zinoviev")["span1_text"] == "Kamenev and Zinoviev"
    with pytest.raises(UserError, match=r"f:1: span1_text 'Marc' is not in the text"):
        convert(span1_text="Marc", span1_index=99)


def test_local_dataset_has_tfds_dtypes(superglue_dir):
    source = seqio.get_mixture_or_task("super_glue_record_v102").source
    spec = source.get_dataset("validation", shuffle=False).element_spec
    assert spec["entities"].shape.as_list() == [None] and spec["entities"].dtype == tf.string
    assert spec["idx"]["query"].dtype == tf.int32
    ds = seqio.get_mixture_or_task("super_glue_boolq_v102").source.get_dataset("validation")
    [ex] = ds.as_numpy_iterator()
    assert ex["label"] == np.int64(1) and ds.element_spec["label"].dtype == tf.int64


def test_check_task_data_names_a_missing_directory_before_any_read(tmp_path):
    sources.set_superglue_dir(str(tmp_path / "nowhere"))
    try:
        with pytest.raises(UserError) as error:
            sources.check_task_data("taskless_super_glue_v102_proportional")
    finally:
        sources.set_superglue_dir(None)
    # One line, one cause, however many tasks read the directory.
    assert str(error.value) == (
        "data for taskless_super_glue_v102_proportional is missing: the --superglue_dir / "
        f"PTUNE_SUPERGLUE_DIR directory {tmp_path / 'nowhere'} does not exist"
    )


def test_check_task_data_names_each_missing_split_file(superglue_dir):
    sources.check_task_data("taskless_super_glue_boolq_v102", splits=["validation", "test"])
    with pytest.raises(UserError) as error:
        sources.check_task_data("taskless_super_glue_boolq_v102", splits=["train", "validation"])
    assert str(error.value) == (
        "data for taskless_super_glue_boolq_v102 is missing: "
        f"{superglue_dir / 'BoolQ' / 'train.jsonl'} (SuperGLUE boolq)"
    )
    # A mixture: its training task lacks train.jsonl, its evaluation task has no train split.
    with pytest.raises(UserError, match=r"missing: .*WSC/train.jsonl \(SuperGLUE wsc.fixed\)$"):
        sources.check_task_data("super_glue_wsc_v102", splits=["train", "validation"])
    (superglue_dir / "WSC" / "train.jsonl").write_text("")
    sources.check_task_data("super_glue_wsc_v102", splits=["train", "validation"])
    with pytest.raises(UserError, match="unknown task or mixture 'boolq'"):
        sources.check_task_data("boolq")


def test_check_task_data_manual_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("PTUNE_TFDS_MANUAL_DIR", str(tmp_path / "zips"))
    with pytest.raises(
        UserError,
        match=r"--tfds_manual_dir / PTUNE_TFDS_MANUAL_DIR directory .*zips does not exist",
    ):
        sources.check_task_data("squad_v010_allanswers")
    (tmp_path / "zips").mkdir()
    sources.check_task_data("squad_v010_allanswers")


def test_tfds_data_dir_from_setter_or_environment(monkeypatch, tmp_path):
    source = seqio.get_mixture_or_task("super_glue_boolq_v102").source
    assert source.local_directory() is None
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "env"))
    assert source.tfds_source().tfds_dataset.data_dir == str(tmp_path / "env")
    sources.set_tfds_data_dir(str(tmp_path / "flag"))
    try:
        assert source.tfds_source().tfds_dataset.data_dir == str(tmp_path / "flag")
        assert source.tfds_source().tfds_dataset.name == "super_glue/boolq:1.0.2"
    finally:
        sources.set_tfds_data_dir(None)


def test_manual_dir_prepares_from_official_zips(monkeypatch, tmp_path):
    calls = []

    class FakeBuilder:
        def __init__(self, name, data_dir):
            calls.append(("builder", name, data_dir))

        def is_prepared(self):
            return False

        def download_and_prepare(self, download_config):
            calls.append(("prepare", str(download_config.manual_dir)))

    monkeypatch.setattr(sources.tfds, "builder", FakeBuilder)
    sources.prepare_tfds("super_glue/cb:1.0.2", str(tmp_path / "zips"), str(tmp_path / "data"))
    assert calls == [
        ("builder", "super_glue/cb:1.0.2", str(tmp_path / "data")),
        ("prepare", str(tmp_path / "zips")),
    ]
    # A task read with a manual directory set prepares first, then reads TFDS.
    prepared = []
    monkeypatch.setattr(sources, "prepare_tfds", lambda *a: prepared.append(a))
    source = seqio.get_mixture_or_task("super_glue_cb_v102").source

    def one_element_source():
        return seqio.FunctionDataSource(
            lambda split, shuffle_files: tf.data.Dataset.range(1), splits=["validation"]
        )

    monkeypatch.setattr(source, "tfds_source", one_element_source)
    monkeypatch.setenv("PTUNE_TFDS_MANUAL_DIR", str(tmp_path / "zips"))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "data"))
    assert list(source.get_dataset("validation", shuffle=False).as_numpy_iterator()) == [0]
    assert prepared == [("super_glue/cb:1.0.2", str(tmp_path / "zips"), str(tmp_path / "data"))]


def test_unknown_split_is_named():
    with pytest.raises(ValueError, match=r"super_glue/axb:1.0.2 has no split 'train'"):
        seqio.get_mixture_or_task("super_glue_axb_v102").source.get_dataset("train")


DPR_TEXT = (
    "The bee landed on the flower because it had pollen.\nit\nThe bee, the flower\nthe flower\n\n"
    "The bee landed on the flower because it wanted pollen.\nit\nThe bee,the flower\nThe bee\n\n"
    "Ann thanked Mary because she had helped.\nshe\nAnn , Mary\nMary\n\n\n"
)


def test_dpr_files_read_as_tfds_reads_them(tmp_path):
    """DPR's official text files (beside the SuperGLUE release) give TFDS's examples: its own
    parser (`_generate_examples`, run on the same file, no download) is the reference."""
    from tensorflow_datasets.text import definite_pronoun_resolution

    path = tmp_path / "train.c.txt"
    path.write_text(DPR_TEXT)
    builder = definite_pronoun_resolution.DefinitePronounResolution(data_dir=str(tmp_path))
    expected = [example for _, example in builder._generate_examples(str(path))]
    assert superglue_files.read_dpr(str(path)) == expected and len(expected) == 3
    path.write_text(DPR_TEXT.replace("Ann , Mary", "Ann and Mary"))
    with pytest.raises(UserError, match=f"{path}, line 11: expected two candidates"):
        superglue_files.read_dpr(str(path))
    path.write_text(DPR_TEXT[:60])
    with pytest.raises(UserError, match=f"{path}, line 1: a DPR example needs 4 non-empty lines"):
        superglue_files.read_dpr(str(path))
