"""The SentencePiece vocabulary every T5-format task tokenizes with.

Tasks are registered at import time, but the vocabulary file is often chosen later (a gin-bound
CLI argument, a test fixture, an environment variable on a machine without GCS access). So the
vocabulary registered with the tasks is a `LazySentencePieceVocabulary` that resolves its path
each time it loads: the path in force when a dataset is first tokenized wins, and changing it
afterwards reloads the model. Resolution order: `set_sentencepiece_path()` > `$PTUNE_SPM_PATH` >
`DEFAULT_SPM_PATH`.

T5 1.1 (and the paper's LM-adapted checkpoints) use `cc_all.32000.100extra`: 32,000 pieces plus
100 sentinels `<extra_id_0..99>` numbered down from id 32,099, so `vocab_size == 32,100`. mT5 uses
`mc4.250000.100extra` (250,100 ids); select it with `set_sentencepiece_path("mt5")` or
`PTUNE_SPM_PATH=mt5`.

Decoder-only models (Llama, Qwen2, Mistral) read their own tokenizer's ids instead:
`use_tokenizer(model_dir)` makes both registered vocabularies (this SentencePiece one and the
demo's byte vocabulary) answer every call with that `hf_vocab.TokenizerVocabulary`, so every
task already registered tokenizes with it; `use_tokenizer(None)` switches back. The tokenizer in
force when a dataset is built (its tokenization traced) is the one it uses.
"""

from __future__ import annotations

import os

import seqio
import tensorflow as tf

from ptune import remote
from ptune.errors import UserError
from ptune.tasks.hf_vocab import TokenizerVocabulary

DEFAULT_SPM_PATH = "gs://t5-data/vocabs/cc_all.32000.100extra/sentencepiece.model"
MT5_SPM_PATH = "gs://t5-data/vocabs/mc4.250000.100extra/sentencepiece.model"
ENV_VAR = "PTUNE_SPM_PATH"
EXTRA_IDS = 100

# Short names accepted wherever a path is, so a gin file can say "mt5" instead of the gs:// URL.
ALIASES = {"t5": DEFAULT_SPM_PATH, "mt5": MT5_SPM_PATH}

_override: str | None = None
_active_tokenizer: TokenizerVocabulary | None = None


def use_tokenizer(path: str | None) -> None:
    """Makes every registered task tokenize with the Hugging Face tokenizer at `path` (a model
    directory or its tokenizer.json; a UserError if it has none); `None` switches back to the
    vocabularies the tasks were registered with."""
    global _active_tokenizer
    _active_tokenizer = None if path is None else TokenizerVocabulary(path)


def active_tokenizer() -> TokenizerVocabulary | None:
    """The tokenizer set by `use_tokenizer`, or None while tasks use their own vocabularies."""
    return _active_tokenizer


class _Forwarded:
    """A member of `_FollowsActiveTokenizer`: read from the active tokenizer while
    `use_tokenizer` has set one, else from the vocabulary's own class (a property's value,
    or a bound method)."""

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, vocabulary, owner=None):
        if vocabulary is None:
            return self
        source = _active_tokenizer or super(_FollowsActiveTokenizer, vocabulary)
        return getattr(source, self.name)


class _FollowsActiveTokenizer:
    """Mixin for the vocabularies tasks are registered with: while `use_tokenizer` has set a
    tokenizer, every member seqio or ptune reads answers from it; otherwise the base class does.
    The members are listed one by one so that nothing else is forwarded by accident."""

    vocab_size = _Forwarded()
    _base_vocab_size = _Forwarded()
    eos_id = _Forwarded()
    bos_id = _Forwarded()
    pad_id = _Forwarded()
    unk_id = _Forwarded()
    extra_ids = _Forwarded()
    encode = _Forwarded()
    decode = _Forwarded()
    encode_tf = _Forwarded()
    decode_tf = _Forwarded()
    _encode = _Forwarded()
    _decode = _Forwarded()
    _encode_tf = _Forwarded()
    _decode_tf = _Forwarded()


def set_sentencepiece_path(path: str | None) -> None:
    """Points every registered SentencePiece task at `path` (a file, gs:// URL or alias).

    `None` clears the override, falling back to `$PTUNE_SPM_PATH` then the T5 default. The CLI
    calls this from a gin-bound argument; tasks already registered pick it up on next use.
    """
    global _override
    _override = path


