"""Hugging Face tokenizer.json vocabularies: ids as transformers gives them, special ids decided
as documented, tokenization inside tf.data, and the switch that moves registered tasks onto one.

The tokenizers are tiny byte-level BPEs trained here, in milliseconds, on the demo's sentences,
shaped like the real models' directories (Llama 2, Llama 3, Qwen2)."""

import json

import pytest
import seqio
import tensorflow as tf
from tokenizers import Tokenizer, processors
from transformers import PreTrainedTokenizerFast

import ptune.tasks  # noqa: F401  (registers the tasks)
from conftest import tiny_bpe_tokenizer
from ptune.errors import UserError
from ptune.tasks import demo, vocab
from ptune.tasks.hf_vocab import TokenizerVocabulary

CORPUS = [f"sentence: {r['sentence']} {r['label']}" for r in demo.read("train")]
TEXTS = ["sentence: the soup was not very good.", "negative", "", "café ☕ naïve, 1 2 3!"]
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _bpe(special_tokens=(), unk_token=None) -> Tokenizer:
    """A byte-level BPE (the Llama 3 / Qwen2 kind): every text encodes and decodes exactly."""
    return tiny_bpe_tokenizer(CORPUS, special_tokens, unk_token)


def _save(directory, tokenizer: Tokenizer | None = None, **configs) -> str:
    """A model directory: tokenizer.json and each `name_json=dict` as name.json."""
    directory.mkdir()
    if tokenizer is not None:
        tokenizer.save(str(directory / "tokenizer.json"))
    for name, contents in configs.items():
        (directory / name.replace("_json", ".json")).write_text(json.dumps(contents))
    return str(directory)


@pytest.fixture
def qwen_dir(tmp_path):
    """Qwen2's shape: special tokens added after the model's vocabulary, no BOS, no UNK."""
    tokenizer = _bpe()
    tokenizer.add_special_tokens(QWEN_SPECIALS)
    config = {"bos_token": None, "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    return _save(tmp_path / "qwen", tokenizer, tokenizer_config_json=config)


@pytest.fixture
def llama_dir(tmp_path):
    """Llama 2's shape: <unk> <s> </s> as ids 0 1 2, add_bos_token, tokens written as dicts."""
    tokenizer = _bpe(["<unk>", "<s>", "</s>"], unk_token="<unk>")
    config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": {"content": "<s>", "special": True},
        "eos_token": {"content": "</s>", "special": True},
    }
    return _save(tmp_path / "llama", tokenizer, tokenizer_config_json=config)


@pytest.fixture(autouse=True)
def _no_tokenizer_afterwards():
    yield
    vocab.use_tokenizer(None)
    vocab.set_sentencepiece_path(None)


def test_ids_are_transformers_ids_and_decode_round_trips(qwen_dir):
    v = TokenizerVocabulary(qwen_dir)
    reference = PreTrainedTokenizerFast(tokenizer_file=f"{qwen_dir}/tokenizer.json")
    for text in [*TEXTS, *CORPUS[:20], "hi<|im_end|>"]:
        ids = v.encode(text)
        assert ids == reference.encode(text, add_special_tokens=False), text
        if "<|" not in text:
            assert v.decode(ids) == text
    sentence = v.encode(TEXTS[0])
    assert len(sentence) < len(TEXTS[0])  # real merges, not bytes
    assert v.vocab_size == len(reference) == 256 + (320 - 256) + len(QWEN_SPECIALS)
    assert v.eos_id == v.vocab_size - 3  # added after the model's tokens, as in Qwen2


