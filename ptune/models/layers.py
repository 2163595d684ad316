"""The layers and helpers both model families (`t5`, `llama`) are built from.

    param(module, name, init, shape, axes)  a float32 parameter carrying logical axis names
    constrain(x, axes)                      an activation's sharding, by logical names
    Dense(features, kernel_axes)            [..., in] -> [..., features]; kernel [in, out],
                                            optional bias [out]
    project(x, kernel)                      [..., in] @ [in, out] -> [..., out], with a
                                            faster kernel gradient on CPU
    layer_stack(layer_cls, config, n, ...)  n layers, unrolled (`layers_{i}`) or scanned
                                            (`layers`, parameters stacked on axis 1)
    replace_prefix(x, prompt, replace)      a deep prompt's layer input: the prompt
                                            positions hold this layer's prompt
    limit_vocab(logits, vocab_limit)        logits [..., vocab] with ids past the
                                            tokenizer's vocabulary masked out
    abstract_once(key, trace)               `trace()`'s abstract variables, traced once
                                            per hashable `key` in this process

Logical axis names (`embed`, `mlp`, `joined_kv`, `vocab`, `layers`, ...) are mapped to mesh
axes by one rule table (`ptune.partitioning`); outside a mesh they cost nothing. What a family
computes differently (T5's and Llama's RMS norms round differently in bfloat16) stays in its
module. The numerical core: no TensorFlow, seqio or gin.
"""

from __future__ import annotations

from typing import Any, Callable, Hashable, Optional

import jax
import jax.numpy as jnp
from flax import linen as nn

from ptune.memo import Memo

Array = jax.Array


def param(module: nn.Module, name: str, init, shape: tuple[int, ...], axes: tuple[str, ...]):
    """A float32 parameter carrying its logical axis names (t5x style)."""
    return module.param(name, nn.with_logical_partitioning(init, axes), shape, jnp.float32)


def constrain(x: Array, axes: tuple[Optional[str], ...]) -> Array:
    """Activation sharding constraint by logical names; a no-op outside a mesh."""
    return nn.with_logical_constraint(x, axes)


class Dense(nn.Module):
    """Dense layer with a 2-D kernel [in, out] and logical axes; bias-free unless `use_bias`
    (a zero-initialised bias [out] on the kernel's output axis, Qwen2's q/k/v). The default
    initialiser is t5x's and flax's `lecun_normal` alike."""

    features: int
    kernel_axes: tuple[str, str]
    dtype: Any = jnp.float32
    kernel_init: Callable = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
    use_bias: bool = False

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """[..., in] -> [..., features]"""
        kernel = param(
            self, "kernel", self.kernel_init, (x.shape[-1], self.features), self.kernel_axes
        )
        y = project(jnp.asarray(x, self.dtype), jnp.asarray(kernel, self.dtype))
        if self.use_bias:
            zeros = nn.initializers.zeros_init()
            bias = param(self, "bias", zeros, (self.features,), self.kernel_axes[1:])
            y = y + jnp.asarray(bias, self.dtype)
        return y


@jax.custom_vjp
def project(x: Array, kernel: Array) -> Array:
    """x [..., in] @ kernel [in, out] -> [..., out], as `jnp.dot`, with the kernel's gradient
    taken over the flattened positions as (ctᵀ·x)ᵀ, an [out, in] product transposed, rather
    than xᵀ·ct. The values are the plain matmul's, bit for bit (tests/test_t5.py). On XLA's CPU
    backend the plain form writes every [positions, mlp] gradient of the MLP in transposed
    layout for its weight-gradient matmul (13% of a T5 1.1 Small model-tuning step:
    benchmarks/profile_step.py); this one transposes only the small [out, in] result.
    Contracting the leading axes without flattening brings the copies back. A custom VJP:
    reverse mode only (no `jax.jvp` through the model)."""
    return jnp.dot(x, kernel)


def _project_forward(x, kernel):
    return jnp.dot(x, kernel), (x, kernel)


