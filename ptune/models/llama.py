"""Decoder-only Llama-family models in Flax: Llama (1-3, with Llama 3's RoPE scaling),
Mistral (sliding window off), Qwen2 (q/k/v biases) and Qwen3 (RMSNorm on each head's
queries and keys), as transformers computes them.

    RMSNorm -> self-attention (RoPE, grouped-query) -> residual
    RMSNorm -> SwiGLU MLP (down(silu(gate(x)) * up(x)))  -> residual
    final RMSNorm -> logits (lm_head, or the tied embedding)

Parameter tree (Flax kernels are [in, out], the transpose of transformers' `weight`):

    embed_tokens                          [vocab, embed]
    layers_{i}/input_layernorm/scale      [embed]
    layers_{i}/self_attn/{q,k,v}_proj/kernel  [embed, heads*head_dim] (k, v: kv_heads*head_dim)
    layers_{i}/self_attn/{q,k,v}_proj/bias    (Qwen2's `attention_bias`)
    layers_{i}/self_attn/{q,k}_norm/scale [head_dim]  (Qwen3's `qk_norm`)
    layers_{i}/self_attn/o_proj/kernel    [heads*head_dim, embed]
    layers_{i}/post_attention_layernorm/scale
    layers_{i}/mlp/{gate,up}_proj/kernel  [embed, mlp];  mlp/down_proj/kernel [mlp, embed]
    norm/scale                            [embed]
    lm_head/kernel                        [embed, vocab]  (absent with tied embeddings)
    encoder/prompt/...                    the prompt module, with a prompt (ptune's one slot):
                                          [P, embed]; a bank's [K, P, embed]; a deep
                                          prompt's [layers, P, embed]

`CausalLM.seq2seq` reads seqio's encoder-decoder batches (what every ptune task gives), laid
out as one sequence per row (`seq2seq_layout`), so the trainer, the evaluation and the
server run this family with the code they run T5 with.

With `scan_layers` the layers are one `layers` module, stacked on axis 1 (logical `layers`),
as the T5 family (`layers.layer_stack`; the layers both families share are
`ptune.models.layers`). Every parameter carries logical axis names (`ptune.partitioning`).
RoPE, RMSNorm and softmax are computed in float32, as transformers does. Transformers' weight
names map to this tree in `ptune.checkpoints.hf_causal`. The numerical core: no TensorFlow,
seqio or gin.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from ptune import prompts
from ptune.errors import UserError
from ptune.models import attention, layers

Array = jax.Array

ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM")
MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")
ROPE_TYPES = ("default", "linear", "llama3")
# What a model file or a checkpoint states; the rest (dtype, scan, remat) is how to run it.
ARCHITECTURE_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "rms_norm_eps",
    "rope_theta",
    "tie_word_embeddings",
    "attention_bias",
    "qk_norm",
    "rope_scaling",
)


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """A Llama-family architecture; `from_hf_config` reads a Hugging Face `config.json`.

    rope_scaling: None, or (("rope_type", "llama3"), ("factor", 8.0), ...) as sorted pairs
      (a dict is accepted and frozen): "linear" divides positions by `factor`; "llama3"
      rescales the frequencies as Llama 3.1 does.
    attention_bias: biases on q/k/v (Qwen2), none on o.
    qk_norm: an RMSNorm over each head's queries and keys (scale [head_dim], shared by the
      heads) after the projection, before RoPE (Qwen3).
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    tie_word_embeddings: bool
    attention_bias: bool = False
    qk_norm: bool = False
    rope_scaling: Optional[tuple] = None
    dtype: str = "float32"
    scan_layers: bool = False
    remat_policy: str = "none"

    def replace(self, **changes) -> "LlamaConfig":
        return dataclasses.replace(self, **changes)

    @property
    def emb_dim(self) -> int:
        """The model width under T5Config's name: what a prompt's rows must match."""
        return self.hidden_size

    def __post_init__(self):
        if isinstance(self.rope_scaling, Mapping):
            object.__setattr__(self, "rope_scaling", tuple(sorted(self.rope_scaling.items())))
        kind = dict(self.rope_scaling or ()).get("rope_type", "default")
        if kind not in ROPE_TYPES:
            raise UserError(f"rope scaling {kind!r} is not supported (one of {ROPE_TYPES})")
        if self.num_attention_heads % self.num_key_value_heads:
            raise UserError(
                f"{self.num_attention_heads} attention heads do not group evenly over "
                f"{self.num_key_value_heads} key/value heads"
            )


