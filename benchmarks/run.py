"""ptune vs Hugging Face PEFT, side by side in one process: parity first, then step times.

    make bench                                   # builds .venv-bench once, then runs this
    .venv-bench/bin/python benchmarks/run.py [--device gpu] [--configs d256-4L] [--quick]

For each configuration of `workloads.CONFIGS` (T5 1.1-shaped, inputs 128, targets 8,
prompt 100, batch 8):
  1. transformers builds a random T5 1.1 (seed 0, untied lm_head, dropout 0) and saves it as
     safetensors; ptune loads that directory with `ptune.checkpoints.load`;
  2. parity: the same weights, prompt and batch give the same loss and prompt gradient in
     ptune and in PEFT, or the run stops before any table is printed;
  3. four train steps are timed in alternating rounds (`timing.time_interleaved`): ptune
     prompt tuning and model tuning (jitted, compile excluded, blocked on state and loss),
     PEFT prompt tuning and full fine-tuning (PEFT model with every weight unfrozen, so the
     sequence length equals prompt tuning's). Dropout is 0 on both sides throughout.
Model FLOPs (`flops.py`) over the median step time, divided by a matmul peak of the steps'
dtype measured in the same run (the best of several measurements), give MFU. `--dtype
bfloat16` times bfloat16 activations in ptune against PyTorch's autocast to bfloat16 (float32
weights on both sides; parity still runs in float32 first). Results go to
`benchmarks/results/<date>-<machine>.json` and `.md`; the Markdown table is printed last.

`--device gpu` runs the ptune side on the GPU (the ptune path needs only jax, flax, optax);
PEFT runs on CUDA if torch sees one, else its timings are left out (a GPU-vs-CPU ratio would
mean nothing) while parity still runs on the CPU when torch is importable. On CUDA, PyTorch's
timed steps use TF32 matmuls, as JAX's float32 default does there (parity runs before).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from benchmarks import flops, report, timing, workloads  # noqa: E402

# What the ptune path may import (top-level names), checked in a fresh interpreter.
FORBIDDEN_IN_PTUNE_PATH = (
    "tensorflow",
    "seqio",
    "gin",
    "torch",
    "transformers",
    "peft",
    "tensorflow_datasets",
    "orbax",
    "tensorstore",
    "clu",
)
# ptune modules the ptune path may load: the numerical core of DESIGN.md that runs with jax,
# flax and optax alone (`ptune.checkpoints` needs orbax and tensorstore besides).
NUMERICAL_CORE = (
    "ptune",
    "ptune.errors",
    "ptune.models",
    "ptune.models.attention",
    "ptune.models.layers",
    "ptune.models.t5",
    "ptune.models.t5_layers",
    "ptune.models.llama",
    "ptune.models.search",
    "ptune.models.causal_decoding",
    "ptune.buckets",
    "ptune.step",
    "ptune.trainable",
    "ptune.optimizers",
    "ptune.prompts",
    "ptune.prompts.slot",
    "ptune.prompts.initializers",
    "ptune.prompts.modules",
    "ptune.prompts.config",
    "ptune.family",
    "ptune.family.interface",
    "ptune.family.encoder_decoder",
    "ptune.family.decoder_only",
    "ptune.memo",
    "ptune.losses",
    "ptune.partitioning",
    "ptune.decoding",
    "ptune.inference",
)
# The inference workloads (decoding) run on the small configuration only, to keep
# `make bench` within its ten minutes.
INFERENCE_CONFIG = "d256-4L"
# Parity tolerances, float32: the loss is a mean over ~50 target tokens of values near
# ln(32128) ~ 10.4; the two implementations sum in different orders.
LOSS_TOLERANCE = 1e-4
GRAD_RELATIVE_TOLERANCE = 1e-3


class ParityError(RuntimeError):
    """ptune and PEFT disagree on the same weights, prompt and batch: no table is printed."""


def check_import_hygiene() -> list[str]:
    """Imports the ptune side in a fresh interpreter and fails if anything outside jax, flax,
    optax, numpy, safetensors and ptune's numerical core came along (so `--device gpu` works
    on a machine with only those). Returns the ptune modules it loaded."""
    code = (
        "import sys; sys.path.insert(0, %r); import benchmarks.ptune_side; "
        "print(' '.join(sorted(sys.modules)))" % REPO
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.split()
    roots = {m.split(".")[0] for m in out}
    bad = sorted(roots & set(FORBIDDEN_IN_PTUNE_PATH))
    ptune_modules = sorted(m for m in out if m.startswith("ptune"))
    extra = [m for m in ptune_modules if m not in NUMERICAL_CORE]
    assert not bad and not extra, (
        f"the benchmark's ptune path imports {bad + extra}: it must "
        "stay within jax/flax/optax/numpy and ptune's numerical core"
    )
    return ptune_modules


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _machine(args, jax_device, torch_module) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import jax

    info = {
        "tag": args.machine,
        "hostname": socket.gethostname(),
        "cpu": cpu,
        "cores": _cores(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jax_device": str(jax_device),
        "jax_platform": jax_device.platform,
        # Others' work on a shared machine shows here; compare ratios, not absolute times.
        "load_average_at_start": os.getloadavg(),
    }
    if torch_module is not None:
        import peft
        import transformers

        info.update(
            torch=torch_module.__version__,
            torch_threads=torch_module.get_num_threads(),
            transformers=transformers.__version__,
            peft=peft.__version__,
        )
    return info


def _parity(bench, config, params, prompt, batch, wrapped) -> dict:
    from benchmarks import ptune_side, torch_side

    ptune_loss, ptune_grad = ptune_side.loss_and_prompt_grad(config, params, prompt, batch)
    peft_loss, peft_grad = torch_side.loss_and_prompt_grad(wrapped, batch)
    import numpy as np

    grad_err = float(np.abs(ptune_grad - peft_grad).max() / max(np.abs(peft_grad).max(), 1e-30))
    result = {
        "ptune_loss": ptune_loss,
        "peft_loss": peft_loss,
        "loss_abs_diff": abs(ptune_loss - peft_loss),
        "loss_tolerance": LOSS_TOLERANCE,
        "prompt_grad_max_rel_diff": grad_err,
        "grad_relative_tolerance": GRAD_RELATIVE_TOLERANCE,
    }
    result["ok"] = bool(
        result["loss_abs_diff"] <= LOSS_TOLERANCE and grad_err <= GRAD_RELATIVE_TOLERANCE
    )
    return result


def measure_peaks(
    peaks: dict, jax_device, torch_module, device: str, dtype: str, n: int = 2048
) -> None:
    """Appends a matmul peak measurement (FLOP/s) in `dtype`, n x n, for JAX, and for PyTorch
    on CPU.

    Peak is the best the machine does, so the run keeps the best of several measurements
    spread over it: one taken while a neighbour's job held the cores would understate it
    and flatter MFU."""
    from benchmarks import ptune_side

    peaks["jax"].append(ptune_side.matmul_peak_flops(jax_device, n=n, dtype=dtype))
    # PyTorch's bfloat16 matmuls on a CPU without bfloat16 units take minutes at 2048^2:
    # its bfloat16 MFU is left out there.
    if torch_module is not None and device == "cpu" and dtype == "float32":
        from benchmarks import torch_side

        peaks["torch"].append(torch_side.matmul_peak_flops(n=n))
    print(
        f"{dtype} matmul ({n}^2, median): jax {peaks['jax'][-1] / 1e9:.1f} GFLOP/s"
        + (f", torch {peaks['torch'][-1] / 1e9:.1f} GFLOP/s" if peaks["torch"] else ""),
        flush=True,
    )


def run_config(bench, args, jax_device, torch_module) -> dict:
    """Parity, then interleaved timings of every step kind for one configuration."""
    from benchmarks import ptune_side

    batches = workloads.batches(bench, args.batches)
    prompt = workloads.initial_prompt(bench)
    out = {
        "shape": {k: v for k, v in vars(bench).items()},
        "encoder_length": bench.encoder_length,
        "model_flops": {k: flops.step_flops(bench, k) for k in ("prompt", "model")},
    }
    runs, wrapped = {}, None
    with tempfile.TemporaryDirectory() as tmp:
        if torch_module is not None:
            from benchmarks import torch_side
            from ptune import checkpoints

            hf = torch_side.build_model(bench, seed=args.seed)
            torch_side.save_model(hf, tmp)
            config, params = checkpoints.load(tmp)
            expected = ptune_side.t5_config(bench)
            assert config == expected, f"loaded {config}, expected {expected}"
            wrapped = torch_side.peft_model(hf, bench, prompt)
            out["parity"] = _parity(bench, config, params, prompt, batches[0], wrapped)
            if not out["parity"]["ok"]:
                raise ParityError(f"{bench.name}: ptune and PEFT disagree: {out['parity']}")
            print(
                f"[{bench.name}] parity ok: loss {out['parity']['ptune_loss']:.6f} vs "
                f"{out['parity']['peft_loss']:.6f}, prompt grad rel diff "
                f"{out['parity']['prompt_grad_max_rel_diff']:.2e}",
                flush=True,
            )
        else:
            config = ptune_side.t5_config(bench)
            params = ptune_side.random_params(config, args.seed)
            out["parity"] = {"ok": None, "skipped": "torch is not installed here"}
    steps = {}
    timed_config = config.replace(dtype=args.dtype)  # parity above ran in float32
    for kind in ("prompt", "model"):
        start = time.perf_counter()
        step = ptune_side.make_step(kind, timed_config, params, prompt, batches, jax_device)
        steps[f"ptune_{kind}"] = {
            "compile_s": time.perf_counter() - start,
            "xla_flops": step.xla_flops,
            "trainable_params": step.trainable_params,
            "kind": kind,
            "framework": "ptune",
        }
        runs[f"ptune_{kind}"] = step.run
        if args.dump_hlo:
            os.makedirs(args.dump_hlo, exist_ok=True)
            with open(os.path.join(args.dump_hlo, f"{bench.name}-{kind}.hlo.txt"), "w") as f:
                f.write(step.hlo_text)
    if wrapped is not None and (jax_device.platform == "cpu" or torch_module.cuda.is_available()):
        from benchmarks import torch_side

        torch_device = "cpu" if jax_device.platform == "cpu" else "cuda"
        if torch_device == "cuda":  # JAX's float32 matmuls on a GPU use TF32: match them
            torch_module.backends.cuda.matmul.allow_tf32 = True
            torch_module.backends.cudnn.allow_tf32 = True
        out["torch_tf32"] = torch_device == "cuda"
        full = torch_side.peft_model(hf, bench, prompt, train_everything=True)
        for name, model, lr, kind in (
            ("peft_prompt", wrapped, 0.3, "prompt"),
            ("hf_full", full, 1e-3, "model"),
        ):
            runs[name] = torch_side.make_step(
                model.to(torch_device), batches, lr, torch_device, args.dtype == "bfloat16"
            )
            steps[name] = {
                "trainable_params": torch_side.trainable_count(model),
                "kind": kind,
                "framework": "peft" if kind == "prompt" else "transformers",
            }
    steps_for = {
        name: args.steps or (bench.full_steps if name == "hf_full" else bench.steps)
        for name in runs
    }
    warmup = args.warmup if args.warmup is not None else bench.warmup
    warmup_for = {
        name: min(warmup, 1) if name == "hf_full" and not args.steps else warmup for name in runs
    }
    print(
        f"[{bench.name}] timing in {args.rounds} alternating rounds (warm-up + steps): "
        + ", ".join(f"{n} {warmup_for[n]}+{steps_for[n]}" for n in runs),
        flush=True,
    )
    timings = timing.time_interleaved(runs, warmup_for, steps_for, args.rounds)
    for name, t in timings.items():
        entry = steps[name]
        entry.update(t.as_dict(bench.batch))
        entry["model_flops_per_s"] = out["model_flops"][entry["kind"]] / t.median_s
    out["steps"] = steps
    out["ratios"] = report.ratios(steps)
    if bench.name == INFERENCE_CONFIG and not args.no_inference:
        from benchmarks import inference_bench

        print(f"[{bench.name}] inference: mixed-task batches, 5-prompt ensemble", flush=True)
        out["inference"] = inference_bench.run(
            bench, config, params, batches, steps=args.inference_steps, warmup=1, rounds=args.rounds
        )
        results_inference = out["inference"]
        if results_inference.get("status") == "failed":
            raise ParityError(f"{bench.name} inference: {results_inference['reason']}")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument(
        "--configs",
        nargs="+",
        default=list(workloads.CPU_CONFIGS),
        choices=list(workloads.CONFIGS),
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="timed steps per contender (default: per configuration, workloads.CONFIGS)",
    )
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="the timed steps' precision: bfloat16 activations in ptune, torch.autocast to "
        "bfloat16 in PyTorch (parity runs in float32 first either way)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating timing rounds")
    parser.add_argument("--batches", type=int, default=4, help="distinct batches cycled")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="3 steps, 1 warm-up, 1 round: a smoke run, not for results",
    )
    parser.add_argument(
        "--machine",
        default=None,
        help="machine tag in the results file name (default: <hostname>-<N>cpu, or "
        "<hostname>-<GPU kind> with --device gpu)",
    )
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results"))
    parser.add_argument("--no_write", action="store_true", help="print only")
    parser.add_argument(
        "--inference_steps", type=int, default=6, help="timed calls per inference workload"
    )
    parser.add_argument("--no_inference", action="store_true", help="skip inference workloads")
    parser.add_argument("--dump_hlo", metavar="DIR", help="write each compiled ptune step's HLO")
    parser.add_argument(
        "--peak_size",
        type=int,
        default=2048,
        help="n of the n x n matmul that measures peak FLOP/s (the MFU denominator); "
        "smaller only for smoke runs",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.rounds, args.inference_steps = 3, 1, 1, 2

    ptune_modules = check_import_hygiene()
    if args.device == "cpu":
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    if args.device == "gpu":
        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        if not gpus:
            print("benchmarks: --device gpu but JAX sees no GPU", file=sys.stderr)
            return 2
        jax_device = gpus[0]
    else:
        jax_device = jax.devices("cpu")[0]
    if not args.machine:
        kind = f"{_cores()}cpu" if args.device == "cpu" else jax_device.device_kind
        args.machine = f"{socket.gethostname()}-{kind}".replace(" ", "_").replace("/", "_")
        if args.dtype == "bfloat16":
            args.machine += "-bf16"

    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        torch.set_num_threads(_cores())
    peaks = {"jax": [], "torch": []}
    measure_peaks(peaks, jax_device, torch, args.device, args.dtype, args.peak_size)
    started = time.time()
    results = {
        "date": datetime.date.today().isoformat(),
        "command": " ".join(["benchmarks/run.py"] + list(sys.argv[1:] if argv is None else argv)),
        "machine": _machine(args, jax_device, torch),
        "settings": {
            "rounds": args.rounds,
            "distinct_batches": args.batches,
            "dropout": 0.0,
            "dtype": args.dtype,
            "seed": args.seed,
            "ptune_path_modules": ptune_modules,
            "flops": "analytic matmul model FLOPs (benchmarks/flops.py); "
            "XLA cost_analysis flops beside them",
        },
        "configs": {},
    }
    try:
        for name in args.configs:
            results["configs"][name] = run_config(workloads.CONFIGS[name], args, jax_device, torch)
            measure_peaks(peaks, jax_device, torch, args.device, args.dtype, args.peak_size)
    except ParityError as e:
        print(f"benchmarks: parity check failed, no table: {e}", file=sys.stderr)
        return 1
    why = "--no_inference" if args.no_inference else f"{INFERENCE_CONFIG} was not run"
    results["inference"] = (
        results["configs"]
        .get(INFERENCE_CONFIG, {})
        .get("inference", {"status": "not run", "reason": why})
    )
    tag = report.dtype_tag(results)
    results["peak_flops"] = {
        f"jax_matmul_{tag}_{args.peak_size}": max(peaks["jax"]),
        f"torch_matmul_{tag}_{args.peak_size}": max(peaks["torch"], default=None),
        "matmul_size": args.peak_size,
        "measurements": peaks,
        "how": f"median of 10 jitted {args.peak_size}x{args.peak_size} {args.dtype} dots, "
        "measured before the first and after each configuration; the best of those medians "
        "is the peak",
    }
    report.add_mfu(results)
    results["wall_s"] = time.time() - started
    results["machine"]["load_average_at_end"] = os.getloadavg()
    results.update(report.headline(results, workloads.HEADLINE))
    for leaked in ("tensorflow", "seqio", "gin"):
        assert leaked not in sys.modules, f"{leaked} was imported during the benchmark"
    table = report.markdown(results)
    if not args.no_write:
        paths = report.write(results, table, args.out)
        print("wrote " + ", ".join(os.path.relpath(p, REPO) for p in paths))
    print()
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
