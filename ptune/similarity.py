"""Prompt similarity: trained prompts as task embeddings, to predict which source prompt
transfers best to a target task (SPoT, Vu et al., ACL 2022, Section 5).

Two prompts source [Ls, E] and target [Lt, E] (lengths may differ, widths must agree):

    cos_avg        SPoT's "cosine similarity of average tokens":
                   cos(mean_i s_i, mean_j t_j)
    per_token_avg  SPoT's "per-token average cosine similarity":
                   mean over all Ls x Lt pairs of cos(s_i, t_j)
    max_mean       a token-alignment measure (not in SPoT): for each target token the cosine
                   of its closest source token, averaged over the target tokens

SPoT embeds the target task with a prompt briefly tuned on it, then ranks the sources by
similarity. Numpy only; computed in float64.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ptune.checkpoints import prompt_io
from ptune.errors import ArgumentParser, UserError

MEASURES = ("cos_avg", "per_token_avg", "max_mean")


def _unit_rows(x: np.ndarray, name: str) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    if np.any(norms == 0):
        raise UserError(f"prompt {name} has an all-zero vector: its cosine is undefined")
    return x / norms


def measures(
    source: np.ndarray, target: np.ndarray, source_name="source", target_name="target"
) -> dict[str, float]:
    """source [Ls, E], target [Lt, E] -> {measure: value in [-1, 1]} for every MEASURES."""
    source = np.asarray(source, np.float64)
    target = np.asarray(target, np.float64)
    for x, name in ((source, source_name), (target, target_name)):
        if x.ndim != 2 or not x.shape[0]:
            raise UserError(f"prompt {name}: expected a matrix [length, embed], got {x.shape}")
    if source.shape[1] != target.shape[1]:
        raise UserError(
            f"prompt {source_name} has width {source.shape[1]} but the target {target_name} "
            f"has {target.shape[1]}: prompts of different models cannot be compared"
        )
    _unit_rows(source.mean(0)[None], f"{source_name}'s mean")  # names the prompt at fault
    _unit_rows(target.mean(0)[None], f"{target_name}'s mean")
    averages = _unit_rows(np.stack([source.mean(0), target.mean(0)]), "either mean")
    pairs = _unit_rows(source, source_name) @ _unit_rows(target, target_name).T  # [Ls, Lt]
    return {
        "cos_avg": float(averages[0] @ averages[1]),
        "per_token_avg": float(pairs.mean()),
        "max_mean": float(pairs.max(axis=0).mean()),
    }


def rank(
    sources: Mapping[str, np.ndarray],
    target: np.ndarray,
    measure: str = "cos_avg",
    target_name: str = "target",
) -> list[dict]:
    """Each source's measures against `target`, most similar first by `measure`."""
    if measure not in MEASURES:
        raise UserError(f"similarity measure must be one of {', '.join(MEASURES)}, got {measure!r}")
    if not sources:
        raise UserError("no source prompts to rank")
    rows = [
        {"prompt": name, **measures(value, target, name, target_name)}
        for name, value in sources.items()
    ]
    return sorted(rows, key=lambda row: -row[measure])


def table(rows: Sequence[Mapping], measure: str) -> str:
    """A Markdown table of `rank`'s rows."""
    lines = [
        "| rank | source prompt | " + " | ".join(MEASURES) + " |",
        "|---:|---|" + "---:|" * len(MEASURES),
    ]
    for i, row in enumerate(rows, 1):
        values = " | ".join(
            f"**{row[m]:.4f}**" if m == measure else f"{row[m]:.4f}" for m in MEASURES
        )
        lines.append(f"| {i} | {row['prompt']} | {values} |")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    """`ptune similar`: ranks source prompts by their similarity to a target prompt."""
    from ptune import atomic

    parser = ArgumentParser(
        prog="ptune similar",
        description="Rank source prompts by SPoT's similarity to a target task's prompt.",
    )
    parser.add_argument(
        "--prompts",
        required=True,
        metavar="A,B,...",
        help="source prompts (.npy, .safetensors or PEFT adapter directories), comma-separated",
    )
    parser.add_argument(
        "--target", required=True, metavar="PATH", help="a prompt tuned on the target task"
    )
    parser.add_argument(
        "--measure", default="cos_avg", choices=MEASURES, help="the measure that ranks"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the ranking as JSON")
    args = parser.parse_args(argv)
    paths = [p for p in args.prompts.split(",") if p]
    if len(set(paths)) != len(paths):
        raise UserError(f"--prompts names a prompt twice: {args.prompts}")
    if args.json:
        atomic.check_output_file(
            args.json, "--json", "JSON", {"--target": args.target, "--prompts": paths}
        )
    sources = {path: prompt_io.load_prompt_file(path) for path in paths}
    target = prompt_io.load_prompt_file(args.target)
    rows = rank(sources, target, args.measure, args.target)
    print(f"source prompts most similar to {args.target} first (by {args.measure}):")
    print(table(rows, args.measure))
    if args.json:
        atomic.write_json(
            args.json, {"target": args.target, "measure": args.measure, "ranking": rows}
        )
        print(f"wrote {args.json}")
    return 0
