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


def write(path: str, writer: Callable[[str], None]) -> str:
    """Calls `writer(tmp_path)` to write the content, then renames it to `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.tmp-")
    os.close(fd)
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
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would make the result private
    try:
        writer(tmp)
        if os.path.exists(path):
            if not overwrite:
                raise FileExistsError(f"{path} already exists")
            old = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(path)}.old-")
            os.rmdir(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path
