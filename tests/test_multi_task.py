"""Multi-task prompts (prompts/multi_task.gin): one prompt per task of a mixture, trained in
one run on mixed batches; each task's prompt exported under its name and served as a bank."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ptune.tasks  # noqa: F401  registers the tasks
from conftest import init_params, tiny_run_config, tiny_t5
from ptune import data, evaluation, infer, prompts, trainer
from ptune import step as step_lib
from ptune.checkpoints import prompt_io
from ptune.errors import UserError
from ptune.models import t5
from ptune.tasks import demo

CFG = tiny_t5()  # emb 8
P, E = 3, 8
MIXTURE = demo.MIXTURE
# The bank's order is the mixture's task order (seqio sorts it by name).
TASKS = [f"{demo.NEGATION_TASK}_rank_classification", f"{demo.TASK}_rank_classification"]
LABELS = {TASKS[0]: demo.NEGATION_LABELS, TASKS[1]: demo.LABELS}
SUMMED = step_lib.LossConfig(z_loss=1e-4, loss_normalizing_factor=None)  # gradients add up


def _batch():
    rng = np.random.default_rng(0)
    inputs = rng.integers(3, 64, (6, 7)).astype(np.int32)
    inputs[:, 5:] = 0
    inputs[1, 3:] = 0
    targets = rng.integers(3, 64, (6, 4)).astype(np.int32)
    targets[:, 3:] = 0
    shifted = np.concatenate([np.zeros_like(targets[:, :1]), targets[:, :-1]], axis=1)
    return {
        "encoder_input_tokens": inputs,
        "decoder_input_tokens": shifted,
        "decoder_target_tokens": targets,
        prompts.PROMPT_INDEX: np.array([0, 1, 1, 0, 1, 0], np.int32),
    }


def _frozen():
    model = t5.Transformer(CFG)
    tokens = np.ones((1, 2), np.int32)
    return init_params(model, tokens, tokens, tokens)


def _loss_and_grad(factory, module, batch, frozen):
    model = t5.Transformer(CFG, factory)

    def loss(module):
        params = prompts.with_module(frozen, module)
        return step_lib.loss_and_metrics(model, SUMMED, params, {}, batch, False, None)

    (value, metrics), grad = jax.jit(jax.value_and_grad(loss, has_aux=True))(module)
    return float(metrics["loss_sum"]), jax.tree_util.tree_map(np.asarray, grad)


def _rows(batch, task):
    keep = batch[prompts.PROMPT_INDEX] == task
    return {k: v[keep] for k, v in batch.items() if k != prompts.PROMPT_INDEX}


@pytest.mark.parametrize("combine", ["none", "add", "concat"])
def test_each_task_gets_the_loss_and_gradient_of_its_own_single_prompt_run(combine):
    """One mixed batch through the bank = each task's rows through a plain prompt that is
    that task's combined prompt (summed loss, so the parts add up exactly)."""
    rng = np.random.default_rng(1)
    multi = prompts.MultiTask(combine=combine, shared_length=2 if combine == "concat" else None)
    module = {"prompt": jnp.asarray(rng.normal(size=(2, P, E)), jnp.float32)}
    if combine != "none":
        rows = multi.shared_rows(P)
        module["shared"] = jnp.asarray(rng.normal(size=(rows, E)), jnp.float32)
    frozen, batch = _frozen(), _batch()
    factory = prompts.multi_task_factory(P, 2, multi)
    mixed_loss, mixed_grad = _loss_and_grad(factory, module, batch, frozen)
    combined = prompts.combine_prompts(module["prompt"], module.get("shared"), combine)
    losses, shared_grad = [], 0.0
    for k in range(2):
        single = prompts.prompt_factory(combined.shape[1])
        loss, grad = _loss_and_grad(single, {"prompt": combined[k]}, _rows(batch, k), frozen)
        losses.append(loss)
        task_grad = grad["prompt"][-P:]  # "concat": the task's rows follow the shared ones
        assert np.isfinite(task_grad).all() and np.abs(task_grad).max() > 0
        np.testing.assert_allclose(mixed_grad["prompt"][k], task_grad, rtol=2e-5, atol=1e-6)
        shared_grad = shared_grad + grad["prompt"][: combined.shape[1] - P or P]
    assert mixed_loss == pytest.approx(sum(losses), rel=1e-5)
    if combine != "none":  # the shared prompt collects every task's gradient
        np.testing.assert_allclose(mixed_grad["shared"], shared_grad, rtol=2e-5, atol=1e-6)


