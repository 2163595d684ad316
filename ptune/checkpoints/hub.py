"""Hugging Face hub ids (`google/t5-base-lm-adapt`) as checkpoint paths, read offline.

An id resolves to its snapshot directory in the local Hugging Face cache (`HF_HUB_CACHE`, or
`HF_HOME/hub`, default `~/.cache/huggingface/hub`), the layout `huggingface_hub` writes:
`models--ORG--NAME/refs/main` names a snapshot under `snapshots/`. ptune never downloads: an id
that is not in the cache is one error that says how to fetch it.
"""

from __future__ import annotations

import os
import re
from typing import Optional

from ptune.errors import UserError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def looks_like_hub_id(path: str) -> bool:
    """`org/name` that is not a local path (relative or absolute) and not a URL."""
    return bool(_HUB_ID.match(path)) and not os.path.exists(path)


def resolve(path: str, revision: Optional[str] = None) -> str:
    """A local path for `path`: itself when it exists (or is a URL), else the cached snapshot
    of the hub id."""
    if "://" in path or os.path.exists(path) or not looks_like_hub_id(path):
        return path
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return snapshot_download(
            path,
            revision=revision,
            local_files_only=True,
            cache_dir=os.environ.get("HF_HUB_CACHE") or None,  # read now, not at import
        )
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError, OSError) as e:
        from huggingface_hub import constants

        cache = os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE
        raise UserError(
            f"{path} is neither a local checkpoint nor a Hugging Face model in the local cache "
            f"({cache}); fetch it once where there is network "
            f"(`hf download {path}`, or `huggingface-cli download {path}`) and point "
            "HF_HUB_CACHE (or HF_HOME) at that cache"
        ) from e
