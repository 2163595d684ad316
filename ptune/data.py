"""seqio tasks -> host-local numpy batches for the model.

Training batches come from `seqio.get_dataset` with the encoder-decoder feature converter
(no packing with prompts), shuffled and repeated from a seed, so the order is a function of
(seed, task, batch size) alone. A resumed run skips the batches it already consumed and sees
exactly the examples an uninterrupted run would. Each host reads only its shard.

Model features (all int32): encoder_input_tokens [b, ls], decoder_input_tokens [b, lt],
decoder_target_tokens [b, lt], decoder_loss_weights [b, lt].
"""

from __future__ import annotations

from typing import Iterator, Mapping, Optional

import numpy as np
import seqio

from ptune.errors import UserError

MODEL_FEATURES = ("encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens",
                  "decoder_loss_weights")


def get_task(name: str):
    """The registered seqio task or mixture; an unknown name lists close matches."""
    from ptune.tasks import registry

    try:
        return registry.get_task_or_mixture(name)
    except ValueError as e:
        raise UserError(str(e).splitlines()[0]) from e


def feature_converter(pack: bool = False) -> seqio.FeatureConverter:
    return seqio.EncDecFeatureConverter(pack=pack)


def output_vocabulary(task_name: str):
    return get_task(task_name).output_features["targets"].vocabulary


def train_batches(task_name: str, feature_lengths: Mapping[str, int], batch_size: int, *,
                  seed: int, split: str = "train", start_batch: int = 0,
                  shard_index: int = 0, num_shards: int = 1, pack: bool = False,
                  use_cached: bool = False) -> Iterator[dict[str, np.ndarray]]:
    """Endless shuffled batches, starting after `start_batch` already-consumed batches."""
    get_task(task_name)
    if batch_size % num_shards:
        raise UserError(f"batch size {batch_size} is not divisible by the {num_shards} hosts")
    shard = seqio.ShardInfo(index=shard_index, num_shards=num_shards) if num_shards > 1 else None
    ds = seqio.get_dataset(task_name, task_feature_lengths=dict(feature_lengths),
                           dataset_split=split, use_cached=use_cached, shuffle=True,
                           num_epochs=None, shard_info=shard, verbose=False, seed=seed,
                           feature_converter=feature_converter(pack))
    ds = ds.batch(batch_size // num_shards, drop_remainder=True)
    if start_batch:
        ds = ds.skip(start_batch)
    for batch in ds.as_numpy_iterator():
        yield {k: np.asarray(batch[k], np.int32) for k in MODEL_FEATURES if k in batch}


def padded_batches(examples, batch_size: int,
                   lengths: Optional[Mapping[str, int]] = None) -> Iterator[tuple[list, dict]]:
    """Groups (index, features) pairs into fixed-size batches, padding the last with zero
    rows so every batch has one shape (one compilation). Yields (indices, batch)."""
    chunk: list = []

    def emit(chunk):
        indices = [i for i, _ in chunk]
        keys = [k for k in MODEL_FEATURES if k in chunk[0][1]]
        batch = {}
        for k in keys:
            width = max(len(f[k]) for _, f in chunk)
            if lengths is not None and k in lengths:
                width = lengths[k]
            rows = np.zeros((batch_size, width), np.int32)
            for r, (_, f) in enumerate(chunk):
                rows[r, :len(f[k])] = f[k]
            batch[k] = rows
        return indices, batch

    for item in examples:
        chunk.append(item)
        if len(chunk) == batch_size:
            yield emit(chunk)
            chunk = []
    if chunk:
        yield emit(chunk)