def test_an_index_outside_the_bank_gives_nan_not_another_tasks_prompt():
    factory = prompts.multi_task_factory(P, 2, prompts.MultiTask("none"))
    module = {"prompt": jnp.ones((2, P, E), jnp.float32)}
    batch = dict(_batch(), **{prompts.PROMPT_INDEX: np.array([0, 1, 2, 0, 1, 0], np.int32)})
    loss, _ = _loss_and_grad(factory, module, batch, _frozen())
    assert np.isnan(loss)


def test_the_pipeline_tags_the_mixtures_own_examples_with_their_task():
    lengths = {"inputs": 64, "targets": 9}
    tagged = data.train_batches(MIXTURE, lengths, 8, seed=3, prompt_index=True)
    plain = data.train_batches(MIXTURE, lengths, 8, seed=3)
    vocabulary = data.output_vocabulary(MIXTURE)
    seen = set()
    for _ in range(4):
        a, b = next(tagged), next(plain)
        index = a.pop(prompts.PROMPT_INDEX)
        assert set(a) == set(b)
        for key in a:  # the very examples seqio's mixture gives, in its order
            np.testing.assert_array_equal(a[key], b[key])
        for row, k in zip(a["decoder_target_tokens"], index):
            label = vocabulary.decode([int(t) for t in row if t > 1])
            assert label in LABELS[TASKS[k]]
            seen.add(int(k))
    assert seen == {0, 1}
    assert data.bank_tasks(MIXTURE) == TASKS


def test_bad_settings_are_one_line_each():
    with pytest.raises(UserError, match="combine as one of"):
        prompts.MultiTask(combine="multiply")
    with pytest.raises(UserError, match="shared_length applies only to combine='concat'"):
        prompts.MultiTask(combine="add", shared_length=4)
    with pytest.raises(UserError, match="do not combine yet"):
        prompts.PromptConfig(residual=prompts.Residual(), multi_task=prompts.MultiTask())
    with pytest.raises(UserError, match="ptune_demo is a single task"):
        data.bank_tasks("ptune_demo")


@pytest.fixture(scope="module")
def bank_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bank")
    cfg = tiny_run_config(
        root / "run",
        mixture_or_task_name=MIXTURE,
        prompt=prompts.PromptConfig(length=4, multi_task=prompts.MultiTask("add")),
        task_feature_lengths={"inputs": 64, "targets": 9},
        eval_feature_lengths={"inputs": 64, "targets": 9},
        eval_metric=None,
        train_steps=3,
    )
    return root, cfg, trainer.train(cfg)


def test_a_mixture_run_trains_every_tasks_prompt_and_exports_each_by_name(bank_run):
    root, cfg, result = bank_run
    module = prompts.get_module(result.state.params)
    assert module["prompt"].shape == (2, 4, 16) and module["shared"].shape == (4, 16)
    assert float(jnp.abs(module["shared"]).sum()) > 0  # it started at 0 and trained
    best = root / "run" / "numpy_checkpoints" / "best"
    assert json.load(open(best / "bank.json")) == {"tasks": TASKS}
    combined = np.asarray(prompts.effective_bank(result.state.params, "add"))
    for k, task in enumerate(TASKS):
        np.testing.assert_array_equal(np.load(best / f"{task}.npy"), combined[k])
    assert set(result.eval) == set(TASKS)
    assert result.best["metric"] == "score"
    assert result.best["value"] == pytest.approx(
        np.mean([result.eval[t]["accuracy"] for t in TASKS])
    )
    fingerprint = json.load(open(root / "run" / "run.json"))["prompt"]
    assert fingerprint["multi_task"] == {"combine": "add", "shared_length": None}


