"""The prompt of a run (`PromptConfig`) and the prompt modules' factories.

A factory is the `prompt_factory` argument of `t5.Transformer` (and of the decoder-only
models): a callable building the prompt module (`ptune.prompts.modules`), so the model fixes
the embedding width E and, for deep prompts, the layer count.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence

from flax import linen as nn

from ptune.errors import UserError
from ptune.prompts.modules import (
    PLACEMENTS,
    DeepPrompt,
    MultiTask,
    MultiTaskPrompt,
    Prompt,
    PromptBank,
    Residual,
)
from ptune.prompts.slot import validate_length


@dataclasses.dataclass(frozen=True)
class ModuleFactory:
    """A prompt module's class with some of its fields: called (with the rest, e.g. `name`)
    it builds the module. Equal by value, unlike `functools.partial`: two runs configured
    alike build equal models, so what jax compiled for the first (decoding, scoring: jitted
    with the model as a static argument) serves the second without tracing again."""

    module: type
    fields: tuple  # ((name, value), ...): hashable values

    def __call__(self, *args, **kwargs) -> nn.Module:
        return self.module(*args, **dict(self.fields), **kwargs)


def _factory(module: type, **fields) -> ModuleFactory:
    return ModuleFactory(module, tuple(fields.items()))


def takes_index(factory: Optional[Callable[..., nn.Module]]) -> bool:
    """Whether the prompt module picks a prompt per example (`prompt_index` [b])."""
    return factory is not None and isinstance(factory(), (PromptBank, MultiTaskPrompt))


def bank_factory(lengths: Sequence[int], placement: str = "prefix") -> Callable[..., nn.Module]:
    """The `prompt_factory` argument of `t5.Transformer` for a bank of prompts."""
    lengths = tuple(validate_length(n) for n in lengths)
    if not lengths:
        raise UserError("a prompt bank needs at least one prompt")
    return _factory(PromptBank, lengths=lengths, placement=placement)


def prompt_factory(
    length: int, placement: str = "prefix", residual: Optional[Residual] = None
) -> Callable[..., nn.Module]:
    """The `prompt_factory` argument of `t5.Transformer` for a single trainable prompt."""
    validate_length(length)
    return _factory(Prompt, length=length, placement=placement, residual=residual)


def deep_factory(length: int) -> Callable[..., nn.Module]:
    """The `prompt_factory` argument of `t5.Transformer` for deep (per-layer) prompts."""
    validate_length(length)
    return _factory(DeepPrompt, length=length)


def multi_task_factory(
    length: int, num_tasks: int, multi_task: MultiTask, placement: str = "prefix"
) -> Callable[..., nn.Module]:
    """The `prompt_factory` argument of `t5.Transformer` for multi-task prompts."""
    validate_length(length)
    return _factory(
        MultiTaskPrompt,
        length=length,
        num_tasks=num_tasks,
        multi_task=multi_task,
        placement=placement,
    )


@dataclasses.dataclass(frozen=True)
class PromptConfig:
    """The prompt of a run, one vocabulary for every command.

    length: prompt vectors P (training); the commands that read prompt files take P from them.
    initializer: an initializer factory's result (`ptune.prompts.initializers`); None is the
      paper's default, class labels (sampled vocabulary for a task without labels, said in
      the log).
    placement: `prefix` | `after_bos` | `suffix` (see `insert_prompt`).
    residual: None, or the residual reparameterisation used while training (`Residual`).
    multi_task: None, or one prompt per task of a mixture (`MultiTask`).
    deep: a prompt at the input of every layer (T5: of the encoder; `DeepPrompt`; prefix
      placement).
    """

    length: int = dataclasses.field(default=100, metadata={"min": 1})
    initializer: Any = None
    placement: str = dataclasses.field(default="prefix", metadata={"choices": PLACEMENTS})
    residual: Optional[Residual] = None
    multi_task: Optional[MultiTask] = None
    deep: bool = False

    def __post_init__(self):
        validate_length(self.length)
        if self.placement not in PLACEMENTS:
            raise UserError(f"prompt placement must be one of {PLACEMENTS}, got {self.placement!r}")
        chosen = [
            name
            for name, on in (
                ("prompts/residual.gin", self.residual is not None),
                ("prompts/multi_task.gin", self.multi_task is not None),
                ("prompts/deep.gin", self.deep),
            )
            if on
        ]
        if len(chosen) > 1:
            raise UserError(f"{' and '.join(chosen)} do not combine yet: choose one")
        if self.deep and self.placement != "prefix":
            raise UserError(
                f"deep prompts take prefix placement only (each layer's prompt replaces the "
                f"first {self.length} positions), got placement {self.placement!r}"
            )

    def factory(self, num_tasks: Optional[int] = None) -> Callable[..., nn.Module]:
        """The prompt module; multi-task prompts need the mixture's task count."""
        if self.multi_task is not None:
            if not num_tasks:
                raise UserError("multi-task prompts need the number of tasks of the mixture")
            return multi_task_factory(self.length, num_tasks, self.multi_task, self.placement)
        if self.deep:
            return deep_factory(self.length)
        return prompt_factory(self.length, self.placement, self.residual)

    def describe(self) -> dict:
        """What a run's fingerprint records of the prompt (the initializer may change)."""
        return {
            "length": self.length,
            "placement": self.placement,
            **({"residual": dataclasses.asdict(self.residual)} if self.residual else {}),
            **({"multi_task": dataclasses.asdict(self.multi_task)} if self.multi_task else {}),
            **({"deep": True} if self.deep else {}),
        }
