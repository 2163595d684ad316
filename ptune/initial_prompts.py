"""A run's initial prompt values, from its `PromptConfig`'s initializer over the frozen
embedding and the task's vocabulary and labels (`ptune.prompts.initializers`).

    value = initial_values(prompt_config, embedding, task, seed, bank=..., layers=...)

-> a prompt [P, E]; a deep prompt [layers, P, E]; or multi-task prompts (the bank [K, P, E]
and a shared prompt [P', E]), as the prompt module's parameters hold them (`Run.place_prompt`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import jax
import numpy as np

from ptune import data, partitioning, prompts


def initial_values(
    prompt: prompts.PromptConfig,
    embedding: Any,
    task: str,
    seed: int,
    *,
    bank: Optional[Sequence[str]] = None,
    layers: Optional[int] = None,
) -> Any:
    """The initial value of the prompt module `prompt` describes (see the module docstring);
    `bank`: the tasks of multi-task prompts; `layers`: how many layers a deep prompt spans."""
    table = partitioning.gather(embedding).astype(np.float32)
    if bank:
        return initial_bank(prompt, table, bank, seed, task)
    if prompt.deep:
        return initial_deep(prompt, table, task, seed, layers)
    return initial_prompt(prompt, table, task, seed)


def initial_prompt(
    prompt: prompts.PromptConfig, embedding: np.ndarray, task: str, seed: int, stream: int = 1
) -> np.ndarray:
    """[P, E] from the configured initializer over the frozen `embedding` [vocab, E], with the
    vocabulary and labels of `task`; `stream` separates the random draws of prompts."""
    from ptune.tasks import registry

    init = prompt.initializer or prompts.class_labels()
    context = prompts.InitContext(
        embedding=embedding,
        vocabulary=data.output_vocabulary(task),
        labels=registry.label_names(task),
    )
    rng = jax.random.fold_in(jax.random.PRNGKey(seed), stream)
    return prompts.initialize(init, rng, prompt.length, context)


def initial_deep(
    prompt: prompts.PromptConfig, embedding: np.ndarray, task: str, seed: int, layers: int
) -> np.ndarray:
    """Deep prompts' initial values [layers, P, E]: every layer's prompt from the configured
    initializer (layer 0's exactly the plain prompt's; the others from their own draws)."""
    return np.stack(
        [
            initial_prompt(prompt, embedding, task, seed, stream=1 if i == 0 else 2000 + i)
            for i in range(layers)
        ]
    )


def initial_bank(
    prompt: prompts.PromptConfig,
    embedding: np.ndarray,
    tasks: Sequence[str],
    seed: int,
    mixture: str,
) -> dict:
    """Multi-task prompts' initial values: task k's prompt [P, E] from the initializer with
    task k's labels; the shared prompt zero for "add" (so each task starts where its own
    single-task run would), from the initializer with the mixture's labels for "concat"."""
    multi = prompt.multi_task
    bank = np.stack(
        [initial_prompt(prompt, embedding, task, seed, 1000 + k) for k, task in enumerate(tasks)]
    )
    out = {prompts.PROMPT_PATH[-1]: bank}
    if multi.combine == "add":
        out["shared"] = np.zeros(bank.shape[1:], np.float32)
    elif multi.combine == "concat":
        shared = dataclasses.replace(prompt, length=multi.shared_rows(prompt.length))
        out["shared"] = initial_prompt(shared, embedding, mixture, seed)
    return out
