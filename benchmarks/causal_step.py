"""Decoder-only prompt tuning, ptune vs Hugging Face PEFT, side by side in one process:
parity first (loss and prompt gradient on the same batch), then step times.

    make bench        # runs this after benchmarks/run.py
    .venv-bench/bin/python benchmarks/causal_step.py [--steps 8] [--rounds 3] [--quick]
    python3 benchmarks/causal_step.py --device gpu [--shape tinyllama]   # both sides on CUDA

transformers builds a random Llama (`--shape small`: width 512, 4 layers, 8 query heads over
2 key/value heads, SwiGLU 1,376, vocabulary 32,000, untied output layer; `--shape tinyllama`:
TinyLlama 1.1B's published shape; `--shape tiny`: width 64, 2 layers, for
`gpu_check.py --dry_run`; seed 0) and saves it as safetensors; ptune reads that
directory (`hf_causal.load`). The batch is seqio's encoder-decoder layout (8 examples, inputs
up to 128 tokens with their EOS, targets up to 8), which ptune lays out as [prompt] BOS inputs
targets (`llama.CausalLM.seq2seq`); PEFT gets the same token sequences
(`llama.seq2seq_layout`, width 137) with labels -100 everywhere but the targets, and a
100-token prompt (PromptTuningConfig, CAUSAL_LM). Both train the prompt only with the paper's
Adafactor (lr 0.3; transformers' Adafactor on the PEFT side), float32, no dropout. The parity
check stops the run before any timing if the two disagree.

`--device gpu` puts both sides on the GPU (JAX's first GPU, PyTorch's CUDA) and stops in one
line if either sees none. Parity runs there at full float32 (JAX's matmul precision
"highest", PyTorch without TF32); the timed steps use TF32 matmuls on both sides (JAX's
default for float32 on such a GPU, turned on for PyTorch to match).

Steps are timed in alternating rounds (`timing.time_interleaved`: compile and warm-up
excluded, the median reported). Results go to
`benchmarks/results/<date>-causal-step-<machine>.{json,md}`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from benchmarks import timing  # noqa: E402

SMALL = dict(
    vocab_size=32000,
    hidden_size=512,
    intermediate_size=1376,
    num_hidden_layers=4,
    num_attention_heads=8,
    num_key_value_heads=2,
    max_position_embeddings=512,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    tie_word_embeddings=False,
    bos_token_id=1,
    eos_token_id=2,
)
SHAPES = {
    "small": SMALL,
    # TinyLlama 1.1B (gin/models/tinyllama_1_1b.gin), random weights; SMALL's vocabulary
    "tinyllama": dict(
        SMALL,
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=22,
        num_attention_heads=32,
        num_key_value_heads=4,
        max_position_embeddings=2048,
    ),
    # For `gpu_check.py --dry_run` on a CPU: every code path, tiny (width 64, 2 layers, 4 query
    # heads over 2 key/value heads); SMALL's vocabulary
    "tiny": dict(
        SMALL, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4
    ),
}
BATCH, INPUTS, TARGETS, PROMPT = 8, 128, 8, 100
BOS, EOS = 1, 2
# float32 on both sides, summed in different orders: the loss is a mean of ~50 values near
# ln(32000) ~ 10.4; the gradient is compared relative to its largest entry.
LOSS_TOLERANCE = 1e-4
GRAD_RELATIVE_TOLERANCE = 1e-3


def seqio_batches(count: int, seed: int = 0) -> list[dict]:
    """Encoder-decoder batches as seqio gives them: right-padded with 0, each part ending in
    EOS; input lengths spread over 32..128, target lengths over 2..8."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        enc = np.zeros((BATCH, INPUTS), np.int32)
        tgt = np.zeros((BATCH, TARGETS), np.int32)
        for row in range(BATCH):
            n, m = rng.integers(32, INPUTS + 1), rng.integers(2, TARGETS + 1)
            enc[row, : n - 1] = rng.integers(3, SMALL["vocab_size"], n - 1)
            enc[row, n - 1] = EOS
            tgt[row, : m - 1] = rng.integers(3, SMALL["vocab_size"], m - 1)
            tgt[row, m - 1] = EOS
        out.append(
            {
                "encoder_input_tokens": enc,
                "decoder_input_tokens": np.zeros_like(tgt),
                "decoder_target_tokens": tgt,
            }
        )
    return out


