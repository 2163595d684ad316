"""Everything worth measuring on a GPU, in one command that fits a short loan of one.

    python benchmarks/gpu_check.py [--out DIR]        # on the GPU machine, about 6 minutes
    python benchmarks/gpu_check.py --dry_run          # the same steps, tiny, on this CPU
    make gpu-check                                    # the first, from .venv-bench

Needs the numerical core's dependencies only: jax, flax, optax and numpy on the ptune side;
PyTorch, transformers and peft for the peer side (where they are missing, run.py times ptune
alone). No TensorFlow, seqio or gin. On a GPU each step runs as its own process (so the
GPU memory JAX preallocates is handed back before PyTorch's turn); the dry run runs them all in
this process (imports and compiled helpers shared). Each step's output goes to
`DIR/<step>.log`, its results files to DIR:

  t5 float32      run.py: T5 1.1 Small (batch 8, inputs 128) and Base (batch 32, inputs 512)
                  prompt and model steps vs PEFT / transformers, TF32 matmuls on both sides
  t5 bfloat16     the same with bfloat16 activations against PyTorch's autocast to bfloat16
  length rte      length_buckets.py at batch 32: fixed padding, buckets, grouped batches,
  length boolq    PEFT padding each batch to its longest, on RTE- and BoolQ-like lengths
  causal step     causal_step.py --shape tinyllama: decoder-only prompt step vs PEFT
  causal serving  causal_serving.py: prompt keys/values once, mixed batches
  attention form  which form attention lowered to on this device: T5 1.1 Small's prompt
                  step compiled here (a smaller T5 on the CPU), its HLO searched for the
                  head-by-head products (XLA:CPU's choice), the batched ones (every other
                  platform's) and cuDNN's fused attention (not routed yet; shows if XLA
                  chose it); then a probe: does `jax.nn.dot_product_attention` with
                  implementation 'cudnn' take T5's position bias and a decoder-only causal
                  grouped-query mask, with padding, in bfloat16, and how far are its values
                  from ptune's (on a CPU the probe runs XLA's implementation)

A failed step is reported and the others still run. The end: one summary table (step,
seconds, status, headline figures), also written as DIR/summary.md; exit status 1 if any
step failed. `--dry_run` runs every step on the CPU with tiny shapes, one timing round and a
256 x 256 peak matmul, to keep this script working where no GPU is at hand
(tests/test_gpu_check.py); its figures mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import glob
import importlib
import io
import json
import os
import re
import subprocess
import sys
import time
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ONE_ROUND = ["--rounds", "1"]


def steps(dry_run: bool) -> list[tuple[str, list[str]]]:
    """(name, argv after the python executable) of every step, in run order."""
    device = "cpu" if dry_run else "gpu"
    if dry_run:
        t5_args = ["--configs", "dry-run", "--steps", "1", "--warmup", "1", "--batches", "1"]
        t5_args += ONE_ROUND + ["--no_inference", "--peak_size", "256"]
        length_args = ["--config", "dry-run", "--inputs", "64", "--batch", "4", "--batches", "2"]
        length_args += ["--window", "4"] + ONE_ROUND
        causal_args = ["--shape", "tiny", "--steps", "1", "--warmup", "1"] + ONE_ROUND
        serving_args = ["--prompts", "2", "--prompt_length", "8", "--batch", "4"]
        serving_args += ["--input_length", "8", "--new_tokens", "2"] + ONE_ROUND
    else:
        t5_args = ["--configs", "t5-1.1-small", "t5-1.1-base"]
        length_args = ["--batch", "32", "--batches", "8"]
        causal_args = ["--shape", "tinyllama"]
        serving_args = []
    bench = lambda name: os.path.join("benchmarks", name)  # noqa: E731
    return [
        ("t5 float32", [bench("run.py"), "--device", device, "--dtype", "float32"] + t5_args),
        ("t5 bfloat16", [bench("run.py"), "--device", device, "--dtype", "bfloat16"] + t5_args),
        (
            "length rte",
            [bench("length_buckets.py"), "--device", device, "--mix", "rte"] + length_args,
        ),
        (
            "length boolq",
            [bench("length_buckets.py"), "--device", device, "--mix", "boolq"] + length_args,
        ),
        ("causal step", [bench("causal_step.py"), "--device", device] + causal_args),
        ("causal serving", [bench("causal_serving.py")] + serving_args),
        ("attention form", [bench("gpu_check.py"), "--attention_form", "--device", device]),
    ]


def attention_form(device: str) -> int:
    """Compiles T5 1.1 Small's prompt step on `device` and prints which attention form its
    HLO holds: 'attention form: batched|head by head|cudnn fused'. Exit status 1 if it is not
    the form this platform should take (head by head on a CPU, batched or fused elsewhere)."""
    if device == "cpu":
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    sys.path.insert(0, REPO)
    import jax

    from benchmarks import ptune_side, workloads

    target = jax.devices(device)[0]
    # Over XLA:CPU's head-by-head size (64 x 64 logits per head) either way.
    bench = workloads.CONFIGS["dry-run" if target.platform == "cpu" else "t5-1.1-small"]
    config = ptune_side.t5_config(bench)
    params = ptune_side.random_params(config)
    batches = workloads.batches(bench, 1)
    prompt = workloads.initial_prompt(bench)
    step = ptune_side.make_step("prompt", config, params, prompt, batches, target)
    text = step.hlo_text
    by_head = "bqd,bkd->bqk" in text
    batched = "bqhd,bkhd->bhqk" in text
    fused = "cudnn$fmha" in text or "__cudnn$fmha" in text
    form = "cudnn fused" if fused else "head by head" if by_head else "batched" if batched else "?"
    expected = ("head by head",) if target.platform == "cpu" else ("batched", "cudnn fused")
    # On a CPU the probe runs with XLA's implementation: the same code, checked.
    probe = fused_attention_probe(target, "cudnn" if target.platform == "gpu" else "xla")
    print(f"attention form: {form} on {target.platform} ({target.device_kind}); {probe}")
    return 0 if form in expected else 1


def fused_attention_probe(target, implementation: str) -> str:
    """Whether `jax.nn.dot_product_attention(implementation=...)` ('cudnn': cuDNN's fused
    attention) takes what ptune's attention needs, in bfloat16: T5's relative-position bias
    [1, h, q, k] with a padding mask, and a decoder-only model's grouped-query causal mask
    with padding; each against `attention.attend`'s values (max abs difference over the
    real query rows)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from ptune.models import attention

    rng = np.random.default_rng(0)
    b, q, h, g, d = 4, 256, 8, 2, 64

    def arr(*shape):
        return jax.device_put(jnp.asarray(rng.standard_normal(shape), jnp.bfloat16), target)

    valid = np.ones((b, q), bool)
    valid[1, q // 2 :] = False
    valid = jax.device_put(valid, target)
    cases = {
        "T5 bias + padding": (arr(b, q, h, d), arr(b, q, h, d), arr(b, q, h, d), arr(1, h, q, q)),
        "causal GQA + padding": (arr(b, q, h, d), arr(b, q, g, d), arr(b, q, g, d), None),
    }
    out = []
    for name, (query, key, value, bias) in cases.items():
        causal = bias is None
        mask = valid[:, None, None, :]
        if causal:
            mask = mask & jnp.tril(jnp.ones((q, q), bool))[None, None]
        mask = jnp.broadcast_to(mask, (b, 1, q, q))
        mine = attention.attend(
            query,
            key,
            value,
            bias=bias,
            mask=mask,
            mask_value=-1e9,
            dtype=jnp.bfloat16,
            scale=None if bias is not None else float(np.sqrt(d)),
        )
        try:
            fused = jax.jit(
                lambda *a: jax.nn.dot_product_attention(
                    *a,
                    scale=1.0 if bias is not None else 1 / float(np.sqrt(d)),
                    implementation=implementation,
                )
            )(query, key, value, bias, mask)
        except Exception as e:  # noqa: BLE001 - the probe reports what cuDNN refuses
            out.append(f"{name}: {implementation} refuses ({type(e).__name__}: {str(e)[:80]})")
            continue
        rows = np.asarray(valid)[:, :, None, None]  # padded queries' outputs are unused
        diff = np.abs(np.asarray(fused, np.float32) - np.asarray(mine, np.float32)) * rows
        out.append(f"{name}: {implementation} ok, max diff {diff.max():.3g}")
    return "; ".join(out)


# --- headline figures, read from what each step wrote -----------------------------------


def _load(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def _newest(out: str, pattern: str):
    paths = sorted(glob.glob(os.path.join(out, pattern)), key=os.path.getmtime)
    return _load(paths[-1]) if paths else None


def _t5_headline(out: str, dtype: str) -> str:
    results = _newest(out, "*-bf16.json" if dtype == "bfloat16" else "*[0-9]cpu.json")
    if results is None and dtype == "float32":  # on a GPU the tag ends in the GPU's kind
        found = [
            r
            for r in map(_load, glob.glob(os.path.join(out, "*.json")))
            if r.get("settings", {}).get("dtype") == "float32" and "configs" in r
        ]
        results = found[-1] if found else None
    if results is None or results.get("settings", {}).get("dtype") != dtype:
        return "no results file"
    parts = []
    for name, config in results["configs"].items():
        s = config["steps"]

        def ms(key):
            return f"{s[key]['median_s'] * 1e3:.1f}" if key in s else "-"

        mfu = s["ptune_prompt"].get("mfu")
        line = f"{name}: prompt {ms('ptune_prompt')} ms vs PEFT {ms('peft_prompt')}"
        if "peft_prompt" in s:
            line += f" ({s['peft_prompt']['median_s'] / s['ptune_prompt']['median_s']:.2f}x)"
        line += f", MFU {mfu:.0%}" if mfu else ""
        line += f"; model {ms('ptune_model')} ms vs {ms('hf_full')}"
        parts.append(line)
    return "; ".join(parts)


def _length_headline(out: str, mix: str) -> str:
    results = _newest(out, f"*-length-buckets-{mix}-*.json")
    if results is None:
        return "no results file"
    c = results["contenders"]
    text = f"grouped {c['ptune_grouped']['speedup_vs_ptune_fixed']:.2f}x fixed padding"
    peft = c["ptune_grouped"].get("speedup_vs_peft_longest")
    return text + (f", {peft:.2f}x PEFT (real tokens/s)" if peft else "")


def _causal_headline(out: str) -> str:
    results = _newest(out, "*-causal-step-*.json")
    if results is None:
        return "no results file"
    return f"PEFT's step takes {results['peft_over_ptune_step_time']:.2f}x ptune's"


def _serving_headline(log: str) -> str:
    ratios = re.findall(r"\| (cached, \w+) \|.*\| ([\d.]+x) \|", log)
    return ", ".join(f"{name} {ratio}" for name, ratio in ratios) + " vs recompute, grouped"


def headline(name: str, out: str, log: str) -> str:
    if name.startswith("t5 "):
        return _t5_headline(out, name.split()[1])
    if name.startswith("length "):
        return _length_headline(out, name.split()[1])
    if name == "causal step":
        return _causal_headline(out)
    if name == "causal serving":
        return _serving_headline(log)
    found = re.search(r"attention form: (.*)", log)
    return found.group(1) if found else "-"


def run_here(step_argv: list[str]) -> tuple[int, str]:
    """Runs one step's script (`benchmarks/<name>.py ARGS`) in this process: its `main(ARGS)`,
    with what it prints captured. Returns (exit status, output); an exception is status 1,
    its traceback in the output."""
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    module = importlib.import_module(
        "benchmarks." + os.path.splitext(os.path.basename(step_argv[0]))[0]
    )
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
        try:
            returncode = module.main(step_argv[1:]) or 0
        except SystemExit as e:  # argparse, or a script's sys.exit
            returncode = e.code if isinstance(e.code, int) else 1
        except Exception:  # noqa: BLE001 - a failed step is reported, the others still run
            traceback.print_exc()
            returncode = 1
    return returncode, captured.getvalue()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="results folder (default: a dated one)")
    parser.add_argument("--dry_run", action="store_true", help="every step, tiny, on the CPU")
    parser.add_argument("--only", default=None, help="comma-separated step names to run")
    parser.add_argument("--attention_form", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="gpu", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.attention_form:
        return attention_form(args.device)
    kind = "dry-run" if args.dry_run else "gpu"
    out = args.out or os.path.join(
        REPO, "benchmarks", "results", f"{datetime.date.today().isoformat()}-{kind}-check"
    )
    os.makedirs(out, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if args.dry_run:
        os.environ["JAX_PLATFORMS"] = "cpu"  # before any step imports jax
    chosen = set(args.only.split(",")) if args.only else None
    rows = []
    for name, step_argv in steps(args.dry_run):
        if chosen is not None and name not in chosen:
            continue
        has_out = step_argv[0].endswith(("run.py", "length_buckets.py", "causal_step.py"))
        step_argv = step_argv + (["--out", out] if has_out else [])
        print(f"[{name}] {' '.join(step_argv)}", flush=True)
        start = time.perf_counter()
        if args.dry_run:
            returncode, log = run_here(step_argv)
        else:
            done = subprocess.run(
                [sys.executable] + step_argv, cwd=REPO, env=env, capture_output=True, text=True
            )
            returncode, log = done.returncode, done.stdout + done.stderr
        seconds = time.perf_counter() - start
        with open(os.path.join(out, name.replace(" ", "-") + ".log"), "w") as f:
            f.write(log)
        status = "ok" if returncode == 0 else f"failed ({returncode})"
        figures = headline(name, out, log) if returncode == 0 else log.strip()[-200:]
        rows.append((name, seconds, status, figures.replace("|", "/").replace("\n", " ")))
        print(f"[{name}] {status} in {seconds:.0f} s: {rows[-1][3]}", flush=True)
    lines = [
        f"# GPU check ({kind}, {datetime.date.today().isoformat()})",
        "",
        "| step | s | status | figures |",
        "|---|---:|---|---|",
    ] + [f"| {name} | {sec:.0f} | {status} | {figures} |" for name, sec, status, figures in rows]
    table = "\n".join(lines)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(table + "\n")
    print()
    print(table)
    return 0 if all(status == "ok" for _, _, status, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
