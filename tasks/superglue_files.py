"""The official SuperGLUE JSONL release (`BoolQ/train.jsonl`, ..., `AX-b/AX-b.jsonl`) read as the
records TFDS `super_glue/*:1.0.2` yields, so the same preprocessors run on either.

Each record is checked field by field while it is converted (`readers.field`), so a truncated
line, a missing field or a value of the wrong type is one `UserError` naming the file and line.
Labels may be absent only in test files (the release has none there, except the diagnostics).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import tensorflow as tf

from ptune.errors import UserError
from ptune.tasks import labels, readers, sources

# config -> the release's directory for it.
DIRS = {
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
SPLIT_FILES = {"train": "train.jsonl", "validation": "val.jsonl", "test": "test.jsonl"}

# Plain-text fields per config, in TFDS's order; integer fields next; idx and label apart.
TEXT_FIELDS = {
    "boolq": ("question", "passage"),
    "cb": ("premise", "hypothesis"),
    "copa": ("premise", "choice1", "choice2", "question"),
    "rte": ("premise", "hypothesis"),
    "wic": ("word", "sentence1", "sentence2"),
    "wsc.fixed": ("text", "span1_text", "span2_text"),
    "axb": ("sentence1", "sentence2"),
    "axg": ("premise", "hypothesis"),
}
INT_FIELDS = {
    "wic": ("start1", "start2", "end1", "end2"),
    "wsc.fixed": ("span1_index", "span2_index"),
}
# The JSON type of each config's label in the release: label strings, booleans, or COPA's 0/1.
LABEL_KINDS = {"boolq": bool, "wic": bool, "wsc.fixed": bool, "copa": int}


def relative_path(config: str, split: str) -> str:
    """The file of one split inside the release, e.g. "CB/val.jsonl", "AX-b/AX-b.jsonl"."""
    folder = DIRS[config]
    if config in ("axb", "axg"):
        return os.path.join(folder, f"{folder}.jsonl")
    return os.path.join(folder, SPLIT_FILES[split])


def local_files(config: str) -> sources.LocalFiles:
    """How a `TaskSource` reads `config` from the release under `--superglue_dir`."""
    return sources.LocalFiles(
        description=f"SuperGLUE {config}",
        directory=sources.superglue_dir,
        setting=sources.SUPERGLUE_SETTING,
        relative_path=lambda split: relative_path(config, split),
        read=lambda path, split: read(path, config, split),
        signature=output_signature(config),
    )


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
        sig = {k: string for k in TEXT_FIELDS[config]}
        sig.update({k: int32 for k in INT_FIELDS.get(config, ())})
        sig["idx"] = int32
    sig["label"] = tf.TensorSpec([], tf.int64)
    return sig


def _label(config: str, row: dict, where: str, split: str) -> int:
    """The TFDS ClassLabel index of a record's label; -1 for an unlabelled test record."""
    if "label" not in row and split == "test":
        return -1
    kind = LABEL_KINDS.get(config, str)
    value = readers.field(row, "label", kind, where)
    names = labels.SUPER_GLUE[config]
    if config == "copa":
        if value not in (0, 1):
            raise UserError(f"{where}: label {value} is not 0 or 1")
        return value
    text = str(value) if kind is bool else value
    if text not in names:
        raise UserError(f"{where}: label {value!r} is not one of {', '.join(names)}")
    return names.index(text)


def _multirc(row: dict, where: str, split: str) -> Iterator[dict]:
    """One record per answer, as TFDS flattens MultiRC; answer labels are 0/1 in the release."""
    paragraph = readers.field(row, "passage.text", str, where)
    for question in readers.field(row, "passage.questions", list, where):
        for answer in readers.field(question, "answers", list, where):
            if "label" in answer or split != "test":
                value = readers.field(answer, "label", int, where)
                if value not in (0, 1):
                    raise UserError(f"{where}: answer label {value} is not 0 or 1")
            else:
                value = -1
            yield {
                "paragraph": paragraph,
                "question": readers.field(question, "question", str, where),
                "answer": readers.field(answer, "text", str, where),
                "label": value,
                "idx": {
                    "paragraph": readers.field(row, "idx", int, where),
                    "question": readers.field(question, "idx", int, where),
                    "answer": readers.field(answer, "idx", int, where),
                },
            }


def _record(row: dict, where: str) -> Iterator[dict]:
    """One record per query; entity spans become their sorted set of strings, as in TFDS."""
    text = readers.field(row, "passage.text", str, where)
    spans = readers.field(row, "passage.entities", list, where)
    entities = sorted(
        {
            text[readers.field(e, "start", int, where) : readers.field(e, "end", int, where) + 1]
            for e in spans
        }
    )
    for qa in readers.field(row, "qas", list, where):
        answers = readers.field(qa, "answers", list, where) if "answers" in qa else []
        yield {
            "passage": text,
            "query": readers.field(qa, "query", str, where),
            "entities": entities,
            "answers": sorted({readers.field(a, "text", str, where) for a in answers}),
            "idx": {
                "passage": readers.field(row, "idx", int, where),
                "query": readers.field(qa, "idx", int, where),
            },
        }


def _in_release(config: str, key: str) -> str:
    """Where a TFDS field sits in a release record: WSC keeps its spans under `target`."""
    return f"target.{key}" if config == "wsc.fixed" and key.startswith("span") else key


