"""Where task examples come from: TFDS (downloaded, prepared, or built from manual zips) or local
SuperGLUE JSONL files, chosen when a dataset is read rather than when the task is registered.

Why at read time: one task name (`taskless_super_glue_boolq_v102`) must work on a laptop with the
official JSONL files, on a cluster with a shared prepared TFDS directory and in CI with injected
in-memory data, without registering a second copy of every task. `TaskSource.get_dataset` asks,
in this order:

1. `set_superglue_dir()` / `$PTUNE_SUPERGLUE_DIR`: a directory in the official SuperGLUE release
   layout (`BoolQ/train.jsonl`, `CB/val.jsonl`, ..., `AX-b/AX-b.jsonl`). Records are converted to
   exactly the feature shapes TFDS `super_glue/*:1.0.2` yields, then run through the same
   preprocessors. Only SuperGLUE tasks read it; others fall through to TFDS.
2. TFDS, with `data_dir` from `set_tfds_data_dir()` / `$TFDS_DATA_DIR` (prepared data), and, if
   `set_tfds_manual_dir()` / `$PTUNE_TFDS_MANUAL_DIR` names a directory holding the official zips
   (`BoolQ.zip`, `AX-b.zip`, `train-v1.1.json`, ...), the dataset is prepared from those files
   first, with TFDS's own checksums, instead of being downloaded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping

import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from ptune.tasks import labels

SUPERGLUE_DIR_ENV = "PTUNE_SUPERGLUE_DIR"
TFDS_DATA_DIR_ENV = "TFDS_DATA_DIR"
TFDS_MANUAL_DIR_ENV = "PTUNE_TFDS_MANUAL_DIR"

_overrides: dict[str, str | None] = {"superglue": None, "data_dir": None, "manual_dir": None}


def set_superglue_dir(path: str | None) -> None:
    """Reads SuperGLUE from official JSONL files under `path` (None: back to the env var/TFDS)."""
    _overrides["superglue"] = path


def set_tfds_data_dir(path: str | None) -> None:
    """Reads (and prepares) TFDS datasets under `path` instead of `$TFDS_DATA_DIR` (or
    ~/tensorflow_datasets)."""
    _overrides["data_dir"] = path


def set_tfds_manual_dir(path: str | None) -> None:
    """Prepares missing TFDS datasets from the official archives in `path` instead of
    downloading them."""
    _overrides["manual_dir"] = path


def superglue_dir() -> str | None:
    return _overrides["superglue"] or os.environ.get(SUPERGLUE_DIR_ENV) or None


def tfds_data_dir() -> str | None:
    return _overrides["data_dir"] or os.environ.get(TFDS_DATA_DIR_ENV) or None


def tfds_manual_dir() -> str | None:
    return _overrides["manual_dir"] or os.environ.get(TFDS_MANUAL_DIR_ENV) or None


CANONICAL_SPLITS = {"train": "train", "validation": "validation", "test": "test"}


class TaskSource(seqio.DataSource):
    """A `seqio.DataSource` over one TFDS dataset that picks its backend per `get_dataset` call.

    Args:
      tfds_name: e.g. "super_glue/boolq:1.0.2".
      splits: canonical split -> TFDS split (e.g. {"validation": "test"} for the MRQA sets, whose
        out-of-domain dev data TFDS files under "test").
      superglue_config: the SuperGLUE config name ("boolq", "wsc.fixed", ...) when the official
        JSONL release can stand in for TFDS; None for other datasets.
    """

    def __init__(
        self,
        tfds_name: str,
        splits: Mapping[str, str] | None = None,
        superglue_config: str | None = None,
    ):
        self._tfds_name = tfds_name
        self._split_map = dict(splits or CANONICAL_SPLITS)
        self._superglue_config = superglue_config
        self._tfds_sources: dict[str | None, seqio.TfdsDataSource] = {}
        super().__init__(splits=tuple(self._split_map))

    def __repr__(self):
        return f"TaskSource({self._tfds_name!r}, splits={self._split_map})"

    @property
    def tfds_name(self) -> str:
        return self._tfds_name

    @property
    def supports_arbitrary_sharding(self) -> bool:
        return False

    def list_shards(self, split: str) -> list[str]:
        return [split]

    def uses_local_jsonl(self) -> bool:
        return bool(self._superglue_config and superglue_dir())

    def tfds_source(self) -> seqio.TfdsDataSource:
        """The `seqio.TfdsDataSource` for the data directory in force now (one per directory)."""
        data_dir = tfds_data_dir()
        if data_dir not in self._tfds_sources:
            self._tfds_sources[data_dir] = seqio.TfdsDataSource(
                tfds_name=self._tfds_name, tfds_data_dir=data_dir, splits=self._split_map
            )
        return self._tfds_sources[data_dir]

    def get_dataset(
        self,
        split: str = "train",
        shuffle: bool = True,
        seed: int | None = None,
        shard_info: seqio.ShardInfo | None = None,
        *,
        sequence_length: Mapping[str, int] | None = None,
        use_cached: bool = False,
        num_epochs: int | None = 1,
    ) -> tf.data.Dataset:
        del sequence_length, use_cached, num_epochs
        if split not in self._split_map:
            raise ValueError(f"{self._tfds_name} has no split {split!r}; it has {self.splits}")
        if self.uses_local_jsonl():
            ds = superglue_jsonl_dataset(superglue_dir(), self._superglue_config, split)
            if shard_info and shard_info.num_shards > 1:
                ds = ds.shard(shard_info.num_shards, shard_info.index)
            return ds
        manual_dir = tfds_manual_dir()
        if manual_dir:
            prepare_tfds(self._tfds_name, manual_dir, tfds_data_dir())
        return self.tfds_source().get_dataset(
            split=split, shuffle=shuffle, seed=seed, shard_info=shard_info
        )

    def num_input_examples(self, split: str) -> int | None:
        if self.uses_local_jsonl():
            return None
        return self.tfds_source().num_input_examples(split)


def prepare_tfds(tfds_name: str, manual_dir: str, data_dir: str | None = None) -> None:
    """Builds `tfds_name` under `data_dir` from the archives in `manual_dir`, once.

    TFDS looks in `manual_dir` for each source file by its registered name (`BoolQ.zip`, ...) and
    verifies it against its registered checksum, so a stale or truncated archive fails loudly.
    """
    builder = tfds.builder(tfds_name, data_dir=data_dir)
    if builder.is_prepared():
        return
    config = tfds.download.DownloadConfig(manual_dir=manual_dir)
    builder.download_and_prepare(download_config=config)


# ----------------------------------------------------------------------------------------------
# Official SuperGLUE JSONL -> TFDS feature shapes.

# config -> (release directory, file stem for the single test-only file of the diagnostics).
SUPERGLUE_DIRS = {
    "boolq": "BoolQ",
    "cb": "CB",
    "copa": "COPA",
    "multirc": "MultiRC",
    "record": "ReCoRD",
    "rte": "RTE",
    "wic": "WiC",
    "wsc.fixed": "WSC",
    "axb": "AX-b",
    "axg": "AX-g",
}
_SPLIT_FILES = {"train": "train.jsonl", "validation": "val.jsonl", "test": "test.jsonl"}

# Plain-text fields per config, in TFDS's order; int32 fields next; idx and label handled apart.
_TEXT_FIELDS = {
    "boolq": ("question", "passage"),
    "cb": ("premise", "hypothesis"),
    "copa": ("premise", "choice1", "choice2", "question"),
    "rte": ("premise", "hypothesis"),
    "wic": ("word", "sentence1", "sentence2"),
    "wsc.fixed": ("text", "span1_text", "span2_text"),
    "axb": ("sentence1", "sentence2"),
    "axg": ("premise", "hypothesis"),
}
_INT_FIELDS = {
    "wic": ("start1", "start2", "end1", "end2"),
    "wsc.fixed": ("span1_index", "span2_index"),
}


def superglue_jsonl_path(root: str, config: str, split: str) -> str:
    folder = SUPERGLUE_DIRS[config]
    if config in ("axb", "axg"):
        if split != "test":
            raise ValueError(f"SuperGLUE {config} is test-only; got split {split!r}")
        return os.path.join(root, folder, f"{folder}.jsonl")
    return os.path.join(root, folder, _SPLIT_FILES[split])


def output_signature(config: str) -> dict:
    """The `tf.TensorSpec`s TFDS gives `super_glue/{config}`: strings are scalars, `label` is
    int64 (a TFDS ClassLabel, -1 on test), `idx` int32 (a dict for MultiRC and ReCoRD), and
    ReCoRD's `entities`/`answers` are [num_entities] / [num_answers] string vectors."""
    string = tf.TensorSpec([], tf.string)
    int32 = tf.TensorSpec([], tf.int32)
    if config == "multirc":
        sig = {k: string for k in ("paragraph", "question", "answer")}
        sig["idx"] = {k: int32 for k in ("paragraph", "question", "answer")}
    elif config == "record":
        sig = {k: string for k in ("passage", "query")}
        sig["entities"] = tf.TensorSpec([None], tf.string)
        sig["answers"] = tf.TensorSpec([None], tf.string)
        sig["idx"] = {"passage": int32, "query": int32}
        return sig
    else:
        sig = {k: string for k in _TEXT_FIELDS[config]}
        sig.update({k: int32 for k in _INT_FIELDS.get(config, ())})
        sig["idx"] = int32
    sig["label"] = tf.TensorSpec([], tf.int64)
    return sig


