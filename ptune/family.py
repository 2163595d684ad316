"""The seam between model families: what a caller may ask of a model without asking which it is.

    family = family_of(config)                  # the one place families are told apart
    model = family.build(config, prompt_factory, layout)
    frozen = family.load_frozen(config, path, shardings=..., dtype=...)
    logits = family.logits(model, params, batch...)   # [b, lt, vocab] at the target positions
    scores = score(model, params, inputs, targets)     # [b] log-likelihoods, either family
    tokens = family.generate(model, params, inputs, max_length, Decoding(num_beams=4))
    require(family, "beam_search")              # one refusal, one message, for every command

After t5x's `EncoderDecoderModel` / `DecoderOnlyModel`. Every batch arrives in seqio's
encoder-decoder layout (`encoder_input_tokens [b, ls]`, `decoder_input_tokens [b, lt]`,
`decoder_target_tokens [b, lt]`); T5 reads it as it is, a decoder-only model lays inputs and
targets out as one sequence (`llama.CausalLM.seq2seq`) and returns the logits that predict
the targets. Records (a run's `run.json`) store a configuration as its fields; `from_record`
turns them back into the family's configuration.

The numerical core: jax, flax; models, checkpoints, decoding; no TensorFlow, seqio or gin.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from ptune import decoding, prompts
from ptune.errors import UserError
from ptune.models import attention, causal_decoding, llama, t5
from ptune.models.search import Decoding  # how generation decodes, re-exported

Array = jax.Array
PyTree = Any

# What a command may need of a family. A family lists those it supports.
CAPABILITIES = {
    "beam_search": "beam search (NUM_BEAMS)",
    "sampling": "sampling (TEMPERATURE, TOP_K, TOP_P)",
    "deep_prompts": "deep prompts (prompts/deep.gin)",
    "random_init": "random frozen weights (random_init)",
    "export_model": "export_model (the trained model as a ptune checkpoint)",
    "convert": "ptune convert",
}


class Family:
    """A model family: its configuration type, its name and what it supports.

    name: "t5" (encoder-decoder) or "decoder-only".
    capabilities: a subset of `CAPABILITIES`' keys.
    """

    name: str
    config_type: type
    capabilities: frozenset = frozenset()

    def supports(self, capability: str) -> bool:
        if capability not in CAPABILITIES:
            raise KeyError(f"unknown capability {capability!r}")
        return capability in self.capabilities

    def layers(self, config: Any) -> str:
        """The layer count as reports show it."""
        raise NotImplementedError

    def describe(self, config: Any, detail: bool = False) -> str:
        """One line naming the model: short (reports, summaries) or with heads, mlp, vocab."""
        raise NotImplementedError

    # Whether the family's tasks tokenize with the checkpoint's own tokenizer (a Hugging Face
    # directory's tokenizer.json) rather than the tasks' registered vocabularies.
    tokenizer_from_checkpoint = False

    def attention_scores(self, config: Any, lengths: Mapping[str, int], prompt: int) -> tuple:
        """(heads, query positions, key positions) of the widest attention of one layer for
        seqio `lengths` and a prompt of `prompt` vectors: what memory checks bound with."""
        raise NotImplementedError

    def build(self, config: Any, prompt_factory=None, layout: Optional[Mapping] = None):
        """The flax module of `config` with the prompt module `prompt_factory` (None: none);
        `layout`: what the data asks of the model (a decoder-only model's BOS)."""
        raise NotImplementedError

    def abstract_params(self, config: Any, prompt_factory=None) -> PyTree:
        """The parameters as shapes with logical axis names (boxed); allocates nothing."""
        raise NotImplementedError

    def init_params(self, model: nn.Module, rng: Array) -> PyTree:
        """Random parameters of `model` (unboxed)."""
        raise NotImplementedError

    def embedding(self, frozen: PyTree) -> Array:
        """The token embedding table [vocab, embed] (prompts are initialised from it)."""
        raise NotImplementedError

    def prompt_layers(self, config: Any) -> int:
        """How many layers a deep prompt spans."""
        raise NotImplementedError

    def read_embedding(self, path: str):
        """Only the token embedding table [vocab, embed] of a checkpoint, in float32 (no
        other weight is read)."""
        raise NotImplementedError

    def describe_checkpoint(self, path: str):
        """`checkpoints.Description` (format, configuration, assumed fields, count, step) of
        a checkpoint of this family, checked without reading any parameter."""
        raise NotImplementedError

    def check_checkpoint(self, path: str, config: Any) -> None:
        """Refuses (one line naming every difference) a checkpoint that does not hold the
        model `config` describes; reads no parameter."""
        raise NotImplementedError

    def load_frozen(self, config: Any, path: str, *, shardings=None, dtype=jnp.float32) -> dict:
        """The checkpoint's parameters without the prompt slot, read strictly, one array at a
        time straight into `dtype` and (with `shardings`) into each device's shards."""
        raise NotImplementedError

    def logits(self, model, params, inputs, decoder_inputs, targets, **kwargs) -> Array:
        """[b, lt, vocab]: the logits that predict `targets` [b, lt] given `inputs` [b, ls]
        (`enable_dropout`, `rngs`, `prompt_index` [b] as keywords)."""
        return model.apply({"params": params}, inputs, decoder_inputs, targets, **kwargs)

    def target_weights(self, targets: Array, weights: Optional[Array] = None):
        """Which target positions count [b, lt]: seqio's `decoder_loss_weights` (None: its
        non-zero targets)."""
        return weights

    def generate(
        self,
        model,
        params: PyTree,
        inputs: Array,
        max_length: int,
        decode: Decoding = Decoding(),
        *,
        rng: Optional[Array] = None,
        prompt_index: Optional[Array] = None,
    ) -> Array:
        """inputs [b, ls] -> [b, max_length] tokens, as `decode` says (sampling from `rng`)."""
        raise NotImplementedError

    def require_decoding(self, decode: Decoding) -> None:
        """Refuses what this family cannot decode (one line, `require`)."""
        if decode.num_beams > 1:
            require(self, "beam_search")
        if decode.temperature > 0:
            require(self, "sampling")

    def bank_generator(self, model, frozen: PyTree, bank: Any) -> Callable:
        """`fn(inputs, prompt_index, max_length, decode, rng=None) -> tokens` serving a bank
        of prompts (`bank.prompts` [K, P, E], `bank.lengths`, `bank.placement`) over `model`
        (built with the bank's prompt module) and its `frozen` weights."""
        params = prompts.with_prompt(frozen, bank.prompts)

        def generate(inputs, prompt_index, max_length, decode, rng=None):
            return self.generate(
                model, params, inputs, max_length, decode, rng=rng, prompt_index=prompt_index
            )

        return generate

    def __repr__(self) -> str:
        return f"<family {self.name}>"


class EncoderDecoder(Family):
    """T5 (t5x's `EncoderDecoderModel`): the prompt goes in front of the encoder's input."""

    name = "t5"
    config_type = t5.T5Config
    capabilities = frozenset(
        {"beam_search", "sampling", "deep_prompts", "random_init", "export_model", "convert"}
    )

    def layers(self, config: t5.T5Config) -> str:
        return f"{config.num_encoder_layers}+{config.num_decoder_layers}"

    def describe(self, config: t5.T5Config, detail: bool = False) -> str:
        short = f"t5 emb {config.emb_dim}, {self.layers(config)} layers"
        if not detail:
            return short
        return f"{short}, {config.num_heads} heads, mlp {config.mlp_dim}, vocab {config.vocab_size}"

    def attention_scores(self, config, lengths, prompt):
        encoder = lengths["inputs"] + prompt  # the encoder's self-attention
        return config.num_heads, encoder, encoder

    def build(self, config, prompt_factory=None, layout=None) -> t5.Transformer:
        return t5.Transformer(config, prompt_factory)

    def abstract_params(self, config, prompt_factory=None) -> PyTree:
        return t5.abstract_variables(config, prompt_factory)["params"]

    def init_params(self, model, rng):
        tokens = jnp.zeros((1, 1), jnp.int32)
        return nn.unbox(model.init(rng, tokens, tokens, tokens, enable_dropout=False)["params"])

    def embedding(self, frozen):
        return frozen["token_embedder"]["embedding"]

    def prompt_layers(self, config) -> int:
        return config.num_encoder_layers

    def describe_checkpoint(self, path):
        from ptune import checkpoints

        return checkpoints.describe(path)

    def check_checkpoint(self, path, config):
        from ptune import checkpoints

        checkpoints.describe(path, config)

    def read_embedding(self, path):
        from ptune import checkpoints

        source, _ = checkpoints.open_checkpoint(path)
        array = source.arrays.get("token_embedder/embedding")
        if array is None:
            raise UserError(f"{path} holds no token_embedder/embedding")
        return np.asarray(array.read(dtype=np.float32))

    def load_frozen(self, config, path, *, shardings=None, dtype=jnp.float32) -> dict:
        from ptune import checkpoints

        _, params = checkpoints.load(
            path, config, fresh=[prompts.PROMPT_PATTERN], shardings=shardings, dtype=dtype
        )
        return params

    def generate(
        self, model, params, inputs, max_length, decode=Decoding(), *, rng=None, prompt_index=None
    ):
        eos_id = 1 if decode.eos_id is None else decode.eos_id  # T5's vocabularies' EOS
        if decode.num_beams > 1:
            beams, _ = decoding.beam_search(
                model,
                params,
                inputs,
                max_length=max_length,
                num_beams=decode.num_beams,
                alpha=decode.alpha,
                eos_id=eos_id,
                prompt_index=prompt_index,
                vocab_limit=decode.vocab_limit,
            )
            return beams[:, 0]
        return decoding.generate(
            model,
            params,
            inputs,
            max_length=max_length,
            eos_id=eos_id,
            temperature=decode.temperature,
            top_k=decode.top_k,
            top_p=decode.top_p,
            rng=rng,
            prompt_index=prompt_index,
            vocab_limit=decode.vocab_limit,
        )


class DecoderOnly(Family):
    """Llama, Mistral, Qwen2 (t5x's `DecoderOnlyModel`): the prompt goes in front of (or
    after the BOS of) one causal sequence, inputs then targets (`llama.CausalLM.seq2seq`)."""

    name = "decoder-only"
    config_type = llama.LlamaConfig
    capabilities = frozenset({"beam_search", "deep_prompts", "sampling"})
    tokenizer_from_checkpoint = True

    def layers(self, config: llama.LlamaConfig) -> str:
        return str(config.num_hidden_layers)

    def describe(self, config: llama.LlamaConfig, detail: bool = False) -> str:
        short = f"decoder-only emb {config.hidden_size}, {self.layers(config)} layers"
        if not detail:
            return short
        return (
            f"{short}, {config.num_attention_heads} heads ({config.num_key_value_heads} "
            f"key/value), mlp {config.intermediate_size}, vocab {config.vocab_size}"
        )

    def attention_scores(self, config, lengths, prompt):
        sequence = prompt + 1 + lengths["inputs"] + lengths["targets"]  # [prompt] BOS in out
        queries = min(sequence, attention.query_chunk(sequence))  # one chunk's at a time
        return config.num_attention_heads, queries, sequence

    def build(self, config, prompt_factory=None, layout=None) -> llama.CausalLM:
        return llama.CausalLM(config, prompt_factory, **(layout or {}))

    def abstract_params(self, config, prompt_factory=None) -> PyTree:
        return llama.abstract_params(config, prompt_factory)

    def init_params(self, model, rng):
        return nn.unbox(model.init(rng, jnp.zeros((1, 1), jnp.int32))["params"])

    def embedding(self, frozen):
        return frozen["embed_tokens"]

    def prompt_layers(self, config) -> int:
        return config.num_hidden_layers

    def describe_checkpoint(self, path):
        from ptune.checkpoints import hf_causal, hub, loading

        config = hf_causal.read_config(hub.resolve(path))
        self.check_checkpoint(path, config)
        count = llama.parameter_count(config)
        return loading.Description(path, "hf (decoder-only)", config, {}, count, None)

    def check_checkpoint(self, path, config):
        from ptune.checkpoints import hf_causal

        hf_causal.check(path, config)

    def read_embedding(self, path):
        from ptune.checkpoints import hf_causal, hub

        tensors = hf_causal.tensors(hub.resolve(path))
        if "model.embed_tokens.weight" not in tensors:
            raise UserError(f"{path} holds no model.embed_tokens.weight")
        return tensors["model.embed_tokens.weight"].read(dtype=np.float32)

    def load_frozen(self, config, path, *, shardings=None, dtype=jnp.float32) -> dict:
        """A Hugging Face decoder-only directory, strictly (`hf_causal.load`)."""
        from ptune.checkpoints import hf_causal

        stated, params = hf_causal.load(
            path, dtype=dtype, scan_layers=config.scan_layers, shardings=shardings
        )
        differing = [
            k for k in llama.ARCHITECTURE_FIELDS if getattr(stated, k) != getattr(config, k)
        ]
        if differing:
            raise UserError(f"{path} is not the configured model: {', '.join(differing)} differ")
        return params if shardings is not None else jax.tree_util.tree_map(jnp.asarray, params)

    def logits(self, model, params, inputs, decoder_inputs, targets, **kwargs):
        return model.apply(
            {"params": params},
            inputs,
            decoder_inputs,
            targets,
            method=llama.CausalLM.seq2seq,
            **kwargs,
        )

    def target_weights(self, targets, weights=None):
        """Every position up to the EOS counts: the tokenizer may have a real token 0 ("!"
        in Llama 3's and Qwen2's), which seqio's weights would drop."""
        steps = jnp.arange(targets.shape[1], dtype=jnp.int32)
        return (steps[None] < llama.real_length(targets)[:, None]).astype(jnp.float32)

    def generate(
        self, model, params, inputs, max_length, decode=Decoding(), *, rng=None, prompt_index=None
    ):
        return causal_decoding.seq2seq_generate(
            model, params, inputs, max_length, decode, rng=rng, prompt_index=prompt_index
        )

    def bank_generator(self, model, frozen, bank) -> causal_decoding.PromptCacheGenerator:
        return causal_decoding.PromptCacheGenerator(self, model, frozen, bank)


T5 = EncoderDecoder()
DECODER_ONLY = DecoderOnly()
FAMILIES = (T5, DECODER_ONLY)


def family_of(config: Any) -> Family:
    """The family of a model configuration (a `T5Config` or a `LlamaConfig`)."""
    for family in FAMILIES:
        if isinstance(config, family.config_type):
            return family
    raise TypeError(f"not a model configuration: {config!r}")


def is_config(value: Any) -> bool:
    """Whether `value` is a model configuration of some family."""
    return isinstance(value, tuple(f.config_type for f in FAMILIES))


def of_checkpoint(path: str) -> Family:
    """The family of the model a checkpoint holds: a Hugging Face decoder-only directory (or
    a hub id of one in the local cache) is decoder-only; every other format holds a T5."""
    from ptune.checkpoints import hf_causal

    return DECODER_ONLY if hf_causal.is_causal_dir(path) else T5


@functools.partial(jax.jit, static_argnames=("model",))
def score(model, params: PyTree, inputs: Array, targets: Array, prompt_index=None) -> Array:
    """Log-likelihood of each target sequence [b] (summed over its real tokens) given inputs
    [b, ls], targets [b, lt] (the decoder's inputs are the targets shifted right)."""
    family = family_of(model.config)
    decoder_inputs = jnp.concatenate([jnp.zeros_like(targets[:, :1]), targets[:, :-1]], axis=1)
    kwargs = {} if prompt_index is None else {"prompt_index": prompt_index}
    logits = family.logits(model, params, inputs, decoder_inputs, targets, **kwargs)
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    token = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    weights = family.target_weights(targets)
    if weights is None:
        weights = targets > 0
    return jnp.sum(token * weights, axis=-1)


def require(family: Family, capability: str, context: str = "") -> None:
    """Refuses, in one line, what `family` cannot do (the one message for every command)."""
    if not family.supports(capability):
        can = [f.name for f in FAMILIES if f.supports(capability)]
        where = f" ({context})" if context else ""
        raise UserError(
            f"{CAPABILITIES[capability]} is not supported for {family.name} models{where}; "
            f"supported for: {', '.join(can) or 'none yet'}"
        )


def from_record(fields: Optional[Mapping[str, Any]]) -> Optional[Any]:
    """A configuration from its recorded fields (`dataclasses.asdict`), or None if the record
    is not one of a known family's (a report reads what it can)."""
    if not isinstance(fields, Mapping):
        return None
    for family in FAMILIES:
        names = {f.name for f in dataclasses.fields(family.config_type)}
        required = {
            f.name
            for f in dataclasses.fields(family.config_type)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        if required <= set(fields) and set(fields) <= names:
            try:
                return family.config_type(**{k: _frozen(v) for k, v in fields.items()})
            except (TypeError, ValueError, UserError):
                return None
    return None


def _frozen(value: Any) -> Any:
    """JSON lists back into the tuples the configurations hold."""
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value
