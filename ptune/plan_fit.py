"""`ptune plan --fit`: the cheapest memory-relevant settings under a per-device budget.

`fit` walks the settings (`Setting`: mesh split, remat, bfloat16 activations and frozen
weights, 2-D weight partitioning) cheapest first, planning each (`ptune.plan`) until one fits;
`fit_training` applies it to the run a `TrainConfig` configures.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ptune import family as family_lib
from ptune.errors import UserError
from ptune.plan import GIB, Plan, plan_configured

if TYPE_CHECKING:
    from ptune.trainer import TrainConfig


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