def from_hf_config(hf: Mapping[str, Any]) -> LlamaConfig:
    """A LlamaConfig from a transformers `config.json` dict (transformers 4's `rope_theta` /
    `rope_scaling`, or 5's `rope_parameters`). Refuses what ptune does not compute."""
    architectures = hf.get("architectures") or []
    if not set(architectures) & set(ARCHITECTURES):
        raise UserError(
            f"config.json architectures {architectures} are not a supported decoder-only "
            f"model (one of {', '.join(ARCHITECTURES)})"
        )
    if hf.get("use_sliding_window") or (
        "Mistral" in architectures[0] and hf.get("sliding_window") not in (None, 0)
    ):
        raise UserError(
            f"sliding-window attention ({hf.get('sliding_window')}) is not supported; "
            "set sliding_window to null to attend over the whole sequence"
        )
    if hf.get("hidden_act", "silu") != "silu" or hf.get("mlp_bias"):
        raise UserError("only SwiGLU MLPs (hidden_act silu, no MLP bias) are supported")
    qwen2, qwen3 = "Qwen2ForCausalLM" in architectures, "Qwen3ForCausalLM" in architectures
    if hf.get("attention_bias") and not qwen2:  # Llama's and Qwen3's bias o_proj too
        raise UserError(
            f"attention_bias on {architectures[0]} (biases on q, k, v and o) is not supported"
        )
    rope = dict(hf.get("rope_parameters") or {})
    theta = rope.pop("rope_theta", hf.get("rope_theta", 10000.0))
    scaling = dict(hf.get("rope_scaling") or rope)
    if "type" in scaling:
        scaling["rope_type"] = scaling.pop("type")
    if scaling.get("rope_type", "default") == "default":
        scaling = None
    heads = hf["num_attention_heads"]
    # transformers' Qwen3Config defaults head_dim to 128, not hidden_size / heads
    head_dim = hf.get("head_dim") or (128 if qwen3 else hf["hidden_size"] // heads)
    return LlamaConfig(
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        intermediate_size=hf["intermediate_size"],
        num_hidden_layers=hf["num_hidden_layers"],
        num_attention_heads=heads,
        num_key_value_heads=hf.get("num_key_value_heads") or heads,
        head_dim=head_dim,
        rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
        rope_theta=float(theta),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        attention_bias=bool(hf.get("attention_bias", qwen2)),
        qk_norm=qwen3,
        rope_scaling=scaling,
    )


def rope_frequencies(config: LlamaConfig) -> np.ndarray:
    """The inverse frequencies [head_dim / 2] (float32), with the configured scaling."""
    dim = config.head_dim
    exponent = np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)
    inv = (1.0 / (np.float32(config.rope_theta) ** exponent)).astype(np.float32)
    scaling = dict(config.rope_scaling or ())
    kind = scaling.get("rope_type", "default")
    if kind == "linear":
        return (inv / np.float32(scaling["factor"])).astype(np.float32)
    if kind == "llama3":
        factor = scaling["factor"]
        low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
        old = scaling["original_max_position_embeddings"]
        wavelength = 2 * math.pi / inv
        scaled = np.where(wavelength > old / low, inv / factor, inv)
        smooth = (old / wavelength - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelength < old / high) & ~(wavelength > old / low)
        return np.where(medium, smoothed, scaled).astype(np.float32)
    return inv


