"""Gin at the edge: t5x-style `--gin_file`, `--gin.NAME=VALUE`, `--gin_bindings` flags.

Only the CLI parses gin. Library code takes typed keyword arguments; the gin files use
`from __gin__ import dynamic_registration` to configure them from the outside. Gin files are
looked up as given, then on `--gin_search_paths`, then in the installed `ptune/gin/` folder,
so `--gin_file=models/t5_1_1_base.gin` and `--gin_file=gin/models/t5_1_1_base.gin` both work
from the source tree and from an installed wheel.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Sequence

import gin
import ptune
from ptune.errors import UserError


def _find_gin_dir() -> str:
    """`ptune/gin` in an installed wheel; the repository's `gin/` in a source checkout."""
    package = os.path.dirname(os.path.abspath(ptune.__file__))
    for candidate in (os.path.join(package, "gin"), os.path.join(os.path.dirname(package), "gin")):
        if os.path.isdir(os.path.join(candidate, "models")):
            return candidate
    raise UserError(f"ptune's gin folder is missing beside {package}: reinstall ptune")


GIN_DIR = _find_gin_dir()


@dataclasses.dataclass
class GinArgs:
    """The gin part of a command line; `rest` holds the other arguments, in order."""

    files: list[str] = dataclasses.field(default_factory=list)
    bindings: list[str] = dataclasses.field(default_factory=list)
    search_paths: list[str] = dataclasses.field(default_factory=list)
    rest: list[str] = dataclasses.field(default_factory=list)


def split_gin_args(argv: Sequence[str]) -> GinArgs:
    """Pulls t5x's gin flags out of `argv`; `--flag=value` and `--flag value` both work."""
    out = GinArgs()
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, value = arg.partition("=")
        if name in ("--gin_file", "--gin_bindings", "--gin_search_paths"):
            if not eq:
                if i + 1 >= len(args):
                    raise UserError(f"{name} needs a value")
                i += 1
                value = args[i]
            if name == "--gin_file":
                out.files.append(value)
            elif name == "--gin_bindings":
                out.bindings.append(_check_binding(value, arg))
            else:
                out.search_paths.extend(p for p in value.split(",") if p)
        elif arg.startswith("--gin."):
            macro = name[len("--gin.") :]
            if not eq or not macro or not macro.replace(".", "_").replace("/", "_").isidentifier():
                raise UserError(
                    f"malformed gin flag {arg!r}: expected --gin.NAME=VALUE, for "
                    "example --gin.MODEL_DIR=\"'runs/boolq'\""
                )
            out.bindings.append(_check_binding(f"{macro}={value}", arg))
        else:
            out.rest.append(arg)
        i += 1
    return out


def _check_binding(binding: str, flag: str) -> str:
    name, eq, value = binding.partition("=")
    if not eq or not name.strip() or not value.strip():
        raise UserError(f"malformed gin binding {flag!r}: expected NAME=VALUE")
    return binding


def resolve_gin_file(name: str, search_paths: Sequence[str] = ()) -> str:
    """Path of a gin file: as given, on the search paths, or in the installed gin folder."""
    candidates = [name]
    stripped = name[len("gin/") :] if name.startswith("gin/") else name
    for base in list(search_paths) + [GIN_DIR]:
        candidates += [os.path.join(base, name), os.path.join(base, stripped)]
    for path in candidates:
        if os.path.isfile(path):
            return os.path.abspath(path)
    looked = ", ".join(dict.fromkeys([os.getcwd()] + list(search_paths) + [GIN_DIR]))
    raise UserError(f"gin file {name!r} not found (looked in: {looked})")


def parse(args: GinArgs) -> list[str]:
    """Clears gin, then parses files (in order) and bindings. Returns the resolved files."""
    gin.clear_config(clear_constants=True)
    for path in list(args.search_paths) + [GIN_DIR]:
        gin.add_config_file_search_path(path)
    files = [resolve_gin_file(f, args.search_paths) for f in args.files]
    for path in files:
        try:
            gin.parse_config_file(path)
        except _GIN_ERRORS as e:
            raise UserError(f"gin file {path}: {_one_line(e)}") from e
    for binding in args.bindings:
        try:
            gin.parse_config(binding)
        except _GIN_ERRORS as e:
            raise UserError(f"gin binding {binding!r}: {_one_line(e)}") from e
    return files


_GIN_ERRORS = (ValueError, SyntaxError, ImportError, AttributeError, TypeError, KeyError, IOError)


def _one_line(error: BaseException) -> str:
    """Gin appends context such as "In call to configurable 'X' (...)"; keep the cause."""
    text = " ".join(str(error).split())
    text = re.sub(r"\s*In call to configurable .*$", "", text)
    return text or type(error).__name__


def call(fn, **kwargs):
    """Calls `fn` with its gin bindings (dynamic registration); gin errors become one line.
    A function no gin file mentions is called with its defaults."""
    try:
        configured = gin.get_configurable(fn)
    except ValueError:
        configured = fn
    try:
        return configured(**kwargs)
    except (ValueError, TypeError) as e:
        if isinstance(e, UserError):
            raise
        name = getattr(fn, "__name__", str(fn))
        message = _one_line(e)
        raise UserError(message if message.startswith(name) else f"{name}: {message}") from e


def write_operative_config(path: str) -> None:
    """Writes the configuration actually used (t5x's `config.gin`) atomically."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(gin.config_str())
    os.replace(tmp, path)
