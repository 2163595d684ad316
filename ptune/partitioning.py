"""Mesh, logical axis rules and shardings: `jax.jit` + `NamedSharding` over a (data, model) mesh.

Every parameter and the main activations carry logical axis names (`ptune.models.t5`,
`ptune.prompts`); one rule table maps them to the two mesh axes, as t5x's
`standard_logical_axis_rules` do:

    batch -> data            vocab, mlp, heads, joined_kv -> model
    embed, kv, length, layers, relpos_buckets, prompt, prompt_embed, prompt_mlp -> None
    (replicated)

So on a `data x model` mesh the batch is split along `data`, the frozen weights are split
along `model` (Megatron-style: attention heads and MLP columns), and the prompt [P, E] is
replicated: it is tiny and every device needs all of it for its slice of the batch.

Derived shardings:
  parameters       the rules applied to each parameter's names. A dimension its mesh axis
                   does not divide (e.g. 12 heads on a model axis of 8) is kept whole and
                   named in `Partitioner.uneven` (jax refuses uneven array shardings).
  optimizer state  a leaf shaped like its parameter follows it; every other leaf (Adafactor's
                   factored v_row [rows] / v_col [cols] statistics, counts) is replicated:
                   they hold O(rows + cols) numbers, too few to be worth splitting.
  batches          [batch, ...] split along `data` (`shard_batch` assembles host-local rows).

The numerical core: imports jax, flax, numpy and optax only (no gin: `MeshConfig` is bound
from the outside as `trainer.TrainConfig.partitioning = @partitioning.MeshConfig()`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import Any, Optional, Sequence, Union

import jax
import numpy as np
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ptune.errors import UserError

log = logging.getLogger("ptune")
PyTree = Any
MeshAxes = Union[None, str, tuple[str, ...]]

MESH_AXES = ("data", "model")
# Every logical axis name the model and the prompt declare; a rule table must cover each.
LOGICAL_AXES = (
    "vocab",
    "embed",
    "joined_kv",
    "mlp",
    "heads",
    "relpos_buckets",
    "kv",
    "length",
    "batch",
    "layers",
    "prompt",
    "prompt_embed",
    "prompt_mlp",
)
STANDARD_RULES: tuple[tuple[str, MeshAxes], ...] = (
    ("batch", "data"),
    ("vocab", "model"),
    ("mlp", "model"),
    ("heads", "model"),
    ("joined_kv", "model"),
    ("embed", None),
    ("kv", None),
    ("length", None),
    ("layers", None),
    ("relpos_buckets", None),
    ("prompt", None),
    ("prompt_embed", None),
    ("prompt_mlp", None),
)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """How devices form the (data, model) mesh and how logical axes map onto it.

    mesh_shape: (data, model) explicitly; its product must be the device count. None derives
      it from `num_partitions`.
    num_partitions: the model axis size when `mesh_shape` is None (t5x's name); the data axis
      takes the remaining devices. 1 is pure data parallelism.
    logical_axis_rules: the whole rule table as (logical axis, mesh axis | None) pairs, in
      priority order; None uses `STANDARD_RULES`. It must name every axis in `LOGICAL_AXES`.
    parameter_partitioning_dims: 2 also splits the parameters' `embed` dimension along
      `data` (t5x's 2-D parameter partitioning): each device then holds 1/(data x model) of
      the frozen weights instead of 1/model, at the cost of gathering them in each step.
      Activations stay split by batch (`batch` claims `data` first). Ignored with
      explicit `logical_axis_rules`.
    """

    mesh_shape: Optional[Sequence[int]] = dataclasses.field(default=None, metadata={"min": 1})
    num_partitions: int = dataclasses.field(default=1, metadata={"min": 1})
    logical_axis_rules: Optional[Sequence[Sequence[Any]]] = None
    parameter_partitioning_dims: int = dataclasses.field(default=1, metadata={"choices": (1, 2)})

    def rules(self) -> tuple[tuple[str, MeshAxes], ...]:
        """The validated rule table (see `validate_rules`)."""
        if self.logical_axis_rules is not None:
            return validate_rules(self.logical_axis_rules)
        if self.parameter_partitioning_dims not in (1, 2):
            raise UserError(
                "parameter_partitioning_dims must be 1 or 2, got "
                f"{self.parameter_partitioning_dims}"
            )
        if self.parameter_partitioning_dims == 1:
            return STANDARD_RULES
        return tuple((n, "data") if n == "embed" else (n, m) for n, m in STANDARD_RULES)

    def explicit_shape(self) -> Optional[tuple[int, int]]:
        """`mesh_shape` checked as (data, model), or None when unset (`ptune plan` simulates
        this many devices); a `UserError` naming it otherwise."""
        if self.mesh_shape is None:
            return None
        given = self.mesh_shape
        try:
            shape = tuple(int(n) for n in given)
        except (TypeError, ValueError):
            shape = ()
        if len(shape) != 2 or min(shape) < 1:
            shown = tuple(given) if isinstance(given, (list, tuple)) else given
            raise UserError(f"mesh_shape must be two positive sizes (data, model), got {shown}")
        return shape

    def shape(self, num_devices: int) -> tuple[int, int]:
        """(data, model) for `num_devices` devices; a `UserError` when they do not fit."""
        shape = self.explicit_shape()
        if shape is not None:
            if shape[0] * shape[1] != num_devices:
                raise UserError(
                    f"mesh_shape {shape[0]}x{shape[1]} needs {shape[0] * shape[1]} "
                    f"devices but there are {num_devices}"
                )
            return shape
        model = int(self.num_partitions)
        if model < 1 or num_devices % model:
            raise UserError(
                f"num_partitions={self.num_partitions} does not divide the {num_devices} devices"
            )
        return num_devices // model, model


def validate_rules(
    rules: Optional[Sequence[Sequence[Any]]], mesh_axes: Sequence[str] = MESH_AXES
) -> tuple[tuple[str, MeshAxes], ...]:
    """The rule table as a tuple of pairs; one `UserError` for an unknown logical axis, a
    mesh axis that does not exist, or a logical axis no rule covers."""
    if rules is None:
        return STANDARD_RULES
    out = []
    for rule in rules:
        if isinstance(rule, str) or len(rule) != 2:
            raise UserError(
                f"logical_axis_rules: each rule is a (logical axis, mesh axis) pair, got {rule!r}"
            )
        name, target = rule[0], rule[1]
        if name not in LOGICAL_AXES:
            raise UserError(
                f"logical_axis_rules: unknown logical axis {name!r}; the model's "
                f"axes are {', '.join(LOGICAL_AXES)}"
            )
        targets = () if target is None else (target,) if isinstance(target, str) else target
        for axis in targets:
            if axis not in mesh_axes:
                raise UserError(
                    f"logical_axis_rules: {name!r} maps to mesh axis {axis!r}, "
                    f"which does not exist (the mesh axes are "
                    f"{', '.join(mesh_axes)})"
                )
        target = None if not targets else targets[0] if len(targets) == 1 else tuple(targets)
        out.append((name, target))
    missing = [a for a in LOGICAL_AXES if a not in {n for n, _ in out}]
    if missing:
        raise UserError(
            f"logical_axis_rules: no rule for logical axis {missing[0]!r} (every one "
            f"of {', '.join(LOGICAL_AXES)} needs a rule; None replicates)"
        )
    return tuple(out)


def device_grid(devices: Sequence[Any], data: int, model: int) -> np.ndarray:
    """Devices as a [data, model] array, the model axis on the fastest links.

    TPU: `mesh_utils` follows the physical torus (and keeps the model axis inside a slice on
    multi-slice pods). GPU/CPU: devices sorted by (process, id), so the model axis, the
    innermost, spans consecutive devices of one host (NVLink) whenever model <= devices per
    host, and only the data axis crosses the network.
    """
    from jax.experimental import mesh_utils

    devices = list(devices)
    if devices[0].platform == "tpu":
        slices = {getattr(d, "slice_index", 0) for d in devices}
        if len(slices) > 1 and data % len(slices) == 0:
            return mesh_utils.create_hybrid_device_mesh(
                (data // len(slices), model), (len(slices), 1), devices
            )
        return mesh_utils.create_device_mesh((data, model), devices, allow_split_physical_axes=True)
    devices.sort(key=lambda d: (d.process_index, d.id))
    return np.array(devices, dtype=object).reshape(data, model)


def create_mesh(config: MeshConfig = MeshConfig(), devices: Optional[Sequence[Any]] = None) -> Mesh:
    """The (data, model) mesh over `devices` (default: all devices of all processes)."""
    devices = list(jax.devices() if devices is None else devices)
    data, model = config.shape(len(devices))
    return Mesh(
        device_grid(devices, data, model),
        MESH_AXES,
        axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES),
    )


def check_divisible(batch_size: int, ways: int, name: str, what: str = "batch size") -> None:
    """A `UserError` unless `batch_size` rows split evenly `ways` ways (over `name`: the data
    axis, the processes); `ptune plan` checks the data axis before it makes the devices."""
    if batch_size % ways:
        raise UserError(
            f"{what} {batch_size} is not divisible by {name} ({ways}); choose a multiple of {ways}"
        )


@dataclasses.dataclass(frozen=True)
class Partitioner:
    """A mesh and its rules: builds shardings and compiles steps that run under them."""

    mesh: Mesh
    rules: tuple[tuple[str, MeshAxes], ...] = STANDARD_RULES

    @classmethod
    def create(
        cls, config: MeshConfig = MeshConfig(), devices: Optional[Sequence[Any]] = None
    ) -> "Partitioner":
        return cls(create_mesh(config, devices), config.rules())

    @property
    def data_size(self) -> int:
        return int(self.mesh.shape["data"])

    @property
    def model_size(self) -> int:
        return int(self.mesh.shape["model"])

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    def sharding(
        self, logical_axes: Sequence[Optional[str]], shape: Optional[Sequence[int]] = None
    ) -> NamedSharding:
        """NamedSharding for an array with these logical axis names. With `shape`, a
        dimension its mesh axes do not divide stays whole."""
        spec = nn.logical_to_mesh_axes(tuple(logical_axes), self.rules)
        if shape is not None:
            spec = PartitionSpec(*(self._fit(s, n) for s, n in zip(spec, shape)))
        return NamedSharding(self.mesh, spec)

    def _fit(self, axes: MeshAxes, size: int) -> MeshAxes:
        names = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
        ways = int(np.prod([self.mesh.shape[a] for a in names])) if names else 1
        return axes if size % ways == 0 else None

    def uneven(self, boxed_params: PyTree) -> list[str]:
        """'/'-joined paths of parameters with a dimension kept whole (see `sharding`)."""
        out = []
        for path, leaf in _boxed_leaves(boxed_params):
            spec = nn.logical_to_mesh_axes(tuple(leaf.names), self.rules)
            if any(self._fit(s, n) != s for s, n in zip(spec, nn.unbox(leaf).shape)):
                out.append(path)
        return out

    def param_shardings(self, boxed_params: PyTree) -> PyTree:
        """Shardings for `t5.abstract_variables(...)['params']` (boxed: logical names on each
        leaf) -> the same tree, unboxed, of NamedShardings."""
        return jax.tree_util.tree_map(
            lambda x: (
                self.sharding(x.names, nn.unbox(x).shape)
                if isinstance(x, nn.LogicallyPartitioned)
                else self.replicated
            ),
            boxed_params,
            is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned),
        )

    def opt_state_shardings(
        self, optimizer, abstract_params: PyTree, param_shardings: PyTree
    ) -> PyTree:
        """Shardings for `optimizer.init(params)`: a leaf shaped like its parameter follows the
        parameter; others (Adafactor's factored v_row / v_col, counts) are replicated."""
        import optax

        abstract_state = jax.eval_shape(optimizer.init, abstract_params)

        def follow(leaf, param, sharding):
            return sharding if tuple(leaf.shape) == tuple(param.shape) else self.replicated

        return optax.tree_map_params(
            optimizer,
            follow,
            abstract_state,
            abstract_params,
            param_shardings,
            transform_non_params=lambda _: self.replicated,
        )

    def batch_sharding(self) -> NamedSharding:
        """For every batch feature ([batch, ...], int32): rows split along `data`."""
        return self.sharding(("batch",))

    def check_batch_size(self, batch_size: int, what: str = "batch size") -> None:
        """A `UserError` unless `batch_size` splits evenly over the data axis and the hosts."""
        check_divisible(batch_size, self.data_size, "the data axis", what)
        check_divisible(batch_size, jax.process_count(), "the processes", what)

    def shard_batch(self, host_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """Host-local rows [batch / processes, ...] -> global arrays [batch, ...] on `data`.

        Each process passes the rows of its own data shard, in process order."""
        sharding = self.batch_sharding()
        out = {}
        for key, value in host_batch.items():
            value = np.asarray(value)
            global_shape = (value.shape[0] * jax.process_count(),) + value.shape[1:]
            self.check_batch_size(global_shape[0])
            out[key] = jax.make_array_from_process_local_data(sharding, value, global_shape)
        return out

    def put(self, tree: PyTree, shardings: PyTree) -> PyTree:
        """Host values that every process holds identically (the prompt, a seed's init) ->
        global arrays with `shardings`; each device gets only its slice."""

        def place(x, sharding):
            x = np.asarray(x)
            return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

        return jax.tree_util.tree_map(place, tree, shardings)

    @contextlib.contextmanager
    def context(self):
        """The mesh and the rules as ambient context, so `nn.with_logical_constraint` in the
        model becomes a real sharding constraint while a step is traced."""
        with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
            yield

    def jit(
        self, fn, *, in_shardings, out_shardings, donate_argnums=(), static_argnums=()
    ) -> "MeshedFunction":
        """`jax.jit` with in/out shardings, traced under `context()`."""
        return MeshedFunction(
            self,
            jax.jit(
                fn,
                in_shardings=in_shardings,
                out_shardings=out_shardings,
                donate_argnums=donate_argnums,
                static_argnums=static_argnums,
            ),
        )


def _boxed_leaves(boxed: PyTree):
    flat = jax.tree_util.tree_flatten_with_path(
        boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)
    )[0]
    for path, leaf in flat:
        if isinstance(leaf, nn.LogicallyPartitioned):
            yield "/".join(str(getattr(k, "key", k)) for k in path), leaf


@dataclasses.dataclass(frozen=True)
class MeshedFunction:
    """A jitted function whose calls and lowerings happen under its partitioner's context."""

    partitioner: Partitioner
    jitted: Any

    def __call__(self, *args):
        with self.partitioner.context():
            return self.jitted(*args)

    def lower(self, *args):
        with self.partitioner.context():
            return self.jitted.lower(*args)


def gather(x: jax.Array) -> np.ndarray:
    """The whole value of a (possibly multi-host) array on this host, as numpy.

    Replicated arrays (the prompt) are read from a local copy, so one process alone may call
    this; a sharded multi-host array needs an all-gather that every process must join."""
    if getattr(x, "is_fully_addressable", True):
        return np.asarray(x)
    if x.sharding.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
