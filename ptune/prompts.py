"""Soft prompts: the prompt parameter on the encoder input path, and its initializers.

The prompt is a matrix [P, E] (P = prompt length, E = the model's embedding width) inserted
into the embedded encoder input; only it trains. Its parameter path is stable and documented:

    encoder/prompt/prompt        [prompt, prompt_embed]  (logical axes; replicated)
    encoder/prompt/residual/...  the residual reparameterisation's MLP (`Residual`)
    multi-task prompts (`MultiTask`): prompt [tasks, P, E] and shared [S, E]
    deep prompts (`DeepPrompt`): prompt [layers, P, E]

This module is its one owner: `get_prompt`, `with_prompt`, `without_prompt`,
`effective_prompt` and `PROMPT_PATTERN` read, place and name it, and no other module spells
the path. Checkpoints, the optimizer mask (`ptune.trainable.PROMPT_ONLY`, the whole prompt
module) and prompt exports all key on it. Exports hold the effective prompt: with a residual
reparameterisation (`Residual`), the materialised P + MLP(P), so serving and PEFT see a plain
prompt.
Placement: `prefix` (the paper), `after_bos` (after the first input token) or `suffix`
(before the input's final EOS, as the original implementation's `before_eos=True`). The
encoder masks grow by the P visible positions; the prompt does not count against the task's
input length.

Initializers are gin-bindable factories returning `fn(rng, shape, context) -> [P, E]`, where
`context` (`InitContext`) carries the frozen embedding table and, when the initializer needs
them, the vocabulary and the task's class labels.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from typing import Any, Callable, Mapping, Optional, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from ptune.errors import UserError

Array = jax.Array
PLACEMENTS = ("prefix", "after_bos", "suffix")
PROMPT_PATH = ("encoder", "prompt", "prompt")
PROMPT_PATH_STR = "/".join(PROMPT_PATH)
PROMPT_PATTERN = "encoder/prompt/.*"  # checkpoint restores leave this slot to the caller
# Paper, Section 3: sample from the 5,000 most common tokens of T5's SentencePiece vocabulary.
TOP_K_TOKENS = 5000
# pad (0), eos (1) and unk (2) in T5's vocabulary; sentinels lie above the base pieces.
SPECIAL_IDS = (0, 1, 2)
BANK_FILE = "bank.json"  # a multi-task bank's manifest (`ptune.checkpoints.prompt_io`)
PROMPT_INDEX = "prompt_index"  # the batch feature [b] that picks each example's prompt

log = logging.getLogger(__name__)


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
    """Deep (per-layer) prompts, P-tuning v2 style on the encoder: [layers, length, embed] at
    `encoder/prompt/prompt`. Layer 0's prompt is a prefix prompt on the embedded inputs (as
    `Prompt`); at the input of each later encoder layer i, the prompt positions are replaced
    by layer i's prompt, so the sequence stays length + inputs long. Prefix placement only.
    The encoder passes its layer count and applies the replacement (`t5.EncoderLayer`)."""

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


def takes_index(factory: Optional[Callable[..., nn.Module]]) -> bool:
    """Whether the prompt module picks a prompt per example (`prompt_index` [b])."""
    return factory is not None and isinstance(factory(), (PromptBank, MultiTaskPrompt))


def bank_factory(lengths: Sequence[int], placement: str = "prefix") -> Callable[..., nn.Module]:
    """The `prompt_factory` argument of `t5.Transformer` for a bank of prompts."""
    lengths = tuple(validate_length(n) for n in lengths)
    if not lengths:
        raise UserError("a prompt bank needs at least one prompt")
    return functools.partial(PromptBank, lengths=lengths, placement=placement)


def stack_bank(
    values: Sequence[np.ndarray], names: Optional[Sequence[str]] = None
) -> tuple[np.ndarray, tuple[int, ...]]:
    """Prompts [P_k, E] -> (bank [K, max P, E] zero-padded, lengths). Widths must agree."""
    names = list(names) if names is not None else [f"prompt {i}" for i in range(len(values))]
    if not values:
        raise UserError("a prompt bank needs at least one prompt")
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


def prompt_factory(
    length: int, placement: str = "prefix", residual: Optional[Residual] = None
) -> Callable[..., nn.Module]:
    """The `prompt_factory` argument of `t5.Transformer` for a single trainable prompt."""
    validate_length(length)
    return functools.partial(Prompt, length=length, placement=placement, residual=residual)


def deep_factory(length: int) -> Callable[..., nn.Module]:
    """The `prompt_factory` argument of `t5.Transformer` for deep (per-layer) prompts."""
    validate_length(length)
    return functools.partial(DeepPrompt, length=length)


def multi_task_factory(
    length: int, num_tasks: int, multi_task: MultiTask, placement: str = "prefix"
) -> Callable[..., nn.Module]:
    """The `prompt_factory` argument of `t5.Transformer` for multi-task prompts."""
    validate_length(length)
    return functools.partial(
        MultiTaskPrompt,
        length=length,
        num_tasks=num_tasks,
        multi_task=multi_task,
        placement=placement,
    )


def validate_length(length: Any) -> int:
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 1:
        raise UserError(f"prompt length must be a positive integer, got {length!r}")
    return int(length)


@dataclasses.dataclass(frozen=True)
class PromptConfig:
    """The prompt of a run, one vocabulary for every command.

    length: prompt vectors P (training); the commands that read prompt files take P from them.
    initializer: an initializer factory's result (below); None is the paper's default, class
      labels (sampled vocabulary for a task without labels, said in the log).
    placement: `prefix` | `after_bos` | `suffix` (see `insert_prompt`).
    residual: None, or the residual reparameterisation used while training (`Residual`).
    multi_task: None, or one prompt per task of a mixture (`MultiTask`).
    deep: a prompt at the input of every encoder layer (`DeepPrompt`; prefix placement).
    """

    length: int = 100
    initializer: Any = None
    placement: str = "prefix"
    residual: Optional[Residual] = None
    multi_task: Optional[MultiTask] = None
    deep: bool = False

    def __post_init__(self):
        validate_length(self.length)
        if self.placement not in PLACEMENTS:
            raise UserError(f"prompt placement must be one of {PLACEMENTS}, got {self.placement!r}")
        chosen = [
            name
            for name, on in (
                ("prompts/residual.gin", self.residual is not None),
                ("prompts/multi_task.gin", self.multi_task is not None),
                ("prompts/deep.gin", self.deep),
            )
            if on
        ]
        if len(chosen) > 1:
            raise UserError(f"{' and '.join(chosen)} do not combine yet: choose one")
        if self.deep and self.placement != "prefix":
            raise UserError(
                f"deep prompts take prefix placement only (each layer's prompt replaces the "
                f"first {self.length} positions), got placement {self.placement!r}"
            )

    def factory(self, num_tasks: Optional[int] = None) -> Callable[..., nn.Module]:
        """The prompt module; multi-task prompts need the mixture's task count."""
        if self.multi_task is not None:
            if not num_tasks:
                raise UserError("multi-task prompts need the number of tasks of the mixture")
            return multi_task_factory(self.length, num_tasks, self.multi_task, self.placement)
        if self.deep:
            return deep_factory(self.length)
        return prompt_factory(self.length, self.placement, self.residual)

    def describe(self) -> dict:
        """What a run's fingerprint records of the prompt (the initializer may change)."""
        return {
            "length": self.length,
            "placement": self.placement,
            **({"residual": dataclasses.asdict(self.residual)} if self.residual else {}),
            **({"multi_task": dataclasses.asdict(self.multi_task)} if self.multi_task else {}),
            **({"deep": True} if self.deep else {}),
        }


