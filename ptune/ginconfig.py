"""Gin at the edge: t5x-style `--gin_file`, `--gin.NAME=VALUE`, `--gin_bindings` flags.

Only the CLI parses gin. Library code takes typed keyword arguments; the gin files use
`from __gin__ import dynamic_registration` to configure them from the outside. Gin files are
looked up as given, then on `--gin_search_paths`, then in the installed `ptune/gin/` folder,
so `--gin_file=models/t5_1_1_base.gin` and `--gin_file=gin/models/t5_1_1_base.gin` both work
from the source tree and from an installed wheel.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import re
import tokenize
from typing import Sequence

import gin
import ptune
from ptune.errors import UserError, did_you_mean


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
                for path in (p for p in value.split(",") if p):
                    if not os.path.isdir(path):
                        raise UserError(f"--gin_search_paths: {path} is not a directory")
                    out.search_paths.append(path)
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


_BARE_WORD = re.compile(r"^[A-Za-z_/~]")
_LITERALS = ("True", "False", "None")


def _check_binding(binding: str, flag: str) -> str:
    name, eq, value = binding.partition("=")
    if not eq or not name.strip() or not value.strip():
        raise UserError(f"malformed gin binding {flag!r}: expected NAME=VALUE")
    value = value.strip()
    if re.match(r"^[A-Za-z_][\w.]*\(", value):  # float('nan'), np.inf(...): code, not a value
        raise UserError(
            f"{flag}: gin values are literals (numbers, 'strings', lists, dicts, True, None) "
            f"or @configurables(), not Python calls such as {value}"
        )
    if _BARE_WORD.match(value) and value not in _LITERALS and not value.startswith("gin."):
        raise UserError(
            f"{flag}: gin string values need quotes inside the shell's, e.g. "
            f"--gin.{name.strip()}=\"'{value}'\""
        )
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
    if os.path.isdir(name):
        raise UserError(f"gin file {name!r} is a directory; name a .gin file")
    looked = ", ".join(dict.fromkeys([os.getcwd()] + list(search_paths) + [GIN_DIR]))
    raise UserError(f"gin file {name!r} not found (looked in: {looked})")


class _NoSearchPathNoise(logging.Filter):
    """gin logs 'Path not found' at ERROR for every search path it tries for an `include`
    before the one that works: noise that reads like a failure."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Path not found")


logging.getLogger().addFilter(_NoSearchPathNoise())


def _package_reader_check(exists):
    """gin's second file reader looks an include up as a file inside a Python package: for
    `include 'runs/base.gin'` the package `runs`. A plain folder of that name on sys.path (a
    user's runs/ beside `python -m ptune`, as MODEL_DIR='runs/...' makes) is a namespace
    package with no file, and gin's check then raises TypeError instead of saying "not
    here", so the include never reaches ptune's gin folder. Wrapped: not here."""

    def check(path: str) -> bool:
        try:
            return exists(path)
        except TypeError:
            return False

    return check


gin.config._FILE_READERS[:] = [
    (reader, exists if reader is open else _package_reader_check(exists))
    for reader, exists in gin.config._FILE_READERS
]


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
            raise UserError(f"gin file {path}: {_with_closest(_one_line(e), e)}") from e
        except RecursionError as e:
            raise UserError(
                f"gin file {path}: its includes form a cycle (a file includes itself, "
                "directly or through the files it includes)"
            ) from e
    for binding in args.bindings:
        try:
            gin.parse_config(_MODEL_IMPORTS + binding if binding.startswith(_MODELS) else binding)
        except _GIN_ERRORS as e:
            # gin's "In bindings string line N ..." repeats the binding named first.
            cause = re.sub(r"\s*In bindings string line \d+.*$", "", _one_line(e))
            raise UserError(f"gin binding {binding!r}: {_with_closest(cause, e)}") from e
    return files


def _with_closest(cause: str, error: BaseException) -> str:
    """`cause`, with '; did you mean ...?' for gin's unknown parameter or configurable: the
    closest field of that configurable, or the closest registered configurable (as a gin file
    spells it, `trainer.TrainConfig`), when one is close."""
    wanted, names = _unknown_name(error)
    suggestion = did_you_mean(wanted, names, cutoff=0.75)
    return f"{cause.rstrip('.')}{suggestion}" if suggestion else cause


