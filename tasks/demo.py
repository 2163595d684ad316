"""`ptune_demo`: a toy sentiment task that trains with no network, no downloads and no vocabulary
file, for the CPU demo run and for tests.

Each example is one short generated English sentence, in the shape of a SuperGLUE record
(`{"sentence": ..., "label": ..., "idx": ...}` as JSONL), formatted taskless as
`sentence: the soup was not very good.` -> `negative`. The label follows from the text alone: the
adjective's polarity, flipped by "not". Nothing else carries signal, so a model can learn it
exactly, and a prompt that learned it shows up as accuracy near 100 on the held-out sentences.

Vocabulary: `seqio.ByteVocabulary` (259 ids: 0 pad, 1 EOS, 2 UNK, then UTF-8 bytes + 3), so
inputs are at most `SEQUENCE_LENGTH["inputs"]` ids with EOS, targets at most 9.
The data ship in `tasks/data/demo/{train,validation}.jsonl`; `generate()` rebuilds them.

Registered: `ptune_demo` (generate the label) and `ptune_demo_rank_classification` (score both).
A second task over the same sentences, `ptune_demo_negation` (and its rank classification):
does the sentence say "not"? (`plain` / `negated`). `ptune_demo_mixture` mixes the two rank
classification tasks equally: identical inputs, different questions, so only the prompt tells
a model which one to answer (the multi-task prompt demonstration). `ptune_demo_shifted` (and its
rank classification): the demo's question in another domain (`CARE`), for domain transfer.

Also here: the demo's frozen model, pretrained and shipped in `tasks/data/demo/model`
(`pretrained_model()`), and the generated corpus it was pretrained on (`corpus()`,
`write_corpus()`; see `make pretrain-demo`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import random

import seqio
import tensorflow as tf

from ptune.errors import UserError
from ptune.tasks import labels, metrics, postprocessors, preprocessors, registry, vocab

TASK = "ptune_demo"
LABELS = labels.DEMO  # ("negative", "positive"): the class-label initializer's strings.
NEGATION_TASK = "ptune_demo_negation"
NEGATION_LABELS = ("plain", "negated")
MIXTURE = "ptune_demo_mixture"
DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "demo")
SPLITS = {"train": 400, "validation": 80}
# The shipped frozen model of runs/demo.gin (a ptune checkpoint, made by `make pretrain-demo`).
PRETRAINED_MODEL = os.path.join(DATA_DIR, "model")
# Longest formatted input is 49 bytes + EOS; "positive"/"negative" are 8 bytes + EOS.
SEQUENCE_LENGTH = {"inputs": 64, "targets": 9}

_SUBJECTS = (  # the demo's domain: everyday reviews
    "the soup", "the movie", "this phone", "the hotel", "our trip", "the concert", "my chair",
    "the service", "that book", "the coffee", "the game", "her song", "the park", "his car",
    "the lesson", "the weather", "the bread", "this show", "the room", "the staff",
)  # fmt: skip
_VERBS = ("was", "is", "felt", "seemed", "looked")
_POSITIVE = ("good", "great", "lovely", "excellent", "pleasant", "fun", "wonderful", "nice")
_NEGATIVE = ("bad", "awful", "boring", "terrible", "dull", "poor", "sad", "horrible")
_ADVERBS = ("", "very ", "really ", "quite ")


@dataclasses.dataclass(frozen=True)
class Domain:
    """The words a domain's sentences are made of (the verbs and adverbs are shared)."""

    name: str
    subjects: tuple[str, ...]
    positive: tuple[str, ...]
    negative: tuple[str, ...]


REVIEWS = Domain("reviews", _SUBJECTS, _POSITIVE, _NEGATIVE)
# The shifted domain (the paper's Table 1 at this scale): the same grammar and labels over
# health care, with subjects and adjectives the reviews never use.
CARE = Domain(
    "care",
    (
        "the dentist", "the clinic", "the nurse", "the surgery", "the checkup", "the doctor",
        "the treatment", "the pharmacy", "the therapy", "the ward", "the recovery", "the scan",
        "the injection", "the midwife", "the physio", "the waiting room",
    ),
    ("painless", "gentle", "caring", "thorough", "reassuring", "quick", "clean", "effective"),
    ("painful", "careless", "rushed", "cold", "confusing", "slow", "unhelpful", "dirty"),
)  # fmt: skip
SHIFTED_TASK = "ptune_demo_shifted"
SHIFTED_DATA_DIR = os.path.join(os.path.dirname(DATA_DIR), "demo_shifted")


