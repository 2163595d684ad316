"""Class label strings of every classification task, in class-index order. The one place they live.

Why a module of data: the preprocessors (index -> target string), the postprocessors (string ->
index, -1 when invalid), rank classification (one candidate per label) and the prompt's
"class labels" initializer (mean embedding of each label's sub-tokens, the paper's default) must
all agree on the same strings in the same order. Orders follow the TFDS `ClassLabel` names, so a
TFDS label int indexes these tuples directly.
"""

SUPER_GLUE = {
    "boolq": ("False", "True"),
    "cb": ("entailment", "contradiction", "neutral"),
    "copa": ("choice1", "choice2"),
    "multirc": ("False", "True"),
    "rte": ("entailment", "not_entailment"),
    "wic": ("False", "True"),
    "wsc.fixed": ("False", "True"),
    "axb": ("entailment", "not_entailment"),
    "axg": ("entailment", "not_entailment"),
}

_MNLI = ("entailment", "neutral", "contradiction")

# STS-B is missing on purpose: its label is a similarity score in [0, 5], not a class.
GLUE = {
    "cola": ("unacceptable", "acceptable"),
    "sst2": ("negative", "positive"),
    "mrpc": ("not_equivalent", "equivalent"),
    "qqp": ("not_duplicate", "duplicate"),
    "mnli": _MNLI,
    "mnli_matched": _MNLI,
    "mnli_mismatched": _MNLI,
    "qnli": ("entailment", "not_entailment"),
    "rte": ("entailment", "not_entailment"),
    "wnli": ("not_entailment", "entailment"),
    "ax": _MNLI,
}

# The offline demo task (tasks/demo.py): toy sentiment of short English sentences.
DEMO = ("negative", "positive")

# Target written for test-split records, whose label is -1 in TFDS (as T5 does).
UNKNOWN = "<unk>"