def test_each_exported_task_prompt_scores_what_the_run_scored(bank_run, tmp_path):
    root, cfg, result = bank_run
    best = root / "run" / "numpy_checkpoints" / "best"
    for task in TASKS:
        results = evaluation.run_eval(
            evaluation.EvalConfig(
                mixture_or_task_name=task,
                checkpoint_path=str(root / "run" / "random_init"),
                prompt_file=str(best / f"{task}.npy"),
                eval_feature_lengths=dict(cfg.eval_feature_lengths),
                batch_size=cfg.eval_batch_size,
                output_dir=str(tmp_path / task),
            )
        )
        assert results[task] == result.eval[task]


def test_eval_of_the_bank_directory_on_the_mixture_reproduces_the_run(bank_run, tmp_path):
    root, cfg, result = bank_run
    eval_cfg = evaluation.EvalConfig(
        mixture_or_task_name=MIXTURE,
        checkpoint_path=str(root / "run" / "random_init"),
        prompt_file=str(root / "run" / "numpy_checkpoints" / "best"),
        eval_feature_lengths=dict(cfg.eval_feature_lengths),
        batch_size=cfg.eval_batch_size,
        output_dir=str(tmp_path),
    )
    assert evaluation.run_eval(eval_cfg) == result.eval
    with pytest.raises(UserError, match=r"has no prompt for ptune_demo \(it holds"):
        evaluation.run_eval(dataclasses.replace(eval_cfg, mixture_or_task_name="ptune_demo"))


def test_infer_serves_the_bank_directory_each_task_with_its_prompt(bank_run, tmp_path):
    root, _, _ = bank_run
    best = root / "run" / "numpy_checkpoints" / "best"
    requests = tmp_path / "requests.jsonl"
    requests.write_text(
        "".join(
            json.dumps({"task": task, "inputs": "sentence: the soup was not good."}) + "\n"
            for task in TASKS
        )
    )
    cfg = infer.InferConfig(
        checkpoint_path=str(root / "run" / "random_init"),
        prompt_files=str(best),
        input_file=str(requests),
        output_file=str(tmp_path / "out.jsonl"),
        task_feature_lengths={"inputs": 64, "targets": 9},
        batch_size=4,
    )
    results = infer.run_infer(cfg, progress=False)
    assert [r["prompt"] for r in results] == TASKS
    with pytest.raises(UserError, match="a multi-task prompt bank directory"):
        infer.run_infer(dataclasses.replace(cfg, prompt_files=str(tmp_path)), progress=False)


def test_a_task_not_in_the_bank_and_the_bank_as_one_prompt_are_refused(bank_run):
    root, _, _ = bank_run
    best = root / "run" / "numpy_checkpoints" / "best"
    with pytest.raises(UserError, match=r"does not exist: the prompt bank .* holds the tasks"):
        prompt_io.load_prompt_file(str(best / "super_glue_rte_v102.npy"))
    with pytest.raises(UserError, match="is a multi-task prompt bank: name one task's prompt"):
        prompt_io.load_prompt_file(str(best))
    # A bank entry initialises a single-task run (prompt transfer by task name).
    value = prompt_io.load_prompt_file(str(best / f"{TASKS[0]}.npy"))
    assert value.shape == (4, 16)


def test_eval_refuses_a_prompt_of_another_width_before_any_work(bank_run, tmp_path):
    root, cfg, _ = bank_run
    narrow = tmp_path / "narrow.npy"
    np.save(narrow, np.ones((4, 8), np.float32))
    eval_cfg = evaluation.EvalConfig(
        mixture_or_task_name=TASKS[0],
        checkpoint_path=str(root / "run" / "random_init"),
        prompt_file=str(narrow),
        output_dir=str(tmp_path / "out"),
    )
    with pytest.raises(UserError, match="width 8 does not match the model's emb_dim 16"):
        evaluation.run_eval(eval_cfg)
    assert not (tmp_path / "out" / "eval_validation.json").exists()
