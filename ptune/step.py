"""The train state and the jitted train / eval steps over a frozen model.

The state holds only what trains (the trainable subtree of `ptune.trainable.partition`), its
optimizer state and the step. Frozen weights are a separate, non-donated argument: they are
never differentiated, never updated, never copied into the state, and may be bfloat16.
Dropout keys are derived from (seed, step), so a resumed run draws the same masks.

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

from ptune import losses, trainable as trainable_lib

PyTree = Any


@struct.dataclass
class TrainState:
    """step: int32 scalar; params: the trainable subtree; opt_state: its optimizer state."""

    step: jax.Array
    params: PyTree
    opt_state: PyTree


@dataclasses.dataclass(frozen=True)
class LossConfig:
    z_loss: float = 1e-4
    label_smoothing: float = 0.0
    loss_normalizing_factor: losses.Normalization = losses.NUM_REAL_TARGET_TOKENS


def init_state(trainable_params: PyTree, optimizer: optax.GradientTransformation) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=trainable_params,
                      opt_state=optimizer.init(trainable_params))


def _logits(model, params, batch, enable_dropout, rng):
    kwargs = {}
    if "prompt_index" in batch:
        kwargs["prompt_index"] = batch["prompt_index"]
    return model.apply({"params": params}, batch["encoder_input_tokens"],
                       batch["decoder_input_tokens"], batch["decoder_target_tokens"],
                       enable_dropout=enable_dropout, rngs={"dropout": rng} if rng is not None
                       else None, **kwargs)


def loss_and_metrics(model, loss_config: LossConfig, trainable_params: PyTree, frozen: PyTree,
                     batch: dict, enable_dropout: bool, rng: Optional[jax.Array]):
    """-> (scalar loss for the gradient, summed metrics). See `ptune.losses.compute`."""
    params = trainable_lib.merge(trainable_params, frozen)
    logits = _logits(model, params, batch, enable_dropout, rng)
    return losses.compute(logits, batch["decoder_target_tokens"],
                          batch.get("decoder_loss_weights"), z_loss=loss_config.z_loss,
                          label_smoothing=loss_config.label_smoothing,
                          loss_normalizing_factor=loss_config.loss_normalizing_factor)


def make_train_step(model, optimizer: optax.GradientTransformation,
                    loss_config: LossConfig = LossConfig(), *, seed: int = 0,
                    donate: bool = True, jit: bool = True,
                    in_shardings=None, out_shardings=None) -> Callable:
    """Returns `train_step(state, frozen, batch) -> (state, metrics)`.

    Gradients are taken with respect to `state.params` only, so XLA never computes weight
    gradients of the frozen model. The state is donated (updated in place).
    """
    base_key = jax.random.PRNGKey(seed)

    def train_step(state: TrainState, frozen: PyTree, batch: dict):
        rng = jax.random.fold_in(base_key, state.step)
        grad_fn = jax.value_and_grad(
            functools.partial(loss_and_metrics, model, loss_config), has_aux=True)
        (_, metrics), grads = grad_fn(state.params, frozen, batch, True, rng)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = dict(metrics, grad_norm=optax.tree.norm(grads))
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

    if not jit:
        return train_step
    kwargs = {}
    if in_shardings is not None:
        kwargs.update(in_shardings=in_shardings, out_shardings=out_shardings)
    return jax.jit(train_step, donate_argnums=(0,) if donate else (), **kwargs)


def make_eval_step(model, loss_config: LossConfig = LossConfig(), jit: bool = True) -> Callable:
    """Returns `eval_step(trainable_params, frozen, batch) -> summed metrics` (no dropout)."""

    def eval_step(trainable_params, frozen, batch):
        return loss_and_metrics(model, loss_config, trainable_params, frozen, batch, False,
                                None)[1]

    return jax.jit(eval_step) if jit else eval_step
