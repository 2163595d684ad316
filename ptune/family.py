"""The seam between model families: what a caller may ask of a model without asking which it is.

    family = family_of(config)                # the one place families are told apart
    family.describe(config)                   # "t5 emb 768, 12+12 layers" / "decoder-only ..."
    require(family, "beam_search")            # one refusal, one message, for every command

A family (after t5x's `EncoderDecoderModel` / `DecoderOnlyModel`) names its configuration
type and the capabilities it supports. Records (a run's `run.json`) store a configuration as
its fields; `from_record` turns them back into the family's configuration.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

from ptune.errors import UserError
from ptune.models import llama, t5

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


class DecoderOnly(Family):
    """Llama, Mistral, Qwen2 (t5x's `DecoderOnlyModel`): the prompt goes in front of (or
    after the BOS of) one causal sequence, inputs then targets."""

    name = "decoder-only"
    config_type = llama.LlamaConfig

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


T5 = EncoderDecoder()
DECODER_ONLY = DecoderOnly()
FAMILIES = (T5, DECODER_ONLY)


def family_of(config: Any) -> Family:
    """The family of a model configuration (a `T5Config` or a `LlamaConfig`)."""
    for family in FAMILIES:
        if isinstance(config, family.config_type):
            return family
    raise TypeError(f"not a model configuration: {config!r}")


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
