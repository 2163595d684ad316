"""Shared test fixtures: the real artifacts in ../shared/data, and one CPU device.

Tests that need ../shared/data skip with the reason when it is absent; nothing here is mocked.
"""

import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO), "shared", "data")

# The suite's programs are tiny, but XLA compiles hundreds of them: at LLVM optimisation level
# 0 a tiny train step compiles in 40-55% less time (benchmarks/compile_step.py; the suite's
# times are in benchmarks/results/2026-11-26-test-suite.md). Set here, before jax starts, and
# inherited by every worker and subprocess. Optimisation levels keep a program's semantics; no
# tolerance changes. Runs of hundreds of steps take the default level again
# (`users_compiler_env`). To run the whole suite as users compile, set a level yourself:
# `XLA_FLAGS=--xla_backend_optimization_level=2 make test`.
# With it, XLA:CPU's older elemental emitters instead of its fusion emitters: the same HLO
# programs, lowered to LLVM IR by the code path XLA used before the fusion emitters (still
# shipped, off by default). A tiny train step compiles 3.5x faster (benchmarks/compile_step.py:
# 1.18 s -> 0.33 s; test_llama.py takes 61 s instead of 95 s). Tolerances are unchanged.
FAST_COMPILE = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false")
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), *FAST_COMPILE]).strip()

# Every compile gets a file in the run's shared cache (`_compilation_cache`), not only those over
# JAX's default second: the workers and the `ptune` subprocesses compile many of the same small
# programs.
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


def users_compiler_env(**extra: str) -> dict:
    """The environment for a subprocess that runs many steps (where running, not compiling,
    takes the time): this process's, with XLA's default optimisation level and emitters (what
    users get) instead of the suite's `FAST_COMPILE`, and `extra` variables."""
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if f not in FAST_COMPILE]
    return dict(os.environ, XLA_FLAGS=" ".join(flags), **extra)


def simulated_devices_env(count: int, **extra: str) -> dict:
    """The environment for a subprocess whose jax sees `count` CPU devices: this process's
    environment and XLA flags, with the device count added (and `extra` variables)."""
    flags = os.environ.get("XLA_FLAGS", "")
    return dict(
        os.environ,
        XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count={count}".strip(),
        JAX_PLATFORMS="cpu",
        **extra,
    )


def shared_path(*parts: str) -> str:
    """Path under ../shared/data; skips the calling test (saying why) when it is missing."""
    path = os.path.join(SHARED_DATA, *parts)
    if not os.path.exists(path):
        pytest.skip(f"reference data {path} is absent (../shared/data is not beside the repo)")
    return path


@pytest.fixture
def shared_data():
    return shared_path


# The slowest modules, slowest first (each 20 s or more on one worker, 2026-12-05): `make test`
# hands pytest-xdist's workers one module at a time in collection order
# (`--no-loadscope-reorder`), so these go first and the run ends on short modules, instead of
# one worker finishing a long module (xdist's own order, most tests first, put the one-test
# test_resume.py near the end) while the other has nothing left. The rest keep their order.
# test_experiments.py, test_gpu_check.py and test_demo_learns.py run mostly or wholly in
# `make test-full-scale` (marked `full_scale`): first there too, they order that target.
SLOWEST_MODULES = (
    "test_experiments.py",
    "test_gpu_check.py",
    "test_recipes_on_tasks.py",
    "test_demo_learns.py",
    "test_runs.py",
    "test_findings.py",
    "test_llama.py",
    "test_causal_runs.py",
    "test_resume.py",
    "test_run_dir.py",
    "test_pretrain.py",
    "test_tasks_all.py",
    "test_plan.py",
    "test_recipe.py",
    "test_qwen3.py",
    "test_causal_decoding.py",
    "test_own_tasks.py",
    "test_causal_deep_prompts.py",
    "test_multi_task.py",
    "test_inference.py",
    "test_t5.py",
    "test_length_buckets.py",
    "test_residual.py",
    "test_deep_prompts.py",
    "test_tasks_superglue.py",
    "test_released_prompts.py",
    "test_tasks_glue.py",
    "test_remote_paths.py",
)


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "full_scale: the experiment files' plans (real T5 1.1 shapes on simulated slices)"
        " and tiny runs, the GPU check's dry run, or the demo trained at its full length;"
        " `make test-full-scale` runs these, `make test` the rest,"
        " CI (.ci/run) both",
    )


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOWEST_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: keeps the rest


