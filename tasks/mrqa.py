"""SQuAD v1.1 and the six MRQA 2019 out-of-domain sets: the paper's QA domain-transfer study
(Section 6, Table 1), where a prompt trained on SQuAD is evaluated zero-shot elsewhere.

Registered names:
  squad_v010_allanswers          `question: ... context: ...` -> answer; SQuAD EM/F1 over all
                                 gold answers (TFDS squad/v1.1:3.0.0)
  mrqa_{name}_v100               evaluation only, TFDS mrqa/{name}:1.0.0 (whose dev data TFDS
                                 files under "test"; read here as "validation")
  squad_to_{name}                mixture: train on SQuAD, evaluate on one MRQA set
  squad_to_mrqa                  mixture: train on SQuAD, evaluate on all six
SQuAD's format has no task word, so there is no separate "taskless" variant.
"""

from __future__ import annotations

import functools

from ptune.tasks import metrics, postprocessors, preprocessors, registry, sources

MRQA_SETS = ("textbook_qa", "bio_asq", "race", "relation_extraction", "duo_rc", "drop")


def register() -> None:
    registry.add_t5_task(
        "squad_v010_allanswers",
        source=sources.TaskSource(
            "squad/v1.1:3.0.0", splits={"train": "train", "validation": "validation"}
        ),
        text_preprocessors=[
            functools.partial(
                preprocessors.check_fields,
                task_name="squad_v010_allanswers",
                fields=("id", "question", "context", "answers/text"),
            ),
            preprocessors.squad,
        ],
        postprocess_fn=postprocessors.qa,
        metric_fns=[metrics.squad],
        primary_metrics=("em", "f1"),
    )
    for name in MRQA_SETS:
        task = f"mrqa_{name}_v100"
        registry.add_t5_task(
            task,
            source=sources.TaskSource(f"mrqa/{name}:1.0.0", splits={"validation": "test"}),
            text_preprocessors=[
                functools.partial(
                    preprocessors.check_fields,
                    task_name=task,
                    fields=("qid", "question", "context", "answers"),
                ),
                preprocessors.mrqa,
            ],
            postprocess_fn=postprocessors.qa,
            metric_fns=[metrics.squad],
            primary_metrics=("f1",),  # as the paper's Table 1 and the MRQA shared task report.
        )
        registry.add_mixture(f"squad_to_{name}", ["squad_v010_allanswers", task], default_rate=1.0)
    registry.add_mixture(
        "squad_to_mrqa",
        ["squad_v010_allanswers"] + [f"mrqa_{name}_v100" for name in MRQA_SETS],
        default_rate=1.0,
    )


register()
