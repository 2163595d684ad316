"""`ptune report RUN_DIR... [TABLE.json...] [--output DIR]`: plots and tables from finished runs.

Reads only what `ptune train` and `ptune ensemble` write (run directories and ensemble tables;
the files and their fields are in `ptune.report.runs`). Writes into the output directory:
    curves.png      training loss and evaluation score against step, one coloured line per run
    summary.md      one row per run, then the comparison and ensemble tables when there are any
    comparison.png  only when the runs share a task and differ in exactly one of prompt length
                    and initializer: the best value against prompt length (log axis) or by
                    initializer, one line or bar colour per combination of the other settings;
                    runs that differ only in seed are averaged (error bars: standard deviation)
    ensemble.md     each ensemble table in the layout of the paper's Table 3

The modules: `runs` reads a run directory (`Run`) and an ensemble table; `comparison` labels
runs by what tells them apart and finds the comparison they support; `figures` draws the PNGs
(on matplotlib's Agg canvas, never through pyplot); `tables` writes the Markdown. Bad input
raises `UserError` naming the path (and line) at fault, before anything is written.
"""

from __future__ import annotations

import os
from typing import Sequence

from matplotlib.figure import Figure

from ptune import atomic
from ptune.errors import ArgumentParser, UserError
from ptune.report.comparison import (
    INITIALIZER_ORDER,
    LABEL_CHARS,
    Comparison,
    find_comparison,
    run_labels,
)
from ptune.report.figures import DPI, comparison_figure, curves_figure
from ptune.report.runs import SETTINGS, Run, read_ensemble, read_run
from ptune.report.tables import comparison_table, ensemble_table, runs_table, table_3

__all__ = [
    "DPI",
    "INITIALIZER_ORDER",
    "LABEL_CHARS",
    "SETTINGS",
    "Comparison",
    "Run",
    "comparison_figure",
    "comparison_table",
    "curves_figure",
    "ensemble_table",
    "find_comparison",
    "main",
    "read_ensemble",
    "read_run",
    "run_labels",
    "runs_table",
    "table_3",
    "write_report",
]


def write_report(run_dirs: Sequence[str], output_dir: str) -> list[str]:
    """Writes curves.png, summary.md and, where the inputs call for them, comparison.png and
    ensemble.md into `output_dir`; returns their paths. `run_dirs` may also name `ptune
    ensemble --output` JSON files. Everything is read and checked before anything is written."""
    runs, ensembles = [], []
    for path in run_dirs:
        if os.path.isdir(path):
            runs.append(read_run(path))
        elif os.path.isfile(path) and path.endswith(".json"):
            ensembles.append((path, read_ensemble(path)))
        elif os.path.exists(path):
            raise UserError(f"{path} is neither a run directory nor an ensemble JSON file")
        else:
            raise UserError(f"{path}: no such run directory or ensemble JSON file")
    if not runs and not ensembles:
        raise UserError("ptune report needs at least one run directory or ensemble JSON file")
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as e:
        raise UserError(
            f"cannot create the output directory {output_dir}: {e.strerror or e}"
        ) from e
    written = []

    def save(name: str, content) -> None:
        """`content`: Markdown text, or a figure to write as PNG (atomically, like all files)."""
        path = os.path.join(output_dir, name)
        if isinstance(content, Figure):
            atomic.write(path, lambda tmp: content.savefig(tmp, dpi=DPI, format="png"))
        else:
            atomic.write_text(path, content)
        written.append(path)

    sections = ["# ptune report"]
    if runs:
        labels = run_labels(runs)
        save("curves.png", curves_figure(runs, labels))
        sections.append(runs_table(runs, labels))
        if not all(r.summary for r in runs):
            sections.append(
                "Runs marked (no summary) have no summary.json (interrupted): their initializer, "
                "parameter counts and wall time are n/a, their best is the highest score logged "
                "in metrics.jsonl and their steps the last step logged."
            )
        sections.append("![Training loss and evaluation score against step](curves.png)")
        comparison = find_comparison(runs)
        if comparison is not None:
            save("comparison.png", comparison_figure(comparison))
            title = f"Best {comparison.metric} by {comparison.subject}"
            sections += [
                f"## {title}",
                comparison_table(comparison),
                f"![{title}](comparison.png)",
            ]
    if ensembles:
        tables = [ensemble_table(table, path) for path, table in ensembles]
        save(
            "ensemble.md",
            "# Prompt ensembles (the paper's Table 3 layout)\n\n" + "\n\n".join(tables) + "\n",
        )
        sections += ["## Prompt ensembles", *tables]
    save("summary.md", "\n\n".join(sections) + "\n")
    return written


def main(argv: Sequence[str]) -> int:
    """`ptune report`: prints the written paths, then summary.md (the tables); bad input raises
    UserError for the CLI."""
    parser = ArgumentParser(
        prog="ptune report",
        description="Plots and tables from training runs and ensemble tables.",
    )
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="RUN_DIR",
        help="run directories (a run's MODEL_DIR) and `ptune ensemble --output` JSON files",
    )
    parser.add_argument(
        "--output",
        metavar="DIR",
        default=None,
        help="where to write (default: the run directory when only one is given, else ./report)",
    )
    args = parser.parse_args(list(argv))
    directories = [p for p in args.paths if os.path.isdir(p)]
    output = args.output or (directories[0] if len(directories) == 1 else "report")
    written = write_report(args.paths, output)
    for path in written:
        print(path)
    with open(written[-1], encoding="utf-8") as f:  # summary.md, written last: the tables
        print("\n" + f.read(), end="")
    return 0
