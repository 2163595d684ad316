"""Legacy t5x checkpoints, read with msgpack and tensorstore only (no t5x, TF or gfile).

A t5x checkpoint directory `checkpoint_<step>/` holds a msgpack file `checkpoint`:

    {'version': 3, 'optimizer': {'target': {<params>}, 'state': {'step': N, 'param_states': ...}}}

whose parameter leaves are either inline flax-msgpack arrays (ext type 1; arrays over 1 GiB
are split into `{'__msgpack_chunked_array__': True, 'shape': ..., 'chunks': ...}`) or
tensorstore specs `{'driver': 'zarr', 'kvstore': {'driver': 'gfile'|'file'|'gcs', 'path':
'target.encoder.layers_0.attention.query.kernel'}, 'metadata': {...}}` with paths relative to
the checkpoint directory. Only `target` and `state/step` are decoded; the optimizer's
`param_states` are skipped without being parsed into arrays. `gs://bucket/dir` paths go
through tensorstore's gcs kvstore for the msgpack file and the zarr arrays alike.
Format version 2 wrote bfloat16 arrays as uint16; they are reinterpreted as bfloat16.

Remote reads are bounded: a `gs://` checkpoint that cannot be reached or authenticated (no
network, no credentials: tensorstore then retries for many minutes, silently) fails after
`PTUNE_REMOTE_TIMEOUT` seconds (default 60; `ptune.remote`) in one line naming the path and
GOOGLE_APPLICATION_CREDENTIALS. The bound covers the first accesses (the msgpack file and each
zarr array's metadata), which prove the path reachable; array data is read unbounded, since a
large read over a slow link may rightly take longer.
"""

from __future__ import annotations

import io
import os
import re
import time
from typing import Any, Optional

import jax.numpy as jnp
import msgpack
import numpy as np
import tensorstore as ts

from ptune import remote
from ptune.checkpoints import lazy_arrays
from ptune.checkpoints.lazy_arrays import LazyArray
from ptune.checkpoints.restore import CheckpointSource
from ptune.errors import UserError

CHECKPOINT_FILE = "checkpoint"
_GCS = re.compile(r"^gs://([^/]+)/?(.*)$", re.DOTALL)
_MSGPACK_NDARRAY, _MSGPACK_NPSCALAR = 1, 3


def _remote(future, where: str, deadline: Optional[float]):
    """`future.result()` by `deadline` (a `time.monotonic()` time; None: no bound); past it,
    one UserError naming `where` and the credentials variable."""
    if deadline is None:
        return future.result()
    try:
        return future.result(timeout=max(deadline - time.monotonic(), 0.0))
    except TimeoutError:
        future.cancel()
        raise remote.no_answer(where) from None


def _reason(e: Exception) -> str:
    """A tensorstore error on one line, without its trailing `[key=...]` annotations (the
    spec, source locations, HTTP response)."""
    return re.sub(r"\s*\[[\w ]+=.*$", "", " ".join(str(e).split()))


def checkpoint_dir(path: str) -> str:
    """The directory of a t5x checkpoint given it or its `checkpoint` file."""
    path = path.rstrip("/")
    return path[: -len(CHECKPOINT_FILE) - 1] if path.endswith("/" + CHECKPOINT_FILE) else path


def kvstore_spec(directory: str, relative: str = "") -> dict:
    """Tensorstore kvstore spec of `directory/relative`: local file or Google Cloud Storage."""
    match = _GCS.match(directory)
    if match:
        bucket, prefix = match.groups()
        path = "/".join(p for p in (prefix.rstrip("/"), relative) if p)
        return {"driver": "gcs", "bucket": bucket, "path": path}
    return {"driver": "file", "path": os.path.join(os.path.abspath(directory), relative)}


def zarr_spec(directory: str, spec: dict) -> dict:
    """A t5x-written tensorstore spec made absolute: the kvstore path becomes
    `directory/<relative path>` on the local disk or in the checkpoint's gcs bucket
    (t5x writes 'gfile' or a placeholder bucket; neither is usable as written)."""
    spec = dict(spec)
    kvstore = dict(spec.get("kvstore") or {})
    relative = kvstore.get("path", spec.pop("path", None))
    if not isinstance(relative, str):
        raise ValueError(f"tensorstore spec without a path: {spec}")
    spec["kvstore"] = kvstore_spec(directory, relative)
    spec.pop("dtype", None)  # t5x's cast request; the stored dtype is read and cast by ptune
    return spec


