"""seqio tasks -> host-local numpy batches for the model.

Training batches come from `seqio.get_dataset` with the encoder-decoder feature converter
(no packing with prompts), shuffled and repeated from a seed, so the order is a function of
(seed, task, batch size) alone. A resumed run skips the batches it already consumed and sees
exactly the examples an uninterrupted run would. Each host reads only its shard.

Model features (all int32): encoder_input_tokens [b, ls], decoder_input_tokens [b, lt],
decoder_target_tokens [b, lt], decoder_loss_weights [b, lt].
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from typing import Iterator, Mapping, Optional, Sequence

import numpy as np
import seqio

from ptune import buckets as buckets_lib
from ptune import prompts
from ptune.errors import UserError

log = logging.getLogger("ptune")

MODEL_FEATURES = (
    "encoder_input_tokens",
    "decoder_input_tokens",
    "decoder_target_tokens",
    "decoder_loss_weights",
)
# Multi-task prompt training: each example's task, as its position in the mixture's task list
# (`bank_tasks`), added by the pipeline; the model picks that task's prompt with it.
PROMPT_INDEX = prompts.PROMPT_INDEX


def get_task(name: str):
    """The registered seqio task or mixture; an unknown name lists close matches."""
    from ptune.tasks import registry

    try:
        return registry.get_task_or_mixture(name)
    except ValueError as e:
        raise UserError(str(e).splitlines()[0]) from e


# Modules whose pipeline functions are written for graph mode (data-dependent control flow in
# tf ops), so tf.data needs no autograph conversion to trace them.
GRAPH_MODE_MODULES = ("ptune.", "seqio.")


def _modules(fn) -> list[str]:
    """The modules of `fn`'s code: of a functools.partial, its function's and those of the
    callables it binds (a user's function handed to a seqio preprocessor)."""
    if isinstance(fn, functools.partial):
        bound = [f for f in (*fn.args, *fn.keywords.values()) if callable(f)]
        return [m for f in (fn.func, *bound) for m in _modules(f)]
    return [getattr(fn, "__module__", None) or type(fn).__module__]


def needs_autograph(task_name: str) -> bool:
    """Whether building `task_name`'s pipeline (each task of a mixture) calls code outside
    ptune and seqio: a preprocessor, a data source or its dataset function from the user's
    own module, which may rely on autograph (a Python `if` on a tensor) as under t5x."""
    from ptune.tasks import registry

    try:
        tasks = [registry.get_task_or_mixture(t) for t in registry.task_names(task_name)]
    except (ValueError, KeyError):
        return True  # an unknown name fails on its own, with autograph as seqio has it
    from ptune.tasks import sources

    for task in tasks:
        source = task.source
        if isinstance(source, sources.SplitTagged):
            source = source.inner
        code = [*task.preprocessors, source, getattr(source, "_dataset_fn", None)]  # seqio's
        modules = [m for fn in code if fn is not None for m in _modules(fn)]
        if not all(m.startswith(GRAPH_MODE_MODULES) for m in modules):
            return True
    return False


@contextlib.contextmanager
def building_dataset(task_name: str):
    """Builds a task's tf.data pipeline: "the data is not here and cannot be fetched" becomes
    one line with the remedies, and where every function in it is ptune's or seqio's
    (`needs_autograph`) tf.data traces them as written, without autograph's conversion, which
    costs seconds at each process's first build and about a second at every later one."""
    from tensorflow.python.autograph.core import ag_ctx

    status = ag_ctx.Status.UNSPECIFIED if needs_autograph(task_name) else ag_ctx.Status.DISABLED
    try:
        with ag_ctx.ControlStatusCtx(status=status):
            yield
    except UserError:
        raise  # already one line naming its cause (e.g. a malformed record's file and line)
    except Exception as e:  # noqa: BLE001  requests/urllib3/tfds each raise their own types
        text = f"{type(e).__name__}: {e}"
        offline = any(
            word in text
            for word in (
                "ConnectionError",
                "NameResolution",
                "Max retries",
                "DownloadError",
                "Failed to resolve",
                "DatasetNotFoundError",
                "ManualDirError",
                "manual_dir",
            )
        )
        if not offline:
            raise
        first = " ".join(str(e).split())[:200]
        raise UserError(
            f"task {task_name}: its data is not prepared here and cannot be downloaded "
            f"({type(e).__name__}: {first}); use --tfds_data_dir with prepared TFDS data, "
            "--tfds_manual_dir with the official archives, or --superglue_dir with the "
            "SuperGLUE JSONL release (see ptune/tasks/README.md)"
        ) from e


# seqio's converters check every example's lengths in the pipeline, before and after
# converting: features at most the task lengths, then exactly the model lengths. Both hold by
# construction (`Task.get_dataset` trims every output feature to the lengths it is given, the
# converter pads and trims to them), and the two checks' map functions were 7% of the time of
# a test module of tiny runs (tests/test_runs.py, py-spy): not built.
LENGTH_CHECK = False


def feature_converter(pack: bool = False) -> seqio.FeatureConverter:
    return seqio.EncDecFeatureConverter(pack=pack, apply_length_check=LENGTH_CHECK)


def output_vocabulary(task_name: str):
    return get_task(task_name).output_features["targets"].vocabulary


def bank_tasks(name: str) -> list[str]:
    """The tasks of a multi-task prompt bank over mixture `name`, in the mixture's order:
    `prompt_index` k is the k-th. A single task has no bank."""
    mixture = get_task(name)
    if not isinstance(mixture, seqio.Mixture):
        raise UserError(
            f"multi-task prompts train one prompt per task of a mixture, and {name} is a single "
            "task: name a mixture (`ptune tasks` lists them) or drop prompts/multi_task.gin"
        )
    return [task.name for task in mixture.tasks]


def _tagged_mixture(name: str, lengths: Mapping[str, int], split: str, seed: int, shard):
    """Mixture `name`'s training examples sampled as `seqio.Mixture.get_dataset` samples them
    (the same task datasets, rates and seed), each tagged with its task's `prompt_index` [1],
    then converted to model features; the tag passes through the feature converter."""
    import tensorflow as tf

    mixture = get_task(name)
    index = {task: k for k, task in enumerate(bank_tasks(name))}
    keys = set(mixture.output_features)
    datasets, rates = [], []
    for task in mixture.tasks:
        if split not in task.splits:  # seqio's rule (e.g. WSC's eval-only task)
            continue
        ds = mixture.get_task_dataset(
            task, keys, dict(lengths), split, shuffle=True, seed=seed, shard_info=shard
        )
        tag = tf.constant([index[task.name]], tf.int32)
        datasets.append(ds.map(lambda ex, tag=tag: {**ex, PROMPT_INDEX: tag}))
        rates.append(mixture.get_rate(task))
    if not datasets:
        raise UserError(f"no task of mixture {name} has a {split!r} split")
    ds = tf.data.Dataset.sample_from_datasets(datasets, rates, seed, stop_on_empty_dataset=True)
    spec = seqio.FeatureConverter.FeatureSpec(dtype=tf.int32, rank=1)
    converter = seqio.EncDecFeatureConverter(
        pack=False, passthrough_features={PROMPT_INDEX: spec}, apply_length_check=LENGTH_CHECK
    )
    return converter(ds, {**lengths, PROMPT_INDEX: 1})


def train_batches(
    task_name: str,
    feature_lengths: Mapping[str, int],
    batch_size: int,
    *,
    seed: int,
    split: str = "train",
    start_batch: int = 0,
    shard_index: int = 0,
    num_shards: int = 1,
    pack: bool = False,
    use_cached: bool = False,
    buckets: Optional[buckets_lib.LengthBuckets] = None,
    group_by_length: int = 0,
    prompt_index: bool = False,
) -> Iterator[dict[str, np.ndarray]]:
    """Endless shuffled batches, starting after `start_batch` already-consumed batches; with
    `buckets`, each cut to its length bucket (the same on every host), and with
    `group_by_length` = w > 0 each w consecutive batches' examples regrouped by length
    (`buckets.group_by_length`; the window and the batch's rank in it are exact positions, so
    a resume continues the same stream). With `prompt_index`
    (a mixture's multi-task prompts), each batch also holds `prompt_index` [b], each
    example's task (`bank_tasks`); the examples are those the mixture alone gives."""
    get_task(task_name)
    if batch_size % num_shards:
        raise UserError(f"batch size {batch_size} is not divisible by the {num_shards} hosts")
    shard = seqio.ShardInfo(index=shard_index, num_shards=num_shards) if num_shards > 1 else None
    if prompt_index and (pack or use_cached):
        raise UserError("multi-task prompts read the mixture uncached and unpacked")
    with building_dataset(task_name):
        ds = (
            _tagged_mixture(task_name, feature_lengths, split, seed, shard)
            if prompt_index
            else seqio.get_dataset(
                task_name,
                task_feature_lengths=dict(feature_lengths),
                dataset_split=split,
                use_cached=use_cached,
                shuffle=True,
                num_epochs=None,
                shard_info=shard,
                verbose=False,
                seed=seed,
                feature_converter=feature_converter(pack),
            )
        )
    local = batch_size // num_shards
    window = group_by_length if buckets is not None and not pack else 0
    for batch in _batched(ds, local, window, start_batch, seed):
        tags = batch.get(PROMPT_INDEX)
        batch = {k: np.asarray(batch[k], np.int32) for k in MODEL_FEATURES if k in batch}
        if tags is not None:
            batch[PROMPT_INDEX] = np.asarray(tags, np.int32)[:, 0]
        if buckets is not None and not pack:
            longest = buckets_lib.longest_rows(batch)
            if num_shards > 1:
                longest = buckets_lib.agree_across_hosts(longest)
            batch = buckets_lib.cut_to_buckets(batch, buckets, longest)
        yield batch


def _batched(ds, batch_size: int, window: int, start_batch: int, seed: int):
    """`ds`'s examples in batches of `batch_size` from batch `start_batch` on: in stream
    order, or (window > 0) grouped by length within each `window` batches' examples."""
    if not window:
        ds = ds.batch(batch_size, drop_remainder=True)
        yield from (ds.skip(start_batch) if start_batch else ds).as_numpy_iterator()
        return
    first, offset = divmod(start_batch, window)
    ds = ds.batch(batch_size * window, drop_remainder=True)
    for number, examples in enumerate((ds.skip(first) if first else ds).as_numpy_iterator()):
        grouped = buckets_lib.group_by_length(examples, batch_size, (seed, first + number))
        yield from grouped[offset if number == 0 else 0 :]


def padded_batches(
    examples,
    batch_size: int,
    lengths: Optional[Mapping[str, int]] = None,
    buckets: Optional[buckets_lib.LengthBuckets] = None,
) -> Iterator[tuple[list, dict]]:
    """Groups (index, features) pairs into batches of `batch_size` rows, padding the last
    with zero rows. Each feature is padded to its `lengths` entry, or with `buckets` to the
    smallest bucket (up to that length) holding the chunk's longest example, so a few shapes
    (one compilation each) cover every batch. Yields (indices, batch)."""
    chunk: list = []

    def emit(chunk):
        indices = [i for i, _ in chunk]
        keys = [k for k in MODEL_FEATURES if k in chunk[0][1]]
        real = {}  # with buckets: the longest non-pad prefix of each feature in the chunk
        if buckets is not None:
            for key, feature in (
                ("encoder_input_tokens", "inputs"),
                ("decoder_target_tokens", "targets"),
            ):
                real[feature] = max(
                    (buckets_lib.real_length(f[key]) for _, f in chunk if key in f), default=1
                )
        batch = {}
        for k in keys:
            width = max(len(f[k]) for _, f in chunk)
            if lengths is not None and k in lengths:
                if buckets is not None and k in buckets_lib.FEATURE_OF:
                    feature = buckets_lib.FEATURE_OF[k]
                    width = buckets.width(feature, real[feature], lengths[k])
                else:
                    width = lengths[k]
            rows = np.zeros((batch_size, width), np.int32)
            for r, (_, f) in enumerate(chunk):
                row = np.asarray(f[k])[:width]
                rows[r, : len(row)] = row
            batch[k] = rows
        return indices, batch

    for item in examples:
        chunk.append(item)
        if len(chunk) == batch_size:
            yield emit(chunk)
            chunk = []
    if chunk:
        yield emit(chunk)


@dataclasses.dataclass(frozen=True)
class DataSources:
    """Where task data and the vocabulary come from; gin-bindable, applied by the CLI before
    any task is read. None keeps the environment's choice (PTUNE_SPM_PATH, TFDS_DATA_DIR,
    PTUNE_TFDS_MANUAL_DIR, PTUNE_SUPERGLUE_DIR, PTUNE_GLUE_DIR) or the default (public gs://
    / TFDS)."""

    spm_path: Optional[str] = None  # SentencePiece model, or "t5" / "mt5"
    tfds_data_dir: Optional[str] = None  # prepared TFDS data
    tfds_manual_dir: Optional[str] = None  # the official archives, prepared on first read
    superglue_dir: Optional[str] = None  # the official SuperGLUE JSONL release
    glue_dir: Optional[str] = None  # the official GLUE TSV files
    file_tasks: Sequence = ()  # `ptune.tasks.files.FileTask`s to register (your own data)

    def apply(self) -> None:
        from ptune.tasks import sources, vocab

        for task in self.file_tasks:
            task.register()
        if self.glue_dir:
            sources.set_glue_dir(self.glue_dir)

        if self.spm_path:
            vocab.set_sentencepiece_path(self.spm_path)
        if self.tfds_data_dir:
            sources.set_tfds_data_dir(self.tfds_data_dir)
        if self.tfds_manual_dir:
            sources.set_tfds_manual_dir(self.tfds_manual_dir)
        if self.superglue_dir:
            sources.set_superglue_dir(self.superglue_dir)
