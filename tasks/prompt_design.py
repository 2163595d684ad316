"""Prompt design, the paper's GPT-3-style baseline: the frozen model given a hand-written
instruction and/or k solved training examples in its input, with no trained parameters.

`designed(name, instruction, shots, seed)` registers a copy of a task (of each task of a
mixture) whose every input text becomes

    "<instruction> <shot 1 inputs> <shot 1 targets> ... <shot k inputs> <shot k targets> <inputs>"

(single spaces between the parts), put in front of the text just before tokenization, so the
shots are formatted exactly as the task formats its own inputs and targets (T5's taskless
text, `boolq question: ... passage: ...` -> `True`). Everything else is the task's own: source,
text steps, vocabulary, postprocessing, metrics, primary metrics, label names. A rank
classification task's every candidate gets the same prefix, so it is scored by rank
classification like the rest.

The k shots are drawn once, with `seed`, from the first `SHOT_POOL` examples of the task's
train split after its text steps (a rank classification task's train split holds only the
correct candidate of each example), and are the same for every evaluated example. The paper's
GPT-3 figures drew shots per example; one fixed draw keeps the baseline deterministic and its
inputs the same length, and several seeds give the spread a draw adds.
"""

from __future__ import annotations

import functools
import hashlib
import logging

import numpy as np
import seqio

from ptune.errors import UserError
from ptune.tasks import preprocessors, registry

log = logging.getLogger("ptune")
SHOT_POOL = 10_000  # train examples read to draw the shots from (ReCoRD's train split is 100k)


def designed(
    name: str, instruction: str | None, shots: int, seed: int = 0
) -> tuple[str, dict[str, str]]:
    """Registers (once per argument set) `name` with `instruction` and `shots` training
    examples before every input -> (the registered name, {its task: the original task})."""
    if instruction is not None and not instruction.strip():
        raise UserError("INSTRUCTION is empty: give the text to put before every input, or None")
    if shots < 0:
        raise UserError(f"SHOTS must be >= 0, got {shots}")
    if instruction is None and shots == 0:
        raise UserError("prompt design needs an INSTRUCTION, SHOTS > 0, or both")
    key = hashlib.sha256(repr((instruction, shots, seed)).encode()).hexdigest()[:10]
    originals = registry.task_names(name)
    renamed = {f"{task}_designed_{key}": task for task in originals}
    for new, task in renamed.items():
        _register_task(new, seqio.get_mixture_or_task(task), instruction, shots, seed)
    parts = [f"the instruction {instruction!r}"] if instruction else []
    parts += [f"{shots} training examples (seed {seed})"] if shots else []
    log.info("prompt design: %s before every input of %s", " and ".join(parts), name)
    if isinstance(registry.get_task_or_mixture(name), seqio.Task):
        return next(iter(renamed)), renamed
    mixture = f"{name}_designed_{key}"
    registry.add_mixture(mixture, list(renamed), default_rate=1.0, listed=False)
    return mixture, renamed


def _register_task(new: str, task: seqio.Task, instruction, shots: int, seed: int) -> None:
    steps = list(task.preprocessors)
    at = _text_end(task)
    prefix = " ".join(
        ([instruction.strip()] if instruction else [])
        + [f"{ex['inputs']} {ex['targets']}" for ex in draw_shots(task, steps[:at], shots, seed)]
    )
    registry.add_variant(
        new, task.name, [*steps[:at], functools.partial(prepend, prefix=prefix), *steps[at:]]
    )


def _text_end(task: seqio.Task) -> int:
    """Index of the task's first token step: where its text is final."""
    token_steps = (
        preprocessors.load_vocabularies,
        seqio.preprocessors.tokenize,
        seqio.preprocessors.tokenize_and_append_eos,
    )
    for i, step in enumerate(task.preprocessors):
        if getattr(step, "func", step) in token_steps:
            return i
    raise UserError(f"task {task.name} has no tokenize step: prompt design needs text inputs")


def draw_shots(task: seqio.Task, text_steps: list, shots: int, seed: int) -> list[dict]:
    """`shots` examples {"inputs": str, "targets": str} of `task`'s train split after
    `text_steps`, drawn with `seed` from its first `SHOT_POOL`, in the order drawn."""
    if shots == 0:
        return []
    if "train" not in task.splits:
        raise UserError(f"task {task.name} has no train split to draw SHOTS from")
    ds = task.source.get_dataset(split="train", shuffle=False)
    for step in text_steps:
        ds = seqio.utils.add_kwargs_to_transform(
            step, sequence_length=None, output_features=task.output_features
        )(ds)
    pool = [
        {k: ex[k].decode() for k in ("inputs", "targets")}
        for ex in ds.take(SHOT_POOL).as_numpy_iterator()
    ]
    if len(pool) < shots:
        raise UserError(
            f"task {task.name}: SHOTS={shots}, but its train split has {len(pool)} examples"
        )
    picked = np.random.default_rng(seed).choice(len(pool), size=shots, replace=False)
    return [pool[i] for i in picked]


@seqio.map_over_dataset
def prepend(ex, prefix: str):
    """The example with `prefix` and a space before its `inputs` text."""
    import tensorflow as tf

    return {**ex, "inputs": tf.strings.join([prefix, ex["inputs"]], separator=" ")}
