"""The official GLUE TSV files, in the layout of the GLUE download (`CoLA/train.tsv`,
`SST-2/dev.tsv`, `MNLI/dev_matched.tsv`, `STS-B/test.tsv`, `diagnostic/diagnostic.tsv`, ...),
read as the records TFDS `glue/*:2.0.0` yields, so the same preprocessors run on either.

The reading follows TFDS's own GLUE builder: tab-separated with quotes as plain characters,
named columns from each file's header (CoLA's train and dev files have none), `idx` the row's
number in its file from 0, a label given either by name or by class number, STS-B's score as a
float32, and -1 where a test file has no label. Where TFDS silently drops a row with a missing
value, this raises a `UserError` naming the file and line; on the official files the two agree
(every row is complete). MRPC's `idx` counts rows of `train.tsv`/`dev.tsv`; TFDS counts them in
Microsoft's original file instead, which only changes the pass-through `idx`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

import numpy as np
import tensorflow as tf

from ptune.errors import UserError
from ptune.tasks import labels, readers, sources


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where one GLUE config sits in the release and which columns hold its fields."""

    folder: str
    files: Mapping[str, str]  # TFDS split -> file name in `folder`
    columns: Mapping[str, str]  # TFDS feature -> TSV column
    label: str | None  # the label column; None for the diagnostic, which has no labels


_STANDARD = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
_PAIR = {"sentence1": "sentence1", "sentence2": "sentence2"}
_NLI = {"premise": "sentence1", "hypothesis": "sentence2"}

LAYOUTS = {
    "cola": Layout("CoLA", _STANDARD, {"sentence": "sentence"}, "label"),
    "sst2": Layout("SST-2", _STANDARD, {"sentence": "sentence"}, "label"),
    "mrpc": Layout(
        "MRPC", _STANDARD, {"sentence1": "#1 String", "sentence2": "#2 String"}, "Quality"
    ),
    "qqp": Layout(
        "QQP", _STANDARD, {"question1": "question1", "question2": "question2"}, "is_duplicate"
    ),
    "stsb": Layout("STS-B", _STANDARD, _PAIR, "score"),
    "mnli": Layout(
        "MNLI",
        {
            "train": "train.tsv",
            "validation_matched": "dev_matched.tsv",
            "validation_mismatched": "dev_mismatched.tsv",
            "test_matched": "test_matched.tsv",
            "test_mismatched": "test_mismatched.tsv",
        },
        _NLI,
        "gold_label",
    ),
    "mnli_matched": Layout(
        "MNLI", {"validation": "dev_matched.tsv", "test": "test_matched.tsv"}, _NLI, "gold_label"
    ),
    "mnli_mismatched": Layout(
        "MNLI",
        {"validation": "dev_mismatched.tsv", "test": "test_mismatched.tsv"},
        _NLI,
        "gold_label",
    ),
    "qnli": Layout("QNLI", _STANDARD, {"question": "question", "sentence": "sentence"}, "label"),
    "rte": Layout("RTE", _STANDARD, _PAIR, "label"),
    "wnli": Layout("WNLI", _STANDARD, _PAIR, "label"),
    "ax": Layout("diagnostic", {"test": "diagnostic.tsv"}, _NLI, None),
}

# CoLA's train.tsv and dev.tsv have no header; their four columns are these.
COLA_COLUMNS = ("source", "label", "original_label", "sentence")


def relative_path(config: str, split: str) -> str:
    layout = LAYOUTS[config]
    return os.path.join(layout.folder, layout.files[split])


def local_files(config: str) -> sources.LocalFiles:
    """How a `TaskSource` reads `config` from the release under `--glue_dir`."""
    return sources.LocalFiles(
        description=f"GLUE {config}",
        directory=sources.glue_dir,
        setting=sources.GLUE_SETTING,
        relative_path=lambda split: relative_path(config, split),
        read=lambda path, split: read(path, config, split),
        signature=output_signature(config),
    )


def output_signature(config: str) -> dict:
    """TFDS's shapes: scalar strings, `label` int64 (ClassLabel; float32 for STS-B), `idx` int32."""
    sig = {feature: tf.TensorSpec([], tf.string) for feature in LAYOUTS[config].columns}
    sig["label"] = tf.TensorSpec([], tf.float32 if config == "stsb" else tf.int64)
    sig["idx"] = tf.TensorSpec([], tf.int32)
    return sig


def _label(config: str, value: str, where: str):
    """A label cell -> the TFDS value: class index (by name or number) or STS-B's float score."""
    if config == "stsb":
        try:
            return float(np.float32(value))
        except ValueError:
            raise UserError(f"{where}: score {value!r} is not a number") from None
    names = labels.GLUE[config]
    if value in names:
        return names.index(value)
    if value.strip().lstrip("-").isdigit() and 0 <= int(value) < len(names):
        return int(value)
    raise UserError(
        f"{where}: label {value!r} is not one of {', '.join(names)} "
        f"or a class number 0-{len(names) - 1}"
    )


def read(path: str, config: str, split: str) -> list[dict]:
    """All TFDS-shaped examples of one release file, checked; `UserError` at the first fault."""
    layout = LAYOUTS[config]
    readers.require_file(path, f"GLUE {config} {split}")
    headerless = config == "cola" and not split.startswith("test")
    rows = readers.tsv_rows(path, COLA_COLUMNS if headerless else None)
    records = []
    for n, (where, row) in enumerate(rows):
        if n == 0:
            wanted = list(layout.columns.values())
            if layout.label and not split.startswith("test"):
                wanted.append(layout.label)
            absent = [c for c in wanted if c not in row]
            if absent:
                raise UserError(
                    f"{path}: no column {', '.join(map(repr, absent))} in the header "
                    f"({', '.join(row)}); is this the official GLUE {layout.folder} file?"
                )
        record = {feature: row[column] for feature, column in layout.columns.items()}
        if layout.label and layout.label in row:
            record["label"] = _label(config, row[layout.label], where)
        else:
            record["label"] = -1.0 if config == "stsb" else -1
        record["idx"] = n
        records.append(record)
    return records