def _project_backward(residuals, ct):
    x, kernel = residuals
    dx = jax.lax.dot_general(ct, kernel, (((ct.ndim - 1,), (1,)), ((), ())))
    rows = (((0,), (0,)), ((), ()))  # over every position, as [positions, features]
    dkernel = jax.lax.dot_general(ct.reshape(-1, ct.shape[-1]), x.reshape(-1, x.shape[-1]), rows)
    return dx, dkernel.T


project.defvjp(_project_forward, _project_backward)


def layer_stack(
    layer_cls,
    config: Any,
    num_layers: int,
    broadcast_args: int,
    per_layer_args: int = 0,
    **kwargs,
):
    """Returns a callable (x, *broadcast, *per_layer) -> x over `num_layers` layers, each
    `layer_cls(config, **kwargs)` returning (x, None); each per-layer argument has a leading
    layer axis and layer i gets its i-th slice. `config` (either family's) gives
    `scan_layers` and `remat_policy` ("none", "full" or "minimal": matmul outputs saved).

    Unscanned: layers named `layers_{i}`. Scanned: one `layers` module whose parameters are
    stacked on axis 1 (flaxformer's layout) with logical axis `layers`, and whose cache
    variables on axis 0.
    """
    if config.remat_policy != "none":
        policy = None
        if config.remat_policy == "minimal":
            policy = jax.checkpoint_policies.dots_with_no_batch_dims_saveable
        layer_cls = nn.remat(layer_cls, policy=policy, prevent_cse=not config.scan_layers)
    if config.scan_layers:
        scanned = nn.scan(
            layer_cls,
            variable_axes={"params": 1, "cache": 0},
            split_rngs={"params": True, "dropout": True},
            in_axes=(nn.broadcast,) * broadcast_args + (0,) * per_layer_args,
            length=num_layers,
            metadata_params={nn.PARTITION_NAME: "layers"},
        )(config, name="layers", **kwargs)

        def run_scanned(x, *args):
            return scanned(x, *args)[0]

        return run_scanned
    layers = [layer_cls(config, name=f"layers_{i}", **kwargs) for i in range(num_layers)]

    def run(x, *args):
        shared, per_layer = args[:broadcast_args], args[broadcast_args:]
        for i, layer in enumerate(layers):
            x = layer(x, *shared, *(a[i] for a in per_layer))[0]
        return x

    return run


def replace_prefix(x: Array, prompt: Array, replace: Array) -> Array:
    """Deep prompts at a layer's input: x [b, l, e] whose first p positions (a prefix
    prompt's) become this layer's `prompt` [p, e] where `replace` (a bool scalar: not the
    first layer, whose prompt came in with the embeddings) holds."""
    b, p = x.shape[0], prompt.shape[0]
    own = jnp.broadcast_to(prompt.astype(x.dtype)[None], (b,) + prompt.shape)
    return jnp.where(replace, jnp.concatenate([own, x[:, p:]], axis=1), x)


def limit_vocab(logits: Array, vocab_limit: Optional[int]) -> Array:
    """Masks logits [..., v] of ids >= vocab_limit: embedding rows past the tokenizer's
    vocabulary (T5 pads 32,100 ids to 32,128 rows; resized copies are padded with zeros)
    must never be generated."""
    if vocab_limit is None or vocab_limit >= logits.shape[-1]:
        return logits
    allowed = jnp.arange(logits.shape[-1]) < vocab_limit
    return jnp.where(allowed, logits, jnp.finfo(logits.dtype).min)


_ABSTRACT = Memo(kept=32)  # the most recent distinct models; a process rarely builds more


def abstract_once(key: Hashable, trace: Callable[[], Any]) -> Any:
    """`trace()` (a `jax.eval_shape` of a model's init: boxed ShapeDtypeStructs), traced once
    per `key` (the model's config, prompt factory and input shapes) in this process: flax
    traces the whole model to find its variables' shapes (about 0.4 s for a tiny T5), and a
    run asks for them several times (restore, sharding, counting), as does each run a process
    makes. Each call gets its own containers (the leaves are immutable)."""
    return jax.tree_util.tree_map(lambda leaf: leaf, _ABSTRACT.get(key, trace))
