"""Decoder-only training memory per device, from `ptune plan`: query-chunked causal attention
against the whole [b, h, q, k] scores, by length, activation dtype and remat.

    .venv/bin/python benchmarks/plan_memory.py [--models tinyllama_1_1b,llama3_2_1b]
        [--lengths 1024,2048,4096] [--batch 8] [--out benchmarks/results]

Each point is one `ptune plan --mesh_shape=1,1 --scan_layers` of prompt tuning
(runs/prompt_tuning.gin: prompt 100, targets 8) over a model file, in its own process (a plan
compiles from shapes only; no weights are read). "chunked" is ptune as shipped
(`attention.CHUNK_LOGITS`); "whole" sets it beyond every length, which is attention before the
chunks (one [b, h, q, k] float32 score array per layer). Points:
  chunked, float32, remat none / minimal / full      every model and length
  chunked, bfloat16 activations, remat none          every model and length
  whole,   float32, remat none / full                every model and length
  chunked, float32, remat full, llama3_8b at --lengths' 2048, as its model file ships
XLA's CPU backend computes bfloat16 through float32 copies, so on CPU bfloat16 activations
size like float32 (an upper bound for GPUs and TPUs, which keep them in bfloat16). Prints a
markdown table and writes `<date>-plan-memory-cpu.{json,md}` under --out.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import socket
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIB = 1024**3

# Runs `ptune plan` with `attention.CHUNK_LOGITS` set first (argv[1]; "-" keeps ptune's).
_PLAN = """
import sys
from ptune.models import attention
chunk = sys.argv.pop(1)
if chunk != "-":
    attention.CHUNK_LOGITS = int(chunk)
from ptune import cli
sys.exit(cli.main(sys.argv[1:]))
"""
WHOLE = 1 << 40  # more logits than any length here: one chunk, as before chunking


def plan_point(model: str, length: int, batch: int, dtype: str, remat: str, chunk: str) -> dict:
    """One `ptune plan` in a fresh process -> {'temp_bytes', 'per_device_bytes', ...}."""
    argv = [
        sys.executable,
        "-c",
        _PLAN,
        chunk,
        "plan",
        f"--gin_file=models/{model}.gin",
        "--gin_file=runs/prompt_tuning.gin",
        "--mesh_shape=1,1",
        "--scan_layers",
        f"--gin.BATCH_SIZE={batch}",
        f"--gin.TASK_FEATURE_LENGTHS={{'inputs': {length}, 'targets': 8}}",
        f"--gin.llama.LlamaConfig.dtype='{dtype}'",
        f"--gin.llama.LlamaConfig.remat_policy='{remat}'",
    ]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    text = done.stdout + done.stderr
    per_device = re.search(r"per_device_bytes: (\d+)", text)
    temp = re.search(r"temporaries:\s+([\d,]+) bytes", text)
    seconds = re.search(r"compiled in ([\d.]+) s", text)
    if done.returncode != 0 or per_device is None or temp is None:
        raise SystemExit(f"plan of {model} at {length} failed:\n{text[-2000:]}")
    return {
        "model": model,
        "length": length,
        "batch": batch,
        "dtype": dtype,
        "remat": remat,
        "attention": "whole" if chunk != "-" else "chunked",
        "per_device_bytes": int(per_device.group(1)),
        "temp_bytes": int(temp.group(1).replace(",", "")),
        "compile_seconds": float(seconds.group(1)) if seconds else None,
    }


def points(models: list[str], lengths: list[int]) -> list[tuple]:
    """(model, length, dtype, remat, chunk) of every point, in run order."""
    out = []
    for model in models:
        for length in lengths:
            for remat in ("none", "minimal", "full"):
                out.append((model, length, "float32", remat, "-"))
            out.append((model, length, "bfloat16", "none", "-"))
            for remat in ("none", "full"):
                out.append((model, length, "float32", remat, str(WHOLE)))
    if 2048 in lengths:
        out.append(("llama3_8b", 2048, "float32", "full", "-"))
    return out


def markdown(results: dict) -> str:
    """The table: GiB per device (temporaries in brackets) for each point."""
    rows = {}
    for p in results["points"]:
        key = (p["model"], p["length"])
        column = f"{p['attention']} {p['dtype']} remat {p['remat']}"
        rows.setdefault(key, {})[column] = p
    columns = [
        "whole float32 remat none",
        "chunked float32 remat none",
        "chunked bfloat16 remat none",
        "chunked float32 remat minimal",
        "whole float32 remat full",
        "chunked float32 remat full",
    ]
    m = results["machine"]
    lines = [
        f"# Decoder-only training memory per device ({results['date']}, `ptune plan`, XLA:CPU)",
        "",
        f"Command: `{results['command']}` on {m['host']} ({m['cpus']} CPUs). Prompt tuning",
        f"(prompt 100, targets 8), batch {results['batch']}, one device, scanned layers. GiB per",
        "device (of which temporaries). *whole*: attention before query chunks (one",
        "[b, h, q, k] float32 score array per layer); *chunked*: ptune as shipped",
        f"(`CHUNK_LOGITS` = {results['chunk_logits']:,}). XLA:CPU computes bfloat16 through",
        "float32 copies, so bfloat16 activations size like float32 here (an upper bound for",
        "GPUs and TPUs).",
        "",
        "| model | inputs | " + " | ".join(columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for (model, length), cells in rows.items():

        def cell(name):
            p = cells.get(name)
            if p is None:
                return "-"
            return f"{p['per_device_bytes'] / GIB:.1f} ({p['temp_bytes'] / GIB:.1f})"

        lines.append(f"| {model} | {length} | " + " | ".join(cell(c) for c in columns) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tinyllama_1_1b,llama3_2_1b")
    parser.add_argument("--lengths", default="1024,2048,4096")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results"))
    args = parser.parse_args(argv)
    sys.path.insert(0, REPO)
    from ptune.models import attention

    models = args.models.split(",")
    lengths = [int(n) for n in args.lengths.split(",")]
    results = {
        "date": datetime.date.today().isoformat(),
        "command": "python benchmarks/plan_memory.py " + " ".join(argv or sys.argv[1:]),
        "machine": {"host": socket.gethostname(), "cpus": os.cpu_count()},
        "batch": args.batch,
        "chunk_logits": attention.CHUNK_LOGITS,
        "points": [],
    }
    for model, length, dtype, remat, chunk in points(models, lengths):
        point = plan_point(model, length, args.batch, dtype, remat, chunk)
        results["points"].append(point)
        print(
            f"{model} {length} {point['attention']} {dtype} remat {remat}: "
            f"{point['per_device_bytes'] / GIB:.2f} GiB",
            flush=True,
        )
    table = markdown(results)
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"{results['date']}-plan-memory-cpu")
    with open(stem + ".json", "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    with open(stem + ".md", "w") as f:
        f.write(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
