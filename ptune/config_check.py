"""Every field of a run configuration checked against its declaration, before any work.

A configuration dataclass declares what each field takes. Its annotation is the type: `int`
(a bool is not an int, nor is 16.0), `float` (an int is a number too), `bool`, `str`,
`Optional[...]`, `Union[...]`, `Mapping[K, V]`, `Sequence[T]` (a string is not a sequence
here), a nested configuration dataclass (checked field by field); `Any` is not checked. The
range sits beside the field, in its metadata (a configurable function's parameter carries it
on its annotation: `learning_rate: Annotated[float, {"min": 0}]`):

    batch_size: int = dataclasses.field(default=32, metadata={"min": 1})
    eval_period: int = dataclasses.field(
        default=1000, metadata={"min": 0, "zero": "no evaluation"}
    )

    min, max: bounds (inclusive) of a number, of each value of a mapping, of each item of a
      sequence; `below`: an exclusive upper bound.
    zero: what 0 means where `min` is 0 because 0 turns something off: "a positive int or 0
      (no evaluation)".
    keys: the exact keys a mapping takes (`("inputs", "targets")`).
    choices: the values the field takes.

`check(config, names)` walks a built configuration, nested ones included; `check_value`
checks one value against a declaration (`ptune.ginconfig` uses it on what the gin files and
flags bind, before anything is built, so the name reported is the one the user wrote: the
macro, or the gin path). Every problem is one `UserError` line naming the setting, what it
takes and what it got: `TRAIN_STEPS must be a positive int, got '20' (a string)`.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import inspect
import sys
import types
import typing
from typing import Any, Mapping, Optional

from ptune.errors import UserError

RANGE_KEYS = ("min", "max", "below", "zero", "keys", "choices")


@dataclasses.dataclass(frozen=True)
class Declared:
    """What one field (or function parameter) takes: its type and its range."""

    annotation: Any
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@functools.lru_cache(maxsize=None)
def declarations(fn: Any) -> dict[str, Declared]:
    """name -> `Declared` for each field of a configuration dataclass, or each annotated
    parameter of a configurable function (no ranges there); {} when they cannot be read."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # an annotation that does not evaluate here: nothing to check against
        return {}
    if dataclasses.is_dataclass(fn) and isinstance(fn, type):
        for f in dataclasses.fields(fn):
            unknown = set(f.metadata) - set(RANGE_KEYS)
            if unknown:  # a misspelt range would silently check nothing
                raise TypeError(f"{fn.__name__}.{f.name}: unknown range keys {sorted(unknown)}")
        return {
            f.name: Declared(hints.get(f.name, Any), dict(f.metadata))
            for f in dataclasses.fields(fn)
            if f.init
        }
    try:
        parameters = inspect.signature(fn).parameters
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:
        return {}
    return {name: _parameter(fn, name, hints[name]) for name in parameters if name in hints}


def _parameter(fn: Any, name: str, hint: Any) -> Declared:
    """A function parameter's declaration: its range, if any, rides on the annotation as
    `Annotated[float, {"min": 0}]` (a function has no field metadata)."""
    if typing.get_origin(hint) is not typing.Annotated:
        return Declared(hint)
    ranges = [m for m in hint.__metadata__ if isinstance(m, Mapping)]
    metadata = dict(ranges[0]) if ranges else {}
    unknown = set(metadata) - set(RANGE_KEYS)
    if unknown:  # a misspelt range would silently check nothing
        raise TypeError(f"{fn.__name__}.{name}: unknown range keys {sorted(unknown)}")
    return Declared(hint.__origin__, metadata)


def gin_name(cls: type) -> str:
    """How a gin file names `cls`: its shortest importing package and the name
    (`ptune.prompts.config.PromptConfig` -> `prompts.PromptConfig`)."""
    module = cls.__module__
    parts = module.split(".")
    for end in range(2, len(parts) + 1):
        candidate = sys.modules.get(".".join(parts[:end]))
        if getattr(candidate, cls.__name__, None) is cls:
            module = ".".join(parts[:end])
            break
    return f"{module.rsplit('.', 1)[-1]}.{cls.__name__}"


def check(
    config: Any,
    names: Optional[Mapping[tuple, str]] = None,
    path: tuple = (),
) -> None:
    """Checks every field of the dataclass `config` (and of the configurations nested in it)
    against its declaration. `names` maps a field's path (`("prompt", "length")`) to the name
    the user wrote for it; other fields are named by their gin path (`trainer.TrainConfig.seed`)."""
    names = names or {}
    owner = gin_name(type(config))
    for field, declared in declarations(type(config)).items():
        where = path + (field,)
        name = names.get(where, f"{owner}.{field}")
        check_value(getattr(config, field), declared, name, names, where)


