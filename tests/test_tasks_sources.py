"""Offline data: the official SuperGLUE JSONL release read locally yields the same examples as
TFDS's feature shapes; TFDS data and manual directories are honoured when set after import."""

import json

import numpy as np
import pytest
import seqio
import tensorflow as tf
from test_tasks_superglue import AXB, AXG, BOOLQ, CB, COPA, MULTIRC, RTE, WIC, WSC
from test_tasks_support import run_all, t5_vocab, texts  # noqa: F401

from ptune.tasks import sources

MULTIRC_TEXT = MULTIRC["paragraph"]
RECORD_PASSAGE = (
    "The harbour closed.\n@highlight\nShips waited outside\n@highlight\nNo one was hurt"
)

# Records exactly as the official SuperGLUE zips hold them (val.jsonl unless noted).
OFFICIAL = {
    "boolq": {"question": BOOLQ["question"], "passage": BOOLQ["passage"], "idx": 4, "label": True},
    "cb": {"premise": CB["premise"], "hypothesis": CB["hypothesis"], "label": "neutral", "idx": 0},
    "copa": {**{k: COPA[k] for k in ("premise", "choice1", "choice2", "question")}, "label": 0, "idx": 0},
    "multirc": {
        "idx": 3,
        "version": 1.1,
        "passage": {
            "text": MULTIRC_TEXT,
            "questions": [
                {
                    "question": "Who did Susan call?",
                    "answers": [
                        {"text": "Her friends", "idx": 2, "label": 1},
                        {"text": "Her dog", "idx": 3, "label": 0},
                    ],
                    "idx": 11,
                }
            ],
        },
    },
    "record": {
        "source": "Daily mail",
        "passage": {
            "text": RECORD_PASSAGE,
            "entities": [{"start": 0, "end": 10}, {"start": 4, "end": 10}, {"start": 31, "end": 35}],
        },
        "qas": [
            {
                "query": "@placeholder stayed shut all day.",
                "answers": [
                    {"start": 0, "end": 10, "text": "The harbour"},
                    {"start": 4, "end": 10, "text": "harbour"},
                ],
                "idx": 9,
            }
        ],
        "idx": 5,
    },
    "rte": {"premise": RTE["premise"], "hypothesis": RTE["hypothesis"], "label": "not_entailment", "idx": 0},
    "wic": {**{k: WIC[k] for k in WIC if k != "label"}, "label": False, "version": 1.1},
    "wsc.fixed": {
        "text": WSC["text"],
        "target": {"span2_index": 13, "span1_index": 0, "span1_text": "Mark", "span2_text": "He"},
        "idx": 0,
        "label": True,
    },
    "axb": {"sentence1": AXB["sentence1"], "sentence2": AXB["sentence2"], "label": "not_entailment", "idx": 0, "logic": "Negation"},
    "axg": {"hypothesis": AXG["hypothesis"], "premise": AXG["premise"], "idx": 0, "pair_id": 1, "label": "not_entailment"},
}  # fmt: skip

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
    assert list(sources.convert_superglue_record(config, OFFICIAL[config])) == TFDS_SHAPED[config]


@pytest.fixture
def superglue_dir(tmp_path):
    for config, row in OFFICIAL.items():
        path = tmp_path / sources.superglue_jsonl_path("", config, _split(config))
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


def test_local_record_missing_a_field_names_file_and_field(superglue_dir):
    path = superglue_dir / "CB" / "val.jsonl"
    path.write_text(json.dumps({"premise": "p", "label": "neutral", "idx": 0}) + "\n")
    with pytest.raises(
        ValueError, match=r"SuperGLUE cb: record at .*CB/val.jsonl:1 is missing field 'hypothesis'"
    ):
        list(sources.read_superglue_jsonl(str(superglue_dir), "cb", "validation"))
    task = seqio.get_mixture_or_task("super_glue_cb_v102")
    with pytest.raises(Exception, match=r"missing field 'hypothesis'"):
        list(task.source.get_dataset("validation", shuffle=False).as_numpy_iterator())


def test_local_missing_file_and_bad_label(superglue_dir):
    with pytest.raises(FileNotFoundError, match=r"WiC/train.jsonl"):
        list(sources.read_superglue_jsonl(str(superglue_dir), "wic", "train"))
    with pytest.raises(ValueError, match=r"label 'maybe'"):
        list(sources.convert_superglue_record("rte", dict(OFFICIAL["rte"], label="maybe")))


def test_wsc_spans_repaired_as_tfds_does():
    row = dict(
        OFFICIAL["wsc.fixed"],
        target={"span2_index": 13, "span1_index": 0, "span1_text": "mark.", "span2_text": "He"},
    )
    [ex] = sources.convert_superglue_record("wsc.fixed", row)
    assert ex["span1_text"] == "Mark"
    kept = dict(
        OFFICIAL["wsc.fixed"],
        target=dict(OFFICIAL["wsc.fixed"]["target"], span1_text="Kamenev and Zinoviev"),
    )
    assert (
        next(sources.convert_superglue_record("wsc.fixed", kept))["span1_text"]
        == "Kamenev and Zinoviev"
    )


def test_jsonl_dataset_has_tfds_dtypes(superglue_dir):
    ds = sources.superglue_jsonl_dataset(str(superglue_dir), "record", "validation")
    spec = ds.element_spec
    assert spec["entities"].shape.as_list() == [None] and spec["entities"].dtype == tf.string
    assert spec["idx"]["query"].dtype == tf.int32
    ds = sources.superglue_jsonl_dataset(str(superglue_dir), "boolq", "validation")
    [ex] = ds.as_numpy_iterator()
    assert ex["label"] == np.int64(1) and ds.element_spec["label"].dtype == tf.int64


def test_tfds_data_dir_from_setter_or_environment(monkeypatch, tmp_path):
    source = seqio.get_mixture_or_task("super_glue_boolq_v102").source
    assert not source.uses_local_jsonl()
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
