"""The interface every model family implements (`ptune.family` says which family a
configuration belongs to; `encoder_decoder` and `decoder_only` implement it), and the
capabilities a command may need of a family, each refused in one line by `require`.

The numerical core: jax, flax; no TensorFlow, seqio or gin.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
from flax import linen as nn

from ptune import prompts
from ptune.errors import UserError
from ptune.models.search import Decoding

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


def require(family: Family, capability: str, context: str = "") -> None:
    """Refuses, in one line, what `family` cannot do (the one message for every command)."""
    if not family.supports(capability):
        can = sorted(f.name for f in Family.__subclasses__() if capability in f.capabilities)
        where = f" ({context})" if context else ""
        raise UserError(
            f"{CAPABILITIES[capability]} is not supported for {family.name} models{where}; "
            f"supported for: {', '.join(can) or 'none yet'}"
        )
