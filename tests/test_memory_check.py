"""Memory before work: a training run whose step cannot fit is refused in one line, before
anything is allocated or written, from a lower bound or from its compiled step."""

import numpy as np
import pytest

import ptune.tasks  # noqa: F401  registers the tasks
from conftest import REPO, tiny_run_config
from ptune import evaluation, infer, memory, model_config, prompts, recipe, trainer
from ptune.errors import UserError


def test_an_absurd_prompt_is_refused_before_the_model_is_traced(tmp_path):
    cfg = tiny_run_config(tmp_path / "run", prompt=prompts.PromptConfig(length=100_000))
    with pytest.raises(UserError, match=r"this run does not fit: at least .* GiB per device"):
        trainer.train(cfg)
    assert not (tmp_path / "run").exists()


def _run(cfg):
    config = model_config.resolve_model_config(cfg.model, None)
    return recipe.assemble(config, prompt_factory=cfg.prompt.factory(), trainable=cfg.trainable)


@pytest.mark.parametrize("spare, refused", [(0, False), (-1, True)])
def test_near_the_limit_the_compiled_step_decides(tmp_path, monkeypatch, spare, refused):
    from ptune import plan

    cfg = tiny_run_config(tmp_path / "run")
    kwargs = dict(batch_size=cfg.batch_size, feature_lengths=cfg.task_feature_lengths)
    bound = memory.lower_bound_bytes(_run(cfg), **kwargs)
    peak = plan.plan_training(
        _run(cfg), loss=cfg.loss, accelerator_attention=False, **kwargs
    ).per_device_bytes
    # A device holding exactly the compiled peak, or one byte less: the lower bound is within
    # memory.UNCHECKED_BELOW of it, so the compiled step decides.
    assert peak // memory.UNCHECKED_BELOW < bound < peak
    monkeypatch.setattr(memory, "device_memory_bytes", lambda: peak + spare)
    if refused:
        with pytest.raises(UserError, match=r"its compiled step needs .* GiB per device"):
            memory.check_training_fits(_run(cfg), loss=cfg.loss, **kwargs)
    else:
        memory.check_training_fits(_run(cfg), loss=cfg.loss, **kwargs)


def test_eval_and_infer_refuse_what_cannot_fit_before_reading_weights(tmp_path, monkeypatch):
    """The frozen weights (the demo model's, about 1 MB) plus a batch's attention scores above
    a device of 1 KiB: one line, before any weight is read, and nothing is written."""
    monkeypatch.setattr(memory, "device_memory_bytes", lambda: 1024)
    prompt = tmp_path / "p.npy"
    np.save(prompt, np.zeros((4, 64), np.float32))
    demo = "tasks/data/demo/model"
    cfg = evaluation.EvalConfig(
        mixture_or_task_name="ptune_demo_rank_classification",
        checkpoint_path=f"{REPO}/{demo}",
        prompt_file=str(prompt),
        eval_feature_lengths={"inputs": 64, "targets": 8},
        batch_size=8,
        output_dir=str(tmp_path / "out"),
    )
    with pytest.raises(UserError, match=r"does not fit: at least .* lower BATCH_SIZE"):
        evaluation.run_eval(cfg)
    requests = tmp_path / "requests.jsonl"
    requests.write_text('{"task": "ptune_demo", "inputs": "sentence: fine."}\n')
    icfg = infer.InferConfig(
        checkpoint_path=f"{REPO}/{demo}",
        prompt_files={"ptune_demo": str(prompt)},
        input_file=str(requests),
        output_file=str(tmp_path / "out.jsonl"),
        task_feature_lengths={"inputs": 64, "targets": 8},
        batch_size=8,
    )
    with pytest.raises(UserError, match=r"does not fit: at least .* lower BATCH_SIZE"):
        infer.run_infer(icfg, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.npy", "requests.jsonl"]


def test_a_decoder_only_bound_counts_one_query_chunk_of_scores():
    """Causal attention holds one query chunk's scores at a time (`attend_causal`), so the
    lower bound counts that chunk, not every query: short sequences are one chunk."""
    from ptune import family
    from ptune.models import attention, llama

    config = llama.from_hf_config(
        dict(
            architectures=["LlamaForCausalLM"],
            vocab_size=320,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=32,
            num_key_value_heads=4,
        )
    )
    causal = family.family_of(config)
    # [prompt 100] BOS inputs targets: 100 + 1 + 200 + 8 = 309 positions, one chunk.
    assert causal.attention_scores(config, {"inputs": 200, "targets": 8}, 100) == (32, 309, 309)
    heads, queries, keys = causal.attention_scores(config, {"inputs": 4000, "targets": 8}, 100)
    assert (heads, keys) == (32, 4109)
    assert queries == attention.query_chunk(4109) == 64  # 64 x 4109 <= 512 x 1024 < 128 x 4109
