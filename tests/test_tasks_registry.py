"""The registry helpers and the vocabulary override: names resolve, errors help, imports repeat."""

import importlib

import pytest
import seqio
from task_support import run

import ptune.tasks
from ptune.errors import UserError
from ptune.tasks import files, glue, mrqa, pretraining, registry, superglue, vocab


def test_every_ptune_name_resolves_and_mixtures_point_at_registered_tasks():
    names = registry.list_tasks(only_ptune=True)
    ours = files.registered() | pretraining.registered()  # other tests add file/corpus tasks
    builtin = [n for n in names if n not in ours]
    assert names == sorted(names) and len(builtin) == 149
    for name in names:
        assert registry.get_task_or_mixture(name).name == name
    for name in registry.list_mixtures():
        for task in seqio.get_mixture_or_task(name).tasks:
            assert task.name in seqio.TaskRegistry.names()
    assert set(names) <= set(registry.list_tasks())
    assert ptune.tasks.list_tasks is registry.list_tasks
    tasks = registry.list_tasks(only_ptune=True, include_mixtures=False)
    mixtures = registry.list_mixtures(only_ptune=True)
    ours = files.registered() | pretraining.registered()
    assert (len(set(tasks) - ours), len(mixtures)) == (125, 24)
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
        "taskless_glue_mrpc_from_qqp_zeroshot_v200",
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
    modules = (superglue, glue, mrqa, ptune.tasks.demo, ptune.tasks)
    saved = [dict(module.__dict__) for module in modules]
    try:
        for module in modules:
            importlib.reload(module)
        assert registry.list_tasks() == before
    finally:
        # The functions gin files name (`demo.pretrained_model`) stay the objects gin already
        # registered, or the next in-process run in this worker would meet a second one.
        for module, names in zip(modules, saved):
            module.__dict__.update(names)


def test_label_names():
    assert registry.label_names("taskless_super_glue_rte_v102") == ["entailment", "not_entailment"]
    assert registry.label_names("super_glue_copa_v102_1_sentinel") == ["choice1", "choice2"]
    assert registry.label_names("glue_qqp_v200") == ["not_duplicate", "duplicate"]
    assert registry.label_names("taskless_super_glue_record_v102") is None
    assert registry.label_names("squad_v010_allanswers") is None
    with pytest.raises(ValueError, match="close matches"):
        registry.label_names("super_glue_boolq")


def test_mixture_label_names_are_its_tasks_labels_in_task_order_each_once():
    # Registered order: DPR, WSC (no labels), BoolQ, CB, COPA, MultiRC, ReCoRD (none), RTE, ...
    assert registry.label_names("taskless_super_glue_v102_proportional") == [
        "False", "True", "entailment", "contradiction", "neutral", "choice1", "choice2",
        "not_entailment",
    ]  # fmt: skip
    # Both tasks generate QQP's words.
    assert registry.label_names("glue_mrpc_from_qqp_zeroshot_v200") == [
        "not_duplicate",
        "duplicate",
    ]
    assert registry.label_names("glue_v200_proportional")[:4] == [
        "unacceptable", "acceptable", "negative", "positive",
    ]  # fmt: skip
    # No task with a closed label set: None.
    assert registry.label_names("taskless_super_glue_wsc_v102") is None
    assert registry.label_names("squad_to_mrqa") is None
    registry.add_mixture(
        "test_rte_and_record", ["super_glue_record_v102", "super_glue_rte_v102"], default_rate=1.0
    )
    try:
        assert registry.label_names("test_rte_and_record") == ["entailment", "not_entailment"]
    finally:
        seqio.MixtureRegistry.remove("test_rte_and_record")


def test_every_registered_name_has_primary_metrics():
    # The metric names are checked against each task's real metric output in test_tasks_all.py.
    names = registry.list_tasks(only_ptune=True)
    assert names
    for name in names:
        scored = registry.primary_metrics(name)
        assert all(metrics for metrics in scored.values()), name
        for task in registry.task_names(name):
            has_metrics = bool(seqio.get_mixture_or_task(task).metric_objs)
            assert (task in scored) == has_metrics, task


def test_primary_metrics_as_the_leaderboards_report_them():
    assert registry.primary_metrics("taskless_super_glue_cb_v102") == {
        "taskless_super_glue_cb_v102": ("mean_3class_f1", "accuracy")
    }
    assert registry.primary_metrics("super_glue_multirc_v102_1_sentinel") == {
        "super_glue_multirc_v102_1_sentinel": ("f1", "exact_match")
    }
    assert registry.primary_metrics("taskless_super_glue_record_v102")[
        "taskless_super_glue_record_v102"
    ] == ("f1", "em")
    assert registry.primary_metrics("ptune_demo") == {"ptune_demo": ("accuracy",)}
    assert registry.primary_metrics("ptune_demo_rank_classification") == {
        "ptune_demo_rank_classification": ("accuracy",)
    }
    # WSC's training task is never scored; the mixture is scored by its evaluation task.
    assert registry.primary_metrics("super_glue_wsc_v102") == {
        "super_glue_wsc_v102_simple_eval": ("accuracy",)
    }
    proportional = registry.primary_metrics("taskless_super_glue_v102_proportional")
    assert list(proportional)[:2] == [
        "taskless_dpr_v001_simple",
        "taskless_super_glue_wsc_v102_simple_eval",
    ]
    assert len(proportional) == 9  # all but WSC's training task and the two diagnostics
    source = seqio.FunctionDataSource(lambda split, shuffle_files: None, splits=["train"])
    seqio.TaskRegistry.add("seqio_only", source=source, preprocessors=[], output_features={})
    try:
        with pytest.raises(UserError, match="task seqio_only was not registered by ptune.tasks"):
            registry.primary_metrics("seqio_only")
    finally:
        seqio.TaskRegistry.remove("seqio_only")


def test_primary_score_is_the_mean_of_task_means():
    results = {
        "taskless_super_glue_cb_v102": {"mean_3class_f1": 80.0, "accuracy": 90.0},
        "taskless_super_glue_rte_v102": {"accuracy": 70.0},
    }
    assert registry.primary_score("taskless_super_glue_cb_v102", results) == 85.0
    registry.add_mixture("test_cb_and_rte", [t for t in results], default_rate=1.0)
    try:
        assert registry.primary_score("test_cb_and_rte", results) == (85.0 + 70.0) / 2
        with pytest.raises(
            UserError, match="task taskless_super_glue_rte_v102: evaluation results lack accuracy"
        ):
            registry.primary_score(
                "test_cb_and_rte", {**results, "taskless_super_glue_rte_v102": {"f1": 1.0}}
            )
        # A task the evaluation skipped (no such split, as DPR's validation) is not scored.
        assert (
            registry.primary_score(
                "test_cb_and_rte",
                {"taskless_super_glue_cb_v102": results["taskless_super_glue_cb_v102"]},
            )
            == 85.0
        )
    finally:
        seqio.MixtureRegistry.remove("test_cb_and_rte")
    with pytest.raises(UserError, match="super_glue_axb_v102 has no scored task"):
        registry.primary_score("super_glue_axb_v102", results)


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