def check_value(
    value: Any,
    declared: Declared,
    name: str,
    names: Optional[Mapping[tuple, str]] = None,
    path: tuple = (),
) -> None:
    """One value against its declaration; raises one `UserError` line naming `name`."""
    problem = _problem(value, declared.annotation, declared.metadata, name)
    if problem:
        raise UserError(problem)
    for nested in _configs_in(value, declared.annotation):
        check(nested, names, path)


def expectation(annotation: Any, metadata: Mapping[str, Any] = {}) -> str:
    """What a declaration takes, in words: "a positive int", "a dict of str to int or None"."""
    arms = _arms(annotation)
    if len(arms) > 1:
        words = [expectation(a, metadata) for a in arms if a is not type(None)]
        if type(None) in arms:
            words.append("None")
        return " or ".join(dict.fromkeys(words))
    origin = typing.get_origin(annotation) or annotation
    if "choices" in metadata and origin not in (collections.abc.Mapping, collections.abc.Sequence):
        return "one of " + ", ".join(repr(c) for c in metadata["choices"])
    if origin is bool:
        return "True or False"
    if origin in (int, float):
        return _number_words("int" if origin is int else "number", metadata)
    if origin is str:
        return "a string"
    args = typing.get_args(annotation)
    if origin is collections.abc.Mapping or origin is dict:
        key, item = args or (Any, Any)
        if "keys" in metadata:
            item_words = _bare(expectation(item, _item_range(metadata)))
            return "a dict {" + ", ".join(f"{k!r}: {item_words}" for k in metadata["keys"]) + "}"
        item_words = _bare(expectation(item, _item_range(metadata)))
        return f"a dict of {_bare(expectation(key))} to {item_words}"
    if origin in (collections.abc.Sequence, list, tuple):
        item = args[0] if args else Any
        if item is Any:
            return "a list"
        return f"a list of {_plural(_bare(expectation(item, _item_range(metadata))))}"
    if dataclasses.is_dataclass(origin):
        return f"a {origin.__name__} (@{gin_name(origin)}())"
    if origin is collections.abc.Callable:
        return "a function"
    return f"a {getattr(origin, '__name__', str(origin))}"


def _number_words(kind: str, metadata: Mapping[str, Any]) -> str:
    low, high, below = metadata.get("min"), metadata.get("max"), metadata.get("below")
    if "zero" in metadata:
        return f"a positive {kind} or 0 ({metadata['zero']})"
    if high is None and below is None:
        if low == 1 and kind == "int":
            return "a positive int"
        if low == 0:
            return f"a non-negative {kind}"
        if low is not None:
            return f"a {kind} >= {low}"
        return "an int" if kind == "int" else "a number"
    low_words = f"[{low}" if low is not None else "(-inf"
    high_words = f"{high}]" if high is not None else f"{below})"
    article = "an" if kind == "int" else "a"
    return f"{article} {kind} in {low_words}, {high_words}"


def describe(value: Any) -> str:
    """The kind of a value, as the messages say it: "a string", "a float", "None"."""
    if value is None:
        return "None"
    if isinstance(value, bool):
        return "a bool"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int):
        return "an int"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, collections.abc.Mapping):
        return "a dict"
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__}"
    return f"a {type(value).__name__}"