# ----------------------------------------------------------------------- the prompt's slot


def has_prompt(params: Any) -> bool:
    node = params
    for key in PROMPT_PATH:
        if not hasattr(node, "get") or key not in node:
            return False
        node = node[key]
    return True


def get_prompt(params: Any) -> Any:
    """The prompt (or a bank's stacked prompts) held in a parameter tree."""
    if not has_prompt(params):
        raise UserError(f"the parameters hold no prompt at {PROMPT_PATH_STR}")
    node = params
    for key in PROMPT_PATH:
        node = node[key]
    return node


def effective_prompt(params: Any) -> Any:
    """The prompt the model sees: the stored one, or with a residual reparameterisation in
    the parameters, P + MLP(P), materialised (what exports and serving use)."""
    module = get_module(params)
    if "residual" in module:
        return apply_residual(module["residual"], module["prompt"])
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
    variables = module.init(rng, embedded, jnp.ones((1, 1), bool))
    params = jax.device_get(nn.unbox(variables["params"]))
    return {**params, **given}


def with_module(params: Any, module: Any) -> dict:
    """A new parameter tree: `params` with the prompt module's parameters `module` (a dict
    holding at least "prompt") in its slot."""
    out = dict(params)
    encoder = dict(out.get(PROMPT_PATH[0], {}))
    encoder[PROMPT_PATH[1]] = dict(module)
    out[PROMPT_PATH[0]] = encoder
    return out