def _label_index(config: str, value) -> int:
    """Maps a JSONL label (bool, str, or COPA's 0/1) to the TFDS ClassLabel index."""
    names = labels.SUPER_GLUE[config]
    if value is None:
        return -1
    if config == "copa":
        return 1 if value else 0
    if isinstance(value, bool):
        value = "True" if value else "False"
    if value not in names:
        raise ValueError(f"SuperGLUE {config}: label {value!r} is not one of {names}")
    return names.index(value)


def convert_superglue_record(config: str, row: dict) -> Iterator[dict]:
    """Yields the TFDS example(s) for one official JSONL record, as plain Python values.

    MultiRC records (a paragraph with questions with answers) become one row per answer with
    `idx` {paragraph, question, answer}; ReCoRD records become one row per query, with the
    passage's entity spans turned into a sorted set of strings and the answers likewise; WSC's
    `target` fields are lifted to the top level and repaired as TFDS's `wsc.fixed` does.
    """
    if config == "multirc":
        paragraph = row["passage"]
        for question in paragraph["questions"]:
            for answer in question["answers"]:
                label = answer.get("label")  # 0/1 in the release; TFDS reads it as a bool.
                yield {
                    "paragraph": paragraph["text"],
                    "question": question["question"],
                    "answer": answer["text"],
                    "label": _label_index(config, None if label is None else bool(label)),
                    "idx": {
                        "paragraph": row["idx"],
                        "question": question["idx"],
                        "answer": answer["idx"],
                    },
                }
        return
    if config == "record":
        text = row["passage"]["text"]
        entities = sorted({text[e["start"] : e["end"] + 1] for e in row["passage"]["entities"]})
        for qa in row["qas"]:
            yield {
                "passage": text,
                "query": qa["query"],
                "entities": entities,
                "answers": sorted({a["text"] for a in qa.get("answers", [])}),
                "idx": {"passage": row["idx"], "query": qa["idx"]},
            }
        return
    if config == "wsc.fixed":
        row = {**row, **row["target"]}
    example = {k: row[k] for k in _TEXT_FIELDS[config] + _INT_FIELDS.get(config, ())}
    if config == "wsc.fixed":
        example = fix_wsc_spans(example)
    example["idx"] = row["idx"]
    example["label"] = _label_index(config, row.get("label"))
    yield example


