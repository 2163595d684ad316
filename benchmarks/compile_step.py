"""How long XLA takes to compile ptune's train step, with and without dropout.

    .venv/bin/python benchmarks/compile_step.py [--configs tiny d256-4L] [--repeats 3]

Each measurement lowers and compiles a fresh jitted train step (prompt tuning, or model
tuning) with the persistent compilation cache off, and reports the median wall time of
`--repeats`; beside it, the number of while loops in the optimized HLO. On a CPU JAX lowers
the threefry generator as a rolled loop, so every dropout site (flax's `fold_in` for the site's
key, then the mask's bits) adds loops of separately compiled kernels; this shows what that
costs. `tiny` is the test suite's demo-size model (vocab 384, width 16, 1+1 layers); the other
configurations are `workloads.CONFIGS` (random weights, unscanned layers). ptune's path only:
needs jax, flax and optax.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import ptune_side, workloads  # noqa: E402
from ptune import optimizers, prompts, step, trainable  # noqa: E402
from ptune.models import t5  # noqa: E402

TINY = t5.T5Config(
    vocab_size=384,
    emb_dim=16,
    num_heads=2,
    head_dim=8,
    num_encoder_layers=1,
    num_decoder_layers=1,
    mlp_dim=32,
    mlp_activations=("gelu", "linear"),
    logits_via_embedding=False,
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    dropout_rate=0.0,
)
BATCH, INPUTS, TARGETS, PROMPT = 8, 128, 8, 20


def batch(vocab: int) -> dict:
    rng = np.random.default_rng(0)
    targets = rng.integers(3, vocab, (BATCH, TARGETS)).astype(np.int32)
    return {
        "encoder_input_tokens": rng.integers(3, vocab, (BATCH, INPUTS)).astype(np.int32),
        "decoder_input_tokens": np.concatenate([np.zeros_like(targets[:, :1]), targets[:, :-1]], 1),
        "decoder_target_tokens": targets,
    }


def compile_seconds(config: t5.T5Config, kind: str, repeats: int) -> tuple[float, int]:
    """(median seconds to compile the train step, while loops in its optimized HLO)."""
    model = t5.Transformer(config, prompts.prompt_factory(PROMPT))
    params = prompts.with_prompt(
        ptune_side.random_params(config), np.zeros((PROMPT, config.emb_dim), np.float32)
    )
    if kind == "prompt":
        patterns, optimizer = trainable.PROMPT_ONLY, optimizers.prompt_tuning_adafactor()
    else:
        patterns, optimizer = trainable.EVERYTHING, optimizers.model_tuning_adafactor()
    train, frozen = trainable.partition(params, trainable.trainable_mask(params, patterns))
    state = step.init_state(train, optimizer)
    example = batch(config.vocab_size)
    seconds, loops = [], 0
    for _ in range(repeats):
        train_step = step.make_train_step(model, optimizer, seed=1)  # a fresh jit each time
        lowered = train_step.lower(state, frozen, example)
        start = time.perf_counter()
        compiled = lowered.compile()
        seconds.append(time.perf_counter() - start)
        loops = compiled.as_text().count(" while(")
    return statistics.median(seconds), loops


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    choices = ["tiny", *workloads.CONFIGS]
    parser.add_argument("--configs", nargs="+", default=["tiny", "d256-4L"], choices=choices)
    parser.add_argument("--kinds", nargs="+", default=["prompt", "model"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_compilation_cache", False)
    print(f"{jax.devices()[0].device_kind}, jax {jax.__version__}, median of {args.repeats}")
    print("| config | step | dropout 0: compile s (while loops) | dropout 0.1 | ratio |")
    print("|---|---|---:|---:|---:|")
    for name in args.configs:
        base = TINY if name == "tiny" else ptune_side.t5_config(workloads.CONFIGS[name])
        for kind in args.kinds:
            off, off_loops = compile_seconds(base.replace(dropout_rate=0.0), kind, args.repeats)
            on, on_loops = compile_seconds(base.replace(dropout_rate=0.1), kind, args.repeats)
            print(
                f"| {name} | {kind} | {off:.2f} ({off_loops}) | {on:.2f} ({on_loops}) "
                f"| {on / off:.2f}x |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