@pytest.fixture(scope="session", autouse=True)
def _compilation_cache(tmp_path_factory):
    """One persistent compilation cache for the whole run, shared by every pytest-xdist worker
    and every `ptune` subprocess (they inherit the variable), so the tiny models' steps compile
    once per run instead of once per process; never the user's ~/.cache/ptune."""
    from ptune import cli

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's directory, above each worker's own
    os.environ[cli.COMPILE_CACHE_ENV] = str(root / "jax-compilation-cache")
    cli.enable_compilation_cache()


@pytest.fixture(autouse=True)
def _restore_environment():
    """Tests that run `ptune.cli.main` in-process set data flags as environment variables
    (PTUNE_SUPERGLUE_DIR, PTUNE_SPM_PATH, ...), as the CLI does; none may leak into the next
    test."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def t5_vocab(shared_data):
    """Points the registered tasks at the real T5 vocabulary for the duration of a test."""
    from ptune.tasks import vocab

    path = shared_data("t5_vocab", "sentencepiece.model")
    vocab.set_sentencepiece_path(path)
    yield path
    vocab.set_sentencepiece_path(None)


def tiny_t5(**changes):
    """The suite's one tiny T5 1.1 (vocab 64, width 8, 2+2 layers, 8 relative buckets), with
    only what a test is about changed (e.g. `vocab_size=384` for the byte-level demo task).
    Every architecture field is spelled out: T5Config has no defaults for them.

    Dropout is off unless a test is about it (`dropout_rate=DROPOUT`: masks, their keys across
    meshes, processes and resumes). On a CPU each dropout site's threefry draws compile as
    rolled loops: a tiny train step compiles about 3x longer with dropout
    (benchmarks/compile_step.py), and nothing else a test checks depends on it."""
    from ptune.models import t5

    return t5.T5Config(
        vocab_size=64,
        emb_dim=8,
        num_heads=2,
        num_encoder_layers=2,
        num_decoder_layers=2,
        head_dim=4,
        mlp_dim=16,
        mlp_activations=("gelu", "linear"),
        logits_via_embedding=False,
        dropout_rate=0.0,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=16,
    ).replace(**changes)


def init_params(model, *inputs, seed: int = 0, **kwargs) -> dict:
    """`model.init(PRNGKey(seed), *inputs, **kwargs)`'s parameters, unboxed, initialised in
    one compiled call. Run op by op, `init` compiles each of its operations for its shape:
    dozens of programs of about 20 ms each for a tiny T5 (`benchmarks/suite_time.py`).
    Compiled, it is one program of 2-5 s, mostly its random draws (`random_params`)."""
    import jax
    from flax import linen as nn

    init = jax.jit(lambda key: model.init(key, *inputs, **kwargs)["params"])
    return nn.unbox(init(jax.random.PRNGKey(seed)))


def random_params(model, *inputs, seed: int = 0, **kwargs) -> dict:
    """Parameters of the shapes and dtypes `model.init(key, *inputs, **kwargs)` gives, drawn
    by numpy, for the tests that need some weights, not flax's initializers (most compare two
    computations on the same weights): N(0, 1/fan_in) for matrices (fan_in the second-to-last
    axis), N(1, 0.1) for vectors (layer-norm scales, biases), every parameter distinct.

    Only the shapes are traced. flax's init compiles a program of its own per model, mostly
    its random draws (each parameter's threefry fold-in and normal: about 19,000 lines of
    optimised HLO for the tiny T5, 2-5 s to compile at the suite's flags). Tests whose
    tolerances were set on flax's initial weights, or about an initializer, use
    `init_params`."""
    import jax
    from flax import linen as nn

    abstract = jax.eval_shape(
        lambda key: model.init(key, *inputs, **kwargs)["params"], jax.random.PRNGKey(seed)
    )
    return _drawn_like(nn.unbox(abstract), seed)


def random_frozen(run, seed: int = 0) -> dict:
    """Frozen weights of the shapes and dtypes `run.random_frozen(seed)` gives (a
    `recipe.Run`'s model without its prompt), drawn by numpy as `random_params` draws them,
    for tests that need some frozen weights of a run's model, not its initializers' values:
    the shapes are the run's abstract parameters, so nothing is compiled."""
    from ptune import prompts, trainable

    drawn = _drawn_like(prompts.without_prompt(run.abstract_params), seed)
    return trainable.cast_frozen(drawn, run.frozen_dtype)


def _drawn_like(abstract, seed: int) -> dict:
    import jax
    import numpy as np

    rng = np.random.default_rng(seed)

    def draw(leaf):
        shape = tuple(leaf.shape)
        if len(shape) >= 2:
            value = rng.normal(0.0, 1.0 / np.sqrt(shape[-2]), shape)
        else:
            value = rng.normal(1.0, 0.1, shape)
        return jax.numpy.asarray(value.astype(leaf.dtype))

    return jax.tree_util.tree_map(draw, abstract)


def apply(model, variables, *inputs, **options):
    """`model.apply(variables, *inputs, **options)` in one compiled call (`options` fixed in
    the program): run op by op, a model compiles each of its operations for its shapes, as
    `init` does (`init_params`)."""
    import functools

    import jax

    return jax.jit(functools.partial(model.apply, **options))(variables, *inputs)


# T5 1.1's fine-tuning dropout, for the tests about dropout.
DROPOUT = 0.1


# The byte-level demo task's tiny model (its vocabulary has 259 ids, padded to 384 rows).
DEMO_TINY = dict(
    vocab_size=384,
    emb_dim=16,
    head_dim=8,
    mlp_dim=32,
    num_encoder_layers=1,
    num_decoder_layers=1,
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
)


# The architecture of ../shared/data/t5x_tiny_checkpoint (T5 1.1, width 4, 2+2 layers).
SHARED_T5X_TINY = dict(
    vocab_size=32128,
    emb_dim=4,
    head_dim=2,
    mlp_dim=8,
    relative_attention_num_buckets=4,
    relative_attention_max_distance=8,
)


def tiny_run_config(model_dir, **changes):
    """A few-step prompt-tuning run on the embedded demo task over random frozen weights."""
    import dataclasses

    from ptune import prompts, trainer

    cfg = trainer.TrainConfig(
        model_dir=str(model_dir),
        mixture_or_task_name="ptune_demo_rank_classification",
        model=tiny_t5(**DEMO_TINY),
        random_init=True,
        task_feature_lengths={"inputs": 64, "targets": 8},
        batch_size=8,
        train_steps=6,
        prompt=prompts.PromptConfig(length=4),
        eval_period=3,
        eval_batch_size=16,
        eval_feature_lengths={"inputs": 64, "targets": 8},
        eval_metric="accuracy",
        checkpoint_period=3,
        keep_checkpoints=2,
        log_period=2,
    )
    return dataclasses.replace(cfg, **changes)


# The tiny Hugging Face T5 1.1 of `hf_t5_dir`, in transformers' T5Config names.
HF_T5_TINY = dict(
    vocab_size=384,
    d_model=16,
    d_kv=8,
    d_ff=32,
    num_layers=2,
    num_decoder_layers=2,
    num_heads=2,
    relative_attention_num_buckets=8,
    relative_attention_max_distance=16,
    feed_forward_proj="gated-gelu",
    dropout_rate=0.0,
    tie_word_embeddings=False,
    decoder_start_token_id=0,
    pad_token_id=0,
)


@pytest.fixture(scope="session")
def hf_t5_dir(tmp_path_factory):
    """The suite's one tiny Hugging Face T5 1.1 directory (config.json + model.safetensors,
    as `save_pretrained` writes them), for the tests that load, train over or hand to PEFT
    a checkpoint transformers made. Read-only: a test that needs a broken copy writes it
    under its own tmp_path.

    - `HF_T5_TINY`: vocabulary 384 so the byte-level demo task (259 ids) trains over it;
      width 16 as `DEMO_TINY`; 2+2 layers so a layer without a relative-position bias of its
      own exists on both sides; 8 buckets up to distance 16, the tiny models' relative range.
    - Gated GELU with an lm_head of its own, and config.json saying `tie_word_embeddings:
      false` without transformers 5's `scale_decoder_outputs`, as real T5 1.1 checkpoints are
      saved (see tests/test_checkpoints_hf.py).
    - Every weight drawn from N(0, 0.5) with a fixed seed: transformers' init sets every
      layer-norm scale to 1, so a scale loaded into the wrong place would change no logit;
      drawn, every tensor is distinct and a parity test at 1e-4 sees each one.
    - Session scope: building it imports torch and transformers (seconds) for an 80 KB
      directory no test changes; one build serves every module of a pytest-xdist worker."""
    import json

    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    directory = tmp_path_factory.mktemp("hf_t5") / "tiny"
    torch.manual_seed(0)
    model = transformers.T5ForConditionalGeneration(transformers.T5Config(**HF_T5_TINY))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    model.save_pretrained(str(directory), safe_serialization=True)
    path = directory / "config.json"
    saved = json.loads(path.read_text())
    saved["tie_word_embeddings"] = False
    saved.pop("scale_decoder_outputs", None)
    path.write_text(json.dumps(saved))
    return directory


def tiny_bpe_tokenizer(corpus, special_tokens=(), unk_token=None, vocab_size=320):
    """A byte-level BPE (the Llama 3 / Qwen2 kind) trained on `corpus` in milliseconds:
    every text encodes and decodes exactly, with real merges."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token=unk_token))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer)
    return tokenizer


def tiny_hf_llama(directory, vocab_size=320, seed=0, **changes):
    """A Hugging Face Llama directory as `save_pretrained` writes it (config.json, safetensors)
    with a Llama 2-shaped tokenizer (<unk> <s> </s> = 0 1 2, add_bos_token) trained on the
    demo's sentences: a random 2-layer model, 32 wide, grouped-query attention."""
    import json

    import torch
    import transformers

    from ptune.tasks import demo

    corpus = [f"sentence: {r['sentence']} {r['label']}" for r in demo.read("train")]
    tokenizer = tiny_bpe_tokenizer(corpus, ["<unk>", "<s>", "</s>"], unk_token="<unk>")
    fields = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    config = transformers.LlamaConfig(**dict(fields, **changes))
    config.architectures = ["LlamaForCausalLM"]
    torch.manual_seed(seed)
    transformers.LlamaForCausalLM(config).save_pretrained(str(directory), safe_serialization=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"add_bos_token": True, "bos_token": "<s>", "eos_token": "</s>"})
    )
    return str(directory)


