"""Reading local JSONL and TSV files in Python, before TensorFlow sees them, with one-line errors.

Why in Python first: a record that fails inside `tf.data` (bad JSON, a missing field, a string
where a number belongs) surfaces as TensorFlow tracebacks raised on a background thread, and a
training loop waiting on that pipeline can hang. Read and checked here, the same fault is one
`UserError` naming the file, the line and what is wrong, raised while the pipeline is built.
`records_dataset` then serves the checked records, which can no longer fail.

Every error message starts with `{path}:{line}:`; lines count from 1, blank lines included.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence

import tensorflow as tf

from ptune.errors import UserError

# What a field must hold, as named in messages. `int` excludes booleans (JSON true is not 1).
KINDS = {
    str: "a string",
    int: "an integer",
    bool: "a boolean",
    float: "a number",
    list: "a list",
    dict: "an object",
}


def _kind_of(value) -> str:
    if value is None:
        return "null"
    for kind, name in reversed(KINDS.items()):  # bool before int, since bool is an int.
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _is(value, kind: type) -> bool:
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind)


def field(record: Mapping, name: str, kind: type, where: str):
    """`record[name]`, checked to be of `kind` (str, int, bool, float, list or dict).

    `where` ("path:line") starts the error, e.g. `data/val.jsonl:7: field 'label' is a string,
    expected a boolean`. Dotted names ("target.span1_index") reach into nested objects.
    """
    value = record
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise UserError(f"{where}: field '{name}' is missing")
        value = value[part]
    if not _is(value, kind):
        raise UserError(f"{where}: field '{name}' is {_kind_of(value)}, expected {KINDS[kind]}")
    return value


def require_file(path: str, what: str) -> None:
    """A one-line error naming `what` (e.g. "SuperGLUE cb validation") when `path` is absent."""
    if os.path.isdir(path):
        raise UserError(f"{what}: {path} is a directory, not a file")
    if not os.path.isfile(path):
        raise UserError(f"{what}: file {path} not found")


_NEWLINE = re.compile(r"\r\n|\r|\n")


def text_lines(path: str) -> Iterator[tuple[int, str]]:
    """(line number, text) for each line of a UTF-8 file, without its line ending.

    Lines end at "\n", "\r\n" or "\r", as files opened in Python's text mode (and so TFDS)
    read them; a byte-order mark at the start is dropped. Each line is decoded alone so that
    bytes that are not UTF-8 are reported on their own line.
    """
    line_number = 0
    with open(path, "rb") as f:
        for raw in f:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(f"{path}:{line_number + 1}: not UTF-8 text ({e.reason})") from None
            if line_number == 0:
                text = text.removeprefix("\ufeff")
            pieces = _NEWLINE.split(text)
            if pieces[-1] == "":
                pieces.pop()
            for piece in pieces:
                line_number += 1
                yield line_number, piece


def jsonl_rows(path: str) -> Iterator[tuple[str, dict]]:
    """("path:line", object) for every non-blank line of a JSON Lines file."""
    for line_number, line in text_lines(path):
        if not line.strip():
            continue
        where = f"{path}:{line_number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{where}: not valid JSON ({e.msg}: column {e.colno})") from None
        if not isinstance(row, dict):
            raise UserError(f"{where}: a JSON object is expected, found {_kind_of(row)}")
        yield where, row


def tsv_rows(path: str, columns: Sequence[str] | None = None) -> Iterator[tuple[str, dict]]:
    """("path:line", {column: value}) for every non-blank row of a tab-separated file.

    The first row is the header unless `columns` names the columns. Quotes are ordinary
    characters, as TFDS reads GLUE (`csv.QUOTE_NONE`), so a row is exactly one line split at
    its tabs; fields after the last named column are ignored, as `csv.DictReader` does. A row
    with fewer fields than columns is an error (TFDS silently drops such rows).
    """
    names = list(columns) if columns is not None else None
    for line_number, line in text_lines(path):
        if not line:
            continue
        row = line.split("\t")
        if names is None:
            names = row
            continue
        if len(row) < len(names):
            raise UserError(
                f"{path}:{line_number}: {len(row)} tab-separated fields where {len(names)} are "
                f"expected ({', '.join(names)})"
            )
        yield f"{path}:{line_number}", dict(zip(names, row))


def tsv_header(path: str) -> list[str]:
    """The column names in the first non-blank line of a TSV file (for checks at registration)."""
    for _, line in text_lines(path):
        if line:
            return line.split("\t")
    return []


def records_dataset(records: Sequence[Mapping], signature: Mapping) -> tf.data.Dataset:
    """A `tf.data.Dataset` over already-checked records (plain Python values), typed by
    `signature` ({field: tf.TensorSpec}, nested dicts allowed)."""
    return tf.data.Dataset.from_generator(lambda: iter(records), output_signature=signature)
