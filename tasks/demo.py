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
"""

from __future__ import annotations

import functools
import json
import os
import random

import seqio
import tensorflow as tf

from ptune.tasks import labels, metrics, postprocessors, preprocessors, registry, vocab

TASK = "ptune_demo"
LABELS = labels.DEMO  # ("negative", "positive"): the class-label initializer's strings.
DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "demo")
SPLITS = {"train": 400, "validation": 80}
# Longest formatted input is 49 bytes + EOS; "positive"/"negative" are 8 bytes + EOS.
SEQUENCE_LENGTH = {"inputs": 64, "targets": 9}

_SUBJECTS = (
    "the soup", "the movie", "this phone", "the hotel", "our trip", "the concert", "my chair",
    "the service", "that book", "the coffee", "the game", "her song", "the park", "his car",
    "the lesson", "the weather", "the bread", "this show", "the room", "the staff",
)  # fmt: skip
_VERBS = ("was", "is", "felt", "seemed", "looked")
_POSITIVE = ("good", "great", "lovely", "excellent", "pleasant", "fun", "wonderful", "nice")
_NEGATIVE = ("bad", "awful", "boring", "terrible", "dull", "poor", "sad", "horrible")
_ADVERBS = ("", "very ", "really ", "quite ")


def _sentence(rng: random.Random) -> dict:
    negated = rng.random() < 0.4
    positive_word = rng.random() < 0.5
    adjective = rng.choice(_POSITIVE if positive_word else _NEGATIVE)
    text = (
        f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {'not ' if negated else ''}"
        f"{rng.choice(_ADVERBS)}{adjective}."
    )
    return {"sentence": text, "label": LABELS[int(positive_word != negated)]}


def generate(seed: int = 0) -> dict[str, list[dict]]:
    """The shipped data: distinct sentences, validation disjoint from train, balanced labels."""
    rng = random.Random(seed)
    seen, per_label = set(), {name: [] for name in LABELS}
    total = sum(SPLITS.values())
    while min(len(v) for v in per_label.values()) < total // 2:
        example = _sentence(rng)
        if example["sentence"] not in seen:
            seen.add(example["sentence"])
            per_label[example["label"]].append(example)
    pool = [ex for pair in zip(*(v[: total // 2] for v in per_label.values())) for ex in pair]
    out, start = {}, 0
    for split, size in SPLITS.items():
        out[split] = [{**ex, "idx": i} for i, ex in enumerate(pool[start : start + size])]
        start += size
    return out


def write(data_dir: str = DATA_DIR, seed: int = 0) -> None:
    """Regenerates the JSONL files (one record per line, keys sorted)."""
    os.makedirs(data_dir, exist_ok=True)
    for split, rows in generate(seed).items():
        with open(os.path.join(data_dir, f"{split}.jsonl"), "w", encoding="utf-8") as f:
            f.writelines(json.dumps(row, sort_keys=True) + "\n" for row in rows)


def read(split: str, data_dir: str = DATA_DIR) -> list[dict]:
    with open(os.path.join(data_dir, f"{split}.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


class ShippedSource(seqio.DataSource):
    """The shipped JSONL as records in TFDS shapes: `sentence` string, `label` int64, `idx` int32.

    Why not `seqio.FunctionDataSource`: it warns on every training read that uncached function
    sources shuffle poorly, which is moot for 400 in-memory rows that seqio's example-level
    shuffle buffer holds entirely.
    """

    def __init__(self, data_dir: str = DATA_DIR):
        self._data_dir = data_dir
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
                "label": tf.constant([LABELS.index(r["label"]) for r in rows], tf.int64),
                "idx": tf.constant([r["idx"] for r in rows], tf.int32),
            }
        )
        if shard_info and shard_info.num_shards > 1:
            ds = ds.shard(shard_info.num_shards, shard_info.index)
        return ds


def _steps(name: str) -> list:
    return [
        functools.partial(
            preprocessors.check_fields, task_name=name, fields=("sentence", "label", "idx")
        ),
        functools.partial(
            preprocessors.glue, prefix=None, label_names=LABELS, feature_names=("sentence",)
        ),
    ]


def register() -> None:
    source = ShippedSource()
    features = vocab.output_features(vocab.get_byte_vocabulary())
    registry.add_t5_task(
        TASK,
        source=source,
        text_preprocessors=_steps(TASK),
        postprocess_fn=postprocessors.class_id(LABELS),
        metric_fns=[metrics.accuracy],
        primary_metrics=("accuracy",),
        label_names=LABELS,
        output_features=features,
    )
    registry.add_rank_classification_task(
        f"{TASK}_rank_classification",
        source=source,
        text_preprocessors=_steps(f"{TASK}_rank_classification"),
        label_names=LABELS,
        output_features=features,
    )


register()