def convert_record(config: str, row: dict, where: str, split: str) -> Iterator[dict]:
    """Yields the TFDS example(s) for one release record, as plain Python values.

    MultiRC records (a paragraph with questions with answers) become one row per answer with
    `idx` {paragraph, question, answer}; ReCoRD records one row per query; WSC's `target` fields
    are lifted to the top level and repaired as TFDS's `wsc.fixed` does.
    """
    if config == "multirc":
        yield from _multirc(row, where, split)
        return
    if config == "record":
        yield from _record(row, where)
        return
    example = {
        k: readers.field(row, _in_release(config, k), str, where) for k in TEXT_FIELDS[config]
    }
    for k in INT_FIELDS.get(config, ()):
        example[k] = readers.field(row, _in_release(config, k), int, where)
    if config == "wsc.fixed":
        example = fix_wsc_spans(example, where)
    example["idx"] = readers.field(row, "idx", int, where)
    example["label"] = _label(config, row, where, split)
    yield example


# Two WSC spans have words between their parts in the text; TFDS leaves them as they are.
_UNFIXABLE_WSC_SPANS = ("Kamenev and Zinoviev", "Kamenev, Zinoviev, and Stalin")


def fix_wsc_spans(ex: dict, where: str = "WSC record") -> dict:
    """Repairs WSC spans that are not substrings of the text, as TFDS `wsc.fixed` does.

    Why: T5's WSC "simple" format locates the pronoun by its span, so the TFDS repair must be
    reproduced for the local release to yield the same examples. The repair matches the case
    of the span's first letter to the word at its index, drops a trailing period and replaces
    newlines with spaces. TFDS also sets span2_index to 10 for the one span containing
    "theyscold" (and nothing else about it); kept for parity.
    """
    ex = dict(ex)
    words = ex["text"].split()
    for key in ("span1", "span2"):
        span = ex[f"{key}_text"]
        if span in ex["text"] or span in _UNFIXABLE_WSC_SPANS:
            continue
        if "theyscold" in span:
            ex["span2_index"] = 10
        index = ex[f"{key}_index"]
        if not span or not 0 <= index < len(words):
            raise UserError(
                f"{where}: {key}_text {span!r} is not in the text and {key}_index {index} "
                f"is not one of its {len(words)} words"
            )
        head = span[0].lower() if words[index][0].islower() else span[0].upper()
        ex[f"{key}_text"] = (head + span[1:]).rstrip(".").replace("\n", " ")
    return ex


def read(path: str, config: str, split: str) -> list[dict]:
    """All TFDS-shaped examples of one release file, checked; `UserError` at the first fault."""
    readers.require_file(path, f"SuperGLUE {config} {split}")
    return [
        example
        for where, row in readers.jsonl_rows(path)
        for example in convert_record(config, row, where, split)
    ]


# DPR (Rahman and Ng, 2012) is part of T5's SuperGLUE mixture but not of the SuperGLUE
# release: its official files go beside the release, in a DPR folder.
DPR_DIR = "DPR"
DPR_FILES = {"train": "train.c.txt", "test": "test.c.txt"}


def dpr_local_files() -> sources.LocalFiles:
    """How DPR's `TaskSource` reads `<--superglue_dir>/DPR/{train,test}.c.txt`."""
    return sources.LocalFiles(
        description="DPR's official file (not in the SuperGLUE release: put train.c.txt and "
        "test.c.txt in its DPR folder)",
        directory=sources.superglue_dir,
        setting=sources.SUPERGLUE_SETTING,
        relative_path=lambda split: os.path.join(DPR_DIR, DPR_FILES[split]),
        read=lambda path, split: read_dpr(path),
        signature={
            "sentence": tf.TensorSpec([], tf.string),
            "pronoun": tf.TensorSpec([], tf.string),
            "candidates": tf.TensorSpec([2], tf.string),
            "label": tf.TensorSpec([], tf.int64),
        },
    )


def read_dpr(path: str) -> list[dict]:
    """DPR's official text file as TFDS `definite_pronoun_resolution` yields it: examples of
    four lines (sentence, pronoun, the two candidates separated by a comma, the correct one)
    each followed by a blank line; label = the correct candidate's position. A malformed
    example is one `UserError` naming the file and its first line."""
    readers.require_file(path, "DPR")
    with open(path, encoding="utf-8") as f:
        lines = [line.strip() for line in f]
    out = []
    for start in range(0, len(lines), 5):
        block = lines[start : start + 4]
        if not any(block):
            continue  # trailing blank lines
        where = f"{path}, line {start + 1}"
        if len(block) < 4 or not all(block):
            raise UserError(f"{where}: a DPR example needs 4 non-empty lines, got {block}")
        sentence, pronoun, candidates, correct = block
        names = [c.strip() for c in candidates.split(",")]
        if len(names) != 2 or correct not in names:
            raise UserError(
                f"{where}: expected two candidates separated by a comma, one of them "
                f"{correct!r}; got {candidates!r}"
            )
        out.append(
            {
                "sentence": sentence,
                "pronoun": pronoun,
                "candidates": names,
                "label": names.index(correct),
            }
        )
    return out
