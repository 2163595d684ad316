"""Time to the first step of `ptune train`, first run and second run of the same
configuration, with JAX's persistent compilation cache (what `ptune` enables by default).

    python benchmarks/first_step.py [--model models/t5_1_1_small.gin] [--repeats 1]

Each run is the whole command in a fresh process (imports, random frozen weights of the
model, compile, one step, checkpoint), over the embedded demo task with its byte vocabulary,
so nothing is downloaded. The first run starts from an empty cache directory; the second run
(a new MODEL_DIR, the same configuration) reads what the first one compiled. A third run with
the cache off is the control. Wall seconds are printed per run; the machine is noisy, so the
median of `--repeats` rounds is reported.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def run(model: str, model_dir: str, cache: str) -> float:
    env = dict(os.environ, PTUNE_COMPILATION_CACHE=cache)
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "ptune.cli",
            "train",
            "--gin_file=runs/demo.gin",
            f"--gin_file={model}",
            f"--gin.MODEL_DIR='{model_dir}'",
            "--gin.TRAIN_STEPS=1",
            "--gin.EVAL_PERIOD=0",
            "--gin.BATCH_SIZE=8",
            "--gin.PROMPT_LENGTH=100",
        ],
        check=True,
        env=env,
        capture_output=True,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="models/t5_1_1_small.gin")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    rows = {"first (empty cache)": [], "second (cached)": [], "cache off": []}
    for _ in range(args.repeats):
        root = tempfile.mkdtemp(prefix="ptune-first-step-")
        cache = os.path.join(root, "cache")
        rows["first (empty cache)"].append(run(args.model, os.path.join(root, "a"), cache))
        rows["second (cached)"].append(run(args.model, os.path.join(root, "b"), cache))
        rows["cache off"].append(run(args.model, os.path.join(root, "c"), "off"))
        shutil.rmtree(root)
    for name, values in rows.items():
        print(f"{name:<22} median {statistics.median(values):6.1f} s  ({len(values)} runs)")


if __name__ == "__main__":
    main()
