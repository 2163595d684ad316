"""TensorFlow preprocessors that turn TFDS records into T5's text-to-text strings, and the token
steps after tokenization (sentinels, truncation with a count, EOS).

The string formats reproduce the T5 library's (`t5.data.preprocessors`) exactly, because the
paper's numbers, T5's checkpoints and users' expectations all assume them; the code is our own.
Every text preprocessor takes `prefix`: T5's task name ("boolq", "wsc:") or None for the paper's
"taskless" setting, which is T5's string with its first word removed.

Shapes: records hold scalar strings and int labels unless noted; outputs hold scalar `inputs` and
`targets` strings (plus pass-through fields for evaluation). After `tokenize`, `inputs` is
[input_length] and `targets` [target_length] int32.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import seqio
import tensorflow as tf

from ptune.errors import UserError
from ptune.tasks import labels

AUTOTUNE = tf.data.AUTOTUNE


# ----------------------------------------------------------------------------------------------
# Validation


def check_fields(dataset: tf.data.Dataset, *, task_name: str, fields: Sequence[str]):
    """Fails at pipeline construction when a record lacks a field, naming the task and the field.

    Why: without it a missing field surfaces as a bare `KeyError: 'passage'` from deep inside a
    traced function, with no hint of which task or data source is at fault. Nested fields are
    written with "/" (`idx/paragraph`).
    """
    spec = dataset.element_spec
    for field in fields:
        node = spec
        for part in field.split("/"):
            if not isinstance(node, Mapping) or part not in node:
                have = ", ".join(sorted(spec)) if isinstance(spec, Mapping) else str(spec)
                raise ValueError(
                    f"task {task_name}: record is missing field '{field}' (record has: {have})"
                )
            node = node[part]
    return dataset


@seqio.map_over_dataset
def rename_fields(x, *, names: Mapping[str, str]):
    """Renames fields {old: new}, keeping the others (AX-b's sentence1/2 as RTE's premise and
    hypothesis; unlike `seqio.preprocessors.rekey`, a `split` tag survives)."""
    return {names.get(key, key): value for key, value in x.items()}


# ----------------------------------------------------------------------------------------------
# String helpers


def pad_punctuation(text: tf.Tensor) -> tf.Tensor:
    """Surrounds every non-word character with spaces and collapses runs of whitespace.

    As T5's SQuAD preprocessing; RE2's `\\W` is ASCII-only, so non-ASCII letters count as
    punctuation too ("café" -> "caf é"), which is what T5 did as well.
    """
    text = tf.strings.regex_replace(text, r"(\W)", r" \1 ")
    return tf.strings.regex_replace(text, r"\s+", " ")


def join_collapsed(parts: Sequence) -> tf.Tensor:
    """Joins on spaces and collapses whitespace runs (T5's `_string_join`)."""
    return tf.strings.regex_replace(tf.strings.join(parts, separator=" "), r"\s+", " ")


def label_text(label: tf.Tensor, names: Sequence[str]) -> tf.Tensor:
    """The label string for a class index; "<unk>" for -1 (unlabelled test data) or out of range."""
    label = tf.cast(label, tf.int32)
    valid = tf.logical_and(label >= 0, label < len(names))
    name = tf.gather(tf.constant(list(names)), tf.clip_by_value(label, 0, len(names) - 1))
    return tf.where(valid, name, tf.constant(labels.UNKNOWN))


def _with_prefix(prefix: str | None, parts: list) -> list:
    return ([prefix] if prefix else []) + parts


# ----------------------------------------------------------------------------------------------
# GLUE-style classification (BoolQ, CB, COPA, MultiRC, RTE, WiC, AX-b, AX-g, QQP, MRPC)


@seqio.map_over_dataset
def glue(
    x,
    *,
    prefix: str | None,
    label_names: Sequence[str],
    feature_names: Sequence[str],
    multirc: bool = False,
):
    """`{prefix} {key1}: {x[key1]} {key2}: {x[key2]} ...` -> the label name.

    `feature_names` fixes the order; T5 used sorted field names unless told otherwise, so callers
    pass that sorted order (e.g. COPA: choice1, choice2, premise, question), or T5's explicit one
    (MultiRC: question, answer, paragraph; WiC: sentence1, sentence2, word).
    MultiRC also loses its HTML (`<br>` -> space, `<b>`/`</b>` removed) and flattens its
    `idx` dict to `idx/paragraph`, `idx/question`, `idx/answer` for grouped evaluation.
    The class index passes through as `label`, and the record's `split` tag when it has one
    (`sources.SplitTagged`), for rank classification.
    """
    parts = []
    for key in feature_names:
        parts += [f"{key}:", x[key]]
    inputs = tf.strings.join(_with_prefix(prefix, parts), separator=" ")
    out = {"targets": label_text(x["label"], label_names), "label": tf.cast(x["label"], tf.int32)}
    if "split" in x:
        out["split"] = x["split"]
    if multirc:
        inputs = tf.strings.regex_replace(inputs, "<br>", " ")
        inputs = tf.strings.regex_replace(inputs, "<(/)?b>", "")
        for key in ("paragraph", "question", "answer"):
            out[f"idx/{key}"] = x["idx"][key]
    else:
        out["idx"] = x["idx"]
    out["inputs"] = inputs
    return out


@seqio.map_over_dataset
def stsb(x, *, prefix: str | None):
    """`{prefix} sentence1: ... sentence2: ...` -> the similarity score as text with one decimal,
    rounded to the nearest 0.2 first ("3.8"), as T5 casts STS-B's regression as 26 classes.

    The rounding is TensorFlow's `round(label * 5) / 5` on the float32 label (halves to even),
    printed with one decimal, so targets equal T5's byte for byte; unlabelled test records
    (label -1) give "-1.0", as in T5.
    """
    parts = ["sentence1:", x["sentence1"], "sentence2:", x["sentence2"]]
    score = tf.round(tf.cast(x["label"], tf.float32) * 5) / 5
    return {
        "inputs": tf.strings.join(_with_prefix(prefix, parts), separator=" "),
        "targets": tf.strings.as_string(score, precision=1),
        "idx": x["idx"],
    }


# ----------------------------------------------------------------------------------------------
# ReCoRD


def record(dataset: tf.data.Dataset, *, prefix: str | None) -> tf.data.Dataset:
    """`{prefix} query: ... entities: e1, e2, ... passage: ...` -> one example per gold answer.

    The passage's `\\n@highlight\\n` bullet markers become sentence breaks: after closing
    punctuation just a space, otherwise ". ". Queries without answers (the test split) give one
    example with target "<unk>". Every example carries all gold `answers` [num_answers] and its
    `idx/passage`, `idx/query`, so evaluation can take the best match over answers once per query.
    """

    def explode(x):
        passage = tf.strings.regex_replace(x["passage"], r"(\.|\?|\!|\"|\')\n@highlight\n", r"\1 ")
        passage = tf.strings.regex_replace(passage, r"\n@highlight\n", ". ")
        entities = tf.strings.reduce_join(x["entities"], separator=", ")
        parts = ["query:", x["query"], "entities:", entities, "passage:", passage]
        inputs = tf.strings.join(_with_prefix(prefix, parts), separator=" ")
        answers = x["answers"]
        targets = tf.cond(
            tf.size(answers) > 0, lambda: answers, lambda: tf.constant([labels.UNKNOWN])
        )
        n = tf.shape(targets)[0]
        return tf.data.Dataset.from_tensor_slices(
            {
                "inputs": tf.fill([n], inputs),
                "targets": targets,
                "answers": tf.broadcast_to(answers[tf.newaxis], [n, tf.size(answers)]),
                "idx/passage": tf.fill([n], x["idx"]["passage"]),
                "idx/query": tf.fill([n], x["idx"]["query"]),
            }
        )

    return dataset.flat_map(explode)


# ----------------------------------------------------------------------------------------------
# WSC and DPR, T5's "simple" form: mark the pronoun, generate its referent.

# Two WSC texts whose span2_index points at the wrong word; T5 fixed them by hand. Keys are the
# texts as TFDS gives them, values the text with the pronoun replaced by " X ".
_WSC_BLANKED_BY_HAND = {
    "The boy continued to whip the pony , and eventually the pony threw him over. John laughed "
    'out quite loud. "Good for him," he said. ': "The boy continued to whip the pony , and "
    'eventually the pony threw him over. John laughed out quite loud. "Good for X ," he said.',
    "When they had eventually calmed down a bit , and had gotten home, Mr. Farley put the magic "
    "pebble in an iron safe . Some day they might want to use it , but really for now, what more "
    "could they wish for?": "When they had eventually calmed down a bit , and had gotten home, "
    "Mr. Farley put the magic pebble in an iron safe . Some day they might want to use X , but "
    "really for now, what more could they wish for?",
}


def _wsc_blank_pronoun(x) -> tf.Tensor:
    """The text with the space-separated word at `span2_index` replaced by "X"."""
    words = tf.strings.split(x["text"], sep=" ")
    i = tf.clip_by_value(tf.cast(x["span2_index"], tf.int32), 0, tf.size(words))
    blanked = tf.strings.join(
        [
            tf.strings.reduce_join(words[:i], separator=" "),
            "X",
            tf.strings.reduce_join(words[i + 1 :], separator=" "),
        ],
        separator=" ",
    )
    for text, fixed in _WSC_BLANKED_BY_HAND.items():
        blanked = tf.where(tf.equal(x["text"], text), fixed, blanked)
    return blanked


def wsc_simple(
    dataset: tf.data.Dataset, *, prefix: str | None, correct_referent_only: bool
) -> tf.data.Dataset:
    """`{prefix} ... *he* ...` -> the candidate referent (`span1_text`).

    The target is the candidate whether or not it is right, so training keeps only examples
    whose label says it is (`correct_referent_only`); evaluation keeps all and compares the
    generated referent with the candidate (`postprocessors.wsc_simple`), scoring against the
    label. As in T5, every " X " left by blanking is marked, and a pronoun at the very start or
    end of the text is not marked.
    """
    if correct_referent_only:
        dataset = dataset.filter(lambda x: tf.equal(tf.cast(x["label"], tf.int32), 1))

    def fmt(x):
        marked = tf.strings.regex_replace(
            _wsc_blank_pronoun(x), r" X ", tf.strings.join([" *", x["span2_text"], "* "])
        )
        return {
            "inputs": tf.strings.join(_with_prefix(prefix, [marked]), separator=" "),
            "targets": x["span1_text"],
            "label": tf.cast(x["label"], tf.int32),
            "idx": x["idx"],
        }

    return dataset.map(fmt, num_parallel_calls=AUTOTUNE)


@seqio.map_over_dataset
def dpr_simple(x, *, prefix: str | None):
    """Definite Pronoun Resolution in WSC's simple form: the first whole-word occurrence of the
    pronoun is starred, the target is the labelled candidate [2 candidates]."""
    pattern = tf.strings.join([r" (", x["pronoun"], r")( |\.|,)"])
    marked = tf.strings.regex_replace(x["sentence"], pattern, r" *\1*\2", replace_global=False)
    label = tf.clip_by_value(tf.cast(x["label"], tf.int32), 0, 1)
    return {
        "inputs": tf.strings.join(_with_prefix(prefix, [marked]), separator=" "),
        "targets": x["candidates"][label],
    }


# ----------------------------------------------------------------------------------------------
# Extractive QA: SQuAD and MRQA


def _first_or_empty(strings: tf.Tensor) -> tf.Tensor:
    return tf.concat([strings, [""]], axis=0)[0]


@seqio.map_over_dataset
def squad(x):
    """`question: ... context: ...` -> the first answer, with punctuation padded everywhere.

    Passes through `id`, the padded `question`, `context` and all `answers` [num_answers] for
    the SQuAD metric (maximum over gold answers).
    """
    answers = pad_punctuation(x["answers"]["text"])
    question = pad_punctuation(x["question"])
    context = pad_punctuation(x["context"])
    return {
        "inputs": join_collapsed(["question:", question, "context:", context]),
        "targets": _first_or_empty(answers),
        "id": x["id"],
        "question": question,
        "context": context,
        "answers": answers,
    }


@seqio.map_over_dataset
def mrqa(x):
    """TFDS `mrqa/*` records in SQuAD's format, so a SQuAD-trained prompt reads them unchanged."""
    answers = pad_punctuation(x["answers"])
    question = pad_punctuation(x["question"])
    context = pad_punctuation(x["context"])
    return {
        "inputs": join_collapsed(["question:", question, "context:", context]),
        "targets": _first_or_empty(answers),
        "id": x["qid"],
        "question": question,
        "context": context,
        "answers": answers,
    }


# ----------------------------------------------------------------------------------------------
# Rank classification


def rank_classification(dataset: tf.data.Dataset, *, label_names: Sequence[str]):
    """One example per (input, candidate label) for evaluation, the correct one alone for
    training: the model scores each label string and the highest-scoring one is the prediction.

    The split comes from the `split` field that `sources.SplitTagged` adds to each record,
    because seqio does not tell preprocessors which split they prepare. On "train" this is T5's
    `rank_classification(mode="train")`: only the correct candidate, since fitting the wrong
    label strings would teach the model to produce them. On every other split it is
    `mode="eval"`: each formatted example (its class index in `label`) becomes
    len(label_names) examples with the same `inputs`, `targets` = one label name, `idx` [2]
    int32 = (example number within the split, candidate number), `is_correct` bool and
    `weight` float32 1.0. Test records (label -1) have no correct candidate.
    """
    if "split" not in dataset.element_spec:
        raise ValueError(
            "rank classification needs each record's split: read the task through "
            "sources.SplitTagged, as registry.add_rank_classification_task does"
        )
    names = tf.constant(list(label_names))
    k = len(label_names)

    def explode(i, x):
        candidates = tf.range(k, dtype=tf.int32)
        is_correct = tf.equal(candidates, tf.cast(x["label"], tf.int32))
        keep = tf.logical_or(is_correct, tf.not_equal(x["split"], "train"))
        return tf.data.Dataset.from_tensor_slices(
            {
                "idx": tf.boolean_mask(
                    tf.stack([tf.fill([k], tf.cast(i, tf.int32)), candidates], axis=1), keep
                ),
                "inputs": tf.boolean_mask(tf.fill([k], x["inputs"]), keep),
                "targets": tf.boolean_mask(names, keep),
                "is_correct": tf.boolean_mask(is_correct, keep),
                "weight": tf.boolean_mask(tf.ones([k], tf.float32), keep),
            }
        )

    return dataset.enumerate().flat_map(explode)


# ----------------------------------------------------------------------------------------------
# Token preprocessors (after `seqio.preprocessors.tokenize`)


def sentinel_id(vocabulary: seqio.Vocabulary) -> int:
    """`<extra_id_0>`: the last id of the vocabulary (32,099 for T5's). A vocabulary without
    extra ids (a decoder-only model's tokenizer) has none: its last id is a real token."""
    if not vocabulary.extra_ids:
        raise UserError(
            "T5's `_1_sentinel` tasks end their inputs with the sentinel <extra_id_0>, and this "
            "vocabulary has no sentinel ids (a decoder-only model's tokenizer has none): use "
            "the task without `_1_sentinel`"
        )
    return vocabulary.vocab_size - 1


def add_sentinel(dataset: tf.data.Dataset, output_features) -> tf.data.Dataset:
    """Appends `<extra_id_0>` to `inputs` and prepends it to `targets` (T5's `_1_sentinel` tasks).

    Why: a span-corruption-only T5 (not LM-adapted) expects a sentinel before what it generates;
    the paper's "span corruption + sentinel" setting uses this to let it answer at all.
    """
    inputs_id = sentinel_id(output_features["inputs"].vocabulary)
    targets_id = sentinel_id(output_features["targets"].vocabulary)

    def add(x):
        x = dict(x)
        x["inputs"] = tf.concat([x["inputs"], [inputs_id]], axis=0)
        x["targets"] = tf.concat([[targets_id], x["targets"]], axis=0)
        return x

    return dataset.map(add, num_parallel_calls=AUTOTUNE)


def trim_and_append_eos(
    dataset: tf.data.Dataset,
    output_features,
    sequence_length: Mapping[str, int] | None = None,
    preserve_final: Mapping[str, int] | None = None,
) -> tf.data.Dataset:
    """Truncates each EOS feature to `sequence_length - 1` ids, appends EOS, and records how many
    ids were cut in `{feature}_truncated` (int32 scalar; 0 when it fit).

    Why a count: seqio truncates silently, and an overlong ReCoRD passage or a too-short
    `inputs` length otherwise only shows as a quietly worse score. `count_truncated` counts them.
    `preserve_final` ({feature: n}) keeps a feature's last n ids when cutting, so the sentinel at
    the end of `inputs` is never lost.
    """

    def trim(x):
        x = dict(x)
        for key, feature in output_features.items():
            if key not in x or not feature.add_eos:
                continue
            value = x[key]
            cut = tf.constant(0, tf.int32)
            if sequence_length is not None and sequence_length.get(key) is not None:
                keep = max(sequence_length[key] - 1, 0)
                n = tf.size(value)
                cut = tf.maximum(n - keep, 0)
                kept_tail = min((preserve_final or {}).get(key, 0), keep)
                head = value[: keep - kept_tail]
                tail = value[n - kept_tail :] if kept_tail else value[:0]
                value = tf.cond(
                    cut > 0,
                    lambda head=head, tail=tail: tf.concat([head, tail], 0),
                    lambda value=value: value,
                )
            x[key] = tf.concat([value, [feature.vocabulary.eos_id]], axis=0)
            x[f"{key}_truncated"] = cut
        return x

    return dataset.map(trim, num_parallel_calls=AUTOTUNE)


def count_truncated(
    dataset: tf.data.Dataset, features=("inputs", "targets")
) -> tuple[int, dict[str, dict[str, int]]]:
    """(examples read, {feature: {"examples": n truncated, "tokens": ids cut}}) over a dataset
    built with `trim_and_append_eos`; for the truncation lines of training and evaluation."""
    totals = {f: {"examples": 0, "tokens": 0} for f in features}
    present = [f for f in features if f"{f}_truncated" in dataset.element_spec]
    # Only the counts leave the pipeline, in large batches: one example at a time, reading
    # a thousand examples took longer than building the pipeline.
    counts = dataset.map(
        lambda ex: {"read": tf.constant(1), **{f: ex[f"{f}_truncated"] for f in present}}
    ).batch(4096)
    read = 0
    for batch in counts.as_numpy_iterator():
        read += int(batch["read"].sum())
        for f in present:
            totals[f]["examples"] += int((batch[f] > 0).sum())
            totals[f]["tokens"] += int(batch[f].sum())
    return read, totals


def load_vocabularies(dataset: tf.data.Dataset, output_features) -> tf.data.Dataset:
    """Loads each feature's vocabulary before tokenization is traced.

    Why: a missing or unreachable vocabulary file raised inside tf.data tracing arrives wrapped
    in an autograph StagingError many frames deep; loaded here, it is the plain one-line
    FileNotFoundError naming the path.
    """
    for feature in output_features.values():
        _ = feature.vocabulary.vocab_size
    return dataset


def t5_token_steps(sentinel: bool = False) -> list:
    """The steps after the text preprocessors: tokenize, cache point, [sentinel], trim + EOS."""
    steps = [load_vocabularies, seqio.preprocessors.tokenize, seqio.CacheDatasetPlaceholder()]
    if sentinel:
        steps.append(add_sentinel)
        steps.append(_trim_keep_sentinel)
    else:
        steps.append(trim_and_append_eos)
    return steps


def _trim_keep_sentinel(dataset, output_features, sequence_length=None):
    return trim_and_append_eos(
        dataset, output_features, sequence_length, preserve_final={"inputs": 1}
    )
