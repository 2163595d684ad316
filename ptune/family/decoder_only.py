"""Decoder-only models, Llama, Mistral, Qwen2/3 (`interface.Family`; after t5x's
`DecoderOnlyModel`): a seqio encoder-decoder batch is laid out as one causal sequence,
inputs then targets (`llama.CausalLM.seq2seq`), and the logits that predict the targets are
returned."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from ptune.errors import UserError
from ptune.family.interface import Family, PyTree
from ptune.models import attention, causal_decoding, llama
from ptune.models.search import Decoding


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
