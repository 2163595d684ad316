"""The registry helpers and the vocabulary override: names resolve, errors help, imports repeat."""

import importlib

import pytest
import seqio
from test_tasks_support import run, t5_vocab  # noqa: F401

import ptune.tasks
from ptune.tasks import glue, mrqa, registry, superglue, vocab


def test_every_ptune_name_resolves_and_mixtures_point_at_registered_tasks():
    names = registry.list_tasks(only_ptune=True)
    assert names == sorted(names) and len(names) == 104
    for name in names:
        assert registry.get_task_or_mixture(name).name == name
    for name in registry.list_mixtures():
        for task in seqio.get_mixture_or_task(name).tasks:
            assert task.name in seqio.TaskRegistry.names()
    assert set(names) <= set(registry.list_tasks())
    assert ptune.tasks.list_tasks is registry.list_tasks
    tasks = registry.list_tasks(only_ptune=True, include_mixtures=False)
    mixtures = registry.list_mixtures(only_ptune=True)
    assert (len(tasks), len(mixtures)) == (85, 19)
    assert sorted(tasks + mixtures) == names
    assert set(tasks) <= set(seqio.TaskRegistry.names())


@pytest.mark.parametrize(
    "name",
    [
        "super_glue_boolq_v102",
        "taskless_super_glue_boolq_v102",
        "taskless_super_glue_boolq_v102_rank_classification",
        "super_glue_record_v102_1_sentinel",
        "taskless_super_glue_axg_v102",
        "super_glue_v102_proportional",
        "taskless_super_glue_v102_proportional",
        "taskless_super_glue_v102_proportional_sentinel",
        "squad_to_textbook_qa",
        "squad_to_mrqa",
        "taskless_glue_mrpc_from_qqp_zeroshot_v002",
        "ptune_demo",
    ],
)
def test_documented_names_are_registered(name):
    assert name in registry.list_tasks()


def test_unknown_name_lists_close_matches_on_one_line():
    with pytest.raises(ValueError) as error:
        registry.get_task_or_mixture("taskless_superglue_boolq_v102")
    message = str(error.value)
    assert "\n" not in message
    assert "unknown task or mixture 'taskless_superglue_boolq_v102'" in message
    assert "close matches: taskless_super_glue_boolq_v102" in message
    with pytest.raises(ValueError, match="no close match"):
        registry.get_task_or_mixture("zzzz")


def test_importing_again_re_registers_without_error():
    before = registry.list_tasks()
    for module in (superglue, glue, mrqa, ptune.tasks.demo, ptune.tasks):
        importlib.reload(module)
    assert registry.list_tasks() == before


def test_label_names():
    assert registry.label_names("taskless_super_glue_rte_v102") == ["entailment", "not_entailment"]
    assert registry.label_names("super_glue_copa_v102_1_sentinel") == ["choice1", "choice2"]
    assert registry.label_names("glue_qqp_v002") == ["not_duplicate", "duplicate"]
    assert registry.label_names("taskless_super_glue_record_v102") is None
    assert registry.label_names("squad_v010_allanswers") is None
    assert registry.label_names("taskless_super_glue_v102_proportional") is None
    with pytest.raises(ValueError, match="close matches"):
        registry.label_names("super_glue_boolq")


def test_vocabulary_path_resolution(monkeypatch):
    monkeypatch.delenv(vocab.ENV_VAR, raising=False)
    vocab.set_sentencepiece_path(None)
    assert vocab.sentencepiece_path() == vocab.DEFAULT_SPM_PATH
    assert vocab.DEFAULT_SPM_PATH == "gs://t5-data/vocabs/cc_all.32000.100extra/sentencepiece.model"
    monkeypatch.setenv(vocab.ENV_VAR, "mt5")
    assert (
        vocab.sentencepiece_path() == "gs://t5-data/vocabs/mc4.250000.100extra/sentencepiece.model"
    )
    vocab.set_sentencepiece_path("/somewhere/spm.model")
    try:
        assert vocab.sentencepiece_path() == "/somewhere/spm.model"
        task_vocab = (
            seqio.get_mixture_or_task("super_glue_cb_v102").output_features["inputs"].vocabulary
        )
        assert task_vocab is vocab.get_vocabulary()
        assert task_vocab.sentencepiece_model_file == "/somewhere/spm.model"
    finally:
        vocab.set_sentencepiece_path(None)


def test_missing_vocabulary_file_is_one_clear_error(tmp_path):
    missing = str(tmp_path / "nope.model")
    vocab.set_sentencepiece_path(missing)
    try:
        with pytest.raises(FileNotFoundError, match=f"SentencePiece model not found: '{missing}'"):
            vocab.get_vocabulary().encode("hello")
        with pytest.raises(FileNotFoundError, match="nope.model"):
            run("super_glue_rte_v102", {"premise": "a", "hypothesis": "b", "label": 0, "idx": 0})
    finally:
        vocab.set_sentencepiece_path(None)


@pytest.mark.usefixtures("t5_vocab")
def test_override_after_import_reaches_registered_tasks(tmp_path):
    good_path = vocab.sentencepiece_path()
    v = vocab.get_vocabulary()
    assert v.vocab_size == 32_100
    assert v.encode("<extra_id_0>") == [32099] and v.encode("<extra_id_99>") == [32000]
    ex = run(
        "taskless_super_glue_rte_v102", {"premise": "a", "hypothesis": "b", "label": 0, "idx": 0}
    )
    assert list(ex["targets"]) == v.encode("entailment") + [1]
    # Switching the path afterwards reloads: a bad path now fails where the good one worked.
    vocab.set_sentencepiece_path(str(tmp_path / "other.model"))
    with pytest.raises(FileNotFoundError, match="other.model"):
        v.encode("entailment")
    vocab.set_sentencepiece_path(good_path)
    assert v.encode("<extra_id_0>") == [32099]
