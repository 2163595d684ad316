"""Prompt initializers: the prompt's initial value [P, E] before training.

Initializers are gin-bindable factories returning `fn(rng, shape, context) -> [P, E]`, where
`shape` is (P, E) (prompt length, the model's embedding width) and `context` (`InitContext`)
carries the frozen embedding table [vocab, E] and, when the initializer needs them, the
vocabulary and the task's class labels. `initialize` runs one and checks its result.

    random_uniform   uniform in [-0.5, 0.5] (the paper's random initialisation)
    sampled_vocab    rows of the embedding table, drawn from the 5,000 most common tokens
    class_labels     each label's mean sub-token embedding, then sampled vocabulary
    from_text        a text's token embeddings, then sampled vocabulary
    from_file        a saved prompt (read by `ptune.checkpoints.prompt_io`)

Sampling leaves out the vocabulary's own special tokens (`special_ids`): T5's pad/eos/unk
(ids 0-2) for SentencePiece and byte vocabularies; a Hugging Face tokenizer's BOS, EOS, UNK and
added special tokens (its pad among them). `initializer_name` is what a run's records call an
initializer: what it did, so class labels over a task without labels is `sampled_vocab`.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from typing import Any, Optional, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ptune.errors import UserError
from ptune.prompts.slot import validate_length

Array = jax.Array
# Paper, Section 3: sample from the 5,000 most common tokens of T5's SentencePiece vocabulary.
TOP_K_TOKENS = 5000
# pad (0), eos (1) and unk (2) in T5's vocabulary (and seqio's byte vocabulary); sentinels lie
# above the base pieces.
SPECIAL_IDS = (0, 1, 2)

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class InitContext:
    """What an initializer may read.

    embedding: the frozen embedding table [vocab, embed].
    vocabulary: anything with `encode(text) -> list[int]` (seqio vocabularies qualify); with
      `vocab_size` and `extra_ids` (seqio), sentinel ids are never sampled; its special
      tokens never are either (`special_ids`).
    labels: the task's class label strings, for the class-label initializer.
    """

    embedding: Any
    vocabulary: Any = None
    labels: Optional[Sequence[str]] = None


class Initializer(Protocol):
    def __call__(self, rng: Array, shape: tuple[int, int], context: InitContext) -> np.ndarray: ...


def initializer_name(
    initializer: Optional[Initializer], labels: Optional[Sequence[str]] = None
) -> str:
    """What a run's records call `initializer` (None: the default, class labels) over a task
    whose class labels are `labels` (`InitContext.labels`): what it did, not what was asked.
    Class labels over a task without labels is sampled vocabulary throughout: `sampled_vocab`.
    An initializer not made here is named by its factory (`__qualname__`), else "custom"."""
    initializer = class_labels() if initializer is None else initializer
    name_for = getattr(initializer, "name_for", None)
    if callable(name_for):
        return name_for(labels)
    return getattr(initializer, "__qualname__", "custom").split(".")[0]


def special_ids(vocabulary: Any) -> tuple[int, ...]:
    """The ids of `vocabulary`'s own special tokens, which sampled vocabulary leaves out.

    A Hugging Face tokenizer (`ptune.tasks.hf_vocab.TokenizerVocabulary`, also behind a task's
    registered vocabulary while `ptune.tasks.vocab.use_tokenizer` has set it): its BOS, EOS,
    UNK and every added special token (its pad among them), but not id 0, seqio's pad by
    convention only (Qwen2's "!"). Any other vocabulary (T5's SentencePiece, seqio's bytes,
    none): `SPECIAL_IDS`, T5's pad, eos and unk.
    """
    tokenizer = _hf_tokenizer(vocabulary)
    if tokenizer is None:
        return SPECIAL_IDS
    ids = {tokenizer.eos_id, tokenizer.bos_id, tokenizer.unk_id}
    added = tokenizer.tokenizer.get_added_tokens_decoder()
    ids |= {int(i) for i, token in added.items() if token.special}
    return tuple(sorted(int(i) for i in ids if i is not None))


def _hf_tokenizer(vocabulary: Any):
    """The `TokenizerVocabulary` that encodes for `vocabulary`, or None. A registered task
    vocabulary forwards `encode` to the active tokenizer, so the bound method's owner is the
    vocabulary that encodes. Looked up in `sys.modules` because the numerical core never
    imports the tasks (nothing is a TokenizerVocabulary before its module is loaded)."""
    hf_vocab = sys.modules.get("ptune.tasks.hf_vocab")
    if hf_vocab is None or vocabulary is None:
        return None
    owner = getattr(getattr(vocabulary, "encode", None), "__self__", vocabulary)
    return owner if isinstance(owner, hf_vocab.TokenizerVocabulary) else None


def random_uniform(scale: float = 0.5, centered: bool = True):
    """Uniform in [-scale, scale] (the paper's random initialisation, scale 0.5); with
    `centered=False`, uniform in [0, scale) as the original implementation's flax
    `uniform(scale=0.5)`.

    Also usable directly as a Flax initializer `(rng, shape, dtype)`.
    """
    low = -scale if centered else 0.0

    def init(rng, shape, context_or_dtype=jnp.float32):
        dtype = context_or_dtype if not isinstance(context_or_dtype, InitContext) else jnp.float32
        return jax.random.uniform(rng, shape, dtype, minval=low, maxval=scale)

    return init


def _candidate_ids(
    context: InitContext, top_k: int, excluded: Optional[Sequence[int]]
) -> np.ndarray:
    """Ids below `top_k` (and below the sentinels), without `excluded` (None: the
    vocabulary's special ids)."""
    if excluded is None:
        excluded = special_ids(context.vocabulary)
    rows = int(np.shape(context.embedding)[0])
    vocab = context.vocabulary
    base = rows
    if hasattr(vocab, "vocab_size") and hasattr(vocab, "extra_ids"):
        base = int(vocab.vocab_size) - int(vocab.extra_ids or 0)  # leave out sentinel ids
    limit = min(top_k, base, rows)
    excluded = set(int(i) for i in excluded)
    return np.array([i for i in range(limit) if i not in excluded], dtype=np.int64)


def _sample_rows(
    rng: Array,
    count: int,
    context: InitContext,
    top_k: int,
    excluded: Optional[Sequence[int]],
    with_replacement: bool = False,
) -> np.ndarray:
    """`count` embedding rows, uniformly from the `top_k` most frequent ids: distinct ones, or
    (`with_replacement`, as the original implementation) with replacement when `count` is
    larger than the candidates."""
    if count == 0:
        return np.zeros((0, np.shape(context.embedding)[1]), np.float32)
    candidates = _candidate_ids(context, top_k, excluded)
    replace = with_replacement and count > len(candidates)
    if count > len(candidates) and not replace:
        raise UserError(
            f"cannot sample {count} distinct prompt rows from only "
            f"{len(candidates)} candidate tokens (ids < {top_k} without special ids)"
        )
    chosen = np.asarray(jax.random.choice(rng, candidates.shape[0], (count,), replace=replace))
    return np.asarray(context.embedding)[candidates[chosen]].astype(np.float32)


def sampled_vocab(
    top_k: int = TOP_K_TOKENS,
    excluded_ids: Optional[Sequence[int]] = None,
    with_replacement: bool = False,
):
    """Rows copied from the frozen embedding table, drawn without replacement from the
    `top_k` most common tokens (SentencePiece ids are ordered by frequency), leaving out
    sentinel ids and `excluded_ids` (None: the vocabulary's special tokens, `special_ids`).
    The original implementation drew from ids 0..4999 with pad/eos/unk included
    (`excluded_ids=()`) and with replacement when the prompt is longer than the candidates
    (`with_replacement=True`)."""

    def init(rng, shape, context: InitContext):
        return _sample_rows(rng, shape[0], context, top_k, excluded_ids, with_replacement)

    return init


def _token_ids(vocabulary, text: str, what: str) -> list[int]:
    if vocabulary is None:
        raise UserError(
            f"the {what} initializer needs a vocabulary (the task's output "
            "vocabulary); none was given"
        )
    ids = [int(i) for i in vocabulary.encode(text)]
    if not ids:
        raise UserError(f"{what} {text!r} tokenizes to nothing: it cannot initialise a prompt row")
    return ids


def class_labels(
    labels: Optional[Sequence[str]] = None,
    top_k: int = TOP_K_TOKENS,
    excluded_ids: Optional[Sequence[int]] = None,
    with_replacement: bool = False,
):
    """Row i is the mean embedding of the sub-tokens of label i; the remaining rows are
    sampled vocabulary. Labels default to the task's (`InitContext.labels`; a mixture's are
    those of all its tasks); a task without labels (ReCoRD, WSC) gets sampled vocabulary
    throughout, said in the log and in the records (`initializer_name`: `sampled_vocab`).
    Labels beyond the prompt length are dropped with a warning. (The paper's default
    initialisation.)"""

    def used(task_labels: Optional[Sequence[str]]) -> list:
        return list(labels) if labels is not None else list(task_labels or ())

    def init(rng, shape, context: InitContext):
        names = used(context.labels)
        if not names:
            log.info(
                "class-label initialisation: the task has no closed label set; "
                "every prompt row is sampled vocabulary (the paper's fallback)"
            )
            return _sample_rows(rng, shape[0], context, top_k, excluded_ids, with_replacement)
        if len(names) > shape[0]:
            log.warning(
                "prompt length %d < %d class labels: dropping labels %s",
                shape[0],
                len(names),
                list(names[shape[0] :]),
            )
            names = names[: shape[0]]
        table = np.asarray(context.embedding)
        label_rows = [
            table[_token_ids(context.vocabulary, name, "class label")].mean(axis=0)
            for name in names
        ]
        rest = _sample_rows(
            rng, shape[0] - len(label_rows), context, top_k, excluded_ids, with_replacement
        )
        return np.concatenate([np.stack(label_rows).astype(np.float32), rest], axis=0)

    init.name_for = lambda task_labels: "class_labels" if used(task_labels) else "sampled_vocab"
    return init


def from_text(text: str, top_k: int = TOP_K_TOKENS, excluded_ids: Optional[Sequence[int]] = None):
    """The embeddings of `text`'s tokens in order, then sampled vocabulary; a text longer
    than the prompt is cut with a warning."""

    def init(rng, shape, context: InitContext):
        ids = _token_ids(context.vocabulary, text, "prompt text")
        if len(ids) > shape[0]:
            log.warning("prompt text has %d tokens; keeping the first %d", len(ids), shape[0])
            ids = ids[: shape[0]]
        rows = np.asarray(context.embedding)[ids].astype(np.float32)
        rest = _sample_rows(rng, shape[0] - len(ids), context, top_k, excluded_ids)
        return np.concatenate([rows, rest], axis=0)

    return init


def from_file(path: str):
    """A saved prompt: `.npy`, `.safetensors`, or a PEFT prompt-tuning adapter directory
    (`adapter_model.safetensors`, key `prompt_embeddings`). The shape must be [P, E]; float64
    files (such as the original project's) are cast to float32."""

    def init(rng, shape, context: InitContext):
        del rng
        # Imported here, not above: `ptune.checkpoints` brings Orbax and TensorStore, which
        # the numerical core does not need until a prompt file is read.
        from ptune.checkpoints.prompt_io import load_prompt_file

        value = load_prompt_file(path)
        if value.shape != tuple(shape):
            raise UserError(
                f"prompt file {path}: shape {value.shape} does not match the "
                f"model's prompt [length, embed] = {tuple(shape)}"
            )
        return value

    return init


def initialize(
    initializer: Initializer, rng: Array, length: int, context: InitContext
) -> np.ndarray:
    """Runs an initializer and checks its result: [length, embed] float32, finite."""
    length = validate_length(length)
    embed = int(np.shape(context.embedding)[1])
    value = np.asarray(initializer(rng, (length, embed), context), dtype=np.float32)
    if value.shape != (length, embed):
        raise UserError(
            f"prompt initializer returned shape {value.shape}, expected {(length, embed)}"
        )
    if not np.isfinite(value).all():
        raise UserError("prompt initializer produced NaN or infinite values")
    return value
