"""The model of a run: its configuration, from the model gin file, the checkpoint, or both.

    config = resolve_model_config(model_fields, checkpoint_path)   # a T5Config or LlamaConfig

Model configuration comes from, in order: the model gin file (the `t5.T5Config` or
`llama.LlamaConfig` fields gin binds), else the checkpoint's own (Hugging Face `config.json`,
ptune's stored config, or shapes of a t5x checkpoint, with the fields shapes cannot tell
logged as assumed). With both, the architecture fields they both state must agree; with
neither, every command stops before any work and says what to add. Nothing here builds a
model from `T5Config`'s defaults (its architecture fields have none).

The numerical core: no TensorFlow, seqio or gin.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Mapping, Optional, Union

from ptune import family as family_lib
from ptune.errors import UserError
from ptune.models import llama, t5

log = logging.getLogger("ptune")
ModelConfig = Union[t5.T5Config, llama.LlamaConfig]
ModelSpec = Union[ModelConfig, Mapping[str, Any], None]
LLAMA_FIELDS = frozenset(f.name for f in dataclasses.fields(llama.LlamaConfig))

NO_MODEL = (
    "no model configured: add a model file (--gin_file=models/<model>.gin; `ls` the installed "
    "gin/models folder for sizes) or set INITIAL_CHECKPOINT_PATH to a checkpoint that carries "
    "its configuration (a Hugging Face directory or hub id, a ptune conversion, a t5x checkpoint)"
)


def _fields(model: ModelSpec) -> dict[str, Any]:
    if model is None:
        return {}
    if family_lib.is_config(model):
        return dataclasses.asdict(model)
    if not isinstance(model, Mapping):
        raise UserError(f"model must be a T5Config, a LlamaConfig or its fields, got {model!r}")
    if _is_llama(model):
        return dict(model)
    unknown = sorted(set(model) - {f.name for f in dataclasses.fields(t5.T5Config)})
    if unknown:
        raise UserError(f"unknown T5Config fields: {', '.join(unknown)}")
    return dict(model)


def _is_llama(fields: Mapping[str, Any]) -> bool:
    """Whether model-file fields are a decoder-only model's (`llama.LlamaConfig`)."""
    return bool(fields) and set(fields) <= LLAMA_FIELDS and "hidden_size" in fields


def _family_of_spec(given: Mapping[str, Any], checkpoint_path: Optional[str]):
    """The family a run's model belongs to before its configuration exists: decoder-only for
    `LlamaConfig` fields or a Hugging Face decoder-only checkpoint, else T5."""
    if _is_llama(given) or (
        checkpoint_path is not None
        and family_lib.of_checkpoint(checkpoint_path) is family_lib.DECODER_ONLY
    ):
        return family_lib.DECODER_ONLY
    return family_lib.T5


def _comparable(name: str, value: Any) -> Any:
    """A field's value as T5Config stores it (mlp_activations: a tuple, as gin may give a
    string or a list)."""
    if name == "mlp_activations":
        return (value,) if isinstance(value, str) else tuple(value)
    return value


def resolve_model_config(
    model: ModelSpec,
    checkpoint_path: Optional[str],
    *,
    what: str = "the run",
) -> ModelConfig:
    """The model of a run: `model` (a full T5Config or LlamaConfig, or the fields a model gin
    binds, or None) reconciled with the checkpoint's configuration (None: a run without a
    checkpoint). A Hugging Face decoder-only directory, or a model file of `LlamaConfig`
    fields, makes it a decoder-only run.

    Raises one UserError when there is no model at all, when a model file leaves architecture
    fields unset and no checkpoint states them, or when the model file and the checkpoint
    disagree (listing every differing field)."""
    given = _fields(model)
    return _RESOLVERS[_family_of_spec(given, checkpoint_path)](given, checkpoint_path, what)


