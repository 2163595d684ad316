"""Orbax parameter checkpoints: ptune's own converted format and t5x's Orbax layout.

ptune format (what `ptune convert` writes, restored fast by `load`):

    DIR/ptune_config.json   {"format": "ptune", "version": 1, "config": {T5Config fields},
                             "source": "<converted path>", "source_format": ..., "step": N}
    DIR/params/             Orbax PyTree checkpoint of the plain params dict

t5x's Orbax layout: an Orbax PyTree checkpoint (`_METADATA`, `manifest.ocdbt`, ...) in
`checkpoint_<step>/` or its `state/` sub-directory whose tree holds the parameters under
`target` (t5x's train-state dict: `{'target': params, 'state': {'step', 'param_states'}}`);
only `target` (and `state/step`) is restored, through Orbax's partial restore.

Orbax restores straight into the target dtype and shardings in one call, so these sources
provide `bulk_restore`; the per-array `LazyArray`s carry shapes for the strict check and only
read (into host memory) when the layer layout must change.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util

from ptune import atomic
from ptune.checkpoints.lazy_arrays import LazyArray
from ptune.checkpoints.restore import CheckpointSource
from ptune.errors import UserError
from ptune.models import t5

CONFIG_FILE = "ptune_config.json"
PARAMS_DIR = "params"
FORMAT_VERSION = 1
ORBAX_MARKERS = ("_METADATA", "manifest.ocdbt", "_CHECKPOINT_METADATA")


def is_orbax_dir(path: str) -> bool:
    return os.path.isdir(path) and any(os.path.exists(os.path.join(path, m)) for m in ORBAX_MARKERS)


def t5x_orbax_dir(path: str) -> Optional[str]:
    """The Orbax directory of a t5x Orbax checkpoint (`path` or `path/state`), or None."""
    for candidate in (path, os.path.join(path, "state")):
        if is_orbax_dir(candidate):
            return candidate
    return None


def _restorer() -> ocp.Checkpointer:
    """Orbax bounds the bytes it reads concurrently (default 96 GB, i.e. unbounded here);
    1 GB keeps its transient host buffers small next to the restored model."""
    return ocp.Checkpointer(ocp.PyTreeCheckpointHandler(restore_concurrent_gb=1))


def _tree_metadata(directory: str) -> dict:
    try:
        metadata = ocp.PyTreeCheckpointer().metadata(directory)
    except (ValueError, OSError, KeyError, FileNotFoundError) as e:
        raise UserError(
            f"cannot read the Orbax checkpoint metadata in {directory}: {' '.join(str(e).split())}"
        ) from e
    tree = getattr(metadata, "item_metadata", metadata)
    tree = getattr(tree, "tree", tree)
    if not isinstance(tree, dict):
        raise UserError(f"{directory}: the Orbax checkpoint is not a dict tree")
    return tree


def _source(
    directory: str, subtree: Optional[str], fmt: str, path: str, step: Optional[int]
) -> CheckpointSource:
    """A CheckpointSource over the Orbax tree at `directory` (params under `subtree`)."""
    tree = _tree_metadata(directory)
    params_meta = tree.get(subtree) if subtree else tree
    if not isinstance(params_meta, dict):
        raise UserError(
            f"{directory}: the Orbax checkpoint has no '{subtree}' parameter tree "
            f"(top-level keys: {sorted(tree)})"
        )
    flat = {"/".join(k): v for k, v in traverse_util.flatten_dict(params_meta).items()}

    def restore(targets: dict[str, tuple[Any, Any]]) -> dict[str, jax.Array]:
        item, args = {}, {}
        for name, (dtype, sharding) in targets.items():
            key = tuple(name.split("/"))
            shape = tuple(flat[name].shape)
            if sharding is None:
                sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
            item[key] = jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
            args[key] = ocp.ArrayRestoreArgs(dtype=dtype, sharding=sharding)
        item, args = traverse_util.unflatten_dict(item), traverse_util.unflatten_dict(args)
        if subtree:
            item, args = {subtree: item}, {subtree: args}
        try:
            out = _restorer().restore(
                directory,
                args=ocp.args.PyTreeRestore(item=item, restore_args=args, partial_restore=True),
            )
        except (ValueError, OSError, KeyError) as e:
            raise UserError(
                f"cannot restore the Orbax checkpoint {directory}: {' '.join(str(e).split())}"
            ) from e
        out = out[subtree] if subtree else out
        return {"/".join(k): v for k, v in traverse_util.flatten_dict(out).items()}

    def reader(name: str):
        def read(index):
            dtype = np.dtype(flat[name].dtype)
            return np.asarray(restore({name: (dtype, None)})[name])[index]

        return read

    arrays = {
        n: LazyArray(tuple(m.shape), np.dtype(m.dtype), reader(n), f"{directory}[{n}]")
        for n, m in flat.items()
        if hasattr(m, "shape") and m.shape is not None
    }
    unexpected = [f"{n} (not an array, in {directory})" for n in flat if n not in arrays]
    return CheckpointSource(
        path=path, format=fmt, arrays=arrays, unexpected=unexpected, step=step, bulk_restore=restore
    )


def open_t5x_orbax(path: str) -> CheckpointSource:
    directory = t5x_orbax_dir(path)
    if directory is None:
        raise UserError(f"{path} is not an Orbax checkpoint")
    tree = _tree_metadata(directory)
    subtree = "target" if "target" in tree else "params" if "params" in tree else None
    if subtree is None:
        raise UserError(
            f"{directory}: Orbax checkpoint without a 'target' (t5x) or 'params' "
            f"tree; top-level keys: {sorted(tree)}"
        )
    step = None
    if isinstance(tree.get("state"), dict) and "step" in tree["state"]:
        try:
            restored = ocp.PyTreeCheckpointer().restore(
                directory,
                args=ocp.args.PyTreeRestore(item={"state": {"step": 0}}, partial_restore=True),
            )
            step = int(np.asarray(restored["state"]["step"]))
        except (ValueError, OSError, KeyError, TypeError):
            step = None
    return _source(directory, subtree, "t5x_orbax", path, step)


def read_ptune_config(path: str) -> tuple[t5.T5Config, dict]:
    """(T5Config, the whole ptune_config.json) of a ptune-format checkpoint."""
    file = os.path.join(path, CONFIG_FILE)
    try:
        with open(file) as f:
            meta = json.load(f)
        config = t5.T5Config(**meta["config"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{file} is not a valid ptune checkpoint config: {e}") from e
    if meta.get("version") != FORMAT_VERSION:
        raise UserError(f"{file}: unsupported ptune checkpoint version {meta.get('version')!r}")
    return config, meta


def open_ptune(path: str) -> tuple[CheckpointSource, t5.T5Config]:
    config, meta = read_ptune_config(path)
    source = _source(os.path.join(path, PARAMS_DIR), None, "ptune", path, meta.get("step"))
    return source, config


def config_to_json(config: t5.T5Config) -> dict:
    out = dataclasses.asdict(config)
    out["mlp_activations"] = list(config.mlp_activations)
    return out


def save_ptune(
    params: dict,
    config: t5.T5Config,
    directory: str,
    *,
    overwrite: bool = False,
    source: str = "",
    source_format: str = "",
    step: Optional[int] = None,
) -> str:
    """Writes a ptune-format checkpoint atomically: into a temporary sibling directory, then
    renamed into place, so an interrupted conversion leaves nothing at `directory`."""
    directory = os.path.abspath(directory.rstrip("/"))
    parent = os.path.dirname(directory)
    if os.path.exists(directory) and not overwrite:
        raise UserError(f"{directory} already exists; pass --overwrite to replace it")
    if not os.path.isdir(parent):
        raise UserError(f"the parent directory {parent} does not exist")

    def write(tmp: str) -> None:
        ocp.PyTreeCheckpointer().save(os.path.join(tmp, PARAMS_DIR), params)
        meta = {
            "format": "ptune",
            "version": FORMAT_VERSION,
            "config": config_to_json(config),
            "source": source,
            "source_format": source_format,
            "step": step,
        }
        with open(os.path.join(tmp, CONFIG_FILE), "w") as f:
            json.dump(meta, f, indent=2, sort_keys=True)

    atomic.write_directory(directory, write, overwrite=True)
    return directory
