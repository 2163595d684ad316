"""A seqio vocabulary over a Hugging Face `tokenizer.json`, for decoder-only models (Llama,
Qwen2, Mistral): the ids such a model was trained on, from its own tokenizer.

`TokenizerVocabulary(path)` takes a model directory (holding `tokenizer.json` and, optionally,
`tokenizer_config.json`, `special_tokens_map.json` and `config.json` beside it) or the path of a
`tokenizer.json` file, whose siblings are read the same way. Text is encoded without special
tokens: seqio appends EOS itself (each Feature's `add_eos`), and a BOS, where the model expects
one, is the model input's business (`bos_id`).

Ids: `vocab_size` counts the model's tokens and the added ones (the largest id + 1, so every id
below it decodes). `pad_id` stays 0 as in every seqio vocabulary, because seqio pads every
feature with 0 and its feature converters take loss weights from non-zero targets, where id 0
(Llama: `<unk>`; Qwen2: "!") would read as padding. ptune's decoder-only runs take a target to
end at its EOS instead (`ptune.step.target_weights`), so a real id 0 inside a target trains.

`eos_id` is the first of: `tokenizer_config.json`'s `eos_token` (a string, or a dict with
"content"), `special_tokens_map.json`'s `eos_token`, `config.json`'s `eos_token_id` (its first
if a list). Without one of them the directory is rejected (`UserError`).

`bos_id`, the id the model expects first, or None:
  1. `tokenizer_config.json` sets `add_bos_token`: true (Llama 2, Mistral, Gemma) -> its
     `bos_token` (then special_tokens_map.json's, then config.json's `bos_token_id`); false ->
     None.
  2. Otherwise the tokenizer's own post-processor decides, as `transformers` would: when encoding
     with special tokens puts one id before the text (Llama 3's `<|begin_of_text|>` template),
     that id.
  3. Otherwise None (Qwen2: no BOS).
"""

from __future__ import annotations

import json
import os

import numpy as np
import seqio
import tensorflow as tf
import tokenizers

from ptune.errors import UserError

TOKENIZER_FILE = "tokenizer.json"
_CONFIGS = ("tokenizer_config.json", "special_tokens_map.json", "config.json")
_NEEDS = "a decoder-only model's directory needs its tokenizer"
_SENTENCEPIECE_HINT = (
    " (its tokenizer.model is a SentencePiece model: `transformers.AutoTokenizer"
    ".from_pretrained(DIR).save_pretrained(DIR)` writes the tokenizer.json beside it)"
)


