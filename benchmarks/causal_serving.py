"""Serving many prompts over one decoder-only model: prompt keys/values computed once vs
recomputing the prompt in every request, one mixed batch vs a batch per prompt.

    .venv/bin/python benchmarks/causal_serving.py [--prompts 4] [--prompt_length 100] \
        [--batch 16] [--input_length 32] [--new_tokens 8] [--rounds 5]

A random Llama-style model (width 256, 4 layers, 8 heads over 2 key/value heads, vocab
8,000, float32) serves `batch` requests spread evenly over `prompts` soft prompts; each
request has `input_length` tokens (the last quarter of rows shorter, right-padded) and
decodes `new_tokens` greedily (`ptune.models.causal_decoding.generate`). Three ways:

  recompute, grouped: one batch per prompt, the prompt in the input (its keys and values
    computed again for every request);
  cached, grouped: one batch per prompt, starting from the prompt's cache;
  cached, mixed: one batch of all requests, each row from its own prompt's cache.

Prompt caches are built and stacked once before timing (as a server does when it loads its bank);
compilation is excluded (a warm-up round); the median of `rounds` rounds is reported, all
three interleaved in each round. Ratios are against "recompute, grouped".
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np
from flax import linen as nn

from ptune import prompts
from ptune.models import causal_decoding, llama


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--prompt_length", type=int, default=100)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--input_length", type=int, default=32)
    parser.add_argument("--new_tokens", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    config = llama.LlamaConfig(
        vocab_size=8000,
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=2,
        head_dim=32,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=True,
    )
    tokens0 = np.zeros((1, 1), np.int32)
    params = jax.jit(lambda r: nn.unbox(llama.CausalLM(config).init(r, tokens0)["params"]))(
        jax.random.PRNGKey(0)
    )
    rng = np.random.default_rng(0)
    bank = [
        rng.uniform(-0.5, 0.5, (args.prompt_length, 256)).astype(np.float32)
        for _ in range(args.prompts)
    ]
    tokens = rng.integers(3, 8000, (args.batch, args.input_length)).astype(np.int32)
    valid = np.ones_like(tokens, bool)
    valid[-args.batch // 4 :, args.input_length // 2 :] = False
    tokens[~valid] = 0
    which = np.arange(args.batch) % args.prompts
    length = args.prompt_length + args.input_length + args.new_tokens
    caches = causal_decoding.stack_caches(
        config, [causal_decoding.prompt_cache(config, params, p, length) for p in bank]
    )
    prompted = llama.CausalLM(config, prompts.prompt_factory(args.prompt_length))
    plain = llama.CausalLM(config)

    def recompute_grouped():
        for k in range(args.prompts):
            rows = which == k
            out = causal_decoding.generate(
                prompted,
                prompts.with_prompt(params, bank[k]),
                tokens[rows],
                valid[rows],
                args.new_tokens,
            )
        return out.block_until_ready()

    def cached_grouped():
        for k in range(args.prompts):
            rows = which == k
            cache = causal_decoding.bank_cache(config, caches, np.full(rows.sum(), k))
            out = causal_decoding.generate(
                plain, params, tokens[rows], valid[rows], args.new_tokens, cache
            )
        return out.block_until_ready()

    def cached_mixed():
        cache = causal_decoding.bank_cache(config, caches, which)
        return causal_decoding.generate(
            plain, params, tokens, valid, args.new_tokens, cache
        ).block_until_ready()

    ways = {
        "recompute, grouped": recompute_grouped,
        "cached, grouped": cached_grouped,
        "cached, mixed": cached_mixed,
    }
    for fn in ways.values():  # compile
        fn()
    seconds = {name: [] for name in ways}
    for _ in range(args.rounds):
        for name, fn in ways.items():
            start = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - start)
    base = statistics.median(seconds["recompute, grouped"])
    print(
        f"{args.batch} requests over {args.prompts} prompts of {args.prompt_length}, inputs "
        f"{args.input_length}, {args.new_tokens} new tokens; {jax.devices()[0].platform}, "
        f"median of {args.rounds} rounds"
    )
    print("| way | median s | min s | max s | speed vs recompute, grouped |")
    print("|---|---:|---:|---:|---:|")
    for name, values in seconds.items():
        median = statistics.median(values)
        print(
            f"| {name} | {median:.4f} | {min(values):.4f} | {max(values):.4f} | "
            f"{base / median:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