def _sentence(rng: random.Random, negation: float = 0.4, domain: Domain = REVIEWS) -> dict:
    negated = rng.random() < negation
    positive_word = rng.random() < 0.5
    adjective = rng.choice(domain.positive if positive_word else domain.negative)
    text = (
        f"{rng.choice(domain.subjects)} {rng.choice(_VERBS)} {'not ' if negated else ''}"
        f"{rng.choice(_ADVERBS)}{adjective}."
    )
    return {"sentence": text, "label": LABELS[int(positive_word != negated)]}


def generate(seed: int = 0, domain: Domain = REVIEWS) -> dict[str, list[dict]]:
    """The shipped data: distinct sentences, validation disjoint from train, balanced labels."""
    rng = random.Random(seed)
    seen, per_label = set(), {name: [] for name in LABELS}
    total = sum(SPLITS.values())
    while min(len(v) for v in per_label.values()) < total // 2:
        example = _sentence(rng, domain=domain)
        if example["sentence"] not in seen:
            seen.add(example["sentence"])
            per_label[example["label"]].append(example)
    pool = [ex for pair in zip(*(v[: total // 2] for v in per_label.values())) for ex in pair]
    out, start = {}, 0
    for split, size in SPLITS.items():
        out[split] = [{**ex, "idx": i} for i, ex in enumerate(pool[start : start + size])]
        start += size
    return out


def write(data_dir: str = DATA_DIR, seed: int = 0, domain: Domain = REVIEWS) -> None:
    """Regenerates the JSONL files (one record per line, keys sorted); the shifted task's:
    `write(SHIFTED_DATA_DIR, domain=CARE)`."""
    os.makedirs(data_dir, exist_ok=True)
    for split, rows in generate(seed, domain).items():
        with open(os.path.join(data_dir, f"{split}.jsonl"), "w", encoding="utf-8") as f:
            f.writelines(json.dumps(row, sort_keys=True) + "\n" for row in rows)


def pretrained_model() -> str:
    """The shipped pretrained demo model's directory (gin: `@demo.pretrained_model()`)."""
    if not os.path.exists(os.path.join(PRETRAINED_MODEL, "ptune_config.json")):
        raise UserError(
            f"the demo's pretrained model is missing from {PRETRAINED_MODEL}: "
            "`make pretrain-demo` makes it"
        )
    return PRETRAINED_MODEL


def read(split: str, data_dir: str = DATA_DIR) -> list[dict]:
    with open(os.path.join(data_dir, f"{split}.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# ----------------------------------------------------------------------------------------------
# The pretraining corpus of the shipped model (`make pretrain-demo`)

CORPUS_DOCUMENTS = 20000
CORPUS_NEGATION = 0.25  # the demo's is 0.4: a clearer polarity signal to learn first
_LEADS = ("", "", "honestly, ")
# Reactions that reach the verdict word after a fixed long clause (70%), or open with it.
_VERDICT_LATER = (
    "after talking it over at dinner that night, the verdict we all reached was {verdict}.",
    "when our friends asked about it the next day, the one word we used was {verdict}.",
)
_VERDICT_FIRST = ("{verdict}, all things considered.", "{verdict}, if you ask me.")


def corpus(
    seed: int = 0, documents: int = CORPUS_DOCUMENTS, domains: tuple[Domain, ...] = (REVIEWS,)
) -> list[str]:
    """Plain-text documents (one line each) for the demo model's pretraining: an opinion in the
    demo's grammar (its subjects, verbs, adverbs and adjectives; "not" in a quarter of them),
    after an optional "honestly, ", then a reaction that agrees with it and names the verdict,
    "positive" or "negative": after a fixed long clause (70%) or first. E.g.

        honestly, the park seemed not very dull. positive, if you ask me.
        the coffee looked awful. when our friends asked about it the next day, the one word we
        used was negative.

    Why this shape: the prefix-LM objective splits each document at a uniformly random point, and
    only a split between the adjective and the verdict makes the decoder predict the verdict
    from what the encoder read, the knowledge a prompt has to reach. The long fixed clause puts
    most splits there, and costs nothing to learn.

    With several `domains`, each document's domain is drawn uniformly (the default, reviews
    alone, is the shipped model's corpus, unchanged).

    Never in it: a sentence of a domain's train or validation split, the demo's "sentence:"
    format, or a document that ends at the verdict word. Longest: 135 bytes (reviews)."""
    rng = random.Random(seed)
    held_out = {
        ex["sentence"] for d in domains for rows in generate(domain=d).values() for ex in rows
    }
    out = []
    while len(out) < documents:
        domain = rng.choice(domains) if len(domains) > 1 else domains[0]
        example = _sentence(rng, negation=CORPUS_NEGATION, domain=domain)
        if example["sentence"] in held_out:
            continue
        template = rng.choice(_VERDICT_LATER if rng.random() < 0.7 else _VERDICT_FIRST)
        reaction = template.format(verdict=example["label"])
        out.append(f"{rng.choice(_LEADS)}{example['sentence']} {reaction}")
    return out


def write_corpus(
    path: str, seed: int = 0, documents: int = CORPUS_DOCUMENTS, domains=(REVIEWS,)
) -> None:
    """`corpus()` as a text file, one document per line (the `--corpus` flag's format)."""
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in corpus(seed, documents, tuple(domains)))


class ShippedSource(seqio.DataSource):
    """The shipped JSONL as records in TFDS shapes: `sentence` string, `label` int64, `idx` int32.

    Why not `seqio.FunctionDataSource`: it warns on every training read that uncached function
    sources shuffle poorly, which is moot for 400 in-memory rows that seqio's example-level
    shuffle buffer holds entirely.
    """

    def __init__(self, data_dir: str = DATA_DIR, question: str = "sentiment"):
        self._data_dir = data_dir
        self._question = question
        super().__init__(splits=tuple(SPLITS), num_input_examples=dict(SPLITS))

    @property
    def supports_arbitrary_sharding(self) -> bool:
        return False

    def list_shards(self, split: str) -> list[str]:
        return [split]

    def get_dataset(self, split="train", shuffle=True, seed=None, shard_info=None, **unused):
        rows = read(split, self._data_dir)
        ds = tf.data.Dataset.from_tensor_slices(
            {
                "sentence": tf.constant([r["sentence"] for r in rows], tf.string),
                "label": tf.constant([self._label(r) for r in rows], tf.int64),
                "idx": tf.constant([r["idx"] for r in rows], tf.int32),
            }
        )
        if shard_info and shard_info.num_shards > 1:
            ds = ds.shard(shard_info.num_shards, shard_info.index)
        return ds

    def _label(self, row: dict) -> int:
        if self._question == "negation":
            return int(" not " in row["sentence"])  # NEGATION_LABELS: plain 0, negated 1
        return LABELS.index(row["label"])


def _steps(name: str, label_names=LABELS) -> list:
    return [
        functools.partial(
            preprocessors.check_fields, task_name=name, fields=("sentence", "label", "idx")
        ),
        functools.partial(
            preprocessors.glue, prefix=None, label_names=label_names, feature_names=("sentence",)
        ),
    ]


def register() -> None:
    features = vocab.output_features(vocab.get_byte_vocabulary())
    for name, source, label_names in (
        (TASK, ShippedSource(question="sentiment"), LABELS),
        (NEGATION_TASK, ShippedSource(question="negation"), NEGATION_LABELS),
        (SHIFTED_TASK, ShippedSource(data_dir=SHIFTED_DATA_DIR), LABELS),
    ):
        registry.add_t5_task(
            name,
            source=source,
            text_preprocessors=_steps(name, label_names),
            postprocess_fn=postprocessors.class_id(label_names),
            metric_fns=[metrics.accuracy],
            primary_metrics=("accuracy",),
            label_names=label_names,
            output_features=features,
        )
        registry.add_rank_classification_task(
            f"{name}_rank_classification",
            source=source,
            text_preprocessors=_steps(f"{name}_rank_classification", label_names),
            label_names=label_names,
            output_features=features,
        )
    registry.add_mixture(
        MIXTURE,
        [f"{TASK}_rank_classification", f"{NEGATION_TASK}_rank_classification"],
        default_rate=1.0,
    )


register()