def _read_file(directory: str, name: str) -> bytes:
    if _GCS.match(directory):
        spec = kvstore_spec(directory)
        spec["path"] = spec["path"] + "/" if spec["path"] else ""
        where = f"{directory.rstrip('/')}/{name}"
        deadline = time.monotonic() + remote.remote_timeout()
        try:
            store = _remote(ts.KvStore.open(spec), where, deadline)
            result = _remote(store.read(name), where, deadline)
        except UserError:
            raise
        except (ValueError, RuntimeError) as e:  # refused: bad credentials, no such bucket
            raise UserError(
                f"{where}: cannot read it: {_reason(e)} ({remote.credentials_hint()})"
            ) from e
        if result.state != "value":
            raise UserError(f"{directory}/{name} does not exist")
        return bytes(result.value)
    with open(os.path.join(directory, name), "rb") as f:
        return f.read()


def _ext_hook(code: int, data: bytes):
    """flax.serialization's msgpack ext types: ndarray (1) and numpy scalar (3)."""
    if code in (_MSGPACK_NDARRAY, _MSGPACK_NPSCALAR):
        shape, dtype_name, buffer = msgpack.unpackb(data, raw=True)
        name = dtype_name.decode() if isinstance(dtype_name, bytes) else dtype_name
        dtype = jnp.bfloat16 if name == "bfloat16" else np.dtype(name)
        array = np.frombuffer(buffer, dtype=dtype).reshape(shape)
        return array[()] if code == _MSGPACK_NPSCALAR else array
    return msgpack.ExtType(code, data)


def _unpack_map(unpacker: msgpack.Unpacker, wanted: dict) -> dict:
    """Reads a msgpack map, decoding values for keys in `wanted` (nested dicts recurse with
    `read_map_header`; a value of True unpacks fully) and skipping all others unparsed."""
    out = {}
    for _ in range(unpacker.read_map_header()):
        key = unpacker.unpack()
        want = wanted.get(key)
        if want is True:
            out[key] = unpacker.unpack()
        elif isinstance(want, dict):
            out[key] = _unpack_map(unpacker, want)
        else:
            unpacker.skip()
    return out


def read_header(directory: str, *, with_target: bool = True) -> dict:
    """{'version', 'optimizer': {'target'?, 'state': {'step'}}} of the `checkpoint` file."""
    origin = f"{directory}/{CHECKPOINT_FILE}"
    try:
        data = _read_file(directory, CHECKPOINT_FILE)
    except FileNotFoundError as e:
        raise UserError(f"t5x checkpoint file {origin} does not exist") from e
    unpacker = msgpack.Unpacker(
        io.BytesIO(data),
        raw=False,
        ext_hook=_ext_hook,
        strict_map_key=False,
        max_buffer_size=2**31 - 1,
    )
    wanted = {"version": True, "optimizer": {"state": {"step": True}}}
    if with_target:
        wanted["optimizer"]["target"] = True
    try:
        header = _unpack_map(unpacker, wanted)
        leftover = unpacker.tell() != len(data)
    except (msgpack.UnpackException, ValueError, TypeError, KeyError) as e:
        raise UserError(
            f"t5x checkpoint file {origin} is truncated or corrupt ({type(e).__name__}: {e})"
        ) from e
    if leftover:
        raise UserError(
            f"t5x checkpoint file {origin} is corrupt: trailing bytes after the checkpoint map"
        )
    if with_target and "target" not in header.get("optimizer", {}):
        raise UserError(
            f"t5x checkpoint file {origin} has no optimizer/target (parameters); "
            f"top-level keys: {sorted(header)}"
        )
    return header


def read_t5x_optimizer_step(path: str) -> Optional[int]:
    """The training step stored in a t5x checkpoint (`optimizer/state/step`), e.g. 1,100,000
    for the LM-adapted T5 1.1 checkpoints; Adafactor's decay schedule depends on it.
    None when the checkpoint stores none. Reads the msgpack file only."""
    header = read_header(checkpoint_dir(path), with_target=False)
    step = header.get("optimizer", {}).get("state", {}).get("step")
    return None if step is None else int(np.asarray(step))


def _is_spec(value: Any) -> bool:
    return isinstance(value, dict) and {"driver", "kvstore"} <= set(value)


def _unchunk(value: dict) -> np.ndarray:
    shape = tuple(value["shape"][k] for k in sorted(value["shape"], key=int))
    chunks = [value["chunks"][k] for k in sorted(value["chunks"], key=int)]
    return np.concatenate(chunks).reshape(shape)


