"""T5, the encoder-decoder family (`interface.Family`; after t5x's `EncoderDecoderModel`):
batches are read in seqio's encoder-decoder layout as they are."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from ptune import decoding, prompts
from ptune.errors import UserError
from ptune.family.interface import Family, PyTree
from ptune.models import t5
from ptune.models.search import Decoding


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