def _unknown_name(error: BaseException) -> tuple[str, list[str]]:
    """The name gin's `error` did not know and the names it could have meant, or ('', [])."""
    text = str(error)
    unknown_field = re.search(
        r"Configurable '([\w.]+)' doesn't have a parameter named '(\w+)'", text
    )
    if unknown_field:
        configurable = gin.config._REGISTRY.get_match(unknown_field.group(1))
        if configurable is None:
            return "", []
        wrapped = configurable.wrapped
        if dataclasses.is_dataclass(wrapped):
            names = [f.name for f in dataclasses.fields(wrapped)]
        else:
            names = list(inspect.signature(wrapped).parameters)
        wanted = unknown_field.group(2)
    else:
        unknown = re.search(r"No configurable matching '([\w.]+)'", text)
        if not unknown:
            return "", []
        selectors = [name for name, _ in gin.config._REGISTRY.items()]
        names = sorted({".".join(s.split(".")[-2:]) for s in selectors} | set(selectors))
        wanted = unknown.group(1)
    return wanted, names


# A flag binding of a model configuration (`--gin.llama.LlamaConfig.scan_layers=True`, as
# `ptune plan --fit` prints them) works without a model file that imports the module.
_MODELS = ("t5.", "llama.")
_MODEL_IMPORTS = (
    "from __gin__ import dynamic_registration\n"
    "from ptune.models import llama\n"
    "from ptune.models import t5\n"
)
# tokenize.TokenError: an unclosed bracket (`--gin_bindings="X = (("`) ends the input early.
_GIN_ERRORS = (
    ValueError,
    SyntaxError,
    ImportError,
    AttributeError,
    TypeError,
    KeyError,
    IOError,
    tokenize.TokenError,
)


def _one_line(error: BaseException) -> str:
    """Gin appends context such as "In call to configurable 'X' (...)"; keep the cause."""
    if isinstance(error, tokenize.TokenError):  # ('EOF in multi-line statement', (2, 0))
        return f"{error.args[0]} (an unclosed bracket or quote?)"
    text = " ".join(str(error).split())
    text = re.sub(r"\s*In call to configurable .*$", "", text)
    return text or type(error).__name__


def call(fn, **kwargs):
    """Calls `fn` with its gin bindings (dynamic registration); gin errors become one line.
    A function no gin file mentions is called with its defaults. A configuration dataclass is
    checked whole against its declarations (`ptune.config_check`): what gin binds before it is
    built, naming the macro or gin path the user wrote, then every field of the result."""
    from ptune import config_check

    try:
        configured = gin.get_configurable(fn)
    except ValueError:
        configured = fn
    names = check_bindings(fn) if dataclasses.is_dataclass(fn) else {}
    try:
        result = configured(**kwargs)
    except (ValueError, TypeError) as e:
        if isinstance(e, UserError):  # a nested configurable's: gin appended its context
            raise UserError(_one_line(e)) from e
        name = getattr(fn, "__name__", str(fn))
        message = _one_line(e)
        raise UserError(message if message.startswith(name) else f"{name}: {message}") from e
    if dataclasses.is_dataclass(result):
        config_check.check(result, names)
    return result


def check_bindings(fn, selector: str = "", path: tuple = ()) -> dict[tuple, str]:
    """Checks each value the gin files and flags bind to `fn`'s fields (or parameters), and
    those of the configurables its bindings call (`@prompts.PromptConfig()`,
    `@optimizers.prompt_tuning_adafactor()`), against their declarations, before anything is
    built. Returns field path -> the name the user wrote: the macro holding the value
    (`TRAIN_STEPS`, through `train_steps = %TRAIN_STEPS`), else the gin path
    (`trainer.TrainConfig.eval_period`)."""
    from ptune import config_check

    declared = config_check.declarations(fn)
    owner = short_selector(selector) if selector else config_check.gin_name(fn)
    try:
        bound = gin.get_bindings(selector or fn, resolve_references=False)
    except (ValueError, KeyError):
        bound = {}
    names = {}
    for param, raw in bound.items():
        name, value = _through_macros(raw, f"{owner}.{param}")
        names[path + (param,)] = name
        if isinstance(value, gin.config.ConfigurableReference):
            if value.evaluate and not _is_constant(value):
                called = value.configurable.wrapped
                names.update(check_bindings(called, value.scoped_selector, path + (param,)))
            continue
        if param in declared and not _holds_reference(value) and value is not gin.REQUIRED:
            config_check.check_value(value, declared[param], name, names, path + (param,))
    return names


