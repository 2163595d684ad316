"""`ptune` command line: wires gin, the library and the file system together; nothing more.

    ptune info  --gin_file=models/t5_1_1_xxl.gin      # configuration, parameter tree, count
    ptune info  --checkpoint=PATH                     # detected format, inferred config, count
    ptune convert --from PATH --to DIR                # any checkpoint -> ptune's Orbax format
    ptune tasks                                       # registered seqio tasks and mixtures

Gin flags follow t5x: `--gin_file` (repeatable), `--gin.NAME=VALUE`, `--gin_bindings`,
`--gin_search_paths`. Bad input prints one line `ptune: error: ...` and exits with status 2;
set PTUNE_DEBUG=1 to see the traceback as well.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import traceback
from typing import Callable, Sequence

from ptune.errors import UserError

COMMANDS: dict[str, tuple[str, Callable]] = {}


def command(name: str, help_text: str):
    def register(fn):
        COMMANDS[name] = (help_text, fn)
        return fn

    return register


def _model_config_from_gin(gin_args):
    from ptune import ginconfig
    from ptune.models import t5

    ginconfig.parse(gin_args)
    return ginconfig.call(t5.T5Config)


def format_parameter_tree(boxed_params) -> list[str]:
    """One line per parameter: path, shape, logical axes (from abstract, boxed params)."""
    import jax
    from flax import linen as nn

    lines = []
    flat = jax.tree_util.tree_flatten_with_path(
        boxed_params, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))[0]
    for path, leaf in flat:
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        names = getattr(leaf, "names", None)
        value = nn.unbox(leaf)
        axes = "(" + ", ".join(str(n) for n in names) + ")" if names is not None else "-"
        lines.append(f"{name:<70} {str(tuple(value.shape)):<18} {axes}")
    return lines


@command("info", "print a model's configuration, parameter tree and parameter count")
def cmd_info(argv: Sequence[str], gin_args) -> int:
    import numpy as np

    parser = argparse.ArgumentParser(prog="ptune info")
    parser.add_argument("--no_tree", action="store_true", help="omit the parameter tree")
    parser.add_argument("--checkpoint", metavar="PATH",
                        help="describe a checkpoint (t5x, t5x Orbax, HF, ptune): detected "
                             "format, inferred config (assumed fields marked), count; with "
                             "--gin_file, check it strictly against that model instead")
    args = parser.parse_args(argv)
    if not gin_args.files and not args.checkpoint:
        raise UserError("ptune info needs --gin_file=models/<model>.gin or --checkpoint=PATH")
    from flax import linen as nn
    import jax

    from ptune.models import t5

    config = _model_config_from_gin(gin_args) if gin_args.files else None
    assumed = {}
    if args.checkpoint:
        from ptune import checkpoints

        described = checkpoints.describe(args.checkpoint, config)
        config, assumed = described.config, described.assumed
        print(f"checkpoint: {described.path}")
        print(f"format: {described.format}")
        if described.step is not None:
            print(f"step: {described.step}")
    print("config:")
    for field in dataclasses.fields(config):
        note = f"  # assumed: {assumed[field.name]}" if field.name in assumed else ""
        print(f"  {field.name} = {getattr(config, field.name)!r}{note}")
    boxed = t5.abstract_variables(config)["params"]
    if not args.no_tree:
        print("parameters:")
        for line in format_parameter_tree(boxed):
            print("  " + line)
    total = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(nn.unbox(boxed)))
    print(f"total_params: {total}")
    return 0


@command("convert", "convert a t5x / HF checkpoint into ptune's Orbax format (fast restores)")
def cmd_convert(argv: Sequence[str], gin_args) -> int:
    parser = argparse.ArgumentParser(prog="ptune convert")
    parser.add_argument("--from", dest="src", required=True, metavar="PATH",
                        help="checkpoint to convert (any format `ptune info` detects)")
    parser.add_argument("--to", dest="dst", required=True, metavar="DIR",
                        help="output directory (written atomically; must not exist)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing DIR")
    args = parser.parse_args(argv)
    from ptune import checkpoints

    config = _model_config_from_gin(gin_args) if gin_args.files else None
    written = checkpoints.convert(args.src, args.dst, config, overwrite=args.overwrite)
    print(f"wrote {written}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `ptune info | head` ends quietly
    usage = "usage: ptune {" + ",".join(COMMANDS) + "} [flags]\n" + "\n".join(
        f"  {name:<10} {text}" for name, (text, _) in COMMANDS.items())
    if not argv or argv[0] in ("-h", "--help"):
        print(usage)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"ptune: error: unknown command {name!r}\n{usage}", file=sys.stderr)
        return 2
    try:
        from ptune import ginconfig

        gin_args = ginconfig.split_gin_args(rest)
        return COMMANDS[name][1](gin_args.rest, gin_args) or 0
    except (UserError, FileNotFoundError) as e:
        if os.environ.get("PTUNE_DEBUG"):
            traceback.print_exc()
        message = " ".join(str(e).split())
        print(f"ptune: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ptune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
