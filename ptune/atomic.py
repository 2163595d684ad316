"""Atomic file writes: a reader (or a resumed run) sees the old file or the new one, never half.

Every file ptune writes for users (run metadata, prompts, predictions, evaluation JSON,
exports) goes through here: the content is written to a temporary sibling in the same
directory (so the final rename never crosses a file system) and renamed into place; on any
failure the temporary file is removed and the destination is untouched.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any, Callable


def check_writable_dir(path: str, what: str) -> None:
    """`path` must be a directory this process can create or write: checked before any work,
    so a bad path costs nothing and is one line naming `what` it is."""
    from ptune.errors import UserError

    if not str(path).strip():
        raise UserError(f"{what} is empty; name a directory")
    path = os.path.abspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{what} {path} exists and is not a directory")
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UserError(f"{what} {path}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{what} {path}: {existing} is not writable")
    if existing != path:  # what `access` cannot tell (/proc, a read-only mount): try it
        try:
            os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".ptune-probe-"))
        except OSError as e:
            raise UserError(f"{what} {path}: cannot create it in {existing} ({e.strerror})")


def check_output_file(path: str, what: str, kind: str, inputs: dict = None) -> None:
    """`path` must be a file this process can write, neither a directory nor one of `inputs`
    ({name: path or [paths]} the same command reads: files, or directories such as a
    checkpoint, which the output must not be inside): checked before any work, one line
    naming `what`."""
    from ptune.errors import UserError

    if os.path.isdir(path):
        raise UserError(f"{what} {path} is a directory; name the {kind} file to write")
    target = os.path.realpath(path)
    for name, sources in (inputs or {}).items():
        listed = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources or ())
        for source in listed:
            if not source or "://" in os.fspath(source):
                continue
            source = os.path.realpath(source)
            if target == source or os.path.commonpath([target, source]) == source:
                where = "is" if target == source else "is inside"
                which = name if len(listed) == 1 else f"{name} {source}"
                raise UserError(
                    f"{what} {path} {where} {which}: writing the results would replace what "
                    "it reads; name another output file"
                )
    check_writable_dir(os.path.dirname(os.path.abspath(path)), f"{what}'s directory")


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def write(path: str, writer: Callable[[str], None]) -> str:
    """Calls `writer(tmp_path)` to write the content, then renames it to `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.tmp-")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would make the result private
    try:
        writer(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def write_text(path: str, text: str) -> str:
    def writer(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return write(path, writer)


def write_json(path: str, value: Any) -> str:
    return write_text(path, json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def write_directory(path: str, writer: Callable[[str], None], overwrite: bool = False) -> str:
    """Calls `writer(tmp_dir)` to fill a fresh directory, then moves it to `path` (replacing
    an existing one only with `overwrite`)."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(path)}.tmp-")
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700 would make the result private
    try:
        writer(tmp)
        if os.path.lexists(path):
            if not overwrite:
                raise FileExistsError(f"{path} already exists")
            _swap(tmp, path)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _swap(tmp: str, path: str) -> None:
    """Puts `tmp` at `path`, moving the old entry aside first and deleting it only once `tmp`
    is in place; if that fails, the old entry goes back, so `path` never goes missing."""
    aside = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".old-")
    old = os.path.join(aside, "old")
    os.rename(path, old)
    try:
        os.rename(tmp, path)
    except BaseException:
        os.rename(old, path)
        raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)
