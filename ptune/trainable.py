"""What trains: one list of regular expressions over parameter paths.

The regex list becomes one static mask (`trainable_mask`). Everything else derives from it:
`partition` splits the parameters into the trainable subtree (which the optimizer sees, so
frozen weights carry no optimizer state at all and receive no gradient computation) and the
frozen subtree (which can be held in bfloat16); checkpoints save the trainable subtree; the
log line `trainable params: N of M (x%)` counts it. A pattern that matches nothing is an
error, as is a parameter covered by no rule of `require_all_covered` rule tables.

Paths are '/'-joined, e.g. `encoder/prompt/prompt` or `decoder/layers_3/mlp/wo/kernel`, and
patterns must match a whole path (`re.fullmatch`).
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from ptune import prompts
from ptune.errors import UserError

PyTree = Any
PROMPT_ONLY = (prompts.PROMPT_PATTERN,)  # the prompt module: P and any reparameterisation
EVERYTHING = (".*",)


def _flat(params: Mapping) -> dict[str, Any]:
    return traverse_util.flatten_dict(params, sep="/")


def trainable_mask(params: Mapping, patterns: Sequence[str]) -> dict[str, bool]:
    """{path: trains?} for every parameter; raises if a pattern matches no parameter."""
    if isinstance(patterns, str):
        patterns = (patterns,)
    if not patterns:
        raise UserError("the trainable-parameter pattern list is empty: nothing would train")
    paths = list(_flat(params))
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as e:
            raise UserError(f"trainable pattern {pattern!r} is not a valid regex: {e}") from e
    for pattern, regex in zip(patterns, compiled):
        if not any(regex.fullmatch(p) for p in paths):
            sample = ", ".join(paths[:4])
            raise UserError(
                f"trainable pattern {pattern!r} matches no parameter (paths look "
                f"like: {sample}, ...)"
            )
    return {p: any(r.fullmatch(p) for r in compiled) for p in paths}


def partition(params: Mapping, mask: Mapping[str, bool]) -> tuple[dict, dict]:
    """Splits nested params into (trainable, frozen) nested dicts by the mask."""
    flat = _flat(params)
    if set(flat) != set(mask):
        raise ValueError(
            f"mask and parameters disagree on paths: {sorted(set(flat) ^ set(mask))[:5]}"
        )
    trainable = {k: v for k, v in flat.items() if mask[k]}
    frozen = {k: v for k, v in flat.items() if not mask[k]}
    return (
        traverse_util.unflatten_dict(trainable, sep="/"),
        traverse_util.unflatten_dict(frozen, sep="/"),
    )


def merge(trainable: Mapping, frozen: Mapping) -> dict:
    """Inverse of `partition`: one nested parameter dict."""
    flat = _flat(frozen)
    flat.update(_flat(trainable))
    return traverse_util.unflatten_dict(flat, sep="/")


def cast_frozen(frozen: PyTree, dtype: Optional[Any]) -> PyTree:
    """Frozen weights in `dtype` (e.g. bfloat16 halves their memory); None keeps them."""
    if dtype is None:
        return frozen
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), frozen)


def count(mask: Mapping[str, bool], params: Mapping) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    flat = _flat(params)
    sizes = {k: int(np.prod(np.shape(v))) for k, v in flat.items()}
    return sum(s for k, s in sizes.items() if mask[k]), sum(sizes.values())


def summary_line(mask: Mapping[str, bool], params: Mapping) -> str:
    trainable, total = count(mask, params)
    percent = 100.0 * trainable / max(total, 1)
    return f"trainable params: {trainable:,} of {total:,} ({percent:.4g}%)"
