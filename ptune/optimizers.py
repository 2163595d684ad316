"""The optimizers of the paper's two recipes, both t5x's Adafactor (through optax).

`prompt_tuning_adafactor` is the paper's prompt-tuning optimizer (Section 3: constant lr 0.3,
second-moment decay exponent 0.8, weight decay 1e-5, no parameter scaling);
`model_tuning_adafactor` is T5's fine-tuning optimizer, the paper's model-tuning baseline
(constant lr 0.001, parameter scaling, no weight decay). Which parameters they update is not
their business: the trainable mask (`ptune.trainable`) hands them only the trainable subtree.

The numerical core: optax only.
"""

from __future__ import annotations

from typing import Annotated, Optional

import optax

from ptune.memo import Memo

# The ranges `ptune.config_check` checks what gin binds against, before any work.
Rate = Annotated[float, {"min": 0}]
Decay = Annotated[float, {"min": 0, "max": 1}]  # the second-moment decay's exponent
MaybeRate = Annotated[Optional[float], {"min": 0}]

# Equal arguments give the very same transformation (optax's are pure functions), so a
# process's later runs with the same optimizer reuse the train step compiled for an earlier
# one (`recipe.Run.train_step` keys on the optimizer).
_BUILT = Memo(kept=16)
# What each transformation built here was built from (JSON values): a run records it, and a
# resume with another optimizer or learning rate is refused (`describe`).
_DESCRIBED: dict = {}


def adafactor(
    learning_rate: float | optax.Schedule,
    *,
    decay_rate: float = 0.8,
    decay_offset: int = 0,
    weight_decay_rate: Optional[float] = None,
    clipping_threshold: Optional[float] = 1.0,
    multiply_by_parameter_scale: bool = False,
    min_dim_size_to_factor: int = 128,
) -> optax.GradientTransformation:
    """t5x's Adafactor: factored second moments for matrices of at least
    `min_dim_size_to_factor` rows and columns, update clipping, and weight decay applied as
    p <- p * (1 - rate) each step, not scaled by the learning rate.

    decay_offset: the second-moment decay is 1 - (step + 1 - decay_offset)**-decay_rate. The
      original implementation restored the pretrained step (1,100,000) with the frozen model,
      so its decay started near 1; a negative offset of that size reproduces it.
    """
    arguments = dict(
        learning_rate=learning_rate,
        min_dim_size_to_factor=min_dim_size_to_factor,
        decay_rate=decay_rate,
        decay_offset=decay_offset,
        multiply_by_parameter_scale=multiply_by_parameter_scale,
        clipping_threshold=clipping_threshold,
        weight_decay_rate=weight_decay_rate,
    )
    key = tuple((name, type(value), value) for name, value in arguments.items())
    built = _BUILT.get(key, lambda: optax.adafactor(**arguments))
    if not callable(learning_rate):  # a schedule's maker describes it (`pretraining_adafactor`)
        _DESCRIBED[built] = {"name": "adafactor", **arguments}
    return built


def describe(optimizer: optax.GradientTransformation) -> Optional[dict]:
    """The arguments an optimizer of this module was built from, e.g. {"name": "adafactor",
    "learning_rate": 0.3, ...}; None for a transformation built elsewhere (the Python API's
    own optax optimizers), which a run cannot compare."""
    try:
        return _DESCRIBED.get(optimizer)
    except TypeError:  # an unhashable transformation
        return None


def prompt_tuning_adafactor(
    learning_rate: Rate = 0.3,
    decay_rate: Decay = 0.8,
    decay_offset: int = 0,
    weight_decay_rate: MaybeRate = 1e-5,
    clipping_threshold: MaybeRate = 1.0,
) -> optax.GradientTransformation:
    """The paper's prompt-tuning optimizer (Lester et al., 2021, Section 3)."""
    return adafactor(
        learning_rate,
        decay_rate=decay_rate,
        decay_offset=decay_offset,
        weight_decay_rate=weight_decay_rate,
        clipping_threshold=clipping_threshold,
        multiply_by_parameter_scale=False,
    )


def model_tuning_adafactor(
    learning_rate: Rate = 0.001,
    decay_rate: Decay = 0.8,
    decay_offset: int = 0,
    clipping_threshold: MaybeRate = 1.0,
) -> optax.GradientTransformation:
    """T5's fine-tuning optimizer (the paper's model-tuning baseline): parameter-scaled
    Adafactor at a constant 0.001, no weight decay."""
    return adafactor(
        learning_rate,
        decay_rate=decay_rate,
        decay_offset=decay_offset,
        weight_decay_rate=None,
        clipping_threshold=clipping_threshold,
        multiply_by_parameter_scale=True,
    )


def pretraining_adafactor(
    warmup_steps: Annotated[int, {"min": 1}] = 10000,
    decay_rate: Decay = 0.8,
    clipping_threshold: MaybeRate = 1.0,
) -> optax.GradientTransformation:
    """T5's pretraining optimizer: parameter-scaled Adafactor with the inverse square root
    learning rate 1 / sqrt(max(step, warmup_steps)) (0.01 for the first 10,000 steps, then
    decaying), no weight decay."""
    if warmup_steps < 1:
        raise ValueError(f"warmup_steps must be >= 1, got {warmup_steps}")
    arguments = dict(
        warmup_steps=warmup_steps, decay_rate=decay_rate, clipping_threshold=clipping_threshold
    )
    key = ("pretraining",) + tuple((name, type(value), value) for name, value in arguments.items())
    return _BUILT.get(key, lambda: _pretraining(**arguments))


def _pretraining(warmup_steps: int, decay_rate: float, clipping_threshold: Optional[float]):
    def schedule(step):
        import jax.numpy as jnp

        return 1.0 / jnp.sqrt(jnp.maximum(step.astype(jnp.float32), float(warmup_steps)))

    built = adafactor(
        schedule,
        decay_rate=decay_rate,
        weight_decay_rate=None,
        clipping_threshold=clipping_threshold,
        multiply_by_parameter_scale=True,
    )
    _DESCRIBED[built] = {
        "name": "pretraining_adafactor",
        "warmup_steps": warmup_steps,
        "decay_rate": decay_rate,
        "clipping_threshold": clipping_threshold,
    }
    return built