def _resolve_t5(given: Mapping[str, Any], checkpoint_path: Optional[str], what: str):
    """The T5 branch of `resolve_model_config`: a model file, the checkpoint's stated (or
    shape-inferred) configuration, or both in agreement."""
    stated, assumed, source = None, {}, None
    if checkpoint_path is not None:
        from ptune import checkpoints

        complete = all(k in given for k in t5.ARCHITECTURE_FIELDS)
        try:
            described = checkpoints.describe(checkpoint_path)
            stated, assumed = described.config, described.assumed
            source = f"{described.format} checkpoint {described.path}"
        except UserError:
            if not complete:
                raise
            # Shapes that do not fit the model file: the strict restore lists them.
    if stated is None:
        if not given:
            raise UserError(NO_MODEL)
        missing = [k for k in t5.ARCHITECTURE_FIELDS if k not in given]
        if missing:
            raise UserError(
                f"the model configuration of {what} leaves {', '.join(missing)} unset and no "
                "checkpoint states them: use a complete models/*.gin file"
            )
        config = _build(given)
        log.info("model: from the model gin file (%s)", _describe(config))
        return config
    differing = [
        f"{k} (model file {_comparable(k, given[k])!r}, checkpoint "
        f"{_comparable(k, getattr(stated, k))!r})"
        for k in t5.ARCHITECTURE_FIELDS
        if k in given
        and k not in assumed
        and _comparable(k, given[k]) != _comparable(k, getattr(stated, k))
    ]
    if differing:
        raise UserError(
            f"the model file contradicts {source}: "
            + "; ".join(differing)
            + " (drop the model file to use the checkpoint's configuration)"
        )
    config = _build({**dataclasses.asdict(stated), **given})
    unset_assumed = {k: v for k, v in assumed.items() if k not in given}
    log.info(
        "model: from the %s (%s)%s",
        source,
        _describe(config),
        "; assumed " + "; ".join(f"{k}: {v}" for k, v in unset_assumed.items())
        if unset_assumed
        else "",
    )
    return config


def _resolve_llama(
    given: Mapping[str, Any], checkpoint_path: Optional[str], what: str
) -> llama.LlamaConfig:
    """The decoder-only branch of `resolve_model_config`: a model file (`llama.LlamaConfig`
    fields), a Hugging Face directory's config.json, or both in agreement."""
    from ptune.checkpoints import hf_causal, hub

    if set(given) - LLAMA_FIELDS:
        raise UserError(
            f"the model file describes a T5, but {checkpoint_path} is a decoder-only "
            "Hugging Face model: drop the T5 model file"
        )
    if checkpoint_path is None:
        missing = [k for k in llama.ARCHITECTURE_FIELDS[:10] if k not in given]
        if missing:
            raise UserError(
                f"the model configuration of {what} leaves {', '.join(missing)} unset and no "
                "checkpoint states them: use a complete models/*.gin file"
            )
        config = _build(given, llama.LlamaConfig)
        log.info("model: from the model gin file (%s)", _describe(config))
        return config
    if family_lib.of_checkpoint(checkpoint_path) is not family_lib.DECODER_ONLY:
        raise UserError(
            f"the model file describes a decoder-only model, but {checkpoint_path} is not a "
            "Hugging Face decoder-only directory (config.json + safetensors)"
        )
    stated = hf_causal.read_config(hub.resolve(checkpoint_path))
    fixed = {k: v for k, v in given.items() if k in llama.ARCHITECTURE_FIELDS}
    differing = [
        f"{k} (model file {v!r}, checkpoint {getattr(stated, k)!r})"
        for k, v in fixed.items()
        if getattr(stated.replace(**{k: v}), k) != getattr(stated, k)
    ]
    if differing:
        raise UserError(
            f"the model file contradicts {checkpoint_path}/config.json: "
            + "; ".join(differing)
            + " (drop the model file to use the checkpoint's configuration)"
        )
    config = stated.replace(**given)
    log.info("model: from %s/config.json (%s)", checkpoint_path, _describe(config))
    return config


_RESOLVERS = {family_lib.T5: _resolve_t5, family_lib.DECODER_ONLY: _resolve_llama}


def _build(fields: Mapping[str, Any], kind=t5.T5Config) -> ModelConfig:
    try:
        return kind(**fields)
    except (TypeError, ValueError) as e:
        raise UserError(str(e)) from e


def _describe(config: ModelConfig) -> str:
    return family_lib.family_of(config).describe(config, detail=True)
