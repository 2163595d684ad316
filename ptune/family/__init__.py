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

`interface` holds `Family` (what every family implements) and the capabilities;
`encoder_decoder` and `decoder_only` implement it; this module tells them apart.

The numerical core: jax, flax; models, checkpoints, decoding; no TensorFlow, seqio or gin.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp

from ptune.errors import UserError
from ptune.family.decoder_only import DecoderOnly
from ptune.family.encoder_decoder import EncoderDecoder
from ptune.family.interface import CAPABILITIES, Family, PyTree, require  # noqa: F401
from ptune.models.search import Decoding  # noqa: F401  how generation decodes, re-exported

Array = jax.Array

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
    [b, ls], targets [b, lt] (the decoder's inputs are the targets shifted right). Without
    dropout, whatever rate the model is configured to train with."""
    family = family_of(model.config)
    decoder_inputs = jnp.concatenate([jnp.zeros_like(targets[:, :1]), targets[:, :-1]], axis=1)
    kwargs = {"enable_dropout": False}
    kwargs.update({} if prompt_index is None else {"prompt_index": prompt_index})
    logits = family.logits(model, params, inputs, decoder_inputs, targets, **kwargs)
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    token = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    weights = family.target_weights(targets)
    if weights is None:
        weights = targets > 0
    return jnp.sum(token * weights, axis=-1)


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
