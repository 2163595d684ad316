"""The prompt's slot in a parameter tree, and the prompt's length.

The prompt module's parameters live at one documented path, `encoder/prompt/`:

    encoder/prompt/prompt        [prompt, prompt_embed]  (logical axes; replicated)
                                 a bank [K, P, E]; multi-task [tasks, P, E]; deep [layers, P, E]
    encoder/prompt/shared        multi-task prompts' shared prompt [S, E] (`MultiTask`)
    encoder/prompt/residual/...  the residual reparameterisation's MLP (`Residual`)

This module is its one owner: `PROMPT_PATH`, `PROMPT_PATTERN` and the functions below read,
place and name it, and no other module spells the path. Checkpoints, the optimizer mask
(`ptune.trainable.PROMPT_ONLY`, the whole prompt module) and prompt files
(`ptune.checkpoints.prompt_io`) all key on it. A leaf: it imports nothing else of ptune but
its error type, so the prompt files' module can name the path without the prompt modules.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ptune.errors import UserError

PROMPT_PATH = ("encoder", "prompt", "prompt")
PROMPT_PATH_STR = "/".join(PROMPT_PATH)
PROMPT_PATTERN = "encoder/prompt/.*"  # checkpoint restores leave this slot to the caller
PROMPT_INDEX = "prompt_index"  # the batch feature [b] that picks each example's prompt


def validate_length(length: Any) -> int:
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 1:
        raise UserError(f"prompt length must be a positive integer, got {length!r}")
    return int(length)


def has_prompt(params: Any) -> bool:
    node = params
    for key in PROMPT_PATH:
        if not hasattr(node, "get") or key not in node:
            return False
        node = node[key]
    return True


def get_prompt(params: Any) -> Any:
    """The prompt (or a bank's stacked prompts) held in a parameter tree."""
    if not has_prompt(params):
        raise UserError(f"the parameters hold no prompt at {PROMPT_PATH_STR}")
    node = params
    for key in PROMPT_PATH:
        node = node[key]
    return node


def with_module(params: Any, module: Any) -> dict:
    """A new parameter tree: `params` with the prompt module's parameters `module` (a dict
    holding at least "prompt") in its slot."""
    out = dict(params)
    encoder = dict(out.get(PROMPT_PATH[0], {}))
    encoder[PROMPT_PATH[1]] = dict(module)
    out[PROMPT_PATH[0]] = encoder
    return out


def get_module(params: Any) -> dict:
    """The prompt module's parameters: {"prompt": ..., and any reparameterisation}."""
    get_prompt(params)
    return params[PROMPT_PATH[0]][PROMPT_PATH[1]]


def with_prompt(params: Any, value: Any) -> dict:
    """A new parameter tree: `params` (which may lack a prompt) with `value` in the slot.
    Only the dicts on the path are copied; the arrays are shared."""
    out = dict(params)
    node = out
    for key in PROMPT_PATH[:-1]:
        node[key] = dict(node.get(key, {}))
        node = node[key]
    node[PROMPT_PATH[-1]] = value
    return out


def without_prompt(params: Any) -> dict:
    """A new parameter tree without the prompt module (what a frozen checkpoint holds)."""
    out = dict(params)
    encoder = dict(out.get(PROMPT_PATH[0], {}))
    encoder.pop(PROMPT_PATH[1], None)
    out[PROMPT_PATH[0]] = encoder
    if not encoder:  # a decoder-only model's slot holds nothing else
        del out[PROMPT_PATH[0]]
    return out