def peft_inputs(batch: dict, device: str = "cpu") -> dict:
    """The same sequences for PEFT: input_ids, attention_mask, labels (targets only), on
    `device`."""
    import torch

    from ptune.models import llama

    tokens, valid, prefix = (
        np.asarray(x)
        for x in llama.seq2seq_layout(
            batch["encoder_input_tokens"], batch["decoder_target_tokens"], BOS, True
        )
    )
    steps = np.arange(tokens.shape[1])[None]
    labels = np.where(valid & (steps >= prefix[:, None]), tokens, -100)
    out = {
        "input_ids": torch.tensor(tokens, dtype=torch.long),
        "attention_mask": torch.tensor(valid.astype(np.int64)),
        "labels": torch.tensor(labels, dtype=torch.long),
    }
    return {k: v.to(device) for k, v in out.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="timed steps per contender")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a smoke run, not for results")
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results"))
    parser.add_argument("--no_write", action="store_true")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="small")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.rounds = 2, 1, 1
    if args.device == "cpu":
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    import peft
    import torch
    import transformers

    if args.device == "gpu":
        if not any(d.platform == "gpu" for d in jax.devices()) or not torch.cuda.is_available():
            print("causal_step: --device gpu but JAX or PyTorch sees no GPU", file=sys.stderr)
            return 2
        torch_device = "cuda"
    else:
        torch_device = "cpu"
    shape = SHAPES[args.shape]

    from benchmarks import torch_side
    from ptune import optimizers, prompts, recipe, step, trainable
    from ptune.checkpoints import hf_causal

    batches = seqio_batches(4)
    prompt = np.random.default_rng(1).uniform(-0.5, 0.5, (PROMPT, shape["hidden_size"]))
    prompt = prompt.astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        hf_config = transformers.LlamaConfig(**shape)
        hf_config.architectures = ["LlamaForCausalLM"]
        torch.manual_seed(0)
        hf = transformers.LlamaForCausalLM(hf_config)
        hf.save_pretrained(tmp, safe_serialization=True)
        config, params = hf_causal.load(tmp)
    wrapped = peft.get_peft_model(
        hf,
        peft.PromptTuningConfig(
            task_type="CAUSAL_LM", num_virtual_tokens=PROMPT, token_dim=shape["hidden_size"]
        ),
    ).to(torch_device)
    with torch.no_grad():
        wrapped.prompt_encoder["default"].embedding.weight.copy_(torch.tensor(prompt))

    # ---- parity: the same loss and prompt gradient (z-loss off: PEFT has none)
    run = recipe.assemble(
        config,
        prompt_factory=prompts.prompt_factory(PROMPT),
        trainable=trainable.PROMPT_ONLY,
        optimizer=optimizers.prompt_tuning_adafactor(),
        causal_layout={"bos_id": BOS, "drop_input_eos": True},
    )

    def ptune_loss(p):
        value, _ = step.loss_and_metrics(
            run.model,
            step.LossConfig(z_loss=0.0),
            prompts.with_prompt({}, p),
            params,
            batches[0],
            False,
            None,
        )
        return value

    with jax.default_matmul_precision("highest"):
        loss, grad = jax.jit(jax.value_and_grad(ptune_loss))(prompt)
    wrapped.eval()
    out = wrapped(**peft_inputs(batches[0], torch_device))
    out.loss.backward()
    peft_grad = wrapped.prompt_encoder["default"].embedding.weight.grad.cpu().numpy().copy()
    wrapped.zero_grad(set_to_none=True)
    parity = {
        "ptune_loss": float(loss),
        "peft_loss": out.loss.item(),
        "loss_abs_diff": abs(float(loss) - out.loss.item()),
        "prompt_grad_max_rel_diff": float(
            np.abs(np.asarray(grad) - peft_grad).max() / np.abs(peft_grad).max()
        ),
    }
    ok = (
        parity["loss_abs_diff"] <= LOSS_TOLERANCE
        and parity["prompt_grad_max_rel_diff"] <= GRAD_RELATIVE_TOLERANCE
    )
    print(f"parity {'ok' if ok else 'FAILED'}: {parity}", flush=True)
    if not ok:
        return 1

    # ---- step times: the paper's recipe on both sides, prompt only
    state, frozen = run.init_state(run.place_prompt(params, prompt))
    # On the device, as a run holds them (`recipe._load_causal` reads them into their
    # shardings): numpy weights would be copied to the device again in every step.
    frozen = jax.device_put(frozen, jax.devices()[0])
    train_step = run.train_step(step.LossConfig(), seed=0, donate=False)
    device_batches = [jax.device_put(b) for b in batches]
    holder = {"state": state}

    def ptune_run(i):
        holder["state"], metrics = train_step(holder["state"], frozen, device_batches[i % 4])
        return float(metrics["loss_sum"])

    trainable_params = [p for p in wrapped.parameters() if p.requires_grad]
    optimizer = torch_side.adafactor(trainable_params, 0.3)
    inputs = [peft_inputs(b, torch_device) for b in batches]
    if torch_device == "cuda":  # JAX's default float32 matmuls on a GPU use TF32
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    wrapped.train()

    def peft_run(i):
        optimizer.zero_grad(set_to_none=True)
        loss = wrapped(**inputs[i % 4]).loss
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    runs = {"ptune_prompt": ptune_run, "peft_prompt": peft_run}
    load_start = os.getloadavg()[0]
    times = timing.time_interleaved(
        runs, {n: args.warmup for n in runs}, {n: args.steps for n in runs}, args.rounds
    )
    steps = {name: t.as_dict(BATCH) for name, t in times.items()}
    ratio = steps["peft_prompt"]["median_s"] / steps["ptune_prompt"]["median_s"]
    kind = f"{os.cpu_count()}cpu" if args.device == "cpu" else jax.devices()[0].device_kind
    machine = f"{socket.gethostname()}-{kind}".replace(" ", "_").replace("/", "_")
    if args.shape != "small":
        machine += f"-{args.shape}"
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": machine,
        "jax_device": str(jax.devices()[0]),
        "torch_device": torch_device,
        "tf32_in_timing": torch_device == "cuda",
        "torch_threads": torch.get_num_threads(),
        "versions": {
            "jax": jax.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
        },
        "shape": dict(shape, batch=BATCH, inputs=INPUTS, targets=TARGETS, prompt=PROMPT),
        "parity": parity,
        "steps": steps,
        "peft_over_ptune_step_time": ratio,
        "load_average_1min": [load_start, os.getloadavg()[0]],
    }
    tf32_note = ", TF32 in the timed steps" if torch_device == "cuda" else ""
    lines = [
        f"# Decoder-only prompt tuning: ptune vs PEFT ({result['date']}, {machine})",
        "",
        f"`python benchmarks/causal_step.py --device {args.device} --shape {args.shape}` (see "
        "its docstring for the workload). Parity on "
        f"the same batch: loss {parity['ptune_loss']:.6f} (ptune) vs {parity['peft_loss']:.6f} "
        f"(PEFT), prompt gradient max relative difference "
        f"{parity['prompt_grad_max_rel_diff']:.1e}. jax {jax.__version__} on "
        f"{result['jax_device']}, torch {torch.__version__} on {torch_device} "
        f"({result['torch_threads']} threads{tf32_note}), "
        f"peft {peft.__version__}; load average (1 min) at start / end of timing: "
        f"{load_start:.2f} / {result['load_average_1min'][1]:.2f} on {os.cpu_count()} cores.",
        "",
        "| contender | median step (ms) | min | max | examples/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, s in steps.items():
        lines.append(
            f"| {name} | {1e3 * s['median_s']:.1f} | {1e3 * s['min_s']:.1f} | "
            f"{1e3 * s['max_s']:.1f} | "
            f"{s['examples_per_s']:.1f} |"
        )
    lines += [
        "",
        f"PEFT's step takes {ratio:.2f}x ptune's on the same sequences. Part of the difference "
        "is work ptune skips: it computes the output layer (32,000 logits) only at the target "
        "positions, transformers at all 237.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write and not args.quick:
        stem = os.path.join(args.out, f"{result['date']}-causal-step-{machine}")
        with open(stem + ".json", "w") as f:
            json.dump(result, f, indent=2)
        with open(stem + ".md", "w") as f:
            f.write(text)
        print(f"wrote {stem}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
