"""T5's two pretraining objectives as seqio preprocessors, and seqio tasks over plain-text corpora.

Span corruption (T5 1.1's objective) and prefix LM (the objective of the paper's LM-adapted
checkpoints) follow `t5.data.preprocessors.span_corruption` and `.prefix_lm` step by step: the same
counts and the same random draws, each step taking its seed from seqio's
`map_over_dataset(num_seeds=1)` in T5's order, so a seed (`task.get_dataset(seed=...)`,
`seqio.map_seed_manager`) fixes the examples. The code is ptune's own. Both read token ids
`targets` [length] (one document, after `seqio.preprocessors.tokenize`), drop every other field and
leave EOS to `preprocessors.trim_and_append_eos`.

Span corruption:
  1. one random chunk of at most 65,536 tokens per document (in practice the whole document);
  2. documents concatenated 128 at a time, without separator, and cut into segments of
     `tokens_length` tokens, the longest whose corrupted inputs fit `sequence_length["inputs"]` with
     EOS (`span_corruption_lengths`); only the last segment of each group is shorter;
  3. a noise mask per segment of n tokens: round(n * noise_density) noise tokens, at least 1 and
     at most n - 1, in max(1, round(noise / mean_noise_span_length)) spans; the noise and the
     non-noise span lengths are each a uniformly random composition, and spans alternate starting
     with non-noise, so the segment always ends in noise (a 1-token segment has none);
  4. `inputs` [<= inputs length - 1]: the non-noise tokens with each noise span replaced by one
     sentinel; `targets` [<= targets length - 1]: each sentinel followed by its noise span.
     Sentinels count down from the last id of the vocabulary (`<extra_id_0>` = vocab_size - 1,
     then vocab_size - 2, ...) in the same order in both, e.g. "the cat sat on the mat" ->
     inputs "the <0> on the <1>", targets "<0> cat sat <1> mat".

Prefix LM: one random chunk per document, cut into segments of `sequence_length["inputs"] - 1`
tokens (no concatenation), each split at k uniform in [1, n - 1]: `inputs` the first k tokens,
`targets` the other n - k.

Where ptune differs from T5, on purpose:
- The segment length is computed from the counts the mask really uses (float32, with its
  clipping), so outputs always fit. T5's `random_spans_helper` rounds in float64 without the
  clipping; for some inputs lengths (below 10, and 172, 316, ... at density 0.15) its targets
  length is one or two short of what the mask makes. Both give 512 -> 568 tokens, targets 114.
- Bad settings are one `UserError` when the pipeline is built, where T5 failed inside TensorFlow
  or cut targets silently: noise density outside (0, 1), mean span length below 1, a density that
  leaves fewer non-noise tokens than noise spans, fewer extra ids than sentinels, a targets length
  too short for the objective (prefix LM: shorter than the inputs length - 1, which T5 truncated).

`CorpusTask(...).register()` makes a seqio task of either objective over text files (one
document per line), like `files.FileTask` does for supervised data.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import os
import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import seqio
import tensorflow as tf

from ptune.errors import UserError
from ptune.tasks import files, preprocessors, readers, registry, vocab

NOISE_DENSITY = 0.15
MEAN_NOISE_SPAN_LENGTH = 3.0
CHUNK_MAX_LENGTH = 65536  # T5's select_random_chunk bound for both objectives.
CONCAT_DOCUMENTS = 128  # documents joined before span corruption cuts segments.
OBJECTIVES = ("span_corruption", "prefix_lm")
VOCABULARIES = ("t5", "byte")
BYTE_EXTRA_IDS = 100


# ----------------------------------------------------------------------------------------------
# Checks and lengths, before any data is touched


def check_noise(noise_density: float, mean_noise_span_length: float) -> None:
    if not 0 < noise_density < 1:
        raise UserError(f"span corruption: noise density {noise_density} is not in (0, 1)")
    if not mean_noise_span_length >= 1:
        raise UserError(
            f"span corruption: mean noise span length {mean_noise_span_length} is below 1"
        )


def _noise_counts(length, noise_density: float, mean_noise_span_length: float):
    """(noise tokens, noise spans) of segments of `length` (>= 2) tokens, scalar or [n] int32.

    The one place the counts are computed: the mask draws with them and `span_corruption_lengths`
    sizes segments with them (float32 products, rounding half to even, as T5's mask).
    """
    noise = tf.cast(tf.round(tf.cast(length, tf.float32) * noise_density), tf.int32)
    noise = tf.clip_by_value(noise, 1, length - 1)
    spans = tf.cast(tf.round(tf.cast(noise, tf.float32) / mean_noise_span_length), tf.int32)
    return noise, tf.maximum(spans, 1)


class SpanLengths(NamedTuple):
    tokens: int  # segment length cut from the corpus
    targets: int  # longest targets with EOS
    spans: int  # most noise spans in a segment: the sentinels needed


def span_corruption_lengths(
    inputs_length: int,
    noise_density: float = NOISE_DENSITY,
    mean_noise_span_length: float = MEAN_NOISE_SPAN_LENGTH,
) -> SpanLengths:
    """The segment length whose span-corrupted inputs, with EOS, fill at most `inputs_length`
    ids, and what targets and sentinels segments up to that length need (T5's
    `random_spans_helper`, counted as the mask counts). e.g. 512 -> (568, 114, 28).

    Raises `UserError` when the inputs length is below 2 or a segment length would get fewer
    non-noise tokens than noise spans (the mask cannot alternate them).
    """
    check_noise(noise_density, mean_noise_span_length)
    if inputs_length < 2:
        raise UserError(f"span corruption: inputs length {inputs_length} is below 2")
    # Far enough that inputs exceed inputs_length (they hold more than n * (1 - density) ids).
    lengths = np.arange(1, int(inputs_length / (1 - noise_density)) + 3)
    noise, spans = (
        np.asarray(t)
        for t in _noise_counts(
            np.maximum(lengths, 2).astype(np.int32), noise_density, mean_noise_span_length
        )
    )
    short = np.nonzero((lengths >= 2) & (lengths - noise < spans))[0]
    # A 1-token segment is cut from a 2-token mask that starts with its non-noise token.
    inputs = np.where(lengths == 1, 2, lengths - noise + spans + 1)
    targets = np.where(lengths == 1, 2, noise + spans + 1)
    tokens = inputs_length - 1
    while inputs[tokens] <= inputs_length:  # inputs[i] is for length i + 1
        tokens += 1
    if noise_density == 0.5 and targets[tokens - 1] > inputs[tokens - 1]:
        tokens -= 1  # T5's adjustment so that targets do not outgrow inputs at density 0.5
    if short.size and lengths[short[0]] <= tokens:
        n = int(lengths[short[0]])
        raise UserError(
            f"span corruption: noise density {noise_density} with mean span length "
            f"{mean_noise_span_length} leaves a {n}-token segment {n - noise[n - 1]} non-noise "
            f"tokens for {spans[n - 1]} noise spans; lower the density or lengthen the spans"
        )
    return SpanLengths(tokens, int(targets[:tokens].max()), int(spans[:tokens].max()))


def _lengths(sequence_length, objective: str) -> tuple[int, int]:
    lengths = sequence_length or {}
    if not lengths.get("inputs") or not lengths.get("targets"):
        raise UserError(f"{objective}: needs sequence lengths for inputs and targets")
    return sequence_length["inputs"], sequence_length["targets"]


def _shared_vocabulary(output_features, objective: str) -> seqio.Vocabulary:
    """The one vocabulary of inputs and targets: both objectives make inputs from targets' ids."""
    vocabulary = output_features["targets"].vocabulary
    if "inputs" in output_features and output_features["inputs"].vocabulary != vocabulary:
        raise UserError(f"{objective}: inputs and targets must share one vocabulary")
    return vocabulary


# ----------------------------------------------------------------------------------------------
# Steps over datasets of {"targets": [n] int32}


def _non_empty(x):
    return tf.size(x["targets"]) > 0


def select_random_chunk(dataset: tf.data.Dataset, max_length: int = CHUNK_MAX_LENGTH):
    """Each non-empty `targets` [n] -> one chunk [<= max_length]: one of the ceil(n / max_length)
    consecutive pieces, uniformly (T5's default, not its `uniform_random_start`)."""

    @seqio.map_over_dataset(num_seeds=1)
    def chunk(x, seed):
        tokens = x["targets"]
        pieces = tf.cast(tf.math.ceil(tf.cast(tf.size(tokens), tf.float32) / max_length), tf.int32)
        draw = tf.random.experimental.stateless_split(seed)[1]  # the seed T5 draws the start with
        start = max_length * tf.random.stateless_uniform(
            [], maxval=pieces, dtype=tf.int32, seed=draw
        )
        return {"targets": tokens[start : start + max_length]}

    return chunk(dataset.filter(_non_empty))


def concat_documents(dataset: tf.data.Dataset, batch_size: int = CONCAT_DOCUMENTS):
    """Every `batch_size` consecutive `targets` joined into one, so that segments are full."""
    batched = dataset.map(lambda x: x["targets"]).ragged_batch(batch_size)
    return batched.map(lambda rows: {"targets": rows.flat_values})


def split_tokens(dataset: tf.data.Dataset, max_tokens: int):
    """Each `targets` [n] -> ceil(n / max_tokens) examples of `max_tokens` ids, the last shorter."""

    @seqio.map_over_dataset(num_seeds=1)
    def rows(x, seed):
        del seed  # T5's split_tokens draws a seed here; taking it keeps later steps' seeds T5's.
        tokens = x["targets"]
        starts = tf.range(0, tf.size(tokens), max_tokens)
        return {"targets": tf.RaggedTensor.from_row_starts(tokens, starts)}

    segments = rows(dataset.filter(_non_empty))
    segments = segments.flat_map(lambda x: tf.data.Dataset.from_tensor_slices(x["targets"]))
    return segments.map(lambda row: {"targets": row})


def _random_composition(total, parts, seed):
    """[parts] positive ints summing to `total` (>= parts), each composition equally likely: a
    part starts after each of parts - 1 gaps drawn from the total - 1 gaps between items."""
    cut_after = seqio.stateless_shuffle(tf.range(total - 1) < parts - 1, seed)
    starts = tf.concat([[True], cut_after], axis=0)
    return tf.math.bincount(tf.cumsum(tf.cast(starts, tf.int32)) - 1, minlength=parts)


def random_spans_noise_mask(
    length,
    noise_density: float,
    seeds,
    mean_noise_span_length: float = MEAN_NOISE_SPAN_LENGTH,
) -> tf.Tensor:
    """bool [length], True on noise (T5's `random_spans_noise_mask`, without its random roll).

    `seeds` [2, 2]: the noise span lengths are drawn with seeds[0], the non-noise with seeds[1].
    A 1-token segment takes the first token of a 2-token mask, so it has no noise.
    """
    padded = tf.maximum(length, 2)
    noise, spans = _noise_counts(padded, noise_density, mean_noise_span_length)
    noise_lengths = _random_composition(noise, spans, seeds[0])
    plain_lengths = _random_composition(padded - noise, spans, seeds[1])
    span_lengths = tf.reshape(tf.stack([plain_lengths, noise_lengths], axis=1), [-1])
    is_noise = tf.tile([False, True], [spans])
    return tf.repeat(is_noise, span_lengths)[:length]


def sentinel_spans(tokens: tf.Tensor, noise_mask: tf.Tensor, vocab_size: int) -> tf.Tensor:
    """`tokens` [n] with each run of noise (`noise_mask` [n] bool) replaced by one sentinel: the
    i-th run (from 0) by vocab_size - 1 - i. Called with the mask inverted it gives targets."""
    after_noise = tf.concat([[False], noise_mask[:-1]], axis=0)
    run_start = noise_mask & ~after_noise
    sentinels = vocab_size - tf.cumsum(tf.cast(run_start, tokens.dtype))
    return tf.boolean_mask(tf.where(run_start, sentinels, tokens), ~(noise_mask & after_noise))


# ----------------------------------------------------------------------------------------------
# The objectives (seqio preprocessors, after tokenization)


def span_corruption(
    dataset: tf.data.Dataset,
    sequence_length: Mapping[str, int] | None,
    output_features: Mapping[str, seqio.Feature],
    noise_density: float = NOISE_DENSITY,
    mean_noise_span_length: float = MEAN_NOISE_SPAN_LENGTH,
) -> tf.data.Dataset:
    """T5's span corruption (see the module docstring): `targets` [n] documents -> `inputs`
    [<= inputs length - 1] and `targets` [<= targets length - 1] int32, EOS not yet added."""
    check_noise(noise_density, mean_noise_span_length)
    inputs_length, targets_length = _lengths(sequence_length, "span corruption")
    vocabulary = _shared_vocabulary(output_features, "span corruption")
    lengths = span_corruption_lengths(inputs_length, noise_density, mean_noise_span_length)
    if targets_length < lengths.targets:
        raise UserError(
            f"span corruption: targets length {targets_length} is shorter than the "
            f"{lengths.targets} that inputs length {inputs_length} needs"
        )
    if vocabulary.extra_ids < lengths.spans:
        raise UserError(
            f"span corruption: the vocabulary has {vocabulary.extra_ids} extra ids but inputs "
            f"length {inputs_length} makes up to {lengths.spans} noise spans, one sentinel "
            "each; use a vocabulary with more extra ids or shorter inputs"
        )

    @seqio.map_over_dataset(num_seeds=1)
    def corrupt(x, seed):
        seeds = tf.random.experimental.stateless_split(seed, 6)  # T5's denoise: mask from [0:2]
        tokens = x["targets"]
        mask = random_spans_noise_mask(
            tf.size(tokens), noise_density, seeds[:2], mean_noise_span_length
        )
        return {
            "inputs": sentinel_spans(tokens, mask, vocabulary.vocab_size),
            "targets": sentinel_spans(tokens, ~mask, vocabulary.vocab_size),
        }

    dataset = concat_documents(select_random_chunk(dataset))
    return corrupt(split_tokens(dataset, lengths.tokens))


def prefix_lm(
    dataset: tf.data.Dataset,
    sequence_length: Mapping[str, int] | None,
    output_features: Mapping[str, seqio.Feature],
) -> tf.data.Dataset:
    """T5's prefix LM (noise density 0.5): `targets` [n] documents -> `inputs` [k] the start of
    a segment and `targets` [m - k] the rest, segments of m <= inputs length - 1 ids, k uniform
    in [1, m - 1] (0 for a 1-token segment). EOS not yet added."""
    inputs_length, targets_length = _lengths(sequence_length, "prefix LM")
    _shared_vocabulary(output_features, "prefix LM")
    segment = inputs_length - 1 if output_features["inputs"].add_eos else inputs_length
    if segment < 1:
        raise UserError(f"prefix LM: inputs length {inputs_length} leaves no room for tokens")
    if targets_length < inputs_length - 1:
        raise UserError(
            f"prefix LM: targets length {targets_length} is shorter than inputs length "
            f"{inputs_length} - 1, which a split of a full segment can need"
        )

    @seqio.map_over_dataset(num_seeds=1)
    def split(x, seed):
        seeds = tf.random.experimental.stateless_split(seed, 6)  # T5's denoise: prefix from [0]
        tokens = x["targets"]
        n = tf.size(tokens)
        k = tf.random.stateless_uniform(
            [], minval=tf.minimum(1, n - 1), maxval=n, dtype=tf.int32, seed=seeds[0]
        )
        return {"inputs": tokens[:k], "targets": tokens[k:]}

    return split(split_tokens(select_random_chunk(dataset), segment))


# ----------------------------------------------------------------------------------------------
# Tasks over text files


def byte_vocabulary() -> seqio.ByteVocabulary:
    """ByT5's bytes with 100 extra ids: 359 ids, sentinels 358 down to 259.

    Why extra ids: without them the sentinels would be the ids of bytes 0xFF, 0xFE, ... (ByT5
    reused those); here a sentinel is never a byte. Every other id equals the demo task's
    `vocab.get_byte_vocabulary()`, so a model pretrained on it (vocabulary >= 359) reads
    `ptune_demo` unchanged.
    """
    return _BYTE_VOCABULARY


_BYTE_VOCABULARY = seqio.ByteVocabulary(extra_ids=BYTE_EXTRA_IDS)
_NAME = re.compile(r"[A-Za-z0-9_.]+")
_REGISTERED: set[str] = set()


@dataclasses.dataclass(frozen=True)
class CorpusTask:
    """A pretraining task over local text files, one document per line; plain keyword fields so
    gin can bind it.

    Attributes:
      name: the task name (letters, digits, "_" and "."), not one of ptune's built-in tasks.
      splits: split name -> a file, a glob pattern, or a list of them.
      objective: "span_corruption" or "prefix_lm".
      vocabulary: "t5" (SentencePiece, see `vocab`) or "byte" (`byte_vocabulary()`).
      noise_density, mean_noise_span_length: span corruption's (T5's 0.15 and 3).
    """

    name: str
    splits: Mapping[str, str | Sequence[str]]
    objective: str = "span_corruption"
    vocabulary: str = "t5"
    noise_density: float = NOISE_DENSITY
    mean_noise_span_length: float = MEAN_NOISE_SPAN_LENGTH

    def paths(self, split: str) -> list[str]:
        """The split's files, patterns expanded (sorted); `UserError` if one is missing."""
        patterns = self.splits[split]
        found = []
        for pattern in [patterns] if isinstance(patterns, str) else patterns:
            if glob.has_magic(pattern):
                matches = sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
                if not matches:
                    raise UserError(f"task {self.name!r} {split}: no file matches {pattern}")
                found += matches
            else:
                readers.require_file(pattern, f"task {self.name!r} {split}")
                found.append(pattern)
        return found

    def validate(self) -> None:
        """One `UserError` naming the task and the fault, before anything is registered."""
        where = f"task {self.name!r}"
        if not _NAME.fullmatch(self.name or ""):
            raise UserError(f"{where}: a name has only letters, digits, '_' and '.'")
        ours = _REGISTERED | files.registered()
        if self.name in registry.list_tasks() and self.name not in ours:
            raise UserError(f"{where}: the name is taken by a registered task; choose another")
        if self.objective not in OBJECTIVES:
            raise UserError(f"{where}: objective {self.objective!r} is not one of {OBJECTIVES}")
        if self.vocabulary not in VOCABULARIES:
            raise UserError(f"{where}: vocabulary {self.vocabulary!r} is not t5 or byte")
        if self.objective == "span_corruption":
            check_noise(self.noise_density, self.mean_noise_span_length)
        if not self.splits:
            raise UserError(f"{where}: no files; give at least a train split")
        for split in self.splits:
            paths = self.paths(split)
            if not any(_has_text(path) for path in paths):
                raise UserError(
                    f"{where} {split}: no text in {', '.join(paths)} (empty or blank lines only)"
                )
            for path in paths:
                _check_utf8(path, f"{where} {split}")

    def register(self) -> str:
        """Validates, then registers the task (again: replaces it); returns its name."""
        self.validate()
        if self.objective == "span_corruption":
            objective = functools.partial(
                span_corruption,
                noise_density=self.noise_density,
                mean_noise_span_length=self.mean_noise_span_length,
            )
        else:
            objective = prefix_lm
        vocabulary = byte_vocabulary() if self.vocabulary == "byte" else vocab.get_vocabulary()
        registry.add_task(
            self.name,
            source=seqio.TextLineDataSource({split: self.paths(split) for split in self.splits}),
            preprocessors=[
                _line_as_targets,
                preprocessors.load_vocabularies,
                functools.partial(seqio.preprocessors.tokenize, copy_pretokenized=False),
                seqio.CacheDatasetPlaceholder(),
                objective,
                preprocessors.trim_and_append_eos,
            ],
            output_features=vocab.output_features(vocabulary),
            metric_fns=[],
            primary_metrics=(),
        )
        _REGISTERED.add(self.name)
        return self.name


def registered() -> frozenset[str]:
    """The corpus task names registered in this process (they are not built-in tasks)."""
    return frozenset(_REGISTERED)


@seqio.map_over_dataset
def _line_as_targets(line):
    return {"targets": line}


UTF8_CHECKED_LINES = 10_000  # lines of each corpus file checked before training


def _check_utf8(path: str, where: str) -> None:
    """The file's first `UTF8_CHECKED_LINES` lines must be UTF-8 (a corpus can be too big to
    read whole before work): a model trained on another encoding's bytes would later be
    given UTF-8 text."""
    try:
        for number, _ in readers.text_lines(path):
            if number >= UTF8_CHECKED_LINES:
                break
    except UserError as e:
        raise UserError(f"{where}: {e} (convert it to UTF-8, e.g. with iconv)") from None


def _has_text(path: str) -> bool:
    """Whether any line holds more than whitespace; reads up to the first such line."""
    with open(path, "rb") as f:
        return any(line.strip() for line in f)


_SPEC_KEYS = {
    "objective": ("objective", str),
    "vocabulary": ("vocabulary", str),
    "noise_density": ("noise_density", float),
    "mean_noise_span_length": ("mean_noise_span_length", float),
}


def parse_spec(spec: str) -> CorpusTask:
    """A `CorpusTask` from one string, for the `--corpus` flag:

        NAME:train=FILE,validation=FILE,objective=prefix_lm,vocabulary=byte,noise_density=0.15

    Splits name files or glob patterns (no ","); the other keys are `CorpusTask`'s fields.
    Validated by `register()`, not here."""
    where = f"corpus spec {spec!r}"
    name, items = files.split_spec(spec, where, "NAME:train=FILE,objective=span_corruption,...")
    fields: dict = {"name": name, "splits": {}}
    for key, value in items:
        if key in files.SPLITS:
            fields["splits"][key] = value
        elif key in _SPEC_KEYS:
            field, kind = _SPEC_KEYS[key]
            try:
                fields[field] = kind(value)
            except ValueError:
                raise UserError(f"{where}: {key}={value!r} is not a number") from None
        else:
            known = ", ".join([*files.SPLITS, *_SPEC_KEYS])
            raise UserError(f"{where}: unknown key {key!r} (keys: {known})")
    return CorpusTask(**fields)
