"""The prompt modules: how a prompt meets the embedded encoder input.

A prompt [P, E] (P = prompt length, E = the model's embedding width) is inserted into the
embedded encoder input [b, l, E] -> [b, l + P, E]; only it trains. Placement: `prefix` (the
paper), `after_bos` (after the first input token) or `suffix` (before the input's final EOS,
as the original implementation's `before_eos=True`). The encoder masks grow by the P visible
positions; the prompt does not count against the task's input length.

    Prompt           one prompt [P, E] for the whole batch (optionally `Residual`)
    PromptBank       K prompts [K, max P, E], one per example by `prompt_index` [b]
    DeepPrompt       one prompt per layer [layers, P, E] (P-tuning v2; T5: the encoder's)
    MultiTaskPrompt  task prompts [tasks, P, E] with a shared one [S, E] (`MultiTask`)

Their parameters sit in the slot `ptune.prompts.slot` names. `effective_prompt` and
`effective_bank` materialise what the model sees, so exports, serving and PEFT get a plain
prompt: with a residual reparameterisation, P + MLP(P).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from ptune.errors import UserError
from ptune.prompts.initializers import random_uniform
from ptune.prompts.slot import get_module, validate_length

Array = jax.Array
PLACEMENTS = ("prefix", "after_bos", "suffix")


def insert_prompt(
    embedded: Array, valid: Array, prompt: Array, prompt_valid: Array, placement: str = "prefix"
) -> tuple[Array, Array]:
    """Inserts per-example prompts into embedded inputs.

    embedded [b, l, e], valid [b, l] bool (real input tokens; padding only at the end),
    prompt [b, p, e], prompt_valid [b, p] bool (a prompt shorter than p is padded at its end)
    -> (out [b, l + p, e], out_valid [b, l + p]).

    Each example's prompt occupies exactly its own length: a prompt of length 3 stored in a
    bank padded to 5 gives the same real positions (and so the same relative positions) as
    that prompt alone; the unused slots move to the end as padding.
    """
    if placement not in PLACEMENTS:
        raise UserError(f"prompt placement must be one of {PLACEMENTS}, got {placement!r}")
    b, l, _ = embedded.shape
    p = prompt.shape[1]
    n_prompt = jnp.sum(prompt_valid, axis=1, dtype=jnp.int32)[:, None]  # [b, 1]
    if placement == "prefix":
        offset = jnp.zeros((b, 1), jnp.int32)
    elif placement == "after_bos":
        offset = jnp.minimum(jnp.sum(valid, axis=1, dtype=jnp.int32), 1)[:, None]
    else:  # suffix: before the last real token, the EOS every T5 input ends with
        offset = jnp.maximum(jnp.sum(valid, axis=1, dtype=jnp.int32) - 1, 0)[:, None]
    j = jnp.arange(l + p, dtype=jnp.int32)[None, :]  # output positions [1, l + p]
    in_prompt = (j >= offset) & (j < offset + n_prompt)
    input_index = jnp.where(j < offset, j, j - n_prompt)  # [b, l + p]
    input_ok = (input_index >= 0) & (input_index < l)
    input_index = jnp.clip(input_index, 0, l - 1)
    prompt_index = jnp.clip(j - offset, 0, p - 1)
    from_input = jnp.take_along_axis(embedded, input_index[..., None], axis=1)
    from_prompt = jnp.take_along_axis(
        prompt.astype(embedded.dtype), prompt_index[..., None], axis=1
    )
    out = jnp.where(in_prompt[..., None], from_prompt, from_input)
    input_valid = jnp.take_along_axis(valid, input_index, axis=1) & input_ok
    return out, jnp.where(in_prompt, True, input_valid)


@dataclasses.dataclass(frozen=True)
class Residual:
    """Residual reparameterisation (Residual Prompt Tuning, Razdaibiedina et al., 2023): the
    model sees P + LN(W_up relu(W_down P + b_down) + b_up), one bottleneck MLP applied to each
    prompt token alike, trained with P. Only training uses it: checkpoints keep P and the MLP,
    exports the materialised prompt (`effective_prompt`).

    bottleneck: the MLP's hidden width m (W_down [E, m], W_up [m, E]).
    layer_norm: the paper's LayerNorm on the MLP's output (PyTorch's: centred, eps 1e-5,
      scale and bias).
    zero_output: W_up and b_up start at zero, so the run starts from exactly P (without it
      they start as Flax's defaults, LeCun-normal kernels and zero biases).
    """

    bottleneck: int = 400
    layer_norm: bool = True
    zero_output: bool = False

    def __post_init__(self):
        m = self.bottleneck
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
            raise UserError(f"residual bottleneck width must be a positive integer, got {m!r}")


RESIDUAL_EPS = 1e-5  # torch.nn.LayerNorm's default


def apply_residual(mlp: Any, prompt: Array) -> Array:
    """prompt [P, E] + the residual MLP `mlp` (the `residual` subtree: down_kernel [E, m],
    down_bias [m], up_kernel [m, E], up_bias [E], optional norm_scale/norm_bias [E]) applied
    to each token. The one definition both training and `effective_prompt` use."""
    prompt = jnp.asarray(prompt, jnp.float32)
    hidden = jax.nn.relu(prompt @ mlp["down_kernel"] + mlp["down_bias"])
    out = hidden @ mlp["up_kernel"] + mlp["up_bias"]
    if "norm_scale" in mlp:
        mean = out.mean(-1, keepdims=True)
        var = jnp.square(out - mean).mean(-1, keepdims=True)
        out = (out - mean) * jax.lax.rsqrt(var + RESIDUAL_EPS)
        out = out * mlp["norm_scale"] + mlp["norm_bias"]
    return prompt + out


class ResidualMLP(nn.Module):
    """The residual reparameterisation's parameters, at `encoder/prompt/residual`."""

    config: Residual

    @nn.compact
    def __call__(self, prompt: Array) -> Array:
        """prompt [P, E] -> P + MLP(P) [P, E]"""
        e, m = prompt.shape[-1], self.config.bottleneck
        zeros, lecun = nn.initializers.zeros_init(), nn.initializers.lecun_normal()

        def param(name, init, shape, axes):
            return self.param(name, nn.with_logical_partitioning(init, axes), shape, jnp.float32)

        mlp = {
            "down_kernel": param("down_kernel", lecun, (e, m), ("prompt_embed", "prompt_mlp")),
            "down_bias": param("down_bias", zeros, (m,), ("prompt_mlp",)),
            "up_kernel": param(
                "up_kernel",
                zeros if self.config.zero_output else lecun,
                (m, e),
                ("prompt_mlp", "prompt_embed"),
            ),
            "up_bias": param("up_bias", zeros, (e,), ("prompt_embed",)),
        }
        if self.config.layer_norm:
            mlp["norm_scale"] = param(
                "norm_scale", nn.initializers.ones_init(), (e,), ("prompt_embed",)
            )
            mlp["norm_bias"] = param("norm_bias", zeros, (e,), ("prompt_embed",))
        return apply_residual(mlp, prompt)


class Prompt(nn.Module):
    """One trainable prompt, parameter `prompt` [length, embed], shared by the whole batch;
    with `residual`, reparameterised through the MLP at `residual/` (see `Residual`).

    Called by the T5 encoder (`t5.Transformer(config, prompt_factory=...)`) on its embedded
    inputs. The initial value comes from an initializer via `prompts.initialize` and is placed
    into the parameter tree by the caller; `init` here only fixes shapes and axes.
    """

    length: int
    placement: str = "prefix"
    residual: Optional[Residual] = None

    def __post_init__(self):
        validate_length(self.length)
        if self.placement not in PLACEMENTS:
            raise UserError(f"prompt placement must be one of {PLACEMENTS}, got {self.placement!r}")
        super().__post_init__()

    @nn.compact
    def __call__(
        self, embedded: Array, valid: Array, prompt_index: Optional[Array] = None
    ) -> tuple[Array, Array]:
        """embedded [b, l, e], valid [b, l] -> ([b, l + length, e], [b, l + length])"""
        if prompt_index is not None:
            raise UserError("a single Prompt takes no prompt_index; use a PromptBank")
        b, _, e = embedded.shape
        prompt = self.param(
            "prompt",
            nn.with_logical_partitioning(random_uniform(), ("prompt", "prompt_embed")),
            (self.length, e),
            jnp.float32,
        )
        if self.residual is not None:
            prompt = ResidualMLP(self.residual, name="residual")(prompt)
        batch_prompt = jnp.broadcast_to(prompt[None], (b, self.length, e))
        return insert_prompt(
            embedded, valid, batch_prompt, jnp.ones((b, self.length), bool), self.placement
        )


class PromptBank(nn.Module):
    """K prompts stacked [K, max_length, embed] at `encoder/prompt/prompt`; each example picks
    one by `prompt_index` [b]. Prompts shorter than the longest are padded and masked (each
    occupies exactly its own length), so a mixed batch computes what per-prompt batches do.
    """

    lengths: tuple[int, ...]
    placement: str = "prefix"

    @nn.compact
    def __call__(
        self, embedded: Array, valid: Array, prompt_index: Optional[Array] = None
    ) -> tuple[Array, Array]:
        """embedded [b, l, e], valid [b, l], prompt_index [b] int
        -> ([b, l + max_length, e], [b, l + max_length])"""
        b, _, e = embedded.shape
        if prompt_index is None:
            if not self.is_initializing():
                raise UserError("a prompt bank needs a prompt_index for every example")
            prompt_index = jnp.zeros((b,), jnp.int32)  # shapes only
        longest = max(self.lengths)
        bank = self.param(
            "prompt",
            nn.with_logical_partitioning(random_uniform(), (None, "prompt", "prompt_embed")),
            (len(self.lengths), longest, e),
            jnp.float32,
        )
        index = jnp.asarray(prompt_index, jnp.int32)
        prompt = jnp.take(bank, index, axis=0)
        lengths = jnp.asarray(self.lengths, jnp.int32)[index]
        prompt_valid = jnp.arange(longest)[None, :] < lengths[:, None]
        return insert_prompt(embedded, valid, prompt, prompt_valid, self.placement)


class DeepPrompt(nn.Module):
    """Deep (per-layer) prompts, P-tuning v2 style: [layers, length, embed] at
    `encoder/prompt/prompt`, one per layer of T5's encoder or of a decoder-only model. Layer
    0's prompt is a prefix prompt on the embedded inputs (as `Prompt`); at the input of each
    later layer i, the prompt positions are replaced by layer i's prompt, so the sequence
    stays length + inputs long. Prefix placement only. The model passes its layer count and
    applies the replacement (`layers.replace_prefix`, in `t5.EncoderLayer` and
    `llama.DecoderLayer`)."""

    length: int
    per_layer = True  # the encoder gives each layer its own slice

    @nn.compact
    def __call__(
        self, embedded: Array, valid: Array, num_layers: int
    ) -> tuple[Array, Array, Array]:
        """embedded [b, l, e], valid [b, l] -> ([b, l + length, e], [b, l + length],
        the layers' prompts [num_layers, length, e])"""
        b, _, e = embedded.shape
        deep = self.param(
            "prompt",
            nn.with_logical_partitioning(random_uniform(), ("layers", "prompt", "prompt_embed")),
            (num_layers, self.length, e),
            jnp.float32,
        )
        first = jnp.broadcast_to(deep[0][None], (b, self.length, e))
        x, out_valid = insert_prompt(embedded, valid, first, jnp.ones((b, self.length), bool))
        return x, out_valid, deep


COMBINATIONS = ("none", "add", "concat")


@dataclasses.dataclass(frozen=True)
class MultiTask:
    """One prompt per task of a mixture, trained together in one run (the original
    implementation's multi-task prompts). Each example's task picks its prompt by
    `prompt_index`, which the data pipeline adds from the mixture.

    combine: how task prompt k [P, E] meets the shared prompt at `encoder/prompt/shared`:
      "none": no shared prompt, each task its own;
      "add": shared [P, E] + task k (the original's AddMultiTaskPrompt), shared starting at 0;
      "concat": shared [shared_length, E] then task k (ConcatMultiTaskPrompt).
    shared_length: the shared prompt's length for "concat" (None: the prompt length).
    """

    combine: str = "add"
    shared_length: Optional[int] = None

    def __post_init__(self):
        if self.combine not in COMBINATIONS:
            raise UserError(
                f"multi-task prompts combine as one of {COMBINATIONS}, got {self.combine!r}"
            )
        if self.shared_length is not None:
            if self.combine != "concat":
                raise UserError("multi-task shared_length applies only to combine='concat'")
            validate_length(self.shared_length)

    def shared_rows(self, length: int) -> int:
        """The shared prompt's length (0: none)."""
        if self.combine == "none":
            return 0
        return self.shared_length or length if self.combine == "concat" else length


def combine_prompts(tasks: Array, shared: Optional[Array], combine: str) -> Array:
    """tasks [K, P, E] (or [b, P, E]), shared [S, E] -> each one's prompt as the model sees it:
    [K, P, E] ("none", "add") or [K, S + P, E] ("concat")."""
    if combine == "none":
        return tasks
    shared = jnp.broadcast_to(shared[None], (tasks.shape[0],) + shared.shape)
    if combine == "add":
        return shared + tasks
    return jnp.concatenate([shared, tasks.astype(shared.dtype)], axis=1)


class MultiTaskPrompt(nn.Module):
    """Task prompts [num_tasks, length, embed] at `encoder/prompt/prompt` and, unless
    combine is "none", a shared prompt at `encoder/prompt/shared`; example i gets task
    `prompt_index[i]`'s prompt combined with the shared one (`combine_prompts`)."""

    length: int
    num_tasks: int
    multi_task: MultiTask
    placement: str = "prefix"

    @nn.compact
    def __call__(
        self, embedded: Array, valid: Array, prompt_index: Optional[Array] = None
    ) -> tuple[Array, Array]:
        """embedded [b, l, e], valid [b, l], prompt_index [b] -> ([b, l + p', e], [b, l + p'])"""
        b, _, e = embedded.shape
        if prompt_index is None:
            if not self.is_initializing():
                raise UserError("multi-task prompts need each example's task (prompt_index)")
            prompt_index = jnp.zeros((b,), jnp.int32)  # shapes only
        init = random_uniform()
        tasks = self.param(
            "prompt",
            nn.with_logical_partitioning(init, (None, "prompt", "prompt_embed")),
            (self.num_tasks, self.length, e),
            jnp.float32,
        )
        shared = None
        rows = self.multi_task.shared_rows(self.length)
        if rows:
            shared = self.param(
                "shared",
                nn.with_logical_partitioning(
                    nn.initializers.zeros_init(), ("prompt", "prompt_embed")
                ),
                (rows, e),
                jnp.float32,
            )
        # An index outside the bank gives NaN (the run stops, naming the step), never
        # another task's prompt, as a clipped take would.
        picked = jnp.take(
            tasks, jnp.asarray(prompt_index, jnp.int32), axis=0, mode="fill", fill_value=jnp.nan
        )  # [b, P, E]
        prompt = combine_prompts(picked, shared, self.multi_task.combine)
        return insert_prompt(
            embedded, valid, prompt, jnp.ones(prompt.shape[:2], bool), self.placement
        )


def stack_bank(
    values: Sequence[np.ndarray], names: Optional[Sequence[str]] = None
) -> tuple[np.ndarray, tuple[int, ...]]:
    """Prompts [P_k, E] -> (bank [K, max P, E] zero-padded, lengths). Widths must agree."""
    names = list(names) if names is not None else [f"prompt {i}" for i in range(len(values))]
    if not values:
        raise UserError("a prompt bank needs at least one prompt")
    for name, value in zip(names, values):
        if np.ndim(value) != 2:  # a deep prompt's layers are no bank's entries
            raise UserError(
                f"prompt bank entry {name} has shape {np.shape(value)}: a bank holds prompts "
                "[length, embed] (a deep prompt [layers, length, embed] evaluates alone)"
            )
    widths = {name: int(np.shape(v)[1]) for name, v in zip(names, values)}
    if len(set(widths.values())) > 1:
        raise UserError(
            "prompt bank entries have different embedding widths: "
            + ", ".join(f"{n}: {w}" for n, w in widths.items())
        )
    longest = max(int(np.shape(v)[0]) for v in values)
    bank = np.zeros((len(values), longest, next(iter(widths.values()))), np.float32)
    for k, value in enumerate(values):
        bank[k, : len(value)] = value
    return bank, tuple(int(np.shape(v)[0]) for v in values)


def effective_prompt(params: Any) -> Any:
    """The prompt the model sees: the stored one, or with a residual reparameterisation in
    the parameters, P + MLP(P), materialised (what exports and serving use)."""
    module = get_module(params)
    if "residual" in module:  # one compiled call, not one per operation
        return jax.jit(apply_residual)(module["residual"], module["prompt"])
    return module["prompt"]


def effective_bank(params: Any, combine: str) -> Any:
    """Multi-task prompts: every task's prompt as the model sees it, [K, P', E]
    (`combine_prompts` of the task prompts and the shared one)."""
    module = get_module(params)
    return combine_prompts(module["prompt"], module.get("shared"), combine)


def module_parameters(factory: Callable[..., nn.Module], value: Any, rng: Array) -> dict:
    """The prompt module's parameters holding `value` ([P, E], a bank [K, P, E], or a dict of
    the module's parameters, e.g. multi-task {"prompt", "shared"}) as given; any others it
    declares (a residual MLP) start from their initializers with `rng`.
    -> {"prompt": value, ...}, host (numpy) arrays."""
    given = dict(value) if isinstance(value, Mapping) else {"prompt": value}
    given = {k: np.asarray(v, np.float32) for k, v in given.items()}
    module = factory()
    if getattr(module, "residual", None) is None:
        return given
    embedded = jnp.zeros((1, 1, given["prompt"].shape[-1]), jnp.float32)
    # one compiled call: run op by op, init compiles each of its operations for its shapes
    variables = jax.jit(module.init)(rng, embedded, jnp.ones((1, 1), bool))
    params = jax.device_get(nn.unbox(variables["params"]))
    return {**params, **given}