def get_module(params: Any) -> dict:
    """The prompt module's parameters: {"prompt": ..., and any reparameterisation}."""
    get_prompt(params)
    return params[PROMPT_PATH[0]][PROMPT_PATH[1]]


def with_prompt(params: Any, value: Any) -> dict:
    """A new parameter tree: `params` (which may lack a prompt) with `value` in the slot.
    Only the dicts on the path are copied; the arrays are shared."""
    out = dict(params)
    node = out
    for key in PROMPT_PATH[:-1]:
        node[key] = dict(node.get(key, {}))
        node = node[key]
    node[PROMPT_PATH[-1]] = value
    return out


def without_prompt(params: Any) -> dict:
    """A new parameter tree without the prompt module (what a frozen checkpoint holds)."""
    out = dict(params)
    encoder = dict(out.get(PROMPT_PATH[0], {}))
    encoder.pop(PROMPT_PATH[1], None)
    out[PROMPT_PATH[0]] = encoder
    if not encoder:  # a decoder-only model's slot holds nothing else
        del out[PROMPT_PATH[0]]
    return out


# ----------------------------------------------------------------------------- initializers


@dataclasses.dataclass(frozen=True)
class InitContext:
    """What an initializer may read.

    embedding: the frozen embedding table [vocab, embed].
    vocabulary: anything with `encode(text) -> list[int]` (seqio vocabularies qualify); with
      `vocab_size` and `extra_ids` (seqio), sentinel ids are never sampled.
    labels: the task's class label strings, for the class-label initializer.
    """

    embedding: Any
    vocabulary: Any = None
    labels: Optional[Sequence[str]] = None


class Initializer(Protocol):
    def __call__(self, rng: Array, shape: tuple[int, int], context: InitContext) -> np.ndarray: ...


def random_uniform(scale: float = 0.5, centered: bool = True):
    """Uniform in [-scale, scale] (the paper's random initialisation, scale 0.5); with
    `centered=False`, uniform in [0, scale) as the original implementation's flax
    `uniform(scale=0.5)`.

    Also usable directly as a Flax initializer `(rng, shape, dtype)`.
    """
    low = -scale if centered else 0.0

    def init(rng, shape, context_or_dtype=jnp.float32):
        dtype = context_or_dtype if not isinstance(context_or_dtype, InitContext) else jnp.float32
        return jax.random.uniform(rng, shape, dtype, minval=low, maxval=scale)

    return init


def _candidate_ids(context: InitContext, top_k: int, excluded: Sequence[int]) -> np.ndarray:
    rows = int(np.shape(context.embedding)[0])
    vocab = context.vocabulary
    base = rows
    if hasattr(vocab, "vocab_size") and hasattr(vocab, "extra_ids"):
        base = int(vocab.vocab_size) - int(vocab.extra_ids or 0)  # leave out sentinel ids
    limit = min(top_k, base, rows)
    excluded = set(int(i) for i in excluded)
    return np.array([i for i in range(limit) if i not in excluded], dtype=np.int64)


