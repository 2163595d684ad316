"""Every task ptune registers runs its real preprocessors on a record and gives the expected text.

Each registered name is reduced to its taskless base task, whose expected inputs and target are
written by hand (here or in the per-family test modules); the variants must relate to it exactly:
the T5 form adds the task word, `_1_sentinel` keeps the strings and brackets the ids with
`<extra_id_0>`, `_rank_classification` pairs the same inputs with every label.
"""

import warnings

import pytest
import seqio
from glue_records import BASES as GLUE_BASES
from superglue_records import CASES, RECORD, RECORD_TEXT
from task_support import run_all, texts
from transfer_records import MRQA_BIOASQ, SQUAD

from ptune import data
from ptune.tasks import registry

DPR = {
    "sentence": "Bob asked Tom if he can lend some money.",
    "pronoun": "he",
    "candidates": ["Bob", "Tom"],
    "label": 1,
}
MRQA_TEXT = (
    "question: What does hepcidin regulate ? context: Hepcidin regulates iron ( Fe ) absorption . "
)

# taskless base task -> (record, split, inputs without task word, target, T5 task word)
BASES = {
    f"taskless_super_glue_{suffix}": (record, split, text, target, word)
    for suffix, record, split, text, word, target in CASES
}
BASES.update(
    {
        "taskless_super_glue_record_v102": (RECORD, "train", RECORD_TEXT, "The harbour", "record"),
        "taskless_dpr_v001_simple": (
            DPR,
            "train",
            "Bob asked Tom if *he* can lend some money.",
            "Tom",
            "wsc:",
        ),
        "squad_v010_allanswers": (
            SQUAD,
            "validation",
            (
                "question: What is the school ' s character ? context: Architecturally , the school "
                "has a Catholic character . "
            ),
            "a Catholic character",
            None,
        ),
        "ptune_demo": (
            {"sentence": "the park is nice.", "label": 1, "idx": 0},
            "validation",
            "sentence: the park is nice.",
            "positive",
            None,
        ),
        "ptune_demo_shifted": (
            {"sentence": "the nurse was not gentle.", "label": 0, "idx": 0},
            "validation",
            "sentence: the nurse was not gentle.",
            "negative",
            None,
        ),
        "ptune_demo_negation": (
            {"sentence": "the park is not nice.", "label": 1, "idx": 0},
            "validation",
            "sentence: the park is not nice.",
            "negated",
            None,
        ),
    }
)
BASES.update({f"taskless_glue_{config}_v200": case for config, case in GLUE_BASES.items()})
for name in ("textbook_qa", "bio_asq", "race", "relation_extraction", "duo_rc", "drop"):
    BASES[f"mrqa_{name}_v100"] = (
        MRQA_BIOASQ,
        "validation",
        MRQA_TEXT,
        "iron ( Fe ) absorption",
        None,
    )

TASKS = sorted(set(registry.list_tasks(only_ptune=True)) & set(seqio.TaskRegistry.names()))


def base_of(name: str) -> tuple[str, bool]:
    """(taskless base task, whether `name` writes the task word)."""
    base = name.replace("_1_sentinel", "").replace("_rank_classification", "")
    base = base.replace("mrpc_from_qqp", "mrpc").replace("qqp_from_mrpc", "qqp")
    for t5_prefix in ("super_glue_", "glue_", "dpr_"):
        if base.startswith(t5_prefix):
            return "taskless_" + base, True
    return base, False


def test_every_registered_task_is_covered():
    assert len(TASKS) == 125
    assert {base_of(name)[0] for name in TASKS} == set(BASES)


def test_no_registered_mixture_needs_autograph():
    mixtures = registry.list_mixtures(only_ptune=True)
    assert mixtures and not [m for m in mixtures if data.needs_autograph(m)]


def metric_results(name: str, examples: list, prediction: str) -> dict:
    """What the task's own postprocessor and metric functions report when the model outputs
    `prediction` for every example (rank classification: a made-up score per candidate)."""
    task = seqio.get_mixture_or_task(name)
    post = task.postprocess_fn or (lambda text, example=None, is_target=False: text)
    targets = [
        post(ex["targets_pretokenized"].decode(), example=ex, is_target=True) for ex in examples
    ]
    results = {}
    with warnings.catch_warnings():  # one example: correlations of constant inputs warn.
        warnings.simplefilter("ignore")
        for fn in task.predict_metric_fns:
            results.update(fn(targets, [post(prediction, example=ex) for ex in examples]))
        for fn in task.score_metric_fns:
            results.update(fn(targets, [-float(i) for i in range(len(examples))]))
    return results


@pytest.mark.usefixtures("t5_vocab")
@pytest.mark.parametrize("name", TASKS)
def test_registered_task_runs_on_a_record(name):
    base, with_word = base_of(name)
    record, split, text, target, word = BASES[base]
    if with_word:
        text = f"{word} {text}"
    # Built as ptune builds it: its functions are ptune's and seqio's, traced as written
    # (no autograph conversion).
    assert not data.needs_autograph(name)
    with data.building_dataset(name):
        out = run_all(name, [record], split)
    if name.endswith("_rank_classification") and split == "train":
        # Training reads only the correct candidate (T5's mode="train").
        assert [texts(ex) for ex in out] == [(text, target)]
    elif name.endswith("_rank_classification"):
        assert [texts(ex) for ex in out] == [(text, label) for label in registry.label_names(name)]
    else:
        assert texts(out[0]) == (text, target)
    # Tokenized with the task's vocabulary, EOS-terminated (sentinel tasks: <extra_id_0> too).
    vocabulary = seqio.get_mixture_or_task(name).output_features["inputs"].vocabulary
    sentinel = [32099] if "_1_sentinel" in name else []
    assert list(out[0]["inputs"]) == vocabulary.encode(text) + sentinel + [1]
    expected_target = out[0]["targets_pretokenized"].decode()
    assert list(out[0]["targets"]) == sentinel + vocabulary.encode(expected_target) + [1]
    # Its primary metrics are keys its metric functions really report.
    [primary] = registry.primary_metrics(name).values() or [()]
    results = metric_results(name, out, target)
    assert set(primary) <= set(results) and bool(primary) == bool(results)
