"""Capacity planning: will a run fit, per device, before anyone rents the pod?

`plan_training` compiles the train step that `ptune train` runs (both are assembled by
`ptune.recipe`) ahead of time from abstract shapes only
(`ShapeDtypeStruct`s carrying their shardings; no weight is ever allocated) and reads XLA's
own memory analysis of the per-device program:

    arguments    state (trainable params + optimizer state) + frozen weights + batch, sharded
    outputs      the new state and the metrics
    aliased      outputs written in place over donated arguments (the state), counted once
    temporaries  activations kept for the backward pass, gradients, collectives' buffers

    per_device_bytes = arguments + outputs - aliased + temporaries

It also sums the parameter and optimizer-state bytes each device holds, from the shardings
alone. Compiling needs the devices of the mesh to exist: on a laptop, simulated CPU devices
(`--xla_force_host_platform_device_count`, which `ptune plan` sets from `--mesh_shape`). XLA's
CPU backend computes in float32 where a TPU would keep bfloat16, so its temporaries are an
upper bound for TPU.

`fit` walks the memory-relevant settings (`Setting`: mesh split, remat, bfloat16 activations
and frozen weights, 2-D weight partitioning) cheapest first until one fits a budget;
`plan_configured` and `fit_training` apply both to the run a `TrainConfig` configures, as
`ptune plan` and `ptune plan --fit` do.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from ptune import family as family_lib
from ptune import partitioning, prompts, recipe
from ptune import step as step_lib
from ptune import trainable as trainable_lib
from ptune.errors import UserError
from ptune.models import attention

if TYPE_CHECKING:
    from ptune.trainer import TrainConfig

PyTree = Any
GIB = 1024**3


@dataclasses.dataclass(frozen=True)
class Plan:
    """Bytes per device of one compiled train step (the peak over the mesh's devices)."""

    mesh_shape: tuple[int, int]
    argument_bytes: int
    output_bytes: int
    alias_bytes: int
    temp_bytes: int
    trainable_bytes: int
    frozen_bytes: int
    optimizer_bytes: int
    trainable_params: int
    total_params: int
    compile_seconds: float

    @property
    def per_device_bytes(self) -> int:
        return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes

    def lines(self) -> list[str]:
        """Human-readable report; the last line is `per_device_bytes: N`."""

        def row(name, value):
            return f"{name + ':':<26}{value:>16,d} bytes  ({value / GIB:8.3f} GiB)"

        data, model = self.mesh_shape
        return [
            f"mesh: {data}x{model} (data x model), {data * model} devices",
            f"trainable params: {self.trainable_params:,} of {self.total_params:,}",
            f"compiled in {self.compile_seconds:.1f} s",
            "per device:",
            "  " + row("trainable params", self.trainable_bytes),
            "  " + row("optimizer state", self.optimizer_bytes),
            "  " + row("frozen params", self.frozen_bytes),
            "  " + row("arguments", self.argument_bytes),
            "  " + row("outputs", self.output_bytes),
            "  " + row("aliased (donated)", self.alias_bytes),
            "  " + row("temporaries", self.temp_bytes),
            "  " + row("peak", self.per_device_bytes),
            f"per_device_bytes: {self.per_device_bytes}",
        ]


def shard_bytes(abstract: PyTree, shardings: PyTree) -> int:
    """Bytes of the largest shard of each leaf, summed (the worst device)."""
    total = 0
    for leaf, sharding in zip(
        jax.tree_util.tree_leaves(abstract), jax.tree_util.tree_leaves(shardings)
    ):
        shape = sharding.shard_shape(tuple(leaf.shape))
        total += int(np.prod(shape)) * jnp.dtype(leaf.dtype).itemsize
    return total


def plan_training(
    run: recipe.Run,
    *,
    batch_size: int,
    feature_lengths: Mapping[str, int],
    loss: step_lib.LossConfig = step_lib.LossConfig(),
    accelerator_attention: bool = True,
) -> Plan:
    """Compiles the train step `run` (from `recipe.assemble`, as `ptune train` builds it)
    for `batch_size` examples of `feature_lengths` ({'inputs': ls, 'targets': lt} tokens) and
    returns its per-device memory. Allocates nothing."""
    partitioner = run.partitioner
    partitioner.check_batch_size(batch_size)
    state_abstract, frozen_abstract = run.abstract_state()
    lengths = {
        "encoder_input_tokens": feature_lengths["inputs"],
        "decoder_input_tokens": feature_lengths["targets"],
        "decoder_target_tokens": feature_lengths["targets"],
        "decoder_loss_weights": feature_lengths["targets"],
    }
    batch = {
        k: jax.ShapeDtypeStruct((batch_size, n), jnp.int32, sharding=partitioner.batch_sharding())
        for k, n in lengths.items()
    }
    if prompts.takes_index(run.model.prompt_factory):  # each example's task (multi-task)
        batch[prompts.PROMPT_INDEX] = jax.ShapeDtypeStruct(
            (batch_size,), jnp.int32, sharding=partitioner.batch_sharding()
        )
    start = time.perf_counter()
    # `ptune plan` sizes an accelerator's attention (batched), not the CPU's (head by head).
    with attention.batched_on_every_platform(accelerator_attention):
        train_step = run.train_step(loss, seed=0)
        compiled = train_step.lower(state_abstract, frozen_abstract, batch).compile()
    seconds = time.perf_counter() - start
    memory = compiled.memory_analysis()
    counts = trainable_lib.count(run.mask, run.abstract_params)
    return Plan(
        mesh_shape=(partitioner.data_size, partitioner.model_size),
        argument_bytes=int(memory.argument_size_in_bytes),
        output_bytes=int(memory.output_size_in_bytes),
        alias_bytes=int(memory.alias_size_in_bytes),
        temp_bytes=int(memory.temp_size_in_bytes),
        trainable_bytes=shard_bytes(state_abstract.params, run.state_shardings.params),
        frozen_bytes=shard_bytes(frozen_abstract, run.frozen_shardings),
        optimizer_bytes=shard_bytes(state_abstract.opt_state, run.state_shardings.opt_state),
        trainable_params=counts[0],
        total_params=counts[1],
        compile_seconds=seconds,
    )


# ---------------------------------------------------------------------------------------------
# `ptune plan --fit`: the cheapest memory-relevant settings under a per-device budget


@dataclasses.dataclass(frozen=True)
class Setting:
    """The memory-relevant choices `fit` tries; the rest of the run stays as configured.

    mesh_shape: (data, model) splits of the device count; remat_policy: T5Config's ('none',
    'minimal', 'full'); dtype: activations ('float32' or 'bfloat16'); frozen_dtype: None
    (float32) or 'bfloat16'; parameter_partitioning_dims: 1 (weights split on `model`) or 2
    (also on `data`). Layers are always scanned (same numerics, compiles in seconds)."""

    mesh_shape: tuple[int, int]
    remat_policy: str = "none"
    dtype: str = "float32"
    frozen_dtype: Any = None
    parameter_partitioning_dims: int = 1

    # What each choice costs the user, in rough units of "a third more step time" (remat
    # full recomputes the forward pass), or of numerics that differ from float32 (bfloat16
    # weights are rounded: most costly). The model axis costs communication per doubling.
    _COSTS = {
        ("remat_policy", "minimal"): 1.0,
        ("remat_policy", "full"): 2.0,
        ("dtype", "bfloat16"): 2.0,
        ("frozen_dtype", "bfloat16"): 3.0,
        ("parameter_partitioning_dims", 2): 1.0,
    }

    @property
    def cost(self) -> float:
        cost = sum(self._COSTS.get((name, getattr(self, name)), 0.0) for name in self._names())
        return cost + 0.5 * float(np.log2(self.mesh_shape[1]))

    @staticmethod
    def _names() -> tuple[str, ...]:
        return ("remat_policy", "dtype", "frozen_dtype", "parameter_partitioning_dims")

    def saves_at_least_as_much_as(self, other: "Setting") -> bool:
        """Every memory saver of `other` is on here too, on the same mesh: if this one does
        not fit, `other` will not either."""
        order = {
            "none": 0,
            "minimal": 1,
            "full": 2,
            "float32": 0,
            "bfloat16": 1,
            None: 0,
            1: 0,
            2: 1,
        }
        return self.mesh_shape == other.mesh_shape and all(
            order[getattr(self, n)] >= order[getattr(other, n)] for n in self._names()
        )

    def flags(self, model: str = "t5.T5Config") -> list[str]:
        """The gin flags that select this setting, to paste after the run's own; `model`:
        the configurable of the model's family (`llama.LlamaConfig` for decoder-only)."""
        data, mesh_model = self.mesh_shape
        return [
            f'--gin.partitioning.MeshConfig.mesh_shape="({data}, {mesh_model})"',
            f"--gin.partitioning.MeshConfig.parameter_partitioning_dims="
            f"{self.parameter_partitioning_dims}",
            f"--gin.{model}.scan_layers=True",
            f"--gin.{model}.remat_policy=\"'{self.remat_policy}'\"",
            f"--gin.{model}.dtype=\"'{self.dtype}'\"",
            "--gin.trainer.TrainConfig.frozen_dtype="
            + (f"\"'{self.frozen_dtype}'\"" if self.frozen_dtype else "None"),
        ]

    def describe(self) -> str:
        data, model = self.mesh_shape
        return (
            f"mesh {data}x{model}, remat {self.remat_policy}, activations {self.dtype}, "
            f"frozen {self.frozen_dtype or 'float32'}, weights split on "
            f"{'data and model' if self.parameter_partitioning_dims == 2 else 'model'}"
        )


def candidate_settings(devices: int, batch_size: int, frozen_weights: bool) -> list[Setting]:
    """Every setting over the (data, model) splits of `devices` whose data axis divides the
    batch, cheapest first. `frozen_weights` False (model tuning) leaves frozen_dtype out."""
    meshes = [(d, devices // d) for d in range(devices, 0, -1) if devices % d == 0]
    meshes = [m for m in meshes if batch_size % m[0] == 0]
    settings = [
        Setting(mesh, remat, dtype, frozen, dims)
        for mesh in meshes
        for remat in ("none", "minimal", "full")
        for dtype in ("float32", "bfloat16")
        for frozen in ((None, "bfloat16") if frozen_weights else (None,))
        for dims in ((1, 2) if mesh[0] > 1 else (1,))
    ]
    return sorted(settings, key=lambda s: (s.cost, -s.mesh_shape[0]))


@dataclasses.dataclass(frozen=True)
class FitResult:
    """`fit`'s answer: the first (cheapest) setting that fits, or None; and every setting it
    compiled, with its per-device bytes, in the order tried."""

    budget_bytes: int
    fitting: Any  # (Setting, Plan) or None
    tried: tuple  # ((Setting, per-device bytes), ...)
    model: str = "t5.T5Config"  # the model family's configurable, for the flags

    def lines(self) -> list[str]:
        lines = [
            f"  {'fits' if b <= self.budget_bytes else 'over'} {b / GIB:8.3f} GiB  {s.describe()}"
            for s, b in self.tried
        ]
        if self.fitting is None:
            smallest = min(self.tried, key=lambda t: t[1]) if self.tried else None
            lines.append(
                f"nothing fits in {self.budget_bytes / GIB:.2f} GiB per device"
                + (
                    f"; the smallest is {smallest[1] / GIB:.2f} GiB ({smallest[0].describe()})."
                    " Use more devices, a smaller batch or shorter inputs."
                    if smallest
                    else ""
                )
            )
            return lines
        setting, plan = self.fitting
        lines += [
            f"cheapest that fits: {setting.describe()}: {plan.per_device_bytes / GIB:.3f} GiB "
            f"per device (budget {self.budget_bytes / GIB:.2f} GiB). Add to your command:",
            *("  " + flag for flag in setting.flags(self.model)),
            f"per_device_bytes: {plan.per_device_bytes}",
        ]
        return lines


def fit(
    plan_for: Any,
    candidates: list[Setting],
    budget_bytes: int,
    log: Any = None,
    model: str = "t5.T5Config",
) -> FitResult:
    """Walks `candidates` (cheapest first), planning each with `plan_for(setting) -> Plan`,
    until one fits in `budget_bytes` per device. First the most frugal setting of each mesh
    is planned: if none of those fits, nothing does. A setting whose memory savers are all on
    in one already over budget (same mesh) is skipped without compiling."""
    tried, over, plans = [], [], {}

    def plan(setting: Setting):
        if setting not in plans:
            plans[setting] = plan_for(setting)
            tried.append((setting, plans[setting].per_device_bytes))
            if log is not None:
                log(f"  {plans[setting].per_device_bytes / GIB:8.3f} GiB  {setting.describe()}")
            if plans[setting].per_device_bytes > budget_bytes:
                over.append(setting)
        return plans[setting]

    frugal = [
        s
        for s in candidates
        if not any(o != s and o.saves_at_least_as_much_as(s) for o in candidates)
    ]
    if all(plan(s).per_device_bytes > budget_bytes for s in frugal):
        return FitResult(budget_bytes, None, tuple(tried), model)
    for setting in candidates:
        if setting not in plans and any(o.saves_at_least_as_much_as(setting) for o in over):
            continue
        if plan(setting).per_device_bytes <= budget_bytes:
            return FitResult(budget_bytes, (setting, plans[setting]), tuple(tried), model)
    return FitResult(budget_bytes, None, tuple(tried), model)


# ---------------------------------------------------------------------------------------------
# A configured run (`ptune plan`): its TrainConfig and model configuration, planned


def prompt_factory(cfg: TrainConfig):
    """The run's prompt module; multi-task prompts are sized by the mixture's task count."""
    if cfg.prompt is None:
        return None
    if cfg.prompt.multi_task is None:
        return cfg.prompt.factory()
    if cfg.mixture_or_task_name == "(plan)":
        raise UserError(
            "multi-task prompts hold one prompt per task: name the mixture "
            "(--gin.MIXTURE_OR_TASK_NAME=...) so `ptune plan` can size the bank"
        )
    import ptune.tasks  # noqa: F401  registers the mixtures
    from ptune import data

    return cfg.prompt.factory(len(data.bank_tasks(cfg.mixture_or_task_name)))


def plan_configured(
    cfg: TrainConfig, model_config: Any, mesh: partitioning.MeshConfig, frozen_dtype: Any
) -> Plan:
    """`plan_training` of the run `cfg` configures, with `model_config` (the run's, perhaps
    changed), on `mesh` with frozen weights in `frozen_dtype`."""
    run = recipe.assemble(
        model_config,
        prompt_factory=prompt_factory(cfg),
        mesh=mesh,
        trainable=cfg.trainable,
        optimizer=cfg.optimizer,
        frozen_dtype=frozen_dtype,
    )
    return plan_training(
        run, batch_size=cfg.batch_size, feature_lengths=cfg.task_feature_lengths, loss=cfg.loss
    )


def fit_training(
    cfg: TrainConfig, model_config: Any, devices: int, budget: int, log: Callable[[str], None]
) -> FitResult:
    """`ptune plan --fit`: the cheapest setting whose step fits `budget` bytes per device on
    `devices` devices; `log` gets a heading and a line per setting compiled."""
    from ptune import train_setup

    def plan_for(setting: Setting) -> Plan:
        return plan_configured(
            cfg,
            model_config.replace(
                scan_layers=True, remat_policy=setting.remat_policy, dtype=setting.dtype
            ),
            dataclasses.replace(
                cfg.partitioning,
                mesh_shape=setting.mesh_shape,
                parameter_partitioning_dims=setting.parameter_partitioning_dims,
            ),
            setting.frozen_dtype,
        )

    candidates = candidate_settings(
        devices, cfg.batch_size, frozen_weights=not train_setup.counts_everything(cfg)
    )
    if not candidates:
        raise UserError(
            f"batch size {cfg.batch_size} is not divisible by any data-axis size of {devices} "
            "devices"
        )
    log(
        f"fitting {family_lib.family_of(model_config).layers(model_config)} layers, "
        f"emb {model_config.emb_dim}, batch {cfg.batch_size}, lengths "
        f"{dict(cfg.task_feature_lengths)} on {devices} devices in {budget / GIB:.2f} GiB "
        "each (XLA:CPU's estimate, an upper bound for TPU); cheapest first:"
    )
    configurable = type(model_config)  # t5.T5Config, llama.LlamaConfig: named in the flags
    return fit(
        plan_for,
        candidates,
        budget,
        log=log,
        model=f"{configurable.__module__.rsplit('.', 1)[-1]}.{configurable.__name__}",
    )


def parse_bytes(text: str) -> int:
    """'16GiB', '16G', '15.5GiB', '16000MB', '17179869184' -> bytes (G/GiB are 2**30; GB is
    10**9)."""
    import re

    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(i?B?)\s*", text, re.IGNORECASE)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"a memory size like 16GiB, got {text!r}")
    number, prefix, suffix = float(match.group(1)), match.group(2).upper(), match.group(3)
    power = "KMGT".index(prefix) + 1 if prefix else 0
    decimal = suffix.upper() == "B" and not suffix.lower().startswith("i")
    return int(number * (1000 if decimal else 1024) ** power)