def apply_rope(x: Array, positions: Array, inv_freq: np.ndarray) -> Array:
    """x [b, l, heads, d], positions [b, l] -> x rotated (the non-interleaved "rotate half"
    convention of transformers' Llama), computed in float32."""
    angles = positions[..., None].astype(jnp.float32) * jnp.asarray(inv_freq)  # [b, l, d/2]
    angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]
    cos, sin = jnp.cos(angles).astype(x.dtype), jnp.sin(angles).astype(x.dtype)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


class RMSNorm(nn.Module):
    """Over the last axis, whose logical name is `axis` (`kv`: a head's width)."""

    eps: float
    dtype: Any = jnp.float32
    axis: str = "embed"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        scale = layers.param(
            self, "scale", nn.initializers.ones_init(), (x.shape[-1],), (self.axis,)
        )
        y = x.astype(jnp.float32)
        y = y * jax.lax.rsqrt(jnp.mean(jnp.square(y), axis=-1, keepdims=True) + self.eps)
        return (scale * y.astype(self.dtype)).astype(self.dtype)


class SelfAttention(nn.Module):
    """Grouped-query causal self-attention with RoPE: each key/value head serves
    heads / kv_heads query heads (head i uses key/value head i // group).

    With `decode`, keys and values live in a cache of fixed length
    (`causal_decoding.init_cache`); each call writes its positions (a right-padded prefix, or
    one new token) at each row's next slot, and a row's real positions fill slots 0, 1, ...
    in order, so a slot is its position. Rows of different lengths decode together; no
    padding sits between a prompt, its input and the new tokens; a prompt's keys and values
    can be computed once (`causal_decoding.prompt_cache`).
    """

    config: LlamaConfig
    decode: bool = False

    @nn.compact
    def __call__(self, x: Array, valid: Array, positions: Array) -> Array:
        """x [b, l, e], valid [b, l] bool, positions [b, l] -> [b, l, e]"""
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        b, length, _ = x.shape
        h, kv, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim

        def project(name, heads):
            layer = layers.Dense(
                heads * d, ("embed", "joined_kv"), dtype, use_bias=cfg.attention_bias, name=name
            )
            return layer(x).reshape(b, length, heads, d)

        q, k, v = project("q_proj", h), project("k_proj", kv), project("v_proj", kv)
        if cfg.qk_norm:  # before RoPE, so the cache holds normalised, rotated keys
            q = RMSNorm(cfg.rms_norm_eps, dtype, "kv", name="q_norm")(q)
            k = RMSNorm(cfg.rms_norm_eps, dtype, "kv", name="k_norm")(k)
        query_slot = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (b, length))
        cache = self._cache(k, v, valid) if self.decode else None
        if cache is not None:  # a row's slots are its positions: real tokens from slot 0
            positions = query_slot = cache["index"].value[:, None] + query_slot
        inv_freq = rope_frequencies(cfg)
        q, k = apply_rope(q, positions, inv_freq), apply_rope(k, positions, inv_freq)
        key_valid = valid
        if cache is not None:
            k, v, key_valid = self._write(cache, k, v, valid)
        out = attention.attend_causal(
            q, k, v, query_slot=query_slot, key_valid=key_valid, scale=np.sqrt(d), dtype=dtype
        ).reshape(b, length, h * d)
        return layers.Dense(cfg.hidden_size, ("joined_kv", "embed"), dtype, name="o_proj")(out)

    def _cache(self, k, v, valid) -> Optional[dict]:
        """The cache variables; None on the call that creates them (shapes only)."""
        ready = self.has_variable("cache", "key")
        cache = {
            "key": self.variable("cache", "key", jnp.zeros, k.shape, k.dtype),
            "value": self.variable("cache", "value", jnp.zeros, v.shape, v.dtype),
            "valid": self.variable("cache", "valid", jnp.zeros, valid.shape, bool),
            "index": self.variable("cache", "index", jnp.zeros, valid.shape[:1], jnp.int32),
        }
        return cache if ready else None

    @staticmethod
    def _write(cache, k, v, valid):
        """Writes each row's new keys/values at its next slot (`index`) and moves the index
        past its real ones -> (keys, values, validity) of the whole cache."""

        def put(buffer, new, start):
            return jax.lax.dynamic_update_slice(buffer, new, (start,) + (0,) * (new.ndim - 1))

        start = cache["index"].value
        for name, new in (("key", k), ("value", v), ("valid", valid)):
            cache[name].value = jax.vmap(put)(cache[name].value, new, start)
        cache["index"].value = start + jnp.sum(valid, axis=1, dtype=jnp.int32)
        return cache["key"].value, cache["value"].value, cache["valid"].value


