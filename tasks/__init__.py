"""seqio task registrations, installed as `ptune.tasks`.

Importing this package registers every task and mixture (SuperGLUE, GLUE, QQP <-> MRPC transfer,
SQuAD/MRQA, the offline demo); importing it again re-registers them without error. The CLI and
scripts need only:

    from ptune.tasks import registry
    registry.list_tasks()                      # sorted task and mixture names (`ptune tasks`)
    registry.get_task_or_mixture(name)         # ValueError listing close matches if unknown
    registry.label_names(name)                 # class label strings, or None for free text
    registry.primary_metrics(name)             # {task: metric names that make its score}
    registry.primary_score(name, results)      # the mean of those, over the scored tasks
    vocab.set_sentencepiece_path(path)         # T5 vocabulary file (gs://, local, "mt5")
    sources.set_tfds_data_dir(path)            # offline data: see tasks/README.md
    sources.check_task_data(name, splits)      # is the data there? (before loading a model)
    files.FileTask(...).register()             # a task from JSONL/TSV files
    pretraining.CorpusTask(...).register()     # span corruption / prefix LM over text files
"""

from ptune.tasks import (  # noqa: F401
    demo,
    files,
    glue,
    mrqa,
    pretraining,
    registry,
    sources,
    superglue,
    vocab,
)
from ptune.tasks.registry import get_task_or_mixture, label_names, list_tasks  # noqa: F401