def sentencepiece_override() -> str | None:
    """The path `set_sentencepiece_path` set (None: none set), to put back later."""
    return _override


def sentencepiece_path() -> str:
    """The path the vocabulary will load now, after aliases are expanded."""
    path = _override or os.environ.get(ENV_VAR) or DEFAULT_SPM_PATH
    return ALIASES.get(path, path)


class LazySentencePieceVocabulary(_FollowsActiveTokenizer, seqio.SentencePieceVocabulary):
    """A `seqio.SentencePieceVocabulary` whose model file is looked up when it is loaded.

    Why: seqio binds a vocabulary to each task at registration, but which file to use is only
    known once the user's configuration has been read. Loading is still lazy and cached per path
    (by seqio), so the cost is one dictionary lookup per use. While `use_tokenizer` has set a
    Hugging Face tokenizer it answers from that instead, and never loads its file.
    """

    def __init__(self, extra_ids: int = EXTRA_IDS):
        super().__init__(sentencepiece_model_file=sentencepiece_path(), extra_ids=extra_ids)

    @property
    def sentencepiece_model_file(self) -> str:
        return sentencepiece_path()

    def _model_context(self):
        path = sentencepiece_path()
        if self._model is not None and path == self._sentencepiece_model_file:
            return self._model
        self._model = None
        self._sentencepiece_model_file = path
        _check_exists(path)
        try:
            return super()._model_context()
        except Exception as e:  # a corrupt or unreadable model: still name the path.
            raise ValueError(f"could not load SentencePiece model {path!r}: {e}") from e

    def __eq__(self, other):
        if isinstance(other, LazySentencePieceVocabulary):
            return self._extra_ids == other._extra_ids
        return super().__eq__(other)

    def __hash__(self):
        return hash((type(self).__name__, self._extra_ids))


def _check_exists(path: str) -> None:
    """Raises one clear error naming `path` and the ways to change it, if the file is absent."""
    if "://" in path:
        try:  # bounded: offline, TensorFlow's GCS file system may retry for minutes
            exists = remote.bounded(lambda: tf.io.gfile.exists(path), f"SentencePiece model {path}")
        except UserError as e:
            raise FileNotFoundError(
                f"{e}; or set {ENV_VAR} or ptune.tasks.vocab.set_sentencepiece_path() to a "
                "local copy"
            ) from None
        except Exception as e:  # no network, no credentials, unknown scheme.
            raise FileNotFoundError(
                f"SentencePiece model {path!r} is unreachable ({type(e).__name__}); "
                f"set {ENV_VAR} or ptune.tasks.vocab.set_sentencepiece_path() to a local copy"
            ) from e
    else:
        exists = os.path.isfile(path)
    if not exists:
        raise FileNotFoundError(
            f"SentencePiece model not found: {path!r}; set {ENV_VAR} or "
            "ptune.tasks.vocab.set_sentencepiece_path() to the sentencepiece.model file"
        )


_VOCABULARY = LazySentencePieceVocabulary()


def get_vocabulary() -> LazySentencePieceVocabulary:
    """The shared T5 vocabulary (32,100 ids by default) that all T5-format tasks use."""
    return _VOCABULARY


class ByteVocabulary(_FollowsActiveTokenizer, seqio.ByteVocabulary):
    """`seqio.ByteVocabulary`, unless `use_tokenizer` has set a Hugging Face tokenizer."""


def get_byte_vocabulary() -> ByteVocabulary:
    """The byte vocabulary of the offline demo task: 259 ids (0 pad, 1 EOS, 2 UNK, bytes + 3).

    It needs no file at all, so the demo runs with no network and no downloads.
    """
    return _BYTE_VOCABULARY


_BYTE_VOCABULARY = ByteVocabulary()


def output_features(vocabulary: seqio.Vocabulary | None = None) -> dict[str, seqio.Feature]:
    """T5's output features: `inputs` [length] and `targets` [length] int32 ids, EOS-terminated."""
    vocabulary = vocabulary or get_vocabulary()
    return {
        "inputs": seqio.Feature(vocabulary=vocabulary, add_eos=True, required=False),
        "targets": seqio.Feature(vocabulary=vocabulary, add_eos=True),
    }
