"""`ptune pretrain`: every weight of a T5 trains on a text corpus (`--corpus`) with T5's span
corruption or prefix-LM objective, from random weights; the trained model lands in
MODEL_DIR/model, and prompt tuning takes it as its frozen model with no model file. Bad
settings stop before anything is written."""

import os

import jax
import numpy as np
import pytest

from ptune import checkpoints, cli, recipe

WORDS = (
    "the soup was awful so we left early . the staff was kind and we came back . "
    "a great film that everyone loved ."
).split()
RUN = [
    "--gin_file=models/ptune_demo.gin",
    "--gin_file=runs/pretrain.gin",
    "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 16}",
    "--gin.BATCH_SIZE=8",
    "--gin.LOG_PERIOD=2",
    "--gin.CHECKPOINT_PERIOD=4",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(WORDS, rng.integers(5, 40))) for _ in range(200)]
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    (root / "empty.txt").write_text("\n  \n")
    (root / "latin1.txt").write_bytes("caf\u00e9 au lait\nd\u00e9j\u00e0 vu\n".encode("latin-1"))
    return root


def _pretrain(capsys, model_dir, corpus_spec, *extra):
    code = cli.main(
        [
            "pretrain",
            *RUN,
            f"--corpus={corpus_spec}",
            f"--gin.MODEL_DIR='{model_dir}'",
            f"--gin.MIXTURE_OR_TASK_NAME='{corpus_spec.split(':')[0]}'",
            *extra,
        ]
    )
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.fixture(scope="module")
def pretrained(corpus, tmp_path_factory):
    """4 steps of span corruption from random weights (the byte vocabulary, 359 ids)."""
    model_dir = tmp_path_factory.mktemp("pretrain") / "run"
    code = cli.main(
        [
            "pretrain",
            *RUN,
            f"--corpus=toy_spans:train={corpus / 'train.txt'},vocabulary=byte",
            f"--gin.MODEL_DIR='{model_dir}'",
            "--gin.MIXTURE_OR_TASK_NAME='toy_spans'",
            "--gin.TRAIN_STEPS=4",
        ]
    )
    assert code == 0
    return model_dir


def test_pretraining_trains_every_weight_and_writes_the_model(pretrained):
    config, params = checkpoints.load(str(pretrained / "model"))
    assert (config.vocab_size, config.emb_dim, config.num_encoder_layers) == (384, 64, 2)
    initial = recipe.assemble(config).random_frozen(0)  # the run's start: seed 0
    moved = jax.tree_util.tree_map(
        lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))), params, initial
    )
    assert all(jax.tree_util.tree_leaves(moved))
    assert not os.path.exists(pretrained / "random_init")  # weights from scratch, not frozen


def test_prompt_tuning_takes_the_pretrained_model_without_a_model_file(pretrained, tmp_path):
    code = cli.main(
        [
            "train",
            "--gin_file=prompts/sampled_vocab.gin",
            "--gin_file=runs/prompt_tuning.gin",
            f"--gin.MODEL_DIR='{tmp_path / 'prompt'}'",
            "--gin.MIXTURE_OR_TASK_NAME='ptune_demo_rank_classification'",
            f"--gin.INITIAL_CHECKPOINT_PATH='{pretrained / 'model'}'",
            "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 9}",
            "--gin.BATCH_SIZE=8",
            "--gin.TRAIN_STEPS=2",
            "--gin.EVAL_PERIOD=2",
            "--gin.PROMPT_LENGTH=4",
        ]
    )
    assert code == 0
    assert (tmp_path / "prompt" / "numpy_checkpoints" / "best").is_dir()


def test_prefix_lm_pretrains(corpus, tmp_path, capsys):
    code, err = _pretrain(
        capsys,
        tmp_path / "run",
        f"toy_prefix:train={corpus / 'train.txt'},objective=prefix_lm,vocabulary=byte",
        "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 64}",
        "--gin.TRAIN_STEPS=2",
    )
    assert code == 0, err[-5:]
    assert (tmp_path / "run" / "model" / "ptune_config.json").is_file()


