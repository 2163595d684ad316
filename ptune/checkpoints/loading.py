"""`load`, `detect_format`, `describe` and `convert`: one entry point for every format.

't5x'        legacy t5x directory `checkpoint_<step>/` (msgpack `checkpoint` + zarr arrays),
             local or gs://
't5x_orbax'  t5x checkpoint written through Orbax (params under `target`)
'hf'         Hugging Face directory: config.json + model.safetensors (or shards + index)
'ptune'      written by `ptune convert` (Orbax params + ptune_config.json)

A Hugging Face hub id (`org/name`) is read from the local cache (see `hub`), never downloaded.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional, Sequence

import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from ptune.checkpoints import config_infer, hf, hub, lazy_arrays, orbax_params, restore, t5x
from ptune.checkpoints.restore import CheckpointSource
from ptune.errors import UserError
from ptune.models import t5

FORMATS = ("t5x", "t5x_orbax", "hf", "ptune")


def detect_format(path: str) -> str:
    """'t5x' | 't5x_orbax' | 'hf' | 'ptune'; a `UserError` saying what was looked for
    when `path` is none of them."""
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise UserError(f"checkpoint path must be a non-empty string, got {path!r}")
    path = hub.resolve(os.fspath(path))
    if path.startswith("gs://"):
        return "t5x"  # gs:// is read through tensorstore, for legacy t5x checkpoints only
    if not os.path.exists(path):
        raise UserError(f"checkpoint path {path} does not exist")
    if os.path.isfile(path):
        name = os.path.basename(path)
        if name == t5x.CHECKPOINT_FILE:
            return "t5x"
        if name.endswith(".safetensors") or name in hf.PICKLE_FILES or name == hf.CONFIG_FILE:
            return "hf"
        raise UserError(
            f"{path} is a file ptune does not read as a checkpoint: pass a t5x "
            "checkpoint directory, a Hugging Face model directory or a ptune "
            "conversion"
        )
    if os.path.isfile(os.path.join(path, orbax_params.CONFIG_FILE)):
        return "ptune"
    if os.path.isfile(os.path.join(path, hf.CONFIG_FILE)):
        return "hf"
    if orbax_params.t5x_orbax_dir(path):
        return "t5x_orbax"
    if os.path.isfile(os.path.join(path, t5x.CHECKPOINT_FILE)):
        return "t5x"
    steps = sorted(
        (d for d in os.listdir(path) if d.startswith("checkpoint_")), key=lambda d: (len(d), d)
    )
    hint = f"; it holds {', '.join(steps[-3:])}: pass one of those directories" if steps else ""
    raise UserError(
        f"no checkpoint found in {path}: expected a t5x `checkpoint` file, an Orbax "
        f"checkpoint, a Hugging Face config.json with model.safetensors, or a ptune "
        f"conversion (ptune_config.json){hint}"
    )


def open_checkpoint(path: str) -> tuple[CheckpointSource, Optional[t5.T5Config]]:
    """(source, the configuration stored with it if the format stores one)."""
    fmt = detect_format(path)
    path = hub.resolve(os.fspath(path))
    if "://" not in path:
        path = os.path.abspath(path)  # Orbax refuses relative paths
    if fmt == "t5x":
        return t5x.open_checkpoint(path), None
    if fmt == "hf":
        return hf.open_checkpoint(path), None
    if fmt == "t5x_orbax":
        return orbax_params.open_t5x_orbax(path), None
    return orbax_params.open_ptune(path)


def _resolve_config(
    source: CheckpointSource,
    stored: Optional[t5.T5Config],
    config: Optional[t5.T5Config],
    scan_layers: Optional[bool],
):
    assumed: dict = {}
    if config is None and stored is not None:
        config = stored
    elif config is None:
        shapes = {n: a.shape for n, a in source.arrays.items()}
        config, assumed = config_infer.infer_config(shapes, source.path, source.hints)
    if scan_layers is not None:
        config = config.replace(scan_layers=bool(scan_layers))
    return config, assumed


def load(
    path: str,
    config: Optional[t5.T5Config] = None,
    *,
    dtype=jnp.float32,
    fresh: Sequence[str] = (),
    scan_layers: Optional[bool] = None,
    shardings=None,
) -> tuple[t5.T5Config, dict]:
    """Loads a T5 checkpoint of any supported format: (config, params).

    Args:
      path: checkpoint directory (t5x `checkpoint_<step>`, gs:// too; HF model directory;
        `ptune convert` output) or its main file.
      config: the model's T5Config; every checkpoint shape must agree with it. None infers it
        (see `config_infer` for what shapes cannot tell: relative_attention_max_distance=128,
        dropout_rate=0.1, dtype='float32'; HF's config.json and ptune's stored config are
        used as they are).
      dtype: parameter dtype; each array is cast as it is read, one at a time.
      fresh: regexes over '/'-joined parameter paths the caller initialises itself (e.g.
        `prompts.PROMPT_PATTERN`); they may be absent and are left out of `params`.
      scan_layers: target layer layout; None keeps config.scan_layers (False when inferred).
        Checkpoints in the other layout are stacked/unstacked on axis 1.
      shardings: optional pytree of `jax.sharding.Sharding` shaped like params; each array is
        then assembled shard by shard, read straight from storage.

    Returns:
      (config, params) where params is the plain nested dict of
      `t5.Transformer(config).init(...)['params']` (without fresh entries).

    Raises:
      UserError: unreadable path or format, or ONE error listing every missing, unexpected,
        mis-shaped or wrongly typed parameter.
    """
    source, stored = open_checkpoint(path)
    return load_source(
        source,
        stored,
        config,
        dtype=dtype,
        fresh=fresh,
        scan_layers=scan_layers,
        shardings=shardings,
    )


def load_source(
    source: CheckpointSource,
    stored: Optional[t5.T5Config],
    config: Optional[t5.T5Config],
    *,
    dtype=jnp.float32,
    fresh: Sequence[str] = (),
    scan_layers: Optional[bool] = None,
    shardings=None,
):
    """`load` on an opened checkpoint (see `open_checkpoint`)."""
    config, _ = _resolve_config(source, stored, config, scan_layers)
    arrays = restore.check(source, config, fresh)
    dtype = jnp.dtype(dtype)
    if source.bulk_restore is not None:
        if source.scanned == config.scan_layers:
            restored = source.bulk_restore(restore.bulk_targets(list(arrays), dtype, shardings))
            return config, traverse_util.unflatten_dict(
                {tuple(k.split("/")): v for k, v in restored.items()}
            )
        # Other layout: restore in the checkpoint's layout on the host, then re-lay it out.
        host = source.bulk_restore(restore.bulk_targets(list(source.arrays), dtype, None))
        source = dataclasses.replace(
            source,
            arrays={
                n: lazy_arrays.in_memory(np.asarray(v), source.arrays[n].origin)
                for n, v in host.items()
            },
            bulk_restore=None,
        )
        arrays = restore.check(source, config, fresh)
    return config, restore.materialize(arrays, dtype, shardings)


@dataclasses.dataclass
class Description:
    """What `ptune info --checkpoint` prints: format, config, assumed fields, count, step."""

    path: str
    format: str
    config: t5.T5Config
    assumed: dict
    parameter_count: int
    step: Optional[int]


def describe(path: str, config: Optional[t5.T5Config] = None) -> Description:
    """Detects, opens and strictly checks a checkpoint without reading any parameter."""
    source, stored = open_checkpoint(path)
    config, assumed = _resolve_config(source, stored, config, None)
    arrays = restore.check(source, config)
    count = sum(int(np.prod(a.shape)) for a in arrays.values())
    return Description(source.path, source.format, config, assumed, count, source.step)


def _check_destination(src: str, dst: str, overwrite: bool) -> None:
    """Refuses, before anything is read or written, a `--to` that would lose what the user
    made: an existing path without --overwrite; the source itself, a directory holding it
    or one inside it; with --overwrite, anything but a ptune checkpoint (which holds only
    its parameters and `ptune_config.json`) or an empty directory."""
    if "://" not in src and "://" not in dst:
        source, target = os.path.realpath(src), os.path.realpath(dst)
        common = os.path.commonpath([source, target])
        if common in (source, target):
            where = "is" if source == target else "holds" if common == target else "is in"
            raise UserError(
                f"--to {dst} {where} the checkpoint being converted (--from {src}): "
                "choose a directory apart from it"
            )
    if not os.path.exists(dst):
        return
    if not overwrite:
        raise UserError(f"{dst} already exists; pass --overwrite to replace it")
    held = set(os.listdir(dst)) if os.path.isdir(dst) else None
    checkpoint = {orbax_params.CONFIG_FILE, orbax_params.PARAMS_DIR}
    is_checkpoint = held is not None and orbax_params.CONFIG_FILE in held <= checkpoint
    if held is None or (held and not is_checkpoint):
        what = "a file" if held is None else f"a directory holding {', '.join(sorted(held)[:4])}"
        raise UserError(
            f"--to {dst} is {what}, not a ptune checkpoint: --overwrite replaces only a "
            "checkpoint `ptune convert` wrote; choose a new directory"
        )


def convert(
    src: str,
    dst: str,
    config: Optional[t5.T5Config] = None,
    *,
    overwrite: bool = False,
    dtype=jnp.float32,
) -> str:
    """Loads `src` strictly and writes it to `dst` in the ptune format (atomically).
    `overwrite` replaces only a checkpoint this function wrote, never `src` or a directory
    holding it."""
    _check_destination(os.fspath(src), os.fspath(dst), overwrite)
    source, stored = open_checkpoint(src)
    loaded_config, params = load_source(source, stored, config, dtype=dtype)
    return orbax_params.save_ptune(
        params,
        loaded_config,
        dst,
        overwrite=overwrite,
        source=os.fspath(src),
        source_format=source.format,
        step=source.step,
    )
