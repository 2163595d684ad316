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

`plan_configured` plans the run a `TrainConfig` configures, as `ptune plan` does;
`ptune.plan_fit` searches the memory-relevant settings for the cheapest that fits a budget
(`ptune plan --fit`).
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

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
