"""The frozen model a command runs over, configured by the same fields in every command.

`ptune train`, `eval`, `infer` and `ensemble` each put prompts into one frozen model. What
names that model and how it runs is declared once, here, and each command's configuration
extends it (`trainer.TrainConfig`, `evaluation.EvalConfig`, `infer.InferConfig`;
`infer.EnsembleConfig` holds an `EvalConfig`), so a field means one thing everywhere and the
gin path differs only by the command (`evaluation.EvalConfig.frozen_dtype`,
`trainer.TrainConfig.frozen_dtype`, ...). One path turns it into a run:

    model = cfg.resolve()                       # configuration; the tasks' tokenizer
    run = model.assemble(prompt_factory=...)    # mesh, shardings, frozen dtype (`ptune.recipe`)
    frozen = run.load_frozen(cfg.checkpoint_path)

Resolving sets the data layout a decoder-only model's tasks are read with (its checkpoint's
tokenizer, `model_layout`); seqio's task registry is process-wide, so a process runs one
frozen model at a time, and each run resolves its own before it reads any task.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Mapping, Optional, Sequence

from ptune import buckets, family, model_config, partitioning, prompts, recipe
from ptune.errors import UserError

log = logging.getLogger("ptune")

DTYPES = ("float32", "bfloat16", "float16")  # what frozen weights may be stored in


@dataclasses.dataclass(frozen=True, kw_only=True)
class FrozenModel:
    """The fields every command's configuration shares (keyword-only, after its own).

    checkpoint_path: the frozen model (t5x, Hugging Face directory or hub id, ptune
      conversion); bound from INITIAL_CHECKPOINT_PATH.
    model: None takes the checkpoint's configuration; a model gin file's fields (or a whole
      T5Config / LlamaConfig) must agree with it (`model_config.resolve_model_config`).
    frozen_dtype: the frozen weights' dtype ("bfloat16" halves their memory); None: float32.
    partitioning: the device mesh and axis rules (`ptune.partitioning`).
    prompt: the prompt's shape and placement (None: a run without a prompt, model tuning).
    length_buckets: each batch padded to the length bucket of its longest example
      (`ptune.buckets`); None: every batch padded to one shape.
    """

    checkpoint_path: Optional[str] = None
    model: model_config.ModelSpec = None
    frozen_dtype: Optional[str] = dataclasses.field(default=None, metadata={"choices": DTYPES})
    partitioning: partitioning.MeshConfig = partitioning.MeshConfig()
    prompt: Optional[prompts.PromptConfig] = prompts.PromptConfig()
    length_buckets: Optional[buckets.LengthBuckets] = buckets.LengthBuckets()

    def resolve(self, *, what: str = "the run", needs_checkpoint: bool = True) -> "ResolvedModel":
        """The model's configuration (model fields reconciled with the checkpoint's), and the
        layout the tasks are read with from here on; one UserError before any work."""
        if needs_checkpoint and self.checkpoint_path is None:
            raise UserError(
                f"INITIAL_CHECKPOINT_PATH is required: {what} runs over a pretrained frozen model"
            )
        config = model_config.resolve_model_config(self.model, self.checkpoint_path, what=what)
        return ResolvedModel(self, config, model_layout(config, self.checkpoint_path))

    def placement(self) -> str:
        """Where a saved prompt sits (`prompts.PromptConfig.placement`)."""
        if self.prompt is None:
            raise UserError(
                "prompt is None, but the saved prompts need their placement: bind "
                "prompts.PromptConfig.placement (the one they were trained with)"
            )
        return self.prompt.placement


@dataclasses.dataclass(frozen=True)
class ResolvedModel:
    """A `FrozenModel` with its configuration resolved and its tasks' layout in place."""

    spec: FrozenModel
    config: model_config.ModelConfig
    layout: Optional[Mapping[str, Any]]  # a decoder-only model's BOS / input EOS; T5: None

    def assemble(
        self,
        *,
        prompt_factory: Optional[Callable[..., Any]] = None,
        trainable: Optional[Sequence[str]] = None,
        optimizer: Any = None,
    ) -> recipe.Run:
        """The run (`recipe.assemble`) on the spec's mesh and frozen dtype; allocates nothing."""
        return recipe.assemble(
            self.config,
            prompt_factory=prompt_factory,
            mesh=self.spec.partitioning,
            trainable=trainable,
            optimizer=optimizer,
            frozen_dtype=self.spec.frozen_dtype,
            causal_layout=self.layout,
        )


def model_layout(config, checkpoint_path: Optional[str]) -> Optional[dict]:
    """What a run's model needs from the data before any task is read: for a family whose
    tasks tokenize with the checkpoint's tokenizer, `causal_layout` of its checkpoint; else
    None, with every task back on its own vocabulary (an earlier decoder-only run in this
    process may have switched them)."""
    from ptune.tasks import vocab

    if not family.family_of(config).tokenizer_from_checkpoint:
        vocab.use_tokenizer(None)
        return None
    if checkpoint_path is None:
        raise UserError(
            "a decoder-only model needs INITIAL_CHECKPOINT_PATH: its Hugging Face directory "
            "(weights and tokenizer)"
        )
    return causal_layout(checkpoint_path)


def causal_layout(checkpoint_path: str) -> dict:
    """A decoder-only run's data: every task tokenizes with the tokenizer in the model's
    Hugging Face directory (`ptune.tasks.vocab.use_tokenizer`; a directory without
    tokenizer.json is one error) -> `llama.CausalLM`'s layout fields (its BOS, if the
    tokenizer adds one; seqio's input EOS dropped so targets follow the input text)."""
    from ptune.checkpoints import hub
    from ptune.tasks import vocab

    directory = hub.resolve(checkpoint_path)
    vocab.use_tokenizer(directory)
    tokenizer = vocab.active_tokenizer()
    log.info(
        "vocabulary: every task tokenizes with %s's tokenizer (%d ids, BOS %s, EOS %d)",
        checkpoint_path,
        tokenizer.vocab_size,
        tokenizer.bos_id,
        tokenizer.eos_id,
    )
    return {"bos_id": tokenizer.bos_id, "drop_input_eos": True}