# Two WSC spans have words between their parts in the text; TFDS leaves them as they are.
_UNFIXABLE_WSC_SPANS = ("Kamenev and Zinoviev", "Kamenev, Zinoviev, and Stalin")


def fix_wsc_spans(ex: dict) -> dict:
    """Repairs WSC spans that are not substrings of the text, as TFDS `wsc.fixed` does.

    Why: T5's WSC "simple" format locates the pronoun by its span, so the TFDS repair must be
    reproduced for the local JSONL path to yield the same examples. The repair matches the case
    of the span's first letter to the word at its index, drops a trailing period and replaces
    newlines with spaces. TFDS also sets span2_index to 10 for the one span containing
    "theyscold" (and nothing else about it); kept for parity.
    """
    ex = dict(ex)
    for key in ("span1", "span2"):
        span = ex[f"{key}_text"]
        if span in ex["text"] or span in _UNFIXABLE_WSC_SPANS:
            continue
        if "theyscold" in span:
            ex["span2_index"] = 10
        first_word = ex["text"].split()[ex[f"{key}_index"]]
        head = span[0].lower() if first_word[0].islower() else span[0].upper()
        ex[f"{key}_text"] = (head + span[1:]).rstrip(".").replace("\n", " ")
    return ex


def read_superglue_jsonl(root: str, config: str, split: str) -> Iterator[dict]:
    """Yields TFDS-shaped examples from `<root>/<TaskDir>/<split>.jsonl`, naming the file and
    line of any record that lacks a field."""
    path = superglue_jsonl_path(root, config, split)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"SuperGLUE {config} {split}: {path} not found (expected the official release "
            f"layout under {root}, e.g. {SUPERGLUE_DIRS[config]}/{_SPLIT_FILES.get(split, '')})"
        )
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield from convert_superglue_record(config, json.loads(line))
            except KeyError as e:
                raise ValueError(
                    f"SuperGLUE {config}: record at {path}:{line_number} is missing field {e}"
                ) from None


def superglue_jsonl_dataset(root: str, config: str, split: str) -> tf.data.Dataset:
    """A `tf.data.Dataset` of TFDS-shaped examples (see `output_signature`) from local JSONL."""
    return tf.data.Dataset.from_generator(
        lambda: read_superglue_jsonl(root, config, split),
        output_signature=output_signature(config),
    )