def test_decode_stops_at_eos_and_skips_ids_past_the_vocabulary(qwen_dir):
    v = TokenizerVocabulary(qwen_dir)
    ids = v.encode("the soup was good.")
    assert v.decode(ids + [v.eos_id] + ids) == "the soup was good."
    assert v.decode(ids + [v.vocab_size, v.vocab_size + 7]) == "the soup was good."
    # seqio's decode_tf pads after the EOS with 0, a real token ("!") in a byte-level BPE.
    assert v.decode([0]) == "!"
    batch = tf.constant([ids + [v.eos_id, 0, 0], ids[:2] + [v.vocab_size] + [0] * len(ids)])
    decoded = v.decode_tf(batch).numpy().tolist()
    assert decoded == [b"the soup was good.", v.decode(ids[:2] + [0] * len(ids)).encode()]


def test_llama_like_directory_expects_bos(llama_dir):
    v = TokenizerVocabulary(llama_dir)
    assert (v.unk_id, v.bos_id, v.eos_id, v.pad_id) == (0, 1, 2, 0)
    assert v.encode("the soup")[0] != v.bos_id  # never added by encode: seqio adds EOS only
    assert v.decode([v.bos_id, *v.encode("the soup"), v.eos_id]) == "the soup"


def test_bos_from_the_tokenizers_own_template_when_the_config_says_nothing(tmp_path):
    """Llama 3's shape: no add_bos_token; tokenizer.json's post-processor prepends the BOS; the
    EOS named only in special_tokens_map.json."""
    tokenizer = _bpe(["<|begin_of_text|>", "<|end_of_text|>"])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", 0)]
    )
    directory = _save(
        tmp_path / "llama3", tokenizer, special_tokens_map_json={"eos_token": "<|end_of_text|>"}
    )
    v = TokenizerVocabulary(directory)
    reference = PreTrainedTokenizerFast(tokenizer_file=f"{directory}/tokenizer.json")
    assert v.bos_id == reference.encode("the soup")[0] == 0
    assert (v.eos_id, v.unk_id) == (1, None)
    assert v.encode("the soup") == reference.encode("the soup")[1:]


def test_qwen_like_directory_has_no_bos(qwen_dir):
    v = TokenizerVocabulary(qwen_dir)
    assert (v.bos_id, v.unk_id) == (None, None)
    assert v.eos_id == TokenizerVocabulary(f"{qwen_dir}/tokenizer.json").eos_id
    with open(f"{qwen_dir}/tokenizer_config.json", "w") as f:
        json.dump(
            {"add_bos_token": False, "bos_token": "<|im_start|>", "eos_token": "<|im_end|>"}, f
        )
    v = TokenizerVocabulary(qwen_dir)
    assert (v.bos_id, v.eos_id) == (None, v.vocab_size - 1)


def test_eos_from_config_json_alone(tmp_path):
    directory = _save(tmp_path / "m", _bpe(["<s>", "</s>"]), config_json={"eos_token_id": [1, 0]})
    v = TokenizerVocabulary(directory)
    assert (v.eos_id, v.bos_id) == (1, None)
    same = TokenizerVocabulary(f"{directory}/tokenizer.json")
    assert same == v and hash(same) == hash(v) and same != vocab.get_byte_vocabulary()


def test_encode_tf_inside_a_tf_data_map(qwen_dir):
    v = TokenizerVocabulary(qwen_dir)
    ds = tf.data.Dataset.from_tensor_slices(TEXTS).map(v.encode_tf, num_parallel_calls=2)
    assert ds.element_spec == tf.TensorSpec([None], tf.int32)
    assert [list(ids) for ids in ds.as_numpy_iterator()] == [v.encode(t) for t in TEXTS]


def _demo_examples() -> list[dict]:
    task = seqio.get_mixture_or_task(demo.TASK)
    ds = task.get_dataset(demo.SEQUENCE_LENGTH, split="validation", shuffle=False)
    return list(ds.as_numpy_iterator())


def _ids(examples) -> list[tuple[list[int], list[int]]]:
    return [(list(ex["inputs"]), list(ex["targets"])) for ex in examples]


