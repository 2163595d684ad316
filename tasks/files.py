"""Tasks from plain JSONL or TSV files, registered without writing Python.

A `FileTask` names one file per split and the two fields that hold the input text and the
target text; `register()` makes it a seqio task in T5's format (inputs text + EOS -> targets
text + EOS, nothing added). With `label_names` it is a classification task: every target must
be one of them, they feed the class-label prompt initializer, predictions are read back as
class indices, and an optional `{name}_rank_classification` variant scores each label instead
of generating. Scored by accuracy (exact match of the whole target without labels).

    FileTask(name="my_task", splits={"train": "a.jsonl", "validation": "b.jsonl"},
             inputs_field="question", targets_field="answer", label_names=("yes", "no"))

is what gin binds (`files.FileTask(...)`) and what `parse_spec` builds from one flag:

    my_task:train=a.jsonl,validation=b.jsonl,inputs=question,targets=answer,labels=yes|no

Files are checked when the task is registered (they exist and hold a record, a TSV header has
the fields) and every record when a split is read (`readers`): one `UserError` names the file,
line and fault.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence

import seqio
import tensorflow as tf

from ptune.errors import UserError
from ptune.tasks import metrics, postprocessors, readers, registry, vocab

FORMATS = {".jsonl": "jsonl", ".tsv": "tsv"}
VOCABULARIES = ("t5", "byte")
SPLITS = ("train", "validation", "test")
_NAME = re.compile(r"[A-Za-z0-9_.]+")
_REGISTERED: set[str] = set()  # names registered from files, which may be registered again.


@dataclasses.dataclass(frozen=True)
class FileTask:
    """A seqio task over local files; plain keyword fields so gin can bind it.

    Attributes:
      name: the task name (letters, digits, "_" and "."), not one of ptune's built-in tasks.
      splits: split ("train", "validation", "test") -> file path.
      inputs_field: the JSON field or TSV column holding the input text.
      targets_field: the JSON field or TSV column holding the target text.
      format: "jsonl" or "tsv"; None: from each file's extension (.jsonl, .tsv).
      label_names: the closed set of target strings of a classification task, or None.
      vocabulary: "t5" (SentencePiece, see `vocab`) or "byte" (no file needed).
      with_rank_classification: also register `{name}_rank_classification` (needs labels).
    """

    name: str
    splits: Mapping[str, str]
    inputs_field: str = "inputs"
    targets_field: str = "targets"
    format: str | None = None
    label_names: Sequence[str] | None = None
    vocabulary: str = "t5"
    with_rank_classification: bool = False

    def file_format(self, path: str) -> str:
        if self.format is not None:
            return self.format
        return FORMATS[os.path.splitext(path)[1].lower()]

    def validate(self) -> None:
        """One `UserError` naming the task and the fault, before anything is registered."""
        where = f"task {self.name!r}"
        if not _NAME.fullmatch(self.name or ""):
            raise UserError(f"{where}: a name has only letters, digits, '_' and '.'")
        if self.name in registry.list_tasks() and self.name not in _REGISTERED:
            raise UserError(f"{where}: the name is taken by a registered task; choose another")
        if not self.splits:
            raise UserError(f"{where}: no files; give at least one of {', '.join(SPLITS)}")
        for split, path in self.splits.items():
            if split not in SPLITS:
                raise UserError(f"{where}: unknown split {split!r} (splits: {', '.join(SPLITS)})")
            if os.path.isdir(path):  # whatever its name says
                readers.require_file(path, f"{where} {split}")
            if self.format is None and os.path.splitext(path)[1].lower() not in FORMATS:
                raise UserError(
                    f"{where}: cannot tell the format of {path} from its extension; "
                    "name it .jsonl or .tsv, or set format"
                )
            readers.require_file(path, f"{where} {split}")
        if self.format is not None and self.format not in FORMATS.values():
            raise UserError(f"{where}: format {self.format!r} is not jsonl or tsv")
        if self.vocabulary not in VOCABULARIES:
            raise UserError(f"{where}: vocabulary {self.vocabulary!r} is not t5 or byte")
        names = list(self.label_names or ())
        if self.label_names is not None and (len(names) < 2 or len(set(names)) < len(names)):
            raise UserError(f"{where}: label_names must be two or more distinct strings")
        if self.with_rank_classification and not names:
            raise UserError(f"{where}: rank classification needs label_names")
        for split, path in self.splits.items():
            tsv = self.file_format(path) == "tsv"
            lines = _nonblank_lines(path, most=2 if tsv else 1)
            if lines == 0:
                raise UserError(f"{where} {split}: file {path} is empty (or blank lines only)")
            if tsv:
                header = readers.tsv_header(path)
                for column in (self.inputs_field, self.targets_field):
                    if column not in header:
                        raise UserError(
                            f"{path}:1: no column {column!r} in the header ({', '.join(header)})"
                        )
                if lines == 1:
                    raise UserError(f"{where} {split}: file {path} holds a header and no rows")

    def read(self, split: str) -> list[dict]:
        """The records of one split: `inputs`, `targets` strings, `label` (class index, -1
        without labels), `idx` (record number); `UserError` at the first bad line."""
        path = self.splits[split]
        readers.require_file(path, f"task {self.name!r} {split}")
        tsv = self.file_format(path) == "tsv"
        rows = readers.tsv_rows(path) if tsv else readers.jsonl_rows(path)
        names = list(self.label_names or ())
        records = []
        for idx, (where, row) in enumerate(rows):
            target = readers.field(row, self.targets_field, str, where)
            if names and target not in names:
                raise UserError(f"{where}: target {target!r} is not one of {', '.join(names)}")
            records.append(
                {
                    "inputs": readers.field(row, self.inputs_field, str, where),
                    "targets": target,
                    "label": names.index(target) if names else -1,
                    "idx": idx,
                }
            )
        return records

    def register(self) -> list[str]:
        """Validates, then registers the task (and its rank-classification variant); returns
        the registered names. Registering the same name again replaces it."""
        self.validate()
        label_names = tuple(self.label_names) if self.label_names else None
        vocabulary = vocab.get_byte_vocabulary() if self.vocabulary == "byte" else None
        features = vocab.output_features(vocabulary)
        source = FileSource(self)
        names = registry.add_t5_task(
            self.name,
            source=source,
            text_preprocessors=[],
            postprocess_fn=postprocessors.class_id(label_names) if label_names else None,
            metric_fns=[metrics.accuracy],
            primary_metrics=("accuracy",),
            label_names=label_names,
            output_features=features,
        )
        if self.with_rank_classification:
            names.append(f"{self.name}_rank_classification")
            registry.add_rank_classification_task(
                names[-1],
                source=source,
                text_preprocessors=[],
                label_names=label_names,
                output_features=features,
            )
        _REGISTERED.update(names)
        return names


def _nonblank_lines(path: str, most: int) -> int:
    """How many non-blank lines `path` holds, counting no further than `most` (so a large
    file is read only up to its first records)."""
    count = 0
    for _, line in readers.text_lines(path):
        count += bool(line.strip())
        if count >= most:
            break
    return count


class FileSource(seqio.DataSource):
    """The records of a `FileTask`, read and checked in Python at each `get_dataset`."""

    def __init__(self, task: FileTask):
        self._task = task
        super().__init__(splits=tuple(task.splits))

    def __repr__(self):
        return f"FileSource({dict(self._task.splits)})"

    @property
    def supports_arbitrary_sharding(self) -> bool:
        return False

    def list_shards(self, split: str) -> list[str]:
        return [split]

    def missing(self, splits: Sequence[str]) -> list[str]:
        paths = [self._task.splits[split] for split in splits]
        return [f"{path} (task {self._task.name})" for path in paths if not os.path.isfile(path)]

    def get_dataset(self, split="train", shuffle=True, seed=None, shard_info=None, **unused):
        records = self._task.read(split)
        ds = readers.records_dataset(records, SIGNATURE)
        if shard_info and shard_info.num_shards > 1:
            ds = ds.shard(shard_info.num_shards, shard_info.index)
        return ds


SIGNATURE = {
    "inputs": tf.TensorSpec([], tf.string),
    "targets": tf.TensorSpec([], tf.string),
    "label": tf.TensorSpec([], tf.int32),
    "idx": tf.TensorSpec([], tf.int32),
}

_SPEC_KEYS = {
    "inputs": "inputs_field",
    "targets": "targets_field",
    "format": "format",
    "vocabulary": "vocabulary",
}


def registered() -> frozenset[str]:
    """The task names registered from files in this process (they are not built-in tasks)."""
    return frozenset(_REGISTERED)


def split_spec(spec: str, where: str, usage: str) -> tuple[str, list[tuple[str, str]]]:
    """'NAME:KEY=VALUE,KEY=VALUE' -> (NAME, [(KEY, VALUE), ...]); a malformed spec is one
    `UserError` starting with `where` and showing `usage`."""
    name, colon, rest = spec.partition(":")
    if not colon or not name:
        raise UserError(f"{where}: expected {usage}")
    items = []
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not value:
            raise UserError(f"{where}: {item!r} is not KEY=VALUE")
        if key.strip() in dict(items):
            raise UserError(f"{where}: {key.strip()} is given twice")
        items.append((key.strip(), value))
    return name, items


def parse_spec(spec: str) -> FileTask:
    """A `FileTask` from one string, for a command-line flag:

        NAME:KEY=VALUE,KEY=VALUE,...

    Keys: `train`, `validation`, `test` (file paths), `inputs`, `targets` (field names),
    `labels` (label strings joined by "|"), `format` (jsonl/tsv), `vocabulary` (t5/byte) and
    `rank_classification` (true/false). Values cannot contain "," (nor paths a ","). The task
    is validated by `register()`, not here.
    """
    where = f"task spec {spec!r}"
    name, items = split_spec(spec, where, "NAME:train=FILE,inputs=FIELD,targets=FIELD,...")
    fields: dict = {"name": name, "splits": {}}
    for key, value in items:
        if key in SPLITS:
            fields["splits"][key] = value
        elif key in _SPEC_KEYS:
            fields[_SPEC_KEYS[key]] = value
        elif key == "labels":
            fields["label_names"] = tuple(value.split("|"))
        elif key == "rank_classification":
            if value.lower() not in ("true", "false"):
                raise UserError(f"{where}: rank_classification={value!r} is not true or false")
            fields["with_rank_classification"] = value.lower() == "true"
        else:
            known = ", ".join([*SPLITS, *_SPEC_KEYS, "labels", "rank_classification"])
            raise UserError(f"{where}: unknown key {key!r} (keys: {known})")
    return FileTask(**fields)