def _leaves(tree: Any, prefix: tuple = ()):
    if isinstance(tree, dict) and "__msgpack_chunked_array__" not in tree and not _is_spec(tree):
        for key, value in tree.items():
            yield from _leaves(value, prefix + (str(key),))
    else:
        yield "/".join(prefix), tree


def _tensorstore_array(store: ts.TensorStore, origin: str, version: int) -> LazyArray:
    dtype = store.dtype.numpy_dtype
    reinterpret = version < 3 and dtype == np.uint16  # bfloat16 stored as uint16
    stored = np.dtype(jnp.bfloat16) if reinterpret else dtype
    rows = int(store.chunk_layout.read_chunk.shape[0] or 0) if store.rank else 0

    def read(index, cast=None):
        """Reads into one aligned output array (adopted by jax without a copy), a storage
        chunk's rows at a time: a whole-slice read would hold every decoded chunk beside the
        output, and a cast afterwards a second copy of the array in the stored dtype."""
        index = tuple(index)
        want = np.dtype(cast) if cast is not None else stored
        out = lazy_arrays.aligned_empty(tuple(s.stop - s.start for s in index), want)
        if not index:
            out[...] = _values(store.read().result())
            return out
        # Decoded straight into the output, cast on the way (float32 -> bfloat16 rounds to
        # nearest even, as numpy does): no second copy of a chunk in the stored dtype.
        target = None if reinterpret else ts.array(out, copy=False, write=True)
        first, start = index[0], index[0].start
        while start < first.stop:
            stop = min((start // rows + 1) * rows, first.stop) if rows else first.stop
            block = store[(slice(start, stop),) + index[1:]]
            rows_out = slice(start - first.start, stop - first.start)
            if target is None:
                out[rows_out] = _values(block.read().result())
            else:
                if want != dtype:
                    block = ts.cast(block, ts.dtype(want.name))
                target[rows_out].write(block.translate_to[(0,) * len(index)]).result()
            start = stop
        return out

    def _values(array: np.ndarray) -> np.ndarray:
        return array.view(jnp.bfloat16) if reinterpret else array

    return LazyArray(tuple(store.shape), stored, read, origin, casts=True)


def open_checkpoint(path: str) -> CheckpointSource:
    """Opens every parameter (zarr metadata only; nothing is read) and checks each zarr
    against the spec the msgpack file recorded for it; all failures are reported at once."""
    directory = checkpoint_dir(path)
    header = read_header(directory)
    version = int(header.get("version", 3))
    target = header["optimizer"]["target"]
    if not isinstance(target, dict):
        raise UserError(f"{directory}/{CHECKPOINT_FILE}: optimizer/target is not a parameter tree")
    arrays: dict[str, LazyArray] = {}
    pending, problems, unexpected = {}, [], []
    for name, leaf in _leaves(target):
        origin = f"{directory}/{CHECKPOINT_FILE}[{name}]"
        if isinstance(leaf, dict) and "__msgpack_chunked_array__" in leaf:
            arrays[name] = lazy_arrays.in_memory(_unchunk(leaf), origin)
        elif isinstance(leaf, np.ndarray):
            arrays[name] = lazy_arrays.in_memory(leaf, origin)
        elif _is_spec(leaf):
            spec = zarr_spec(directory, leaf)
            where = spec["kvstore"]["path"]
            if spec["kvstore"]["driver"] == "gcs":
                where = f"gs://{spec['kvstore']['bucket']}/{where}"
            pending[name] = (where, ts.open(spec, open=True, read=True))
        else:
            unexpected.append(f"{name} (a {type(leaf).__name__}, not an array, in {origin})")
    deadline = time.monotonic() + remote.remote_timeout() if _GCS.match(directory) else None
    try:
        for name, (where, future) in pending.items():
            try:
                store = _remote(future, where, deadline)
                arrays[name] = _tensorstore_array(store, where, version)
            except UserError:
                raise
            except (ValueError, RuntimeError) as e:
                problems.append(f"  {name}: cannot open zarr array {where}: {_reason(e)}")
    finally:  # after a timeout, stop the opens still retrying
        for _, future in pending.values():
            future.cancel()
    if problems:
        raise UserError(
            f"t5x checkpoint {directory}: {len(problems)} parameter array(s) cannot "
            "be read\n" + "\n".join(problems)
        )
    step = header.get("optimizer", {}).get("state", {}).get("step")
    return CheckpointSource(
        path=directory,
        format="t5x",
        arrays=arrays,
        unexpected=unexpected,
        step=None if step is None else int(np.asarray(step)),
    )