def test_registered_tasks_switch_to_the_tokenizer_and_back(qwen_dir, tmp_path):
    before = _demo_examples()
    byte_vocabulary = vocab.get_byte_vocabulary()
    texts = [tuple(map(byte_vocabulary.decode, pair)) for pair in _ids(before)]
    assert texts[0] == (
        f"sentence: {demo.read('validation')[0]['sentence']}",
        before[0]["targets_pretokenized"].decode(),
    )

    vocab.use_tokenizer(qwen_dir)
    eos = vocab.active_tokenizer().eos_id
    reference = PreTrainedTokenizerFast(tokenizer_file=f"{qwen_dir}/tokenizer.json")
    switched = _demo_examples()
    assert len(switched) == len(before) == 80
    for ex, (inputs, targets) in zip(switched, texts):
        assert list(ex["inputs"]) == reference.encode(inputs, add_special_tokens=False) + [eos]
        assert list(ex["targets"]) == reference.encode(targets, add_special_tokens=False) + [eos]
    # Every member reads the tokenizer, in both registered vocabularies; the SentencePiece file
    # (made absent here) is never loaded.
    vocab.set_sentencepiece_path(str(tmp_path / "absent.model"))
    first, (inputs, targets) = switched[0], texts[0]
    for registered in (byte_vocabulary, vocab.get_vocabulary()):
        assert (registered.vocab_size, registered.eos_id) == (len(reference), eos)
        assert (registered.bos_id, registered.unk_id, registered.pad_id) == (None, None, 0)
        assert registered.extra_ids == 0
        assert registered.encode(inputs) == list(first["inputs"][:-1])
        assert registered.decode(first["inputs"]) == inputs
        assert registered.decode_tf(tf.constant(first["targets"])).numpy() == targets.encode()

    vocab.use_tokenizer(None)
    assert vocab.active_tokenizer() is None
    assert _ids(_demo_examples()) == _ids(before)
    assert byte_vocabulary.vocab_size == 259 and byte_vocabulary.eos_id == 1


def test_sentencepiece_vocabulary_is_unchanged_after_switching_back(t5_vocab, llama_dir):
    spm = vocab.get_vocabulary()
    ids = spm.encode(TEXTS[0])
    vocab.use_tokenizer(llama_dir)
    assert spm.encode(TEXTS[0]) == vocab.active_tokenizer().encode(TEXTS[0]) != ids
    assert spm.bos_id == 1 and spm.vocab_size < 32_100
    vocab.use_tokenizer(None)
    assert spm.encode(TEXTS[0]) == ids and spm.vocab_size == 32_100 and spm.unk_id == 2


def _no_eos(tmp_path):
    return _save(tmp_path / "m", _bpe(), tokenizer_config_json={"bos_token": None})


def _unknown_eos(tmp_path):
    return _save(tmp_path / "m", _bpe(), tokenizer_config_json={"eos_token": "</nope>"})


def _sentencepiece_only(tmp_path):
    directory = tmp_path / "m"
    directory.mkdir()
    (directory / "tokenizer.model").write_bytes(b"\x00")
    return str(directory)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda tmp: str(tmp / "absent"), "has no tokenizer.json .*needs its tokenizer"),
        (lambda tmp: _save(tmp / "m"), "has no tokenizer.json; a decoder-only model's directory"),
        (_sentencepiece_only, "has no tokenizer.json; .*SentencePiece.*save_pretrained"),
        (_no_eos, "names no end-of-sequence token: looked for eos_token in tokenizer_config"),
        (
            _unknown_eos,
            "tokenizer.json has no token '</nope>', the eos_token of its tokenizer_config",
        ),
    ],
    ids=["missing", "empty", "sentencepiece-only", "no-eos", "unknown-eos"],
)
def test_bad_directories_are_one_line_naming_the_path(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(UserError, match=message) as error:
        vocab.use_tokenizer(path)
    assert path in str(error.value) and "\n" not in str(error.value)
    assert vocab.active_tokenizer() is None
