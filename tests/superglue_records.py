"""SuperGLUE records shaped as TFDS gives them, and the exact T5 strings they must become
(written by hand from T5's format); shared by the SuperGLUE, source and all-task tests."""

BOOLQ = {
    "question": "is the sky blue",
    "passage": "Sky -- The sky appears blue because air scatters blue light.",
    "label": 1,
    "idx": 4,
}
CB = {
    "premise": "It was a complex language. Not written down but handed down.",
    "hypothesis": "the language was peeled down",
    "label": 2,
    "idx": 0,
}
COPA = {
    "premise": "My body cast a shadow over the grass.",
    "choice1": "The sun was rising.",
    "choice2": "The grass was cut.",
    "question": "cause",
    "label": 0,
    "idx": 0,
}
MULTIRC = {
    "paragraph": "<b>Sent 1: </b>Susan wanted a party.<br><b>Sent 2: </b>She called her friends.<br>",
    "question": "Who did Susan call?",
    "answer": "Her friends",
    "label": 1,
    "idx": {"paragraph": 3, "question": 11, "answer": 2},
}
RECORD = {
    "passage": "The harbour closed.\n@highlight\nShips waited outside\n@highlight\nNo one was hurt",
    "query": "@placeholder stayed shut all day.",
    "entities": ["Ships", "The harbour", "harbour"],
    "answers": ["The harbour", "harbour"],
    "idx": {"passage": 5, "query": 9},
}
RTE = {
    "premise": "Dana Reeve died of lung cancer.",
    "hypothesis": "Christopher Reeve had an accident.",
    "label": 1,
    "idx": 0,
}
WIC = {
    "word": "place",
    "sentence1": "Do you want to come over to my place later?",
    "sentence2": "A political system with no place for the less prominent groups.",
    "start1": 31,
    "start2": 27,
    "end1": 36,
    "end2": 32,
    "label": 0,
    "idx": 0,
}
WSC = {
    "text": "Mark told Pete many lies about himself, which Pete included in his book. "
    "He should have been more truthful.",
    "span1_index": 0,
    "span2_index": 13,
    "span1_text": "Mark",
    "span2_text": "He",
    "label": 1,
    "idx": 0,
}
AXB = {
    "sentence1": "The cat sat on the mat.",
    "sentence2": "The cat did not sit on the mat.",
    "label": 1,
    "idx": 0,
}
AXG = {
    "premise": "The nurse notified the patient that his shift would be ending in an hour.",
    "hypothesis": "The patient's shift would be ending in an hour.",
    "label": 1,
    "idx": 0,
}

MULTIRC_TEXT = (
    "question: Who did Susan call? answer: Her friends paragraph: Sent 1: Susan wanted a "
    "party. Sent 2: She called her friends. "
)
RECORD_TEXT = (
    "query: @placeholder stayed shut all day. entities: Ships, The harbour, harbour "
    "passage: The harbour closed. Ships waited outside. No one was hurt"
)
WSC_TEXT = (
    "Mark told Pete many lies about himself, which Pete included in his book. "
    "*He* should have been more truthful."
)

# (task suffix, record, split, T5 inputs without the task word, task word, target); every
# task built on these is run in test_tasks_all.py, in both the T5 and the taskless form.
CASES = [
    (
        "boolq_v102",
        BOOLQ,
        "validation",
        (
            "passage: Sky -- The sky appears blue because air scatters blue light. "
            "question: is the sky blue"
        ),
        "boolq",
        "True",
    ),
    (
        "cb_v102",
        CB,
        "validation",
        (
            "hypothesis: the language was peeled down premise: It was a complex language. "
            "Not written down but handed down."
        ),
        "cb",
        "neutral",
    ),
    (
        "copa_v102",
        COPA,
        "train",
        (
            "choice1: The sun was rising. choice2: The grass was cut. premise: My body cast a "
            "shadow over the grass. question: cause"
        ),
        "copa",
        "choice1",
    ),
    ("multirc_v102", MULTIRC, "validation", MULTIRC_TEXT, "multirc", "True"),
    (
        "rte_v102",
        RTE,
        "validation",
        "hypothesis: Christopher Reeve had an accident. premise: Dana Reeve died of lung cancer.",
        "rte",
        "not_entailment",
    ),
    (
        "wic_v102",
        WIC,
        "validation",
        (
            "sentence1: Do you want to come over to my place later? sentence2: A political system "
            "with no place for the less prominent groups. word: place"
        ),
        "wic",
        "False",
    ),
    (
        "axb_v102",
        AXB,
        "test",
        "hypothesis: The cat did not sit on the mat. premise: The cat sat on the mat.",
        "rte",
        "not_entailment",
    ),
    (
        "axg_v102",
        AXG,
        "test",
        (
            "hypothesis: The patient's shift would be ending in an hour. premise: The nurse "
            "notified the patient that his shift would be ending in an hour."
        ),
        "rte",
        "not_entailment",
    ),
    ("wsc_v102_simple_eval", WSC, "validation", WSC_TEXT, "wsc:", "Mark"),
    ("wsc_v102_simple_train", WSC, "train", WSC_TEXT, "wsc:", "Mark"),
]

OFFICIAL_MULTIRC_TEXT = MULTIRC["paragraph"]
RECORD_PASSAGE = (
    "The harbour closed.\n@highlight\nShips waited outside\n@highlight\nNo one was hurt"
)

# Records exactly as the official SuperGLUE zips hold them (val.jsonl unless noted).
OFFICIAL = {
    "boolq": {"question": BOOLQ["question"], "passage": BOOLQ["passage"], "idx": 4, "label": True},
    "cb": {"premise": CB["premise"], "hypothesis": CB["hypothesis"], "label": "neutral", "idx": 0},
    "copa": {**{k: COPA[k] for k in ("premise", "choice1", "choice2", "question")}, "label": 0, "idx": 0},
    "multirc": {
        "idx": 3,
        "version": 1.1,
        "passage": {
            "text": OFFICIAL_MULTIRC_TEXT,
            "questions": [
                {
                    "question": "Who did Susan call?",
                    "answers": [
                        {"text": "Her friends", "idx": 2, "label": 1},
                        {"text": "Her dog", "idx": 3, "label": 0},
                    ],
                    "idx": 11,
                }
            ],
        },
    },
    "record": {
        "source": "Daily mail",
        "passage": {
            "text": RECORD_PASSAGE,
            "entities": [{"start": 0, "end": 10}, {"start": 4, "end": 10}, {"start": 31, "end": 35}],
        },
        "qas": [
            {
                "query": "@placeholder stayed shut all day.",
                "answers": [
                    {"start": 0, "end": 10, "text": "The harbour"},
                    {"start": 4, "end": 10, "text": "harbour"},
                ],
                "idx": 9,
            }
        ],
        "idx": 5,
    },
    "rte": {"premise": RTE["premise"], "hypothesis": RTE["hypothesis"], "label": "not_entailment", "idx": 0},
    "wic": {**{k: WIC[k] for k in WIC if k != "label"}, "label": False, "version": 1.1},
    "wsc.fixed": {
        "text": WSC["text"],
        "target": {"span2_index": 13, "span1_index": 0, "span1_text": "Mark", "span2_text": "He"},
        "idx": 0,
        "label": True,
    },
    "axb": {"sentence1": AXB["sentence1"], "sentence2": AXB["sentence2"], "label": "not_entailment", "idx": 0, "logic": "Negation"},
    "axg": {"hypothesis": AXG["hypothesis"], "premise": AXG["premise"], "idx": 0, "pair_id": 1, "label": "not_entailment"},
}  # fmt: skip
