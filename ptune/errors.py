"""The one exception type for bad input from users (files, flags, configurations).

The CLI prints a `UserError` as a single line naming the cause and exits non-zero, never a
traceback alone. Library code raises it (or a ValueError subclass of it) where the message is
meant for the person who typed the command.
"""

import argparse
import difflib
from typing import Iterable


class UserError(ValueError):
    """Bad input: the message names the file, parameter, line or task at fault."""


def did_you_mean(name: str, known: Iterable[str], *, n: int = 1, cutoff: float = 0.6, quote=True):
    """'; did you mean X?' (or 'X or Y', up to `n`) naming the `known` names closest to the
    misspelt `name`, for the end of a UserError's message; '' when none is close."""
    close = difflib.get_close_matches(name, list(known), n=n, cutoff=cutoff)
    if not close:
        return ""
    return "; did you mean " + " or ".join(repr(c) if quote else c for c in close) + "?"


class ArgumentParser(argparse.ArgumentParser):
    """argparse for every command's flags: a bad flag is one `UserError` line, e.g.
    "argument --top_k: invalid int value: 'abc' (`ptune explain --help` lists the flags)",
    not argparse's usage block and its own exit; `--help` still prints the help."""

    def error(self, message: str):
        raise UserError(f"{message} (`{self.prog} --help` lists the flags)")
