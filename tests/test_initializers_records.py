"""Initializers say what they did, and sample no special token of the model's own tokenizer.

- `initializer_name`: class labels over a task without labels (ReCoRD, WSC) is sampled
  vocabulary throughout, and the records (summary.json, `ptune report`) must say so.
- `special_ids`: sampled vocabulary leaves out T5's pad/eos/unk (0-2) for SentencePiece and
  byte vocabularies, and a Hugging Face tokenizer's own BOS/EOS/UNK and added special tokens,
  also when a registered task's vocabulary forwards to it (`vocab.use_tokenizer`).

The tokenizers are tiny byte-level BPEs trained here on the demo's sentences, shaped like Qwen2's
(special tokens added after the vocabulary, no BOS, no UNK, id 0 an ordinary token) and Llama
2's (<unk> <s> </s> at 0 1 2, plus an added <pad>).
"""

import json

import jax
import numpy as np
import pytest
from tokenizers import Tokenizer

import ptune.tasks  # noqa: F401  (registers the tasks)
from conftest import tiny_bpe_tokenizer
from ptune import prompts
from ptune.prompts import initializers
from ptune.tasks import demo as demo_task
from ptune.tasks import registry, vocab
from ptune.tasks.hf_vocab import TokenizerVocabulary

CORPUS = [f"sentence: {r['sentence']} {r['label']}" for r in demo_task.read("train")]
WIDTH = 4


def _tokenizer_dir(path, tokenizer: Tokenizer, config: dict) -> str:
    path.mkdir()
    tokenizer.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    return str(path)