def _sample_rows(
    rng: Array,
    count: int,
    context: InitContext,
    top_k: int,
    excluded: Sequence[int],
    with_replacement: bool = False,
) -> np.ndarray:
    """`count` embedding rows, uniformly from the `top_k` most frequent ids: distinct ones, or
    (`with_replacement`, as the original implementation) with replacement when `count` is
    larger than the candidates."""
    if count == 0:
        return np.zeros((0, np.shape(context.embedding)[1]), np.float32)
    candidates = _candidate_ids(context, top_k, excluded)
    replace = with_replacement and count > len(candidates)
    if count > len(candidates) and not replace:
        raise UserError(
            f"cannot sample {count} distinct prompt rows from only "
            f"{len(candidates)} candidate tokens (ids < {top_k} without special ids)"
        )
    chosen = np.asarray(jax.random.choice(rng, candidates.shape[0], (count,), replace=replace))
    return np.asarray(context.embedding)[candidates[chosen]].astype(np.float32)


def sampled_vocab(
    top_k: int = TOP_K_TOKENS,
    excluded_ids: Sequence[int] = SPECIAL_IDS,
    with_replacement: bool = False,
):
    """Rows copied from the frozen embedding table, drawn without replacement from the
    `top_k` most common tokens (SentencePiece ids are ordered by frequency), leaving out
    pad/eos/unk and sentinel ids. The original implementation drew from ids 0..4999 with
    pad/eos/unk included (`excluded_ids=()`) and with replacement when the prompt is longer
    than the candidates (`with_replacement=True`)."""

    def init(rng, shape, context: InitContext):
        return _sample_rows(rng, shape[0], context, top_k, excluded_ids, with_replacement)

    return init


def _token_ids(vocabulary, text: str, what: str) -> list[int]:
    if vocabulary is None:
        raise UserError(
            f"the {what} initializer needs a vocabulary (the task's output "
            "vocabulary); none was given"
        )
    ids = [int(i) for i in vocabulary.encode(text)]
    if not ids:
        raise UserError(f"{what} {text!r} tokenizes to nothing: it cannot initialise a prompt row")
    return ids


def class_labels(
    labels: Optional[Sequence[str]] = None,
    top_k: int = TOP_K_TOKENS,
    excluded_ids: Sequence[int] = SPECIAL_IDS,
    with_replacement: bool = False,
):
    """Row i is the mean embedding of the sub-tokens of label i; the remaining rows are
    sampled vocabulary. Labels default to the task's (`InitContext.labels`; a mixture's are
    those of all its tasks); a task without labels (ReCoRD, WSC) gets sampled vocabulary
    throughout, said in the log. Labels beyond the prompt length are dropped with a warning.
    (The paper's default initialisation.)"""

    def init(rng, shape, context: InitContext):
        names = list(labels) if labels is not None else context.labels
        if not names:
            log.info(
                "class-label initialisation: the task has no closed label set; "
                "every prompt row is sampled vocabulary (the paper's fallback)"
            )
            return _sample_rows(rng, shape[0], context, top_k, excluded_ids, with_replacement)
        if len(names) > shape[0]:
            log.warning(
                "prompt length %d < %d class labels: dropping labels %s",
                shape[0],
                len(names),
                list(names[shape[0] :]),
            )
            names = names[: shape[0]]
        table = np.asarray(context.embedding)
        label_rows = [
            table[_token_ids(context.vocabulary, name, "class label")].mean(axis=0)
            for name in names
        ]
        rest = _sample_rows(
            rng, shape[0] - len(label_rows), context, top_k, excluded_ids, with_replacement
        )
        return np.concatenate([np.stack(label_rows).astype(np.float32), rest], axis=0)

    return init


def from_text(text: str, top_k: int = TOP_K_TOKENS, excluded_ids: Sequence[int] = SPECIAL_IDS):
    """The embeddings of `text`'s tokens in order, then sampled vocabulary; a text longer
    than the prompt is cut with a warning."""

    def init(rng, shape, context: InitContext):
        ids = _token_ids(context.vocabulary, text, "prompt text")
        if len(ids) > shape[0]:
            log.warning("prompt text has %d tokens; keeping the first %d", len(ids), shape[0])
            ids = ids[: shape[0]]
        rows = np.asarray(context.embedding)[ids].astype(np.float32)
        rest = _sample_rows(rng, shape[0] - len(ids), context, top_k, excluded_ids)
        return np.concatenate([rows, rest], axis=0)

    return init