def tiny_hf_qwen3(directory, vocab_size=336, seed=0, **changes):
    """A Hugging Face Qwen3 directory as `save_pretrained` writes it, with a Qwen-shaped
    tokenizer trained on the demo's sentences (a byte-level BPE of 320 ids, then the special
    tokens <|endoftext|> <|im_start|> <|im_end|>; no BOS; the model's embedding has spare rows
    past them, as Qwen's do): a random 2-layer model, 32 wide, grouped-query attention, heads
    16 wide (4 x 16 = 64, not the model width), tied embeddings."""
    import json

    import torch
    import transformers

    from ptune.tasks import demo

    corpus = [f"sentence: {r['sentence']} {r['label']}" for r in demo.read("train")]
    tokenizer = tiny_bpe_tokenizer(corpus)
    tokenizer.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    fields = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=256,
        eos_token_id=tokenizer.token_to_id("<|endoftext|>"),
        tie_word_embeddings=True,
    )
    config = transformers.Qwen3Config(**dict(fields, **changes))
    config.architectures = ["Qwen3ForCausalLM"]
    torch.manual_seed(seed)
    transformers.Qwen3ForCausalLM(config).save_pretrained(str(directory), safe_serialization=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"})
    )
    return str(directory)


def tiny_causal_run(*gin_files: str, steps: int = 2, log_period: int = 1) -> list:
    """The flags of a few-step prompt-tuning run over a tiny decoder-only directory (add
    INITIAL_CHECKPOINT_PATH and MODEL_DIR): the demo's rank-classification task, 40/4 tokens,
    batch 8, a 3-vector prompt, evaluated and saved every 2 steps. The first five flags (the
    run file, `gin_files`, task, lengths, batch) are what `ptune plan` needs."""
    return [
        "--gin_file=runs/prompt_tuning.gin",
        *(f"--gin_file={f}" for f in gin_files),
        "--gin.MIXTURE_OR_TASK_NAME='ptune_demo_rank_classification'",
        "--gin.TASK_FEATURE_LENGTHS={'inputs': 40, 'targets': 4}",
        "--gin.BATCH_SIZE=8",
        "--gin.PROMPT_LENGTH=3",
        f"--gin.TRAIN_STEPS={steps}",
        "--gin.EVAL_PERIOD=2",
        "--gin.CHECKPOINT_PERIOD=2",
        f"--gin.LOG_PERIOD={log_period}",
        "--gin.trainer.TrainConfig.eval_batch_size=40",
    ]