class TokenizerVocabulary(seqio.Vocabulary):
    """A Hugging Face `tokenizer.json` as a `seqio.Vocabulary` (see the module docstring for how
    its special ids are decided). Equal to another when it reads the same tokenizer file."""

    def __init__(self, path: str):
        self._path = os.path.expanduser(path)  # as given, for messages
        self._file = _tokenizer_file(self._path)
        directory = os.path.dirname(self._file)
        try:
            with open(self._file, encoding="utf-8") as f:
                text = f.read()
            spec = json.loads(text)
            self._tokenizer = tokenizers.Tokenizer.from_str(text)
        except Exception as e:  # unreadable, not JSON, or not a tokenizer
            hint = _SENTENCEPIECE_HINT if self._file.endswith(".model") else ""
            raise UserError(f"could not read the tokenizer {self._path}: {_line(e)}{hint}") from e
        self._size = max(self._tokenizer.get_vocab(with_added_tokens=True).values()) + 1
        configs = {name: _read_json(os.path.join(directory, name)) for name in _CONFIGS}
        self._eos_id = self._special_id(configs, "eos_token", "eos_token_id")
        if self._eos_id is None:
            raise UserError(
                f"{self._path} names no end-of-sequence token: looked for eos_token in "
                "tokenizer_config.json and special_tokens_map.json, and eos_token_id in config.json"
            )
        self._bos_id = self._decide_bos(configs)
        self._unk_id = self._model_unk_id(spec.get("model") or {})
        super().__init__(extra_ids=0)

    @property
    def tokenizer_file(self) -> str:
        """The resolved path of the `tokenizer.json` read."""
        return self._file

    @property
    def tokenizer(self) -> tokenizers.Tokenizer:
        return self._tokenizer

    # -- special ids ----------------------------------------------------------------------------

    @property
    def eos_id(self) -> int:
        return self._eos_id

    @property
    def bos_id(self) -> int | None:
        return self._bos_id

    @property
    def unk_id(self) -> int | None:
        return self._unk_id

    @property
    def _base_vocab_size(self) -> int:
        return self._size

    def _special_id(self, configs: dict, token_key: str, id_key: str) -> int | None:
        """The id named by `token_key` in the tokenizer configs, else by `id_key` in config.json."""
        for name in _CONFIGS[:2]:
            token = _content(configs[name].get(token_key))
            if token is None:
                continue
            found = self._tokenizer.token_to_id(token)
            if found is None:
                raise UserError(
                    f"{self._path}: tokenizer.json has no token {token!r}, the {token_key} "
                    f"of its {name}"
                )
            return found
        found = configs["config.json"].get(id_key)
        if isinstance(found, list):
            found = found[0] if found else None
        if found is None:
            return None
        if not isinstance(found, int) or not 0 <= found < self._size:
            raise UserError(
                f"{self._path}: config.json's {id_key} {found!r} is not an id of its "
                f"tokenizer (0..{self._size - 1})"
            )
        return found

    def _decide_bos(self, configs: dict) -> int | None:
        add = configs["tokenizer_config.json"].get("add_bos_token")
        if add is not None:
            if not add:
                return None
            found = self._special_id(configs, "bos_token", "bos_token_id")
            if found is None:
                raise UserError(
                    f"{self._path}: tokenizer_config.json sets add_bos_token "
                    "but no bos_token is named (tokenizer_config.json, special_tokens_map.json, "
                    "config.json's bos_token_id)"
                )
            return found
        probe = "Hello world"
        plain = self._tokenizer.encode(probe, add_special_tokens=False).ids
        full = self._tokenizer.encode(probe, add_special_tokens=True).ids
        if len(full) > len(plain) and full[1 : len(plain) + 1] == plain:
            return full[0]
        return None

    def _model_unk_id(self, model: dict) -> int | None:
        """The model's unknown token: `unk_token` (BPE, WordLevel, WordPiece) or `unk_id`
        (Unigram); None for byte-level models that have none (Llama 3, Qwen2)."""
        if isinstance(model.get("unk_id"), int):
            return model["unk_id"]
        token = model.get("unk_token")
        return self._tokenizer.token_to_id(token) if isinstance(token, str) else None

    # -- text <-> ids ---------------------------------------------------------------------------

    def _encode(self, s: str | bytes) -> list[int]:
        s = s.decode("utf-8") if isinstance(s, bytes) else s
        return self._tokenizer.encode(s, add_special_tokens=False).ids

    def _decode(self, ids) -> str:
        """Text of `ids` up to the first EOS, without special tokens (BOS, EOS, UNK), skipping
        ids outside the vocabulary, as seqio's SentencePiece and byte vocabularies do. Id 0 is
        a real token here (pad_id only by seqio's convention), so it decodes."""
        ids = [int(i) for i in ids]
        if self._eos_id in ids:
            ids = ids[: ids.index(self._eos_id)]
        ids = [i for i in ids if 0 <= i < self._size]
        return self._tokenizer.decode(ids, skip_special_tokens=True)

    def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
        """A scalar tf.string -> [length] int32 ids; usable inside `tf.data` `map` (it calls
        back into Python, so it runs under the GIL)."""
        ids = tf.numpy_function(self._encode_numpy, [s], tf.int32, stateful=False, name="hf_encode")
        ids.set_shape([None])
        return ids

    def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
        """[..., length] int32 ids -> [...] tf.string, each row as `_decode`. (seqio's
        `decode_tf` has replaced everything after the first EOS with pad 0, a real token here:
        cutting at the EOS again keeps those out of the text.)"""
        ids = tf.convert_to_tensor(ids)
        text = tf.numpy_function(
            self._decode_numpy, [ids], tf.string, stateful=False, name="hf_decode"
        )
        text.set_shape(ids.shape[:-1])
        return text

    def _encode_numpy(self, s: bytes) -> np.ndarray:
        return np.asarray(self._encode(s), np.int32)

    def _decode_numpy(self, ids: np.ndarray) -> np.ndarray:
        rows = ids.reshape(int(np.prod(ids.shape[:-1])), ids.shape[-1])
        texts = np.array([self._decode(row).encode("utf-8") for row in rows], dtype=object)
        return texts.reshape(ids.shape[:-1])

    def __eq__(self, other):
        return isinstance(other, TokenizerVocabulary) and other._file == self._file

    def __hash__(self):
        return hash((type(self).__name__, self._file))

    def __repr__(self) -> str:
        return f"TokenizerVocabulary({self._file!r})"


def _tokenizer_file(path: str) -> str:
    """The resolved `tokenizer.json` of a directory (or the file itself), or one UserError."""
    if os.path.isfile(path):
        return os.path.realpath(path)
    if not os.path.isdir(path):
        raise UserError(f"{path} has no {TOKENIZER_FILE} (it does not exist); {_NEEDS}")
    file = os.path.join(path, TOKENIZER_FILE)
    if os.path.isfile(file):
        return os.path.realpath(file)
    hint = _SENTENCEPIECE_HINT if os.path.isfile(os.path.join(path, "tokenizer.model")) else ""
    raise UserError(f"{path} has no {TOKENIZER_FILE}; {_NEEDS}{hint}")


def _read_json(path: str) -> dict:
    """A JSON object file's contents; {} when the file is absent."""
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"could not read {path}: {_line(e)}") from e
    return data if isinstance(data, dict) else {}


def _content(token) -> str | None:
    """A special token as configs write it: "</s>", {"content": "</s>", ...} or null."""
    if isinstance(token, dict):
        token = token.get("content")
    return token if isinstance(token, str) and token else None


def _line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