def _problem(value: Any, annotation: Any, metadata: Mapping[str, Any], name: str) -> Optional[str]:
    """The message for `value` against `annotation`, or None when it fits."""
    if annotation is Any or isinstance(annotation, typing.TypeVar):
        return None
    wrong = f"{name} must be {expectation(annotation, metadata)}, got {value!r} ({describe(value)})"
    arms = _arms(annotation)
    if len(arms) > 1:
        if value is None:
            return None if type(None) in arms else wrong
        shaped = [a for a in arms if _shape_fits(value, a)]
        problems = [_problem(value, a, metadata, name) for a in shaped]
        if any(p is None for p in problems):
            return None
        # an item's own problem (`X['targets'] must be ...`) says more than the union's
        nested = len(problems) == 1 and not problems[0].startswith(f"{name} must be ")
        return problems[0] if nested else wrong
    if annotation is type(None):
        return None if value is None else wrong
    if not _shape_fits(value, annotation):
        return wrong
    origin = typing.get_origin(annotation) or annotation
    args = typing.get_args(annotation)
    if origin in (int, float):
        return None if _in_range(value, metadata) else wrong
    if origin in (bool, str) or not args:
        if "choices" in metadata and value not in metadata["choices"]:
            return wrong
        return None
    if origin in (collections.abc.Mapping, dict):
        keys = metadata.get("keys")
        if keys is not None and set(value) != set(keys):
            unknown = [k for k in value if k not in keys]
            missing = [k for k in keys if k not in value]
            detail = (
                f"unknown key {', '.join(map(repr, unknown))}"
                if unknown
                else f"missing {', '.join(map(repr, missing))}"
            )
            return f"{wrong[:-1]}: {detail})"
        key_type, item_type = args
        for key, item in value.items():
            problem = _problem(key, key_type, {}, f"a key of {name}") or _problem(
                item, item_type, _item_range(metadata), f"{name}[{key!r}]"
            )
            if problem:
                return problem
        return None
    if origin in (collections.abc.Sequence, list, tuple):
        items = args[:-1] if len(args) == 2 and args[-1] is Ellipsis else args
        if origin is tuple and len(items) > 1:
            if len(value) != len(items):
                return wrong
            pairs = zip(value, items)
        else:
            pairs = ((v, items[0]) for v in value)
        for index, (item, item_type) in enumerate(pairs):
            problem = _problem(item, item_type, _item_range(metadata), f"{name}[{index}]")
            if problem:
                return problem
        return None
    return None


def _shape_fits(value: Any, annotation: Any) -> bool:
    """Whether `value` is of the kind `annotation` names, its items not yet looked at."""
    if annotation is Any:
        return True
    if annotation is type(None):
        return value is None
    origin = typing.get_origin(annotation) or annotation
    if origin is bool:
        return isinstance(value, bool) or type(value).__name__ == "bool_"
    if origin is int:
        return _is_int(value)
    if origin is float:
        return _is_int(value) or _is_float(value)
    if origin is str:
        return isinstance(value, str)
    if origin in (collections.abc.Mapping, dict):
        return isinstance(value, collections.abc.Mapping)
    if origin in (collections.abc.Sequence, list, tuple):
        return isinstance(value, collections.abc.Sequence) and not isinstance(value, (str, bytes))
    if origin is collections.abc.Callable:
        return callable(value)
    if isinstance(origin, type):
        try:
            return isinstance(value, origin)
        except TypeError:  # a protocol or generic that isinstance cannot test
            return True
    return True


def _is_int(value: Any) -> bool:
    import numbers

    return (
        isinstance(value, numbers.Integral)
        and not isinstance(value, bool)
        and (type(value).__name__ != "bool_")
    )


def _is_float(value: Any) -> bool:
    import numbers

    return isinstance(value, numbers.Real) and not isinstance(value, bool) and not _is_int(value)


def _in_range(value: Any, metadata: Mapping[str, Any]) -> bool:
    if "choices" in metadata and value not in metadata["choices"]:
        return False
    if value != value:  # NaN is in no range
        return not any(k in metadata for k in ("min", "max", "below"))
    if "min" in metadata and value < metadata["min"]:
        return False
    if "max" in metadata and value > metadata["max"]:
        return False
    return not ("below" in metadata and value >= metadata["below"])


def _item_range(metadata: Mapping[str, Any]) -> dict:
    """The part of a container's range that each of its items obeys."""
    return {k: v for k, v in metadata.items() if k in ("min", "max", "below", "zero", "choices")}


def _arms(annotation: Any) -> tuple:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(annotation)
    return (annotation,)


def _configs_in(value: Any, annotation: Any) -> list:
    """The configuration dataclasses a checked value holds, to be checked field by field."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        declared = [a for a in _arms(annotation) if dataclasses.is_dataclass(a)]
        return [value] if declared else []
    return []


def _bare(words: str) -> str:
    """ "a positive int" -> "positive int" (inside "a list of ...")."""
    for article in ("a ", "an "):
        if words.startswith(article):
            return words[len(article) :]
    return words


def _plural(words: str) -> str:
    """ "positive int, or 0 for all" -> "positive ints, or 0 for all"."""
    end = min(i for i in (words.find(","), words.find(" or "), len(words)) if i >= 0)
    return words[:end] + "s" + words[end:]
