"""T5 encoder-decoder in Flax linen, parameter-compatible with t5x/flaxformer.

The parameter tree, names and logical axis names are those of t5x/flaxformer's T5, so
checkpoints written by t5x map one-to-one (see `ptune.checkpoints`):

    token_embedder/embedding                                   [vocab, embed]
    encoder/relpos_bias/rel_embedding                          [heads, relpos_buckets]
    encoder/layers_{i}/pre_attention_layer_norm/scale          [embed]
    encoder/layers_{i}/attention/{query,key,value}/kernel      [embed, joined_kv]
    encoder/layers_{i}/attention/out/kernel                    [joined_kv, embed]
    encoder/layers_{i}/pre_mlp_layer_norm/scale                [embed]
    encoder/layers_{i}/mlp/{wi_0,wi_1}/kernel  (or mlp/wi)     [embed, mlp]
    encoder/layers_{i}/mlp/wo/kernel                           [mlp, embed]
    encoder/encoder_norm/scale                                 [embed]
    decoder/relpos_bias/rel_embedding                          [heads, relpos_buckets]
    decoder/layers_{i}/{pre_self_attention_layer_norm, self_attention,
                        pre_cross_attention_layer_norm, encoder_decoder_attention,
                        pre_mlp_layer_norm, mlp}/...
    decoder/decoder_norm/scale                                 [embed]
    decoder/logits_dense/kernel  (untied models only)          [embed, vocab]

With `scan_layers=True` the layers are stacked under `encoder/layers` and `decoder/layers`
with the layer axis at position 1 (flaxformer's `scan_axis=1`), logical name `layers`. The
layers both families share (`param`, `Dense`, `layer_stack`) are `ptune.models.layers`; T5's
own (norm, embedding, relative-position biases, attention, MLP) are `ptune.models.t5_layers`.

An optional prompt module sits on the encoder input path at `encoder/prompt`; see
`ptune.prompts`. The numerical core: no TensorFlow, seqio or gin imports here.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from ptune import prompts
from ptune.models import layers
from ptune.models.t5_layers import (
    ACTIVATIONS,
    Embed,
    LayerNorm,
    MlpBlock,
    MultiHeadAttention,
    RelativePositionBiases,
)

Array = jax.Array

REMAT_POLICIES = ("none", "full", "minimal")


# What a checkpoint fixes: the fields that decide the parameter tree and what it computes.
# They have no defaults, so a model is never built from a forgotten model file.
ARCHITECTURE_FIELDS = (
    "vocab_size",
    "emb_dim",
    "num_heads",
    "num_encoder_layers",
    "num_decoder_layers",
    "head_dim",
    "mlp_dim",
    "mlp_activations",
    "logits_via_embedding",
    "relative_attention_num_buckets",
    "relative_attention_max_distance",
)


@dataclasses.dataclass(frozen=True)
class T5Config:
    """Architecture of a T5 model. Field names follow t5x's `network.T5Config`.

    The architecture fields (`ARCHITECTURE_FIELDS`) are required: they come from a model gin
    file or from the checkpoint (see `ptune.model_config.resolve_model_config`). `head_dim=None`
    derives it as `emb_dim // num_heads` (which must divide). The rest are run-time choices:
    `dtype` is the activation dtype ('float32' on CPU, 'bfloat16' on accelerators);
    parameters are float32.
    """

    vocab_size: int
    emb_dim: int
    num_heads: int
    num_encoder_layers: int
    num_decoder_layers: int
    head_dim: Optional[int]
    mlp_dim: int
    mlp_activations: Sequence[str]
    logits_via_embedding: bool
    relative_attention_num_buckets: int
    relative_attention_max_distance: int
    dropout_rate: float = 0.1
    dtype: Any = "float32"
    scan_layers: bool = False
    remat_policy: str = "none"

    def __post_init__(self):
        for name in (
            "vocab_size",
            "emb_dim",
            "num_heads",
            "num_encoder_layers",
            "num_decoder_layers",
            "mlp_dim",
            "relative_attention_num_buckets",
            "relative_attention_max_distance",
        ):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"T5Config.{name} must be a positive integer, got {value!r}")
        if self.head_dim is None:
            if self.emb_dim % self.num_heads:
                raise ValueError(
                    f"T5Config: emb_dim={self.emb_dim} is not divisible by num_heads="
                    f"{self.num_heads}; set head_dim explicitly or choose a dividing head count"
                )
            object.__setattr__(self, "head_dim", self.emb_dim // self.num_heads)
        elif not isinstance(self.head_dim, (int, np.integer)) or self.head_dim <= 0:
            raise ValueError(f"T5Config.head_dim must be a positive integer, got {self.head_dim!r}")
        if isinstance(self.mlp_activations, str):
            object.__setattr__(self, "mlp_activations", (self.mlp_activations,))
        object.__setattr__(self, "mlp_activations", tuple(self.mlp_activations))
        if not self.mlp_activations:
            raise ValueError("T5Config.mlp_activations must name at least one activation")
        for act in self.mlp_activations:
            if act not in ACTIVATIONS:
                raise ValueError(
                    f"T5Config.mlp_activations: unknown activation {act!r}; "
                    f"known: {', '.join(sorted(ACTIVATIONS))}"
                )
        if not 0.0 <= float(self.dropout_rate) < 1.0:
            raise ValueError(f"T5Config.dropout_rate must be in [0, 1), got {self.dropout_rate}")
        try:
            dtype = jnp.dtype(self.dtype)
        except TypeError as e:
            raise ValueError(f"T5Config.dtype: unknown dtype {self.dtype!r}") from e
        if dtype not in (jnp.float32, jnp.bfloat16, jnp.float16):
            raise ValueError(f"T5Config.dtype must be float32, bfloat16 or float16, got {dtype}")
        object.__setattr__(self, "dtype", dtype.name)
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(
                f"T5Config.remat_policy must be one of {REMAT_POLICIES}, got {self.remat_policy!r}"
            )

    def replace(self, **changes) -> "T5Config":
        return dataclasses.replace(self, **changes)


def _dropout(config: T5Config):
    return nn.Dropout(rate=config.dropout_rate, broadcast_dims=(-2,))


class EncoderLayer(nn.Module):
    """Pre-norm self-attention + MLP block."""

    config: T5Config
    deterministic: bool = True

    @nn.compact
    def __call__(
        self,
        x: Array,
        mask: Array,
        bias: Array,
        prompt: Optional[Array] = None,
        replace: Optional[Array] = None,
    ):
        """x [b, l, e], mask [b, 1, l, l], bias [1, h, l, l] -> ([b, l, e], None).

        Deep prompts: with `prompt` [p, e] and `replace` (a bool scalar) true, the first p
        positions of x (a prefix prompt's) are this layer's prompt instead."""
        cfg, det = self.config, self.deterministic
        if prompt is not None:
            x = layers.replace_prefix(x, prompt, replace)
        y = LayerNorm(cfg.dtype, name="pre_attention_layer_norm")(x)
        y = MultiHeadAttention(
            cfg.num_heads, cfg.head_dim, cfg.dtype, cfg.dropout_rate, name="attention"
        )(y, y, mask, bias, deterministic=det)
        x = x + _dropout(cfg)(y, deterministic=det)
        y = LayerNorm(cfg.dtype, name="pre_mlp_layer_norm")(x)
        y = MlpBlock(cfg.mlp_dim, cfg.mlp_activations, cfg.dtype, cfg.dropout_rate, name="mlp")(
            y, det
        )
        x = x + _dropout(cfg)(y, deterministic=det)
        return layers.constrain(x, ("batch", "length", "embed")), None


class DecoderLayer(nn.Module):
    """Pre-norm causal self-attention, cross-attention and MLP block."""

    config: T5Config
    deterministic: bool = True
    decode: bool = False

    @nn.compact
    def __call__(
        self,
        y: Array,
        encoded: Optional[Array],
        self_mask: Optional[Array],
        cross_mask: Array,
        bias: Array,
    ):
        """y [b, lt, e], encoded [b, ls, e], self_mask [b, 1, lt, lt], cross_mask
        [b, 1, lt, ls], bias [1, h, lt, lt] -> ([b, lt, e], None)"""
        cfg, det = self.config, self.deterministic
        x = LayerNorm(cfg.dtype, name="pre_self_attention_layer_norm")(y)
        x = MultiHeadAttention(
            cfg.num_heads, cfg.head_dim, cfg.dtype, cfg.dropout_rate, name="self_attention"
        )(x, x, self_mask, bias, deterministic=det, decode=self.decode)
        y = y + _dropout(cfg)(x, deterministic=det)
        x = LayerNorm(cfg.dtype, name="pre_cross_attention_layer_norm")(y)
        x = MultiHeadAttention(
            cfg.num_heads,
            cfg.head_dim,
            cfg.dtype,
            cfg.dropout_rate,
            is_cross=True,
            name="encoder_decoder_attention",
        )(x, encoded, cross_mask, None, deterministic=det, decode=self.decode)
        y = y + _dropout(cfg)(x, deterministic=det)
        x = LayerNorm(cfg.dtype, name="pre_mlp_layer_norm")(y)
        x = MlpBlock(cfg.mlp_dim, cfg.mlp_activations, cfg.dtype, cfg.dropout_rate, name="mlp")(
            x, det
        )
        y = y + _dropout(cfg)(x, deterministic=det)
        return layers.constrain(y, ("batch", "length", "embed")), None


def attention_mask(query_valid: Array, key_valid: Array) -> Array:
    """[b, lq] bool, [b, lk] bool -> [b, 1, lq, lk] bool."""
    return query_valid[:, None, :, None] & key_valid[:, None, None, :]


def _segment_mask(mask: Array, q_segments: Optional[Array], k_segments: Optional[Array]):
    if q_segments is None:
        return mask
    return mask & (q_segments[:, None, :, None] == k_segments[:, None, None, :])


class Encoder(nn.Module):
    """T5 encoder stack; an optional prompt module is applied to the embedded inputs.

    `prompt_factory(name=...)` returns a module called as
    `(embedded [b, l, e], valid [b, l] bool, prompt_index=[b] | None) -> ([b, l', e], [b, l'])`.
    """

    config: T5Config
    shared_embedding: nn.Module
    prompt_factory: Optional[Callable[[], nn.Module]] = None

    @nn.compact
    def __call__(
        self,
        encoder_input_tokens: Array,
        *,
        enable_dropout: bool = True,
        encoder_segment_ids: Optional[Array] = None,
        prompt_index: Optional[Array] = None,
    ) -> tuple[Array, Array]:
        """tokens [b, l] int (0 = padding) -> (encoded [b, l', e], valid [b, l'] bool).

        l' = l + prompt length when a prompt is configured (it does not count against l).
        """
        cfg = self.config
        det = not enable_dropout
        x = self.shared_embedding(encoder_input_tokens.astype(jnp.int32))
        valid = encoder_input_tokens > 0
        layer_prompts = None  # deep prompts: [layers, p, e], layer i's prompt
        if self.prompt_factory is not None:
            if encoder_segment_ids is not None:
                raise ValueError(
                    "packed inputs (segment ids) cannot be used with a prompt: "
                    "turn packing off in the feature converter"
                )
            module = self.prompt_factory(name=prompts.PROMPT_PATH[1])
            if getattr(module, "per_layer", False):
                x, valid, layer_prompts = module(x, valid, num_layers=cfg.num_encoder_layers)
            else:
                x, valid = module(x, valid, prompt_index=prompt_index)
        elif prompt_index is not None:
            raise ValueError("prompt_index was given but the model has no prompt module")
        x = layers.constrain(x, ("batch", "length", "embed"))
        dropout = _dropout(cfg)
        x = dropout(x, deterministic=det)
        length = x.shape[1]
        mask = _segment_mask(attention_mask(valid, valid), encoder_segment_ids, encoder_segment_ids)
        bias = RelativePositionBiases(
            cfg.relative_attention_num_buckets,
            cfg.relative_attention_max_distance,
            cfg.num_heads,
            cfg.dtype,
            name="relpos_bias",
        )(length, length, True)
        if layer_prompts is None:
            stack = layers.layer_stack(
                EncoderLayer, cfg, cfg.num_encoder_layers, 2, deterministic=det
            )
            x = stack(x, mask, bias)
        else:  # layer 0's prompt came in with the embeddings; each later layer's replaces it
            stack = layers.layer_stack(
                EncoderLayer, cfg, cfg.num_encoder_layers, 2, 2, deterministic=det
            )
            x = stack(x, mask, bias, layer_prompts, jnp.arange(cfg.num_encoder_layers) > 0)
        x = LayerNorm(cfg.dtype, name="encoder_norm")(x)
        return dropout(x, deterministic=det), valid


class Decoder(nn.Module):
    """T5 decoder stack with logits (tied: scaled embedding.attend; untied: logits_dense)."""

    config: T5Config
    shared_embedding: nn.Module

    @nn.compact
    def __call__(
        self,
        encoded: Optional[Array],
        encoded_valid: Array,
        decoder_input_tokens: Array,
        decoder_target_tokens: Optional[Array] = None,
        *,
        enable_dropout: bool = True,
        decode: bool = False,
        max_decode_length: Optional[int] = None,
        encoder_segment_ids: Optional[Array] = None,
        decoder_segment_ids: Optional[Array] = None,
    ) -> Array:
        """encoded [b, ls, e], encoded_valid [b, ls], decoder tokens [b, lt] -> logits
        [b, lt, vocab] float32.

        Cached decoding: a first call with `decode=True` and full-length decoder inputs
        creates the cache (mutable 'cache'); each later call passes one position (lt = 1),
        `max_decode_length` equal to that full length, and `encoded` may be None."""
        cfg = self.config
        det = not enable_dropout
        y = self.shared_embedding(decoder_input_tokens.astype(jnp.int32))
        y = layers.constrain(y, ("batch", "length", "embed"))
        dropout = _dropout(cfg)
        y = dropout(y, deterministic=det)
        length = y.shape[1]
        if decode:
            # Self-attention masks come from the cache; no target padding to mask here.
            target_valid = jnp.ones(y.shape[:2], bool)
            self_mask = None
        else:
            target_tokens = (
                decoder_target_tokens if decoder_target_tokens is not None else decoder_input_tokens
            )
            target_valid = target_tokens > 0
            causal = jnp.tril(jnp.ones((length, length), bool))[None, None]
            self_mask = _segment_mask(
                attention_mask(target_valid, target_valid) & causal,
                decoder_segment_ids,
                decoder_segment_ids,
            )
        cross_mask = _segment_mask(
            attention_mask(target_valid, encoded_valid), decoder_segment_ids, encoder_segment_ids
        )
        relpos = RelativePositionBiases(
            cfg.relative_attention_num_buckets,
            cfg.relative_attention_max_distance,
            cfg.num_heads,
            cfg.dtype,
            name="relpos_bias",
        )
        bias_length = max_decode_length if decode and max_decode_length else length
        bias = relpos(bias_length, bias_length, bidirectional=False)
        stack = layers.layer_stack(
            DecoderLayer, cfg, cfg.num_decoder_layers, 4, deterministic=det, decode=decode
        )
        y = stack(y, encoded, self_mask, cross_mask, bias)
        y = LayerNorm(cfg.dtype, name="decoder_norm")(y)
        y = dropout(y, deterministic=det)
        if cfg.logits_via_embedding:
            logits = self.shared_embedding.attend(y) / jnp.sqrt(jnp.float32(y.shape[-1]))
        else:
            logits = layers.Dense(
                cfg.vocab_size, ("embed", "vocab"), jnp.float32, name="logits_dense"
            )(y)
        return layers.constrain(logits, ("batch", "length", "vocab"))


class Transformer(nn.Module):
    """T5 encoder-decoder with t5x's call signature.

    `prompt_factory` builds the prompt module placed at `encoder/prompt` (see
    `ptune.prompts`); without it this is a plain T5.
    """

    config: T5Config
    prompt_factory: Optional[Callable[[], nn.Module]] = None

    def setup(self):
        cfg = self.config
        self.token_embedder = Embed(cfg.vocab_size, cfg.emb_dim, cfg.dtype)
        self.encoder = Encoder(cfg, self.token_embedder, self.prompt_factory)
        self.decoder = Decoder(cfg, self.token_embedder)

    def encode(
        self,
        encoder_input_tokens: Array,
        *,
        enable_dropout: bool = True,
        encoder_segment_ids: Optional[Array] = None,
        prompt_index: Optional[Array] = None,
    ) -> tuple[Array, Array]:
        """tokens [b, ls] -> (encoded [b, ls', e], encoded_valid [b, ls'] bool)."""
        return self.encoder(
            encoder_input_tokens,
            enable_dropout=enable_dropout,
            encoder_segment_ids=encoder_segment_ids,
            prompt_index=prompt_index,
        )

    def decode(
        self,
        encoded: Optional[Array],
        encoded_valid: Array,
        decoder_input_tokens: Array,
        decoder_target_tokens: Optional[Array] = None,
        *,
        enable_dropout: bool = True,
        decode: bool = False,
        max_decode_length: Optional[int] = None,
        encoder_segment_ids: Optional[Array] = None,
        decoder_segment_ids: Optional[Array] = None,
    ) -> Array:
        """-> logits [b, lt, vocab] float32. See `Decoder.__call__`."""
        return self.decoder(
            encoded,
            encoded_valid,
            decoder_input_tokens,
            decoder_target_tokens,
            enable_dropout=enable_dropout,
            decode=decode,
            max_decode_length=max_decode_length,
            encoder_segment_ids=encoder_segment_ids,
            decoder_segment_ids=decoder_segment_ids,
        )

    def __call__(
        self,
        encoder_input_tokens: Array,
        decoder_input_tokens: Array,
        decoder_target_tokens: Array,
        *,
        enable_dropout: bool = True,
        encoder_segment_ids: Optional[Array] = None,
        decoder_segment_ids: Optional[Array] = None,
        prompt_index: Optional[Array] = None,
    ) -> Array:
        """encoder_input_tokens [b, ls], decoder_input_tokens [b, lt], decoder_target_tokens
        [b, lt] -> logits [b, lt, vocab] float32. Token id 0 is padding."""
        encoded, valid = self.encode(
            encoder_input_tokens,
            enable_dropout=enable_dropout,
            encoder_segment_ids=encoder_segment_ids,
            prompt_index=prompt_index,
        )
        return self.decode(
            encoded,
            valid,
            decoder_input_tokens,
            decoder_target_tokens,
            enable_dropout=enable_dropout,
            encoder_segment_ids=encoder_segment_ids,
            decoder_segment_ids=decoder_segment_ids,
        )


def abstract_variables(
    config: T5Config,
    prompt_factory=None,
    batch: int = 1,
    input_length: int = 1,
    target_length: int = 1,
):
    """Boxed abstract parameters (ShapeDtypeStructs carrying logical names); allocates nothing."""

    def trace():
        model = Transformer(config, prompt_factory)
        enc = jax.ShapeDtypeStruct((batch, input_length), jnp.int32)
        dec = jax.ShapeDtypeStruct((batch, target_length), jnp.int32)
        return jax.eval_shape(
            lambda e, d: model.init(jax.random.PRNGKey(0), e, d, d, enable_dropout=False), enc, dec
        )

    key = ("t5", config, prompt_factory, batch, input_length, target_length)
    return layers.abstract_once(key, trace)


def parameter_count(config: T5Config) -> int:
    """Total number of parameters, computed abstractly, over scanned layers: the same count
    as unscanned, but flax traces one layer per stack instead of each (about 1 s a layer)."""
    params = nn.unbox(abstract_variables(config.replace(scan_layers=True))["params"])
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))
