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

GLUE = {
    "qqp": ("not_duplicate", "duplicate"),
    "mrpc": ("not_equivalent", "equivalent"),
}

# The offline demo task (tasks/demo.py): toy sentiment of short English sentences.
DEMO = ("negative", "positive")

# Target written for test-split records, whose label is -1 in TFDS (as T5 does).
UNKNOWN = "<unk>"