class Mlp(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    config: LlamaConfig

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        gate = layers.Dense(cfg.intermediate_size, ("embed", "mlp"), dtype, name="gate_proj")(x)
        up = layers.Dense(cfg.intermediate_size, ("embed", "mlp"), dtype, name="up_proj")(x)
        hidden = layers.constrain(jax.nn.silu(gate) * up, ("batch", "length", "mlp"))
        return layers.Dense(cfg.hidden_size, ("mlp", "embed"), dtype, name="down_proj")(hidden)


class DecoderLayer(nn.Module):
    config: LlamaConfig
    decode: bool = False

    @nn.compact
    def __call__(
        self,
        x: Array,
        valid: Array,
        positions: Array,
        prompt: Optional[Array] = None,
        replace: Optional[Array] = None,
    ):
        """x [b, l, e], valid [b, l] bool, positions [b, l] -> ([b, l, e], None).

        Deep prompts: with `prompt` [p, e] and `replace` (a bool scalar) true, the first p
        positions of x (a prefix prompt's) are this layer's prompt instead."""
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        if prompt is not None:
            x = layers.replace_prefix(x, prompt, replace)
        y = RMSNorm(cfg.rms_norm_eps, dtype, name="input_layernorm")(x)
        x = x + SelfAttention(cfg, self.decode, name="self_attn")(y, valid, positions)
        y = RMSNorm(cfg.rms_norm_eps, dtype, name="post_attention_layernorm")(x)
        x = x + Mlp(cfg, name="mlp")(y)
        return layers.constrain(x, ("batch", "length", "embed")), None


class PromptSlot(nn.Module):
    """Holds the prompt module at ptune's one prompt slot (`prompts.PROMPT_PATH`), as T5's
    encoder does, so checkpoints, trainable patterns and exports read one path whatever the
    model family (PEFT likewise names its prompt encoder the same for every task type).
    A deep prompt (`prompts.DeepPrompt`, prefix placement) spans `num_layers` layers."""

    factory: Any
    num_layers: int

    @nn.compact
    def __call__(self, x: Array, valid: Array, prompt_index: Optional[Array] = None):
        """x [b, l, e], valid [b, l] -> (x [b, P + l, e], valid [b, P + l], the layers'
        prompts [layers, P, e] of a deep prompt, else None)"""
        module = self.factory(name=prompts.PROMPT_PATH[1])
        if getattr(module, "per_layer", False):
            return module(x, valid, num_layers=self.num_layers)
        if getattr(module, "placement", "prefix") not in ("prefix", "after_bos"):
            raise UserError("a decoder-only model's prompt goes first, or after the BOS")
        return (*module(x, valid, prompt_index=prompt_index), None)


class CausalLM(nn.Module):
    """The decoder-only language model: tokens -> logits [b, l, vocab].

    With `prompt_factory` (`ptune.prompts.prompt_factory(P)`, or a bank), a soft prompt
    module at `prompts.PROMPT_PATH` (`prompts.with_prompt`) goes in front of the embedded
    tokens (or after the first, BOS, with placement "after_bos"), as PEFT's prompt tuning for
    causal LMs does: the prompt positions are always attended, positions count from the
    sequence's first vector, and the logits cover P + l positions. A deep prompt
    (`prompts.deep_factory(P)`, [layers, P, E]) is layer 0's prompt in front of the tokens,
    and at the input of each later layer i the P prompt positions' hidden states are layer
    i's prompt instead (P-tuning v2, as T5's encoder applies it); a decoding cache holds each
    layer's keys and values of the replaced states.

    `seq2seq` reads seqio's encoder-decoder batches (`ptune.data`): see `seq2seq_layout` for
    how inputs and targets become one sequence; `bos_id` (the tokenizer's, None when it adds
    none) starts it, and `drop_input_eos` drops the EOS seqio appends to the inputs, so the
    targets follow the input text directly. These models have no dropout.
    """

    config: LlamaConfig
    prompt_factory: Optional[Any] = None
    bos_id: Optional[int] = None
    drop_input_eos: bool = True

    @nn.compact
    def __call__(
        self,
        tokens: Array,
        valid: Optional[Array] = None,
        positions: Optional[Array] = None,
        decode: bool = False,
        add_prompt: bool = True,
        prompt_index: Optional[Array] = None,
        select: Optional[Array] = None,
    ) -> Array:
        """tokens [b, l] int; valid [b, l] bool (default: every position); positions [b, l']
        (default: 0, 1, ... per row, as transformers without position_ids) -> logits
        [b, l', vocab] float32, l' = l (+ P with a prompt). Each position attends to the
        valid positions up to itself. `decode` uses the key/value cache
        (`causal_decoding`); `add_prompt=False` leaves the prompt out (a decoding step after
        the prefix); `prompt_index` [b] picks each row's prompt of a bank. `select` [b, k]:
        logits only at these token positions (each moved past its row's prompt; -1 is the
        position before the first token: the prompt's last vector) -> [b, k, vocab]."""
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        b, length = tokens.shape
        valid = jnp.ones((b, length), bool) if valid is None else valid.astype(bool)
        embed = layers.param(
            self,
            "embed_tokens",
            nn.initializers.normal(0.02),
            (cfg.vocab_size, cfg.hidden_size),
            ("vocab", "embed"),
        )
        x = jnp.take(embed, tokens, axis=0).astype(dtype)
        row_prompt = jnp.zeros((b,), jnp.int32)  # each row's own prompt length (of a bank)
        layer_prompts = None  # deep prompts: [layers, P, e], layer i's prompt
        n = cfg.num_hidden_layers
        if self.prompt_factory is not None and (add_prompt or self.is_initializing()):
            slot = PromptSlot(self.prompt_factory, n, name=prompts.PROMPT_PATH[0])
            before = jnp.sum(valid, axis=1, dtype=jnp.int32)
            x, valid, layer_prompts = slot(x, valid, prompt_index)
            row_prompt = jnp.sum(valid, axis=1, dtype=jnp.int32) - before
        length = x.shape[1]
        x = layers.constrain(x, ("batch", "length", "embed"))
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (b, length))
        if layer_prompts is None:
            stack = layers.layer_stack(DecoderLayer, cfg, n, 2, decode=decode)
            x = stack(x, valid, positions)
        else:  # layer 0's prompt came in with the embeddings; each later layer's replaces it
            stack = layers.layer_stack(DecoderLayer, cfg, n, 2, 2, decode=decode)
            x = stack(x, valid, positions, layer_prompts, jnp.arange(n) > 0)
        if select is not None:
            at = jnp.maximum(select + row_prompt[:, None], 0)
            x = jnp.take_along_axis(x, at[..., None], axis=1)
        x = RMSNorm(cfg.rms_norm_eps, dtype, name="norm")(x)
        if cfg.tie_word_embeddings:
            logits = jnp.dot(x, embed.astype(dtype).T)
        else:
            logits = layers.Dense(cfg.vocab_size, ("embed", "vocab"), dtype, name="lm_head")(x)
        return logits.astype(jnp.float32)

    def seq2seq(
        self,
        encoder_input_tokens: Array,
        decoder_input_tokens: Array,
        decoder_target_tokens: Array,
        enable_dropout: bool = False,
        prompt_index: Optional[Array] = None,
    ) -> Array:
        """The encoder-decoder batch interface (`t5.Transformer`'s): inputs [b, li] and
        targets [b, lt] -> logits [b, lt, vocab], row j predicting target token j from the
        prompt, the inputs and targets before j. `decoder_input_tokens` (T5's shifted
        targets) and `enable_dropout` are unused."""
        del decoder_input_tokens, enable_dropout
        tokens, valid, prefix = seq2seq_layout(
            encoder_input_tokens, decoder_target_tokens, self.bos_id, self.drop_input_eos
        )
        steps = jnp.arange(decoder_target_tokens.shape[1], dtype=jnp.int32)
        select = prefix[:, None] - 1 + steps[None]  # -1: the prompt's last vector
        return self(tokens, valid, prompt_index=prompt_index, select=select)


