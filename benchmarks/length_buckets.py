"""Length buckets (and batches grouped by length) vs fixed padding vs PEFT's per-batch padding,
on a realistic length mix.

    .venv-bench/bin/python benchmarks/length_buckets.py [--config t5-1.1-small] [--mix rte]
    .venv-bench/bin/python benchmarks/length_buckets.py --device gpu   # ptune side only

Each example's input length is drawn from a log-normal fitted to a SuperGLUE task's length
distribution in T5 SentencePiece tokens, with the task's format prefix, clipped to
[8, --inputs]; targets are the task's label lengths. The fits (no dataset can be downloaded
here, so these are published/commonly reported summary figures, not a fresh measurement):
  rte:   mean ~75 tokens, 95th percentile ~160 (premise + hypothesis); targets 3-5 tokens
  boolq: mean ~150 tokens, 95th percentile ~300 (passage + question);  targets 2 tokens
The same `--batches` int32 batches (inputs padded to --inputs=512, the paper's length) go to
every contender, each pass over them is timed whole, `--rounds` alternating passes, medians:
  ptune_fixed    every batch at the full 512 (what ptune did before buckets: one shape);
  ptune_pow2     each batch cut to a power-of-two bucket (32, 64, ..., 512;
                 `LengthBuckets(midpoints=False)`), every bucket compiled before timing;
  ptune_buckets  the default `ptune.buckets.LengthBuckets`: powers of two and the midpoints
                 between them (32, 48, 64, 96, ..., 384, 512);
  ptune_grouped  batches grouped by length (`ptune.buckets.group_by_length`, training's
                 default): --window batches of the same mix (the first --batches of them are
                 the others' batches) regrouped, and --batches of the grouped batches timed,
                 one from each equal stratum of the window's length order (a sample whose
                 padding is the window's average), cut to the default buckets. Its examples
                 differ from the others', so its real tokens are its own and its first loss is
                 not compared (the per-example computation is ptune_buckets');
  peft_longest   PEFT prompt tuning with each batch cut to its own longest example (what a
                 PyTorch user's DataCollator with padding='longest' does), eager, on the
                 CPU or CUDA (there with TF32 matmuls, as JAX's default float32 on a GPU).
Reported: steps/s and real (non-pad) tokens/s, and ratios to ptune_fixed and peft_longest.
Before timing, the bucketed losses on the first batch must equal ptune_fixed's (1e-5 rel.).
Imports stay within jax/flax/optax/numpy and ptune's numerical core on the ptune side.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import numpy as np  # noqa: E402

from benchmarks import workloads  # noqa: E402

# (log-normal mu, sigma) of the input length in tokens, and the targets' lengths (with EOS).
MIXES = {
    "rte": {"mu": 4.163, "sigma": 0.554, "targets": (3, 5)},
    "boolq": {"mu": 4.888, "sigma": 0.497, "targets": (2, 2)},
}
LOSS_RTOL = 1e-5


def length_mix(mix: str, batches: int, batch: int, inputs: int, seed: int) -> list[dict]:
    """`batches` batches [batch, inputs] / [batch, 8] with lengths drawn from `mix`."""
    spec = MIXES[mix]
    rng = np.random.RandomState(seed)
    out = []
    for _ in range(batches):
        enc = np.zeros((batch, inputs), np.int32)
        tgt = np.zeros((batch, 8), np.int32)
        for row in range(batch):
            n = int(np.clip(round(rng.lognormal(spec["mu"], spec["sigma"])), 8, inputs))
            m = rng.randint(spec["targets"][0], spec["targets"][1] + 1)
            enc[row, : n - 1] = rng.randint(3, workloads.VOCAB, n - 1)
            enc[row, n - 1] = 1
            tgt[row, : m - 1] = rng.randint(3, workloads.VOCAB, m - 1)
            tgt[row, m - 1] = 1
        dec = np.concatenate([np.zeros((batch, 1), np.int32), tgt[:, :-1]], axis=1)
        out.append(
            {"encoder_input_tokens": enc, "decoder_input_tokens": dec, "decoder_target_tokens": tgt}
        )
    return out


def real_tokens(batches: list[dict]) -> int:
    return int(
        sum(
            (b["encoder_input_tokens"] > 0).sum() + (b["decoder_target_tokens"] > 0).sum()
            for b in batches
        )
    )


def grouped_sample(args, fixed: list[dict]) -> list[dict]:
    """`args.batches` batches grouped by length over a window of `args.window` batches of the
    mix, one from each equal stratum of the window's length order, cut to buckets."""
    from ptune import buckets

    if args.window % args.batches:
        raise SystemExit(f"--window {args.window} is not a multiple of --batches {args.batches}")
    pool = (
        fixed + length_mix(args.mix, args.window, args.batch, args.inputs, args.seed)[len(fixed) :]
    )
    window = {k: np.concatenate([b[k] for b in pool]) for k in pool[0]}
    grouped = buckets.group_by_length(window, args.batch, (args.seed, 0))
    grouped.sort(key=lambda b: buckets.longest_rows(b)["inputs"])
    stride = args.window // args.batches
    return [
        buckets.cut_to_buckets(b, buckets.LengthBuckets()) for b in grouped[stride // 2 :: stride]
    ]


def _cut_longest(batch: dict) -> dict:
    from ptune import buckets

    longest = buckets.longest_rows(batch)
    return {k: v[:, : longest[buckets.FEATURE_OF[k]]] for k, v in batch.items()}


def _ptune_pass(config, params, prompt, batches, device):
    """A `run(i)` that takes one prompt-tuning step per batch of the pass (jit, one
    compilation per shape, all made before timing), and the first batch's loss."""
    import jax
    import jax.numpy as jnp

    from benchmarks import ptune_side
    from ptune import optimizers, prompts, step, trainable

    model = t5_model(config, prompt.shape[0])
    full = prompts.with_prompt(params, jnp.asarray(prompt))
    mask = trainable.trainable_mask(full, trainable.PROMPT_ONLY)
    train, frozen = trainable.partition(full, mask)
    train, frozen = jax.device_put((train, frozen), device)
    optimizer = optimizers.prompt_tuning_adafactor(ptune_side.PROMPT_LR)
    train_step = step.make_train_step(model, optimizer, ptune_side.LOSS, donate=False)
    device_batches = [
        jax.device_put({k: jnp.asarray(v) for k, v in b.items()}, device) for b in batches
    ]
    state = step.init_state(jax.tree_util.tree_map(jnp.copy, train), optimizer)
    first_loss = None
    for b in device_batches:  # compile every shape; the state is not kept
        _, metrics = train_step(state, frozen, b)
        if first_loss is None:
            first_loss = float(metrics["loss_sum"] / metrics["tokens"])
    holder = {"state": state}

    def run_pass():
        for b in device_batches:
            holder["state"], metrics = train_step(holder["state"], frozen, b)
        jax.block_until_ready((holder["state"], metrics["loss_sum"]))

    run_pass()  # warm-up with a state the step made (its types are the ones timed)
    return run_pass, first_loss


def t5_model(config, prompt_length):
    from ptune import prompts
    from ptune.models import t5

    return t5.Transformer(config, prompts.prompt_factory(prompt_length))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--config", default="t5-1.1-small", choices=list(workloads.CONFIGS))
    parser.add_argument("--mix", default="rte", choices=list(MIXES))
    parser.add_argument("--inputs", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--batches", type=int, default=8, help="batches per timed pass")
    parser.add_argument(
        "--window", type=int, default=32, help="batches grouped by length together (training's)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results"))
    parser.add_argument("--no_write", action="store_true")
    args = parser.parse_args(argv)
    if args.device == "cpu":
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    from benchmarks import ptune_side
    from ptune import buckets

    device = jax.devices("gpu" if args.device == "gpu" else "cpu")[0]
    bench = workloads.CONFIGS[args.config]
    config = ptune_side.t5_config(bench)
    params = ptune_side.random_params(config, args.seed)
    prompt = workloads.initial_prompt(bench)
    fixed = length_mix(args.mix, args.batches, args.batch, args.inputs, args.seed)
    cut = [buckets.cut_to_buckets(b, buckets.LengthBuckets()) for b in fixed]
    pow2 = [buckets.cut_to_buckets(b, buckets.LengthBuckets(midpoints=False)) for b in fixed]
    grouped = grouped_sample(args, fixed)
    longest = [_cut_longest(b) for b in fixed]
    contenders = {}
    started = time.perf_counter()
    contenders["ptune_fixed"], loss_fixed = _ptune_pass(config, params, prompt, fixed, device)
    contenders["ptune_pow2"], loss_pow2 = _ptune_pass(config, params, prompt, pow2, device)
    contenders["ptune_buckets"], loss_cut = _ptune_pass(config, params, prompt, cut, device)
    contenders["ptune_grouped"], _ = _ptune_pass(config, params, prompt, grouped, device)
    for loss in (loss_pow2, loss_cut):
        if abs(loss - loss_fixed) > LOSS_RTOL * abs(loss_fixed):
            print(f"length buckets change the loss: {loss} vs {loss_fixed}", file=sys.stderr)
            return 1
    compile_s = time.perf_counter() - started
    torch_info = None
    try:
        import torch
    except ImportError:
        torch = None
    torch_device = "cpu" if args.device == "cpu" else "cuda"
    if torch is not None and (torch_device == "cpu" or torch.cuda.is_available()):
        import peft
        import transformers

        from benchmarks import torch_side

        torch.set_num_threads(len(os.sched_getaffinity(0)))
        # JAX's default float32 matmuls on a GPU use TF32; let PyTorch do the same.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        wrapped = torch_side.peft_model(torch_side.build_model(bench, args.seed), bench, prompt)
        wrapped = wrapped.to(torch_device)
        step_fn = torch_side.make_step(wrapped, longest, ptune_side.PROMPT_LR, torch_device)

        def peft_pass():
            for i in range(len(longest)):
                step_fn(i)

        peft_pass()  # warm-up
        contenders["peft_longest"] = peft_pass
        torch_info = {
            "torch_device": torch_device,
            "tf32": torch_device == "cuda",
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
        }
    times = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, run in contenders.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    tokens = real_tokens(fixed)
    own_tokens = {"ptune_grouped": real_tokens(grouped)}
    widths = {
        "ptune_fixed": [b["encoder_input_tokens"].shape[1] for b in fixed],
        "ptune_pow2": [b["encoder_input_tokens"].shape[1] for b in pow2],
        "ptune_buckets": [b["encoder_input_tokens"].shape[1] for b in cut],
        "ptune_grouped": [b["encoder_input_tokens"].shape[1] for b in grouped],
        "peft_longest": [b["encoder_input_tokens"].shape[1] for b in longest],
    }
    rows = {}
    for name, t in times.items():
        median = statistics.median(t)
        rows[name] = {
            "pass_median_s": median,
            "pass_min_s": min(t),
            "pass_max_s": max(t),
            "steps_per_s": args.batches / median,
            "real_tokens_per_s": own_tokens.get(name, tokens) / median,
            "padded_input_tokens": int(sum(w * args.batch for w in widths[name])),
            "input_widths": widths[name],
        }
    # Ratios of real-token throughput (of time, for contenders that share their examples).
    base = rows["ptune_fixed"]["real_tokens_per_s"]
    for row in rows.values():
        row["speedup_vs_ptune_fixed"] = row["real_tokens_per_s"] / base
        if "peft_longest" in rows:
            row["speedup_vs_peft_longest"] = (
                row["real_tokens_per_s"] / rows["peft_longest"]["real_tokens_per_s"]
            )
    results = {
        "date": datetime.date.today().isoformat(),
        "command": " ".join(
            ["benchmarks/length_buckets.py"] + list(sys.argv[1:] if argv is None else argv)
        ),
        "machine": {
            "hostname": socket.gethostname(),
            "jax_device": str(device),
            "device_kind": device.device_kind,
            "cores": len(os.sched_getaffinity(0)),
            "jax": jax.__version__,
            **(torch_info or {}),
        },
        "settings": {
            "config": args.config,
            "mix": args.mix,
            "mix_fit": MIXES[args.mix],
            "inputs": args.inputs,
            "batch": args.batch,
            "prompt": bench.prompt,
            "batches_per_pass": args.batches,
            "rounds": args.rounds,
            "group_window": args.window,
            "real_tokens_per_pass": tokens,
            "grouped_real_tokens": own_tokens["ptune_grouped"],
            "buckets": list(buckets.LengthBuckets().lengths("inputs", args.inputs)),
            "pow2_buckets": list(
                buckets.LengthBuckets(midpoints=False).lengths("inputs", args.inputs)
            ),
            "compile_and_warmup_s": compile_s,
        },
        "loss_first_batch": {
            "ptune_fixed": loss_fixed,
            "ptune_pow2": loss_pow2,
            "ptune_buckets": loss_cut,
        },
        "contenders": rows,
    }
    table = markdown(results)
    if not args.no_write:
        os.makedirs(args.out, exist_ok=True)
        tag = f"{results['date']}-length-buckets-{args.mix}-{args.config}-{device.platform}"
        with open(os.path.join(args.out, tag + ".json"), "w") as f:
            json.dump(results, f, indent=1)
        with open(os.path.join(args.out, tag + ".md"), "w") as f:
            f.write(table)
        print(f"wrote {os.path.join(args.out, tag)}.{{json,md}}")
    print(table)
    return 0


def markdown(results: dict) -> str:
    s = results["settings"]
    lines = [
        f"# Length buckets: {s['config']}, {s['mix']} length mix, inputs up to {s['inputs']}, "
        f"prompt {s['prompt']}, batch {s['batch']} ({results['machine']['jax_device']})",
        "",
        f"`{results['command']}`, {results['date']}; {s['batches_per_pass']} batches per pass, "
        f"{s['rounds']} alternating passes, medians; {s['real_tokens_per_pass']} real tokens per "
        f"pass; buckets {s['buckets']} (pow2: {s.get('pow2_buckets')}); ptune_grouped: grouped "
        f"over {s.get('group_window')} batches, its own {s.get('grouped_real_tokens')} real "
        "tokens per pass; ratios are of real tokens/s.",
        "",
        "| contender | steps/s | real tokens/s | padded input tokens | vs ptune_fixed "
        "| vs peft_longest |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results["contenders"].items():
        vs_peft = r.get("speedup_vs_peft_longest")
        lines.append(
            f"| {name} | {r['steps_per_s']:.3f} | {r['real_tokens_per_s']:.0f} | "
            f"{r['padded_input_tokens']} | {r['speedup_vs_ptune_fixed']:.2f}x | "
            + (f"{vs_peft:.2f}x |" if vs_peft else "n/a |")
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
