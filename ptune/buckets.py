"""Length buckets: each batch padded to the smallest of a few lengths that holds its longest
example, instead of the task's full feature length; and training batches grouped by length
(`group_by_length`), so a batch holds examples of similar length and pads little.

numpy only (and jax for the multi-host agreement), so the benchmark's GPU path, which has no
seqio, uses the same code as training (`ptune.data`) and evaluation (`ptune.evaluation`).
Model features (int32, padded at the end with 0): encoder_input_tokens [b, ls],
decoder_input_tokens / decoder_target_tokens / decoder_loss_weights [b, lt].
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional, Sequence

import numpy as np

from ptune.errors import UserError

# Which feature length bounds each model feature's width.
FEATURE_OF = {
    "encoder_input_tokens": "inputs",
    "decoder_input_tokens": "targets",
    "decoder_target_tokens": "targets",
    "decoder_loss_weights": "targets",
}


@dataclasses.dataclass(frozen=True)
class LengthBuckets:
    """Pads each batch to the smallest bucket length that holds its longest example instead
    of the task's full feature length, so a batch of short examples computes on few pad
    tokens and each bucket compiles once.

    inputs / targets: the bucket lengths in tokens; None: powers of two from `smallest` and
    (with `midpoints`) the halfway length after each, up to the feature length, and the
    feature length itself (inputs 512 -> 32, 48, 64, 96, 128, 192, 256, 384, 512: at most a
    third of a batch's longest row is padding; without midpoints, half).
    The examples of a batch and their order do not change, and neither do the losses (pad
    positions are masked and every loss normalisation counts real tokens); dropout masks are
    drawn per shape, so with dropout a bucketed run is a different (equally valid) draw.
    """

    inputs: Optional[Sequence[int]] = dataclasses.field(default=None, metadata={"min": 1})
    targets: Optional[Sequence[int]] = dataclasses.field(default=None, metadata={"min": 1})
    smallest: int = dataclasses.field(default=32, metadata={"min": 1})
    midpoints: bool = True

    def __post_init__(self):
        for name in ("inputs", "targets"):
            given = getattr(self, name)
            if given is None:
                continue
            if isinstance(given, (str, bytes)) or not all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in given
            ):
                raise UserError(
                    f"LengthBuckets.{name} must be positive token counts like [64, 128, 256], "
                    f"got {given!r}"
                )
        if isinstance(self.smallest, bool) or not isinstance(self.smallest, int):
            raise UserError(f"LengthBuckets.smallest must be an integer, got {self.smallest!r}")
        if self.smallest < 1:
            raise UserError(f"LengthBuckets.smallest must be >= 1, got {self.smallest}")

    def lengths(self, feature: str, maximum: int) -> tuple[int, ...]:
        """The bucket lengths of `feature` ("inputs" or "targets") whose longest is
        `maximum`, ascending."""
        given = getattr(self, feature)
        if given is None:
            given = self._series(maximum)
        return tuple(sorted({n for n in given if n < maximum})) + (maximum,)

    def _series(self, upto: int) -> list[int]:
        """The default lengths below `upto`: `smallest` doubled again and again, each
        followed (with `midpoints`) by the halfway length to the next."""
        given, n = [], self.smallest
        while n < upto:
            given += [n, n + n // 2] if self.midpoints and n >= 2 else [n]
            n *= 2
        return given

    def round_up(self, n: int) -> int:
        """The smallest default length (`smallest` times a power of two, or a midpoint) that
        holds `n`, without a feature's maximum: for lengths no task bounds, like a decoding
        cache's."""
        return min(m for m in self._series(2 * n + self.smallest) if m >= n)

    def width(self, feature: str, longest: int, maximum: int) -> int:
        """The smallest bucket of `feature` that holds `longest` tokens (at most `maximum`)."""
        return next(n for n in self.lengths(feature, maximum) if n >= min(longest, maximum))


def real_length(tokens) -> int:
    """Tokens [l] -> the length of their non-pad (id != 0) prefix, at least 1."""
    nonzero = np.flatnonzero(np.asarray(tokens))
    return int(nonzero[-1]) + 1 if nonzero.size else 1


def longest_rows(batch: Mapping[str, np.ndarray]) -> dict[str, int]:
    """{"inputs": n, "targets": m}: the longest real (non-pad, id != 0) prefix over the rows
    of `batch`'s encoder inputs [b, ls] and decoder targets [b, lt]."""

    def longest(tokens: np.ndarray) -> int:
        real = tokens != 0
        if not real.any():
            return 1
        return int((tokens.shape[1] - np.argmax(real[:, ::-1], axis=1))[real.any(axis=1)].max())

    out = {}
    if "encoder_input_tokens" in batch:
        out["inputs"] = longest(np.asarray(batch["encoder_input_tokens"]))
    if "decoder_target_tokens" in batch:
        out["targets"] = longest(np.asarray(batch["decoder_target_tokens"]))
    return out


def cut_to_buckets(
    batch: Mapping[str, np.ndarray],
    buckets: LengthBuckets,
    longest: Optional[Mapping[str, int]] = None,
) -> dict[str, np.ndarray]:
    """The batch with each feature cut to its bucket: only pad columns go (`longest`, e.g.
    agreed over hosts, defaults to this batch's own `longest_rows`)."""
    longest = dict(longest or longest_rows(batch))
    out = {}
    for key, value in batch.items():
        feature = FEATURE_OF.get(key)
        if feature is None or feature not in longest:
            out[key] = value
            continue
        maximum = value.shape[1]
        out[key] = value[:, : buckets.width(feature, longest[feature], maximum)]
    return out


def group_by_length(
    window: Mapping[str, np.ndarray], batch_size: int, seed: Sequence[int]
) -> list[dict[str, np.ndarray]]:
    """A window of consecutive stream examples (each feature [w * b, ...]) -> w batches of b
    examples of similar length: rows ordered by real input length, then real target length
    (stable: equal lengths keep stream order), cut into consecutive batches, and the batches
    in an order drawn from `seed` (so a short batch is as likely to come first as a long one;
    hosts that share `seed` take the same rank of their own windows at each step). Every
    example of the window is in exactly one batch: over a window, a mixture's rates are
    exactly the stream's."""
    rows = next(iter(window.values())).shape[0]
    if rows % batch_size:
        raise ValueError(f"a window of {rows} examples is not a multiple of batch {batch_size}")

    def real(key: str) -> np.ndarray:
        if key not in window:
            return np.zeros(rows, np.int64)
        present = np.asarray(window[key]) != 0
        last = present.shape[1] - np.argmax(present[:, ::-1], axis=1)
        return np.where(present.any(axis=1), last, 0)

    order = np.lexsort((real("decoder_target_tokens"), real("encoder_input_tokens")))
    batches = order.reshape(-1, batch_size)
    ranks = np.random.default_rng(list(seed)).permutation(len(batches))
    return [{key: np.asarray(v)[batches[r]] for key, v in window.items()} for r in ranks]


def agree_across_hosts(longest: Mapping[str, int]) -> dict[str, int]:
    """The longest rows over every host's shard of the global batch, so all hosts cut their
    rows to the same bucket (one small all-gather per step, only with several processes)."""
    from jax.experimental import multihost_utils

    keys = sorted(longest)
    gathered = multihost_utils.process_allgather(np.asarray([longest[k] for k in keys], np.int32))
    return dict(zip(keys, (int(v) for v in np.asarray(gathered).reshape(-1, len(keys)).max(0))))