def from_file(path: str):
    """A saved prompt: `.npy`, `.safetensors`, or a PEFT prompt-tuning adapter directory
    (`adapter_model.safetensors`, key `prompt_embeddings`). The shape must be [P, E]; float64
    files (such as the original project's) are cast to float32."""

    def init(rng, shape, context: InitContext):
        del rng
        value = load_prompt_file(path)
        if value.shape != tuple(shape):
            raise UserError(
                f"prompt file {path}: shape {value.shape} does not match the "
                f"model's prompt [length, embed] = {tuple(shape)}"
            )
        return value

    return init


def load_prompt_file(path: str, deep: bool = False) -> np.ndarray:
    """Reads a prompt [P, E] (with `deep`, also a deep prompt [layers, P, E]) as float32;
    refuses pickles, NaN/inf and other shapes."""
    if not os.path.exists(path):
        parent = os.path.dirname(os.path.abspath(path))
        if os.path.isfile(os.path.join(parent, BANK_FILE)):
            held = sorted(n[:-4] for n in os.listdir(parent) if n.endswith(".npy"))
            raise UserError(
                f"prompt file {path} does not exist: the prompt bank {parent} holds the "
                f"tasks {', '.join(held)}"
            )
        raise UserError(f"prompt file {path} does not exist")
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, BANK_FILE)):
        raise UserError(
            f"{path} is a multi-task prompt bank: name one task's prompt "
            f"({os.path.join(path, '<task>.npy')}), or pass the directory to `ptune infer`"
        )
    if os.path.isdir(path):
        adapter = os.path.join(path, "adapter_model.safetensors")
        if not os.path.isfile(adapter):
            raise UserError(
                f"prompt directory {path} holds no adapter_model.safetensors "
                "(a PEFT prompt-tuning adapter)"
            )
        value = _read_safetensors(adapter, preferred=("prompt_embeddings",))
    elif path.endswith(".npy"):
        try:
            value = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise UserError(f"prompt file {path}: not a plain numpy array ({e})") from e
    elif path.endswith(".safetensors"):
        value = _read_safetensors(path, preferred=("prompt", "prompt_embeddings"))
    else:
        raise UserError(
            f"prompt file {path}: expected a .npy or .safetensors file or a PEFT adapter directory"
        )
    if value.ndim == 3 and not deep:
        raise UserError(
            f"prompt file {path} holds a deep (per-layer) prompt {value.shape}: `ptune eval` "
            "reads it; this command takes a prompt [length, embed]"
        )
    if value.ndim not in ((2, 3) if deep else (2,)):
        raise UserError(
            f"prompt file {path}: expected a matrix [length, embed], got shape {value.shape}"
        )
    if not np.issubdtype(value.dtype, np.floating):
        raise UserError(f"prompt file {path}: expected floating point values, got {value.dtype}")
    value = value.astype(np.float32)
    if not np.isfinite(value).all():
        bad = int(np.sum(~np.isfinite(value)))
        raise UserError(f"prompt file {path}: {bad} values are NaN or infinite")
    return value


def _read_safetensors(path: str, preferred: Sequence[str]) -> np.ndarray:
    from safetensors.numpy import load_file

    try:
        tensors = load_file(path)
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise UserError(f"prompt file {path}: unreadable safetensors ({e})") from e
    for key in preferred:
        if key in tensors:
            return tensors[key]
    if len(tensors) == 1:
        return next(iter(tensors.values()))
    raise UserError(
        f"prompt file {path}: holds {sorted(tensors)}; expected one tensor or one "
        f"named {' or '.join(preferred)}"
    )


def initialize(
    initializer: Initializer, rng: Array, length: int, context: InitContext
) -> np.ndarray:
    """Runs an initializer and checks its result: [length, embed] float32, finite."""
    length = validate_length(length)
    embed = int(np.shape(context.embedding)[1])
    value = np.asarray(initializer(rng, (length, embed), context), dtype=np.float32)
    if value.shape != (length, embed):
        raise UserError(
            f"prompt initializer returned shape {value.shape}, expected {(length, embed)}"
        )
    if not np.isfinite(value).all():
        raise UserError("prompt initializer produced NaN or infinite values")
    return value
