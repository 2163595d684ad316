"""Where task examples come from: TFDS (downloaded, prepared, or built from manual archives) or a
local copy of a benchmark's official release, chosen when a dataset is read rather than when the
task is registered; and a check that a task's data is there before any model is loaded.

Why at read time: one task name (`taskless_super_glue_boolq_v102`) must work on a laptop with the
official JSONL files, on a cluster with a shared prepared TFDS directory and in CI with injected
in-memory data, without registering a second copy of every task. `TaskSource.get_dataset` asks,
in this order:

1. The local release directory of the task's benchmark, if one is set:
   `set_superglue_dir()` / `$PTUNE_SUPERGLUE_DIR` (official SuperGLUE JSONL, `superglue_files`)
   or `set_glue_dir()` / `$PTUNE_GLUE_DIR` (official GLUE TSV, `glue_files`). Records are
   converted to exactly the feature shapes TFDS yields, then run through the same preprocessors.
2. TFDS, with `data_dir` from `set_tfds_data_dir()` / `$TFDS_DATA_DIR` (prepared data), and, if
   `set_tfds_manual_dir()` / `$PTUNE_TFDS_MANUAL_DIR` names a directory holding the official
   archives (`BoolQ.zip`, `CoLA.zip`, `train-v1.1.json`, ...), the dataset is prepared from
   those files first, with TFDS's own checksums, instead of being downloaded.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence

import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from ptune.errors import UserError
from ptune.tasks import readers, registry

SUPERGLUE_DIR_ENV = "PTUNE_SUPERGLUE_DIR"
GLUE_DIR_ENV = "PTUNE_GLUE_DIR"
TFDS_DATA_DIR_ENV = "TFDS_DATA_DIR"
TFDS_MANUAL_DIR_ENV = "PTUNE_TFDS_MANUAL_DIR"
# How a user sets each directory, for messages.
SUPERGLUE_SETTING = f"--superglue_dir / {SUPERGLUE_DIR_ENV}"
GLUE_SETTING = f"--glue_dir / {GLUE_DIR_ENV}"
MANUAL_SETTING = f"--tfds_manual_dir / {TFDS_MANUAL_DIR_ENV}"

_overrides: dict[str, str | None] = {
    "superglue": None,
    "glue": None,
    "data_dir": None,
    "manual_dir": None,
}


def overrides() -> dict[str, str | None]:
    """The directories set in this process (`set_*`; None: the environment's), to put back
    with `restore_overrides` (`ptune.cli.main` does, so one command's gin-bound
    `data.DataSources` does not outlast it)."""
    return dict(_overrides)


def restore_overrides(saved: dict[str, str | None] | None) -> None:
    """Sets the directories `overrides()` returned; None clears every one."""
    for key in _overrides:
        _overrides[key] = (saved or {}).get(key)


def set_superglue_dir(path: str | None) -> None:
    """Reads SuperGLUE from official JSONL files under `path` (None: back to the env var/TFDS)."""
    _overrides["superglue"] = path


def set_glue_dir(path: str | None) -> None:
    """Reads GLUE from the official TSV files under `path` (`SST-2/train.tsv`, `MNLI/...`, ...;
    None: back to `$PTUNE_GLUE_DIR`, else TFDS)."""
    _overrides["glue"] = path


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


def glue_dir() -> str | None:
    return _overrides["glue"] or os.environ.get(GLUE_DIR_ENV) or None


def tfds_data_dir() -> str | None:
    return _overrides["data_dir"] or os.environ.get(TFDS_DATA_DIR_ENV) or None


def tfds_manual_dir() -> str | None:
    return _overrides["manual_dir"] or os.environ.get(TFDS_MANUAL_DIR_ENV) or None


CANONICAL_SPLITS = {"train": "train", "validation": "validation", "test": "test"}


@dataclasses.dataclass(frozen=True)
class LocalFiles:
    """One dataset inside a local copy of its benchmark's official release, and how to read it.

    Attributes:
      description: what it is, for messages ("SuperGLUE cb", "GLUE sst2").
      directory: the release directory in force now (a setter or env var), None when unset.
      setting: how a user sets that directory, for messages.
      relative_path: TFDS split -> the file inside the release ("CB/val.jsonl").
      read: (file, split) -> every record in TFDS's shapes, checked (`UserError` naming the line).
      signature: `tf.TensorSpec` per field, as TFDS gives them.
    """

    description: str
    directory: Callable[[], str | None]
    setting: str
    relative_path: Callable[[str], str]
    read: Callable[[str, str], list[dict]]
    signature: Mapping


class TaskSource(seqio.DataSource):
    """A `seqio.DataSource` over one TFDS dataset that picks its backend per `get_dataset` call.

    Args:
      tfds_name: e.g. "super_glue/boolq:1.0.2".
      splits: canonical split -> TFDS split (e.g. {"validation": "test"} for the MRQA sets, whose
        out-of-domain dev data TFDS files under "test").
      local: the dataset in a local release (SuperGLUE JSONL, GLUE TSV) that stands in for TFDS
        while its directory is set; None for datasets read from TFDS only.
    """

    def __init__(
        self,
        tfds_name: str,
        splits: Mapping[str, str] | None = None,
        local: LocalFiles | None = None,
    ):
        self._tfds_name = tfds_name
        self._split_map = dict(splits or CANONICAL_SPLITS)
        self._local = local
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

    def local_directory(self) -> str | None:
        """The local release directory this source reads now, or None (TFDS)."""
        return self._local.directory() if self._local else None

    def tfds_source(self) -> seqio.TfdsDataSource:
        """The `seqio.TfdsDataSource` for the data directory in force now (one per directory)."""
        data_dir = tfds_data_dir()
        if data_dir not in self._tfds_sources:
            self._tfds_sources[data_dir] = seqio.TfdsDataSource(
                tfds_name=self._tfds_name, tfds_data_dir=data_dir, splits=self._split_map
            )
        return self._tfds_sources[data_dir]

    def local_path(self, split: str) -> str:
        return os.path.join(
            self.local_directory(), self._local.relative_path(self._split_map[split])
        )

    def missing(self, splits: Sequence[str]) -> list[str]:
        """What a read of `splits` would not find, one phrase each (empty when all is there).

        Local releases are checked file by file. TFDS data is only checked for a manual
        directory that does not exist: unprepared data is otherwise downloaded on first read.
        """
        root = self.local_directory()
        if root is not None:
            if not os.path.isdir(root):
                return [f"the {self._local.setting} directory {root} does not exist"]
            paths = [self.local_path(split) for split in splits]
            return [
                f"{path} ({self._local.description})" for path in paths if not os.path.isfile(path)
            ]
        manual_dir = tfds_manual_dir()
        if manual_dir and not os.path.isdir(manual_dir):
            return [f"the {MANUAL_SETTING} directory {manual_dir} does not exist"]
        return []

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
        if self.local_directory() is not None:
            records = self._local.read(self.local_path(split), self._split_map[split])
            ds = readers.records_dataset(records, self._local.signature)
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
        if self.local_directory() is not None:
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


class SplitTagged(seqio.DataSource):
    """Another source's records, each with the name of the split it was read for in `split`.

    Why: seqio preprocessors never learn which split they are preparing, yet rank
    classification must differ (T5's `mode`): a training example is only the correct choice,
    an evaluation example is every choice. Tagging at the source keeps that one registered
    task, and `preprocessors.rank_classification` reads the tag.
    """

    def __init__(self, inner: seqio.DataSource):
        self._inner = inner
        super().__init__(splits=inner.splits)

    def __repr__(self):
        return f"SplitTagged({self._inner!r})"

    @property
    def inner(self) -> seqio.DataSource:
        """The source whose records are tagged."""
        return self._inner

    @property
    def supports_arbitrary_sharding(self) -> bool:
        return self._inner.supports_arbitrary_sharding

    def list_shards(self, split: str):
        return self._inner.list_shards(split)

    def num_input_examples(self, split: str):
        return self._inner.num_input_examples(split)

    def missing(self, splits: Sequence[str]) -> list[str]:
        check = getattr(self._inner, "missing", None)
        return check(splits) if check else []

    def get_dataset(
        self, split: str = "train", shuffle: bool = True, seed=None, shard_info=None, **unused
    ):
        ds = self._inner.get_dataset(split=split, shuffle=shuffle, seed=seed, shard_info=shard_info)
        return ds.map(
            lambda x: {**x, "split": tf.constant(split)}, num_parallel_calls=tf.data.AUTOTUNE
        )


def check_task_data(name: str, splits: Sequence[str] | None = None) -> None:
    """Checks, without reading any record or loading any model, that the data of a task (or of
    every task of a mixture) is where it will be looked for; one `UserError` lists what is not.

    `splits` are the splits the caller will read (e.g. ("train", "validation")); a task without
    one of them is not asked for it. None checks every split of every task. Checked: a local
    release directory and each split's file in it; a TFDS manual directory. Malformed records
    are reported when the split is read, naming the file and line.
    """
    try:
        tasks = [seqio.get_mixture_or_task(t) for t in registry.task_names(name)]
    except ValueError as e:
        raise UserError(str(e)) from None
    problems: list[str] = []
    for task in tasks:
        check = getattr(task.source, "missing", None)
        if check is None:
            continue
        wanted = [s for s in (splits or task.source.splits) if s in task.source.splits]
        for problem in check(wanted):
            if problem not in problems:
                problems.append(problem)
    if problems:
        shown = "; ".join(problems[:5]) + (
            f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        )
        raise UserError(f"data for {name} is missing: {shown}")