@pytest.mark.parametrize(
    "spec, extra, message",
    [
        ("noise_density=1.5", [], "span corruption: noise density 1.5 is not in (0, 1)"),
        (
            "mean_noise_span_length=0",
            [],
            "span corruption: mean noise span length 0.0 is below 1",
        ),
        ("noise_density=lots", [], "noise_density='lots' is not a number"),
        ("colour=red", [], "unknown key 'colour'"),
        (
            "",
            ["--gin.TASK_FEATURE_LENGTHS={'inputs': 4096, 'targets': 1000}"],
            "the vocabulary has 100 extra ids but inputs length 4096 makes up to 227 noise spans",
        ),
        (
            "objective=prefix_lm",
            [],
            "prefix LM: targets length 16 is shorter than inputs length 64 - 1",
        ),
    ],
)
def test_bad_settings_are_one_line_and_write_nothing(
    corpus, tmp_path, capsys, spec, extra, message
):
    model_dir = tmp_path / "run"
    code, err = _pretrain(
        capsys,
        model_dir,
        f"toy_bad:train={corpus / 'train.txt'},vocabulary=byte" + (f",{spec}" if spec else ""),
        *extra,
    )
    assert code == 2
    assert err[-1].startswith("ptune: error: ") and message in err[-1], err[-3:]
    assert not model_dir.exists()


@pytest.mark.parametrize(
    "train, message",
    [
        ("missing.txt", "train: file {path} not found"),
        ("empty.txt", "train: no text in {path}"),
        ("latin1.txt", "train: {path}:1: not UTF-8 text (invalid continuation byte)"),
    ],
)
def test_missing_empty_or_not_utf8_corpus_is_one_line(corpus, tmp_path, capsys, train, message):
    path = corpus / train
    code, err = _pretrain(capsys, tmp_path / "run", f"toy_file:train={path},vocabulary=byte")
    assert code == 2
    assert message.format(path=path) in err[-1]
    assert not (tmp_path / "run").exists()


def test_pretrain_refuses_a_prompt_recipe(corpus, tmp_path, capsys):
    code = cli.main(
        [
            "pretrain",
            "--gin_file=models/ptune_demo.gin",
            "--gin_file=runs/prompt_tuning.gin",
            f"--corpus=toy_prompt:train={corpus / 'train.txt'},vocabulary=byte",
            f"--gin.MODEL_DIR='{tmp_path / 'run'}'",
            "--gin.MIXTURE_OR_TASK_NAME='toy_prompt'",
            "--gin.INITIAL_CHECKPOINT_PATH=None",
        ]
    )
    assert code == 2
    assert "ptune pretrain trains every weight and no prompt" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_the_demo_pretraining_recipe_runs_on_the_generated_corpus(tmp_path, capsys):
    """runs/pretrain_demo.gin, as `make pretrain-demo` runs it, for 2 steps (the shipped model
    took 5,000): the recipe, the corpus task and the export fit together."""
    from ptune.tasks import demo

    demo.write_corpus(str(tmp_path / "corpus.txt"), documents=500)
    code = cli.main(
        [
            "pretrain",
            "--gin_file=runs/pretrain_demo.gin",
            f"--corpus=ptune_demo_reviews:train={tmp_path / 'corpus.txt'},"
            "objective=prefix_lm,vocabulary=byte",
            f"--gin.MODEL_DIR='{tmp_path / 'run'}'",
            "--gin.TRAIN_STEPS=2",
        ]
    )
    assert code == 0, capsys.readouterr().err
    config, _ = checkpoints.load(str(tmp_path / "run" / "model"))
    shipped, _ = checkpoints.load(demo.pretrained_model())
    assert config == shipped  # the recipe makes the shipped model's architecture


@pytest.mark.parametrize("prompt_file", ["prompts/class_labels.gin", "prompts/residual.gin"])
def test_pretrain_refuses_a_prompt_file_it_would_ignore(corpus, tmp_path, capsys, prompt_file):
    spec = f"toy_ignored:train={corpus / 'train.txt'},vocabulary=byte"
    code, err = _pretrain(capsys, tmp_path / "run", spec, f"--gin_file={prompt_file}")
    assert code == 2 and err == [
        "ptune: error: ptune pretrain trains no prompt, but the gin files configure one "
        "(prompts.PromptConfig: a prompts/*.gin file?): drop it, or use ptune train"
    ]
    assert not (tmp_path / "run").exists()