@pytest.fixture
def qwen_like(tmp_path):
    """Qwen2's shape: a byte-level BPE (id 0 an ordinary token), then three special tokens and
    one ordinary added token after the model's vocabulary; no BOS, no UNK."""
    tokenizer = tiny_bpe_tokenizer(CORPUS)
    tokenizer.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tokenizer.add_tokens(["<extra>"])
    config = {"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    return TokenizerVocabulary(_tokenizer_dir(tmp_path / "qwen", tokenizer, config))


@pytest.fixture
def llama_like(tmp_path):
    """Llama 2's shape: <unk> <s> </s> at 0 1 2 (the model's own tokens) and an added <pad>
    special token after the model's vocabulary."""
    tokenizer = tiny_bpe_tokenizer(CORPUS, ["<unk>", "<s>", "</s>"], unk_token="<unk>")
    tokenizer.add_special_tokens(["<pad>"])
    config = {"add_bos_token": True, "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}
    return TokenizerVocabulary(_tokenizer_dir(tmp_path / "llama", tokenizer, config))


def _ids(vocabulary: TokenizerVocabulary, *tokens: str) -> tuple:
    return tuple(vocabulary.tokenizer.token_to_id(t) for t in tokens)


@pytest.fixture(autouse=True)
def _no_tokenizer_afterwards():
    yield
    vocab.use_tokenizer(None)


def _sampled_ids(vocabulary, rows: int, length: int, initializer=None) -> set:
    """The ids a sampled-vocabulary prompt of `length` rows drew from a table of `rows`: row i
    of the table is i everywhere. With `length` the number of candidates, each is drawn once."""
    table = np.repeat(np.arange(rows, dtype=np.float32)[:, None], WIDTH, axis=1)
    context = prompts.InitContext(embedding=table, vocabulary=vocabulary)
    initializer = initializer or prompts.sampled_vocab()
    value = prompts.initialize(initializer, jax.random.PRNGKey(0), length, context)
    return set(int(v) for v in value[:, 0])


# ---- special ids ---------------------------------------------------------------------------


def test_sentencepiece_and_byte_vocabularies_leave_out_t5s_pad_eos_unk():
    assert initializers.special_ids(None) == (0, 1, 2)
    assert initializers.special_ids(vocab.get_byte_vocabulary()) == (0, 1, 2)
    # T5's SentencePiece vocabulary: decided without loading its model file
    assert initializers.special_ids(vocab.get_vocabulary()) == prompts.SPECIAL_IDS == (0, 1, 2)
    assert _sampled_ids(vocab.get_byte_vocabulary(), 20, 17) == set(range(3, 20))


def test_a_qwen_like_tokenizer_leaves_out_its_added_special_tokens_and_keeps_id_0(qwen_like):
    specials = _ids(qwen_like, "<|endoftext|>", "<|im_start|>", "<|im_end|>")
    assert initializers.special_ids(qwen_like) == specials
    rows = qwen_like.vocab_size
    drawn = _sampled_ids(qwen_like, rows, rows - 3)
    assert drawn == set(range(rows)) - set(specials)
    assert 0 in drawn and _ids(qwen_like, "<extra>")[0] in drawn  # not special tokens


def test_a_llama_like_tokenizer_leaves_out_unk_bos_eos_and_its_pad(llama_like):
    (pad,) = _ids(llama_like, "<pad>")
    assert initializers.special_ids(llama_like) == (0, 1, 2, pad)
    rows = llama_like.vocab_size
    assert _sampled_ids(llama_like, rows, rows - 4) == set(range(3, rows)) - {pad}


def test_a_registered_tasks_vocabulary_follows_the_active_tokenizer(qwen_like):
    """Decoder-only runs give the initializer the task's registered vocabulary, which forwards
    to the tokenizer `use_tokenizer` set; its special ids are the tokenizer's."""
    specials = initializers.special_ids(qwen_like)
    vocab.use_tokenizer(qwen_like.tokenizer_file)
    for registered in (vocab.get_vocabulary(), vocab.get_byte_vocabulary()):
        assert initializers.special_ids(registered) == specials
    vocab.use_tokenizer(None)
    assert initializers.special_ids(vocab.get_byte_vocabulary()) == (0, 1, 2)


def test_class_labels_and_from_text_fill_their_rest_without_special_tokens(qwen_like):
    rows = qwen_like.vocab_size
    table = np.repeat(np.arange(rows, dtype=np.float32)[:, None], WIDTH, axis=1)
    context = prompts.InitContext(embedding=table, vocabulary=qwen_like, labels=["positive"])
    specials = set(initializers.special_ids(qwen_like))
    for init in (prompts.class_labels(), prompts.from_text("the soup")):
        value = prompts.initialize(init, jax.random.PRNGKey(1), rows - 3, context)
        assert not specials & {int(v) for v in value[:, 0]}, init


def test_an_explicit_exclusion_list_still_wins(qwen_like):
    """The original implementation's preset (`excluded_ids = []`) samples every id."""
    rows = qwen_like.vocab_size
    drawn = _sampled_ids(qwen_like, rows, rows, prompts.sampled_vocab(excluded_ids=()))
    assert drawn == set(range(rows))


# ---- the initializer the records name -------------------------------------------------------


def test_class_labels_over_a_task_without_labels_is_named_sampled_vocab():
    record = registry.label_names("super_glue_record_v102")
    assert record is None
    assert initializers.initializer_name(None, record) == "sampled_vocab"
    assert initializers.initializer_name(prompts.class_labels(), record) == "sampled_vocab"
    demo = registry.label_names("ptune_demo")
    assert demo
    assert initializers.initializer_name(None, demo) == "class_labels"
    assert initializers.initializer_name(prompts.class_labels(), demo) == "class_labels"


def test_explicit_labels_name_class_labels_whatever_the_task():
    assert initializers.initializer_name(prompts.class_labels(labels=["yes"]), None) == (
        "class_labels"
    )
    assert initializers.initializer_name(prompts.class_labels(labels=[]), ["a"]) == (
        "sampled_vocab"
    )


def test_the_name_says_what_the_initializer_did():
    """The fallback draws exactly what sampled vocabulary draws, so its name is the truth."""
    table = np.random.default_rng(0).normal(size=(40, WIDTH)).astype(np.float32)
    context = prompts.InitContext(embedding=table, vocabulary=None, labels=None)
    rng = jax.random.PRNGKey(3)
    fallback = prompts.initialize(prompts.class_labels(), rng, 6, context)
    sampled = prompts.initialize(prompts.sampled_vocab(), rng, 6, context)
    np.testing.assert_array_equal(fallback, sampled)


@pytest.mark.parametrize(
    "initializer, name",
    [
        (prompts.sampled_vocab(), "sampled_vocab"),
        (prompts.random_uniform(), "random_uniform"),
        (prompts.from_text("hello"), "from_text"),
        (prompts.from_file("prompt.npy"), "from_file"),
    ],
)
def test_other_initializers_are_named_by_their_factory(initializer, name):
    assert initializers.initializer_name(initializer, None) == name
    assert initializers.initializer_name(initializer, ["yes", "no"]) == name


def my_factory():
    def init(rng, shape, context):
        return np.zeros(shape, np.float32)

    return init


def test_an_initializer_of_ones_own_is_named_by_its_factory():
    assert initializers.initializer_name(my_factory(), None) == "my_factory"
