"""Nearest-neighbour interpretation of prompts (paper, Section 7).

For each prompt position, the vocabulary tokens whose frozen embeddings are closest by cosine
similarity, and a summary of which class labels appear among those neighbours (the paper
found label words clustered around class-label-initialised prompts).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ptune.errors import UserError


def nearest_tokens(
    prompt: np.ndarray, embedding: np.ndarray, top_k: int = 5, token_limit: Optional[int] = None
) -> tuple[np.ndarray, np.ndarray]:
    """prompt [P, E], embedding [V, E] -> (ids [P, top_k], cosine [P, top_k]), best first.

    `token_limit` restricts candidates to ids below it (e.g. the vocabulary size, leaving out
    padding rows of the embedding table).
    """
    prompt = np.asarray(prompt, np.float64)
    table = np.asarray(embedding, np.float64)
    if prompt.ndim != 2 or table.ndim != 2 or prompt.shape[1] != table.shape[1]:
        raise UserError(f"prompt {prompt.shape} and embedding table {table.shape} widths differ")
    if token_limit is not None:
        table = table[:token_limit]
    if not 1 <= top_k <= table.shape[0]:
        raise UserError(f"top_k must be between 1 and {table.shape[0]}, got {top_k}")
    unit_prompt = prompt / np.maximum(np.linalg.norm(prompt, axis=1, keepdims=True), 1e-12)
    unit_table = table / np.maximum(np.linalg.norm(table, axis=1, keepdims=True), 1e-12)
    cosine = unit_prompt @ unit_table.T  # [P, V]
    ids = np.argsort(-cosine, axis=1, kind="stable")[:, :top_k]
    return ids, np.take_along_axis(cosine, ids, axis=1)


def explain(
    prompt: np.ndarray,
    embedding: np.ndarray,
    vocabulary=None,
    labels: Optional[Sequence[str]] = None,
    top_k: int = 5,
) -> dict:
    """-> {"positions": [{"position", "neighbors": [{"id", "token", "cosine"}]}],
    "labels": {label: {"token_ids", "positions"}}} where a label appears at a position when
    one of its sub-tokens is among that position's neighbours."""
    limit = None
    if vocabulary is not None and hasattr(vocabulary, "vocab_size"):
        limit = min(int(vocabulary.vocab_size), int(np.shape(embedding)[0]))
    ids, cosine = nearest_tokens(prompt, embedding, top_k, limit)

    def piece(i: int) -> str:
        text = vocabulary.decode([int(i)]) if vocabulary is not None else ""
        return text if text.strip() and text.isprintable() else f"<id {int(i)}>"

    positions = [
        {
            "position": p,
            "neighbors": [
                {"id": int(i), "token": piece(i), "cosine": float(c)}
                for i, c in zip(ids[p], cosine[p])
            ],
        }
        for p in range(ids.shape[0])
    ]
    summary = {}
    for label in labels or ():
        if vocabulary is None:
            raise UserError("label summaries need the vocabulary that tokenizes the labels")
        label_ids = [int(i) for i in vocabulary.encode(label)]
        hits = [p for p in range(ids.shape[0]) if set(ids[p].tolist()) & set(label_ids)]
        summary[label] = {"token_ids": label_ids, "positions": hits}
    return {"top_k": top_k, "positions": positions, "labels": summary}


def format_text(result: dict) -> str:
    lines = []
    for entry in result["positions"]:
        tokens = ", ".join(f"{n['token']!r} ({n['cosine']:.3f})" for n in entry["neighbors"])
        lines.append(f"position {entry['position']:>3}: {tokens}")
    for label, info in result["labels"].items():
        where = ", ".join(map(str, info["positions"])) or "none"
        lines.append(f"label {label!r} among the neighbours at positions: {where}")
    return "\n".join(lines)


def read_embedding(checkpoint_path: str) -> np.ndarray:
    """Only the embedding table [vocab, embed] of a checkpoint (no other weight is read)."""
    from ptune import family

    return family.of_checkpoint(checkpoint_path).read_embedding(checkpoint_path)
