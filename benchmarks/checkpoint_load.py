"""Load time and peak host memory of loading a random t5x checkpoint, through
`ptune.checkpoints.load` or through what `ptune train` runs (`--through=recipe`: the assembled
run's `load_frozen`, prompt slot left out, weights into their shardings).

    python benchmarks/checkpoint_load.py --gin_size=base --dir=/tmp/t5x_base   # write + measure
    python benchmarks/checkpoint_load.py --gin_size=base --dir=/tmp/t5x_base --through=recipe

Writes a random T5 1.1 checkpoint in the legacy t5x layout (gzip zarr + msgpack, as t5x
writes it) once, in its own subprocess (Linux carries a parent's peak RSS into forked
children, so the writer must not be the loader's parent), then loads it in a fresh
subprocess and reports wall time and the subprocess's peak RSS
(`resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`), next to the size of the parameters in
the target dtype: a loader that held two copies would peak near twice that plus the
interpreter's baseline.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time

SIZES = {  # T5 1.1 (gated GELU, untied), vocab 32128
    "small": dict(emb_dim=512, num_heads=6, head_dim=64, mlp_dim=1024, layers=8),
    "base": dict(emb_dim=768, num_heads=12, head_dim=64, mlp_dim=2048, layers=12),
    "large": dict(emb_dim=1024, num_heads=16, head_dim=64, mlp_dim=2816, layers=24),
}


def config_for(size: str):
    from ptune.models import t5

    s = SIZES[size]
    return t5.T5Config(
        vocab_size=32128,
        emb_dim=s["emb_dim"],
        num_heads=s["num_heads"],
        head_dim=s["head_dim"],
        mlp_dim=s["mlp_dim"],
        num_encoder_layers=s["layers"],
        num_decoder_layers=s["layers"],
        mlp_activations=("gelu", "linear"),
        logits_via_embedding=False,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
    )


def write(size: str, directory: str) -> None:
    """Random parameters (this writer process holds them all; only the loader is measured)."""
    import numpy as np
    from flax import linen as nn
    from flax import traverse_util

    from ptune.checkpoints import t5x_write
    from ptune.models import t5

    shapes = traverse_util.flatten_dict(nn.unbox(t5.abstract_variables(config_for(size))["params"]))
    rng = np.random.default_rng(0)

    params = {k: rng.standard_normal(v.shape, np.float32) * 0.05 for k, v in shapes.items()}
    t5x_write.write_checkpoint(traverse_util.unflatten_dict(params), directory, step=1100000)


def measure(directory: str, dtype: str, size: str, through: str) -> None:
    if through == "recipe":
        load = (
            "from ptune import prompts, recipe, trainable\n"
            f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r})\n"
            "from checkpoint_load import config_for\n"
            f"run = recipe.assemble(config_for({size!r}), "
            "prompt_factory=prompts.prompt_factory(100), trainable=trainable.PROMPT_ONLY, "
            f"frozen_dtype={dtype!r})\n"
            f"params = run.load_frozen({directory!r})\n"
        )
    else:
        load = (
            "from ptune import checkpoints\n"
            f"config, params = checkpoints.load({directory!r}, dtype=jnp.{dtype})\n"
        )
    code = (
        "import time, resource, jax, jax.numpy as jnp\n"
        "import numpy as np\n"
        "from ptune import checkpoints, recipe\n"
        "jax.block_until_ready(jnp.zeros(1) + 1)  # the runtime itself is not the load\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "t = time.perf_counter()\n" + load + "jax.block_until_ready(params)\n"
        "dt = time.perf_counter() - t\n"
        "n = sum(x.size for x in jax.tree_util.tree_leaves(params))\n"
        "b = sum(x.nbytes for x in jax.tree_util.tree_leaves(params))\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(f'params={n:,} bytes={b/2**20:.0f}MiB load={dt:.2f}s '\n"
        "      f'rss_before_load={base/1024:.0f}MiB peak_rss={peak/1024:.0f}MiB')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(f"subprocess peak RSS (getrusage children): {child / 1024:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gin_size", choices=sorted(SIZES), default="base")
    parser.add_argument("--dir", required=True)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--through", default="checkpoints", choices=("checkpoints", "recipe"))
    parser.add_argument("--write_only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_only:
        write(args.gin_size, args.dir)
        return
    if not os.path.exists(os.path.join(args.dir, "checkpoint")):
        t = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--write_only",
                f"--gin_size={args.gin_size}",
                f"--dir={args.dir}",
            ],
            check=True,
        )
        print(f"wrote {args.dir} in {time.perf_counter() - t:.1f}s")
    measure(args.dir, args.dtype, args.gin_size, args.through)


if __name__ == "__main__":
    main()
