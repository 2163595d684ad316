"""SQuAD, MRQA and QQP/MRPC records shaped as TFDS gives them; shared by the transfer and
all-task tests."""

SQUAD = {
    "id": "5733be284776f41900661182",
    "title": "University_of_Notre_Dame",
    "context": "Architecturally, the school has a Catholic character.",
    "question": "What is the school's character?",
    "answers": {"text": ["a Catholic character", "Catholic"], "answer_start": [32, 34]},
}
MRQA_BIOASQ = {
    "subset": "BioASQ",
    "context": "Hepcidin regulates iron (Fe) absorption.",
    "context_tokens": {"tokens": ["Hepcidin", "regulates", "iron"], "offsets": [0, 9, 19]},
    "qid": "b1f3",
    "question": "What does hepcidin regulate?",
    "question_tokens": {"tokens": ["What", "does"], "offsets": [0, 5]},
    "answers": ["iron (Fe) absorption", "iron"],
}
QQP = {
    "question1": "How do I learn Python?",
    "question2": "What is the best way to learn Python?",
    "label": 1,
    "idx": 3,
}
MRPC = {
    "sentence1": "Amrozi accused his brother.",
    "sentence2": "Referring to him as the witness, Amrozi accused his brother.",
    "label": 1,
    "idx": 0,
}
