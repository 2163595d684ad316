"""The train state and the jitted train step over a frozen model.

The state holds only what trains (the trainable subtree of `ptune.trainable.partition`), its
optimizer state and the step. Frozen weights are a separate, non-donated argument: they are
never differentiated, never updated, never copied into the state, and may be bfloat16.
Dropout keys are derived from (seed, step), so a resumed run draws the same masks.

On a device mesh (`ptune.partitioning`), `train_shardings` gives the state's and the frozen
weights' shardings and `make_train_step(..., partitioner=...)` compiles the step with them,
traced under the mesh and its logical axis rules so the model's activation constraints apply.

Batches are dicts of int32 arrays in seqio's encoder-decoder layout:
`encoder_input_tokens [b, ls]`, `decoder_input_tokens [b, lt]`, `decoder_target_tokens
[b, lt]`, optional `decoder_loss_weights [b, lt]` and `prompt_index [b]`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax
from flax import struct

from ptune import family, losses, partitioning
from ptune import trainable as trainable_lib
from ptune.errors import UserError

PyTree = Any


@struct.dataclass
class TrainState:
    """step: int32 scalar; params: the trainable subtree; opt_state: its optimizer state."""

    step: jax.Array
    params: PyTree
    opt_state: PyTree


@dataclasses.dataclass(frozen=True)
class LossConfig:
    z_loss: float = dataclasses.field(default=1e-4, metadata={"min": 0})
    label_smoothing: float = dataclasses.field(default=0.0, metadata={"min": 0, "below": 1})
    loss_normalizing_factor: losses.Normalization = losses.NUM_REAL_TARGET_TOKENS

    def __post_init__(self):
        factor = self.loss_normalizing_factor
        number = isinstance(factor, (int, float)) and not isinstance(factor, bool)
        if not (factor is None or factor == losses.NUM_REAL_TARGET_TOKENS or number and factor > 0):
            raise UserError(
                "step.LossConfig.loss_normalizing_factor must be None, "
                f"'{losses.NUM_REAL_TARGET_TOKENS}' or a positive number, got {factor!r}"
            )


def init_state(trainable_params: PyTree, optimizer: optax.GradientTransformation) -> TrainState:
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=trainable_params,
        opt_state=optimizer.init(trainable_params),
    )


def _logits(model, params, batch, enable_dropout, rng):
    """[b, lt, vocab] at the batch's target positions, for either family (`family.logits`)."""
    kwargs = {} if batch.get("prompt_index") is None else {"prompt_index": batch["prompt_index"]}
    return family.family_of(model.config).logits(
        model,
        params,
        batch["encoder_input_tokens"],
        batch["decoder_input_tokens"],
        batch["decoder_target_tokens"],
        enable_dropout=enable_dropout,
        rngs={"dropout": rng} if rng is not None else None,
        **kwargs,
    )


def loss_and_metrics(
    model,
    loss_config: LossConfig,
    trainable_params: PyTree,
    frozen: PyTree,
    batch: dict,
    enable_dropout: bool,
    rng: Optional[jax.Array],
):
    """-> (scalar loss for the gradient, summed metrics). See `ptune.losses.compute`."""
    params = trainable_lib.merge(trainable_params, frozen)
    logits = _logits(model, params, batch, enable_dropout, rng)
    targets = batch["decoder_target_tokens"]
    return losses.compute(
        logits,
        targets,
        family.family_of(model.config).target_weights(targets, batch.get("decoder_loss_weights")),
        z_loss=loss_config.z_loss,
        label_smoothing=loss_config.label_smoothing,
        loss_normalizing_factor=loss_config.loss_normalizing_factor,
    )


def train_shardings(
    partitioner: partitioning.Partitioner,
    optimizer: optax.GradientTransformation,
    boxed_params: PyTree,
    mask,
) -> tuple[TrainState, PyTree]:
    """(state shardings, frozen shardings) from the abstract boxed parameters (logical names
    on each leaf, e.g. `t5.abstract_variables(...)['params']`) and the trainable mask."""
    from flax import linen as nn

    shardings = partitioner.param_shardings(boxed_params)
    train_sh, frozen_sh = trainable_lib.partition(shardings, mask)
    train_abstract, _ = trainable_lib.partition(nn.unbox(boxed_params), mask)
    state_sh = TrainState(
        step=partitioner.replicated,
        params=train_sh,
        opt_state=partitioner.opt_state_shardings(optimizer, train_abstract, train_sh),
    )
    return state_sh, frozen_sh


def make_train_step(
    model,
    optimizer: optax.GradientTransformation,
    loss_config: LossConfig = LossConfig(),
    *,
    seed: int = 0,
    donate: bool = True,
    jit: bool = True,
    in_shardings=None,
    out_shardings=None,
    partitioner: Optional[partitioning.Partitioner] = None,
) -> Callable:
    """Returns `train_step(state, frozen, batch) -> (state, metrics)`.

    Gradients are taken with respect to `state.params` only, so XLA never computes weight
    gradients of the frozen model. The state is donated (updated in place). With a
    `partitioner`, `in_shardings` is (state, frozen) shardings (`train_shardings`); the batch
    is split along `data`, metrics are replicated, and the state keeps its shardings.
    """
    base_key = jax.random.PRNGKey(seed)

    def train_step(state: TrainState, frozen: PyTree, batch: dict):
        rng = jax.random.fold_in(base_key, state.step)
        grad_fn = jax.value_and_grad(
            functools.partial(loss_and_metrics, model, loss_config), has_aux=True
        )
        (_, metrics), grads = grad_fn(state.params, frozen, batch, True, rng)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = dict(metrics, grad_norm=optax.tree.norm(grads))
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

    if not jit:
        return train_step
    if partitioner is not None:
        state_sh, frozen_sh = in_shardings
        return partitioner.jit(
            train_step,
            in_shardings=(state_sh, frozen_sh, partitioner.batch_sharding()),
            out_shardings=(state_sh, partitioner.replicated),
            donate_argnums=(0,) if donate else (),
        )
    kwargs = {}
    if in_shardings is not None:
        kwargs.update(in_shardings=in_shardings, out_shardings=out_shardings)
    return jax.jit(train_step, donate_argnums=(0,) if donate else (), **kwargs)
