"""Token cross-entropy with z-loss and label smoothing, normalised as t5x does.

`loss_normalizing_factor`:
  None                      -> the sum over real target tokens (t5x's default);
  "NUM_REAL_TARGET_TOKENS"  -> divided by the number of real target tokens;
  a number (e.g. 233472)    -> divided by that constant (Mesh TF fine-tuning compatibility).
Whatever the normalisation used for the gradient, `metrics` report the loss per token.
"""

from __future__ import annotations

from typing import Optional, Union

import jax
import jax.numpy as jnp

Array = jax.Array
NUM_REAL_TARGET_TOKENS = "NUM_REAL_TARGET_TOKENS"
Normalization = Optional[Union[str, float, int]]


def cross_entropy_with_z_loss(
    logits: Array, targets: Array, z_loss: float = 1e-4, label_smoothing: float = 0.0
) -> tuple[Array, Array]:
    """logits [b, l, v] (float32), targets [b, l] int -> (loss [b, l], z_loss [b, l]).

    loss includes z_loss * logsumexp(logits)**2, which keeps the softmax normaliser near 1.
    With label smoothing, the constant entropy of the smoothed target is subtracted so a
    perfect prediction scores 0, as in t5x.
    """
    logits = logits.astype(jnp.float32)
    vocab = logits.shape[-1]
    log_z = jax.nn.logsumexp(logits, axis=-1)
    log_probs = logits - log_z[..., None]
    if label_smoothing:
        confidence = 1.0 - label_smoothing
        low = label_smoothing / (vocab - 1)
        soft = jax.nn.one_hot(targets, vocab, dtype=jnp.float32) * (confidence - low) + low
        loss = -jnp.sum(soft * log_probs, axis=-1)
        loss = loss + (confidence * jnp.log(confidence) + (vocab - 1) * low * jnp.log(low + 1e-20))
    else:
        loss = -jnp.take_along_axis(log_probs, targets[..., None].astype(jnp.int32), axis=-1)[
            ..., 0
        ]
    z = z_loss * jnp.square(log_z)
    return loss + z, z


def compute(
    logits: Array,
    targets: Array,
    weights: Optional[Array] = None,
    *,
    z_loss: float = 1e-4,
    label_smoothing: float = 0.0,
    loss_normalizing_factor: Normalization = NUM_REAL_TARGET_TOKENS,
) -> tuple[Array, dict[str, Array]]:
    """logits [b, l, v], targets [b, l], weights [b, l] (default: targets > 0)
    -> (scalar loss for the gradient, metrics summed over the batch).

    metrics: `loss_sum`, `z_loss_sum`, `correct`, `tokens` (sums, so they add up across steps
    and devices); per-token values are `loss_sum / tokens`, `correct / tokens`.
    """
    if weights is None:
        weights = (targets > 0).astype(jnp.float32)
    weights = weights.astype(jnp.float32)
    loss, z = cross_entropy_with_z_loss(logits, targets, z_loss, label_smoothing)
    loss_sum = jnp.sum(loss * weights)
    tokens = jnp.sum(weights)
    if loss_normalizing_factor is None:
        total = loss_sum
    elif loss_normalizing_factor == NUM_REAL_TARGET_TOKENS:
        total = loss_sum / jnp.maximum(tokens, 1.0)
    elif isinstance(loss_normalizing_factor, (int, float)) and loss_normalizing_factor > 0:
        total = loss_sum / float(loss_normalizing_factor)
    else:
        raise ValueError(
            "loss_normalizing_factor must be None, 'NUM_REAL_TARGET_TOKENS' or a "
            f"positive number, got {loss_normalizing_factor!r}"
        )
    correct = jnp.sum((jnp.argmax(logits, axis=-1) == targets) * weights)
    metrics = {
        "loss_sum": loss_sum,
        "z_loss_sum": jnp.sum(z * weights),
        "correct": correct,
        "tokens": tokens,
    }
    return total, metrics