def _through_macros(raw, name: str):
    """(name, value) of a bound value: `%A`, `A = %B`, `B = 3` -> ("B", 3)."""
    seen = set()
    while (
        isinstance(raw, gin.config.ConfigurableReference)
        and raw.evaluate
        and raw.configurable.wrapped is gin.config.macro
        and raw.scoped_selector not in seen
    ):
        seen.add(raw.scoped_selector)
        name = "/".join(raw.scopes)
        try:
            raw = gin.query_parameter(f"{name}/macro.value")
        except (ValueError, KeyError):
            break
    return name, raw


def _is_constant(ref) -> bool:
    """`%gin.REQUIRED` and other gin constants: nothing bound to check."""
    return getattr(ref.configurable.wrapped, "__name__", "") == "_retrieve_constant"


def _holds_reference(value) -> bool:
    """Whether a literal holds `@f()` or `%M` inside (built only when gin calls)."""
    if isinstance(value, gin.config.ConfigurableReference):
        return True
    if isinstance(value, dict):
        return any(_holds_reference(v) for v in (*value.keys(), *value.values()))
    if isinstance(value, (list, tuple)):
        return any(_holds_reference(v) for v in value)
    return False


def short_selector(selector: str) -> str:
    """`scope/ptune.prompts.PromptConfig` or `prompts.PromptConfig` -> `prompts.PromptConfig`,
    as a gin file names it (`from ptune import prompts`)."""
    *scopes, name = selector.split("/")
    return "/".join([*scopes, ".".join(name.split(".")[-2:])])


def model_fields() -> dict:
    """The `t5.T5Config` or `llama.LlamaConfig` fields the parsed gin files and flags bind (a
    model file binds them all); {} when none: then the model comes from the checkpoint (see
    `ptune.recipe`). Both at once is one error."""
    from ptune.models import llama, t5

    bound = {}
    for kind in (t5.T5Config, llama.LlamaConfig):
        try:
            fields = dict(gin.get_bindings(kind))
        except (ValueError, KeyError):
            fields = {}
        if fields:
            bound[kind.__name__] = fields
    if len(bound) > 1:
        raise UserError("the gin files bind both T5Config and LlamaConfig: use one model file")
    return next(iter(bound.values()), {})


_MACRO_USE = re.compile(r"%([A-Za-z_][A-Za-z0-9_]*)(?![A-Za-z0-9_.])")  # not %gin.REQUIRED
_MACRO_DEF = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*=", re.MULTILINE)
_INCLUDE = re.compile(r"^include\s+['\"]([^'\"]+)['\"]", re.MULTILINE)


def file_macros(files: Sequence[str], search_paths: Sequence[str] = ()) -> set[str]:
    """Macro names the gin files (and the files they include) define or reference."""
    names: set[str] = set()
    seen: set[str] = set()
    pending = list(files)
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        with open(path) as f:
            text = "\n".join(line.split("#")[0] for line in f)
        names.update(_MACRO_USE.findall(text))
        names.update(n for n in _MACRO_DEF.findall(text) if n.isupper())
        for included in _INCLUDE.findall(text):
            pending.append(resolve_gin_file(included, list(search_paths) + [os.path.dirname(path)]))
    return names


def check_macros(args: GinArgs, files: Sequence[str]) -> None:
    """`--gin.NAME=VALUE` must name a macro the gin files use: a misspelled one would
    otherwise be accepted and ignored (BATCH_SIZ=8 trains at the file's batch size)."""
    known = file_macros(files, args.search_paths)
    for binding in args.bindings:
        name = binding.split("=", 1)[0].strip()
        if "." in name or "/" in name or not name.isupper():
            continue
        if name not in known:
            raise UserError(
                f"--gin.{name}: no gin file given uses the macro {name}"
                + did_you_mean(name, sorted(known), n=3, quote=False)
                + (f" (macros: {', '.join(sorted(known))})" if known else " (no gin file given)")
            )


def macro(name: str, default=None):
    """The value a parsed macro holds, or `default` when no file defines it."""
    try:
        return gin.query_parameter(f"{name}/macro.value")
    except (ValueError, KeyError):
        return default