def real_length(tokens: Array) -> Array:
    """[b, l] right-padded with 0 -> [b]: one past each row's last non-zero token (so a real
    token 0 inside a sequence that ends in EOS still counts)."""
    steps = jnp.arange(1, tokens.shape[1] + 1, dtype=jnp.int32)
    return jnp.max(jnp.where(tokens != 0, steps[None], 0), axis=1, initial=0)


def seq2seq_layout(
    inputs: Array, targets: Array, bos_id: Optional[int], drop_input_eos: bool
) -> tuple[Array, Array, Array]:
    """seqio's encoder-decoder features as one decoder-only sequence per row, as a causal LM
    is prompt-tuned (PEFT's layout; t5x's prefix-LM feature converter without packing):

        [BOS] + inputs (without their EOS) + targets (with theirs), then right padding

    so no padding sits between the parts and the prompt (in front) is adjacent to real
    tokens. inputs [b, li], targets [b, lt] (right-padded, 0 = pad, each ending in EOS) ->
    (tokens [b, L] with 0 padding, valid [b, L] bool, prefix [b]: tokens before the first
    target), L = li + lt (+ 1 with a BOS)."""
    inputs, targets = jnp.asarray(inputs, jnp.int32), jnp.asarray(targets, jnp.int32)
    b, li = inputs.shape
    head = [] if bos_id is None else [jnp.full((b, 1), bos_id, jnp.int32)]
    source = jnp.concatenate(head + [inputs, targets], axis=1)
    width = source.shape[1]
    kept = real_length(inputs)
    if drop_input_eos:
        kept = jnp.maximum(kept - 1, 0)
    prefix = len(head) + kept
    end = prefix + real_length(targets)
    step = jnp.arange(width, dtype=jnp.int32)[None]
    index = jnp.where(step < prefix[:, None], step, step - prefix[:, None] + len(head) + li)
    valid = step < end[:, None]
    tokens = jnp.take_along_axis(source, jnp.clip(index, 0, width - 1), axis=1)
    return jnp.where(valid, tokens, 0), valid, prefix


def abstract_params(config: LlamaConfig, prompt_factory: Optional[Any] = None) -> Any:
    """Boxed abstract parameters (logical names on each leaf), the prompt slot included
    with `prompt_factory`; allocates nothing."""

    def trace():
        tokens = jax.ShapeDtypeStruct((1, 1), jnp.int32)
        model = CausalLM(config, prompt_factory)
        return jax.eval_shape(lambda t: model.init(jax.random.PRNGKey(0), t), tokens)["params"]

    return layers.abstract_once(("llama", config, prompt_factory), trace)


def parameter_count(config: LlamaConfig) -> int:
    """Total number of parameters, computed abstractly over scanned layers (as
    `t5.parameter_count`): the same count, one layer traced instead of each."""
    scanned = dataclasses.replace(config, scan_layers=True)
    leaves = jax.tree_util.tree_leaves(nn.unbox(abstract_params(scanned)))
    return int(sum(np.prod(x.shape) for x in leaves))
