"""The report's Markdown tables: a row per run (summary.md, also printed by `ptune report`),
a comparison's numbers, and an ensemble in the layout of the paper's Table 3 (ensemble.md;
`ptune ensemble` prints it too)."""

from __future__ import annotations

import os
from typing import Optional, Sequence

from ptune.report.comparison import Comparison, mean_std, shorten
from ptune.report.runs import Run, number


def fmt(value: Optional[float]) -> str:
    """Four significant digits below 10 (losses, 0-1 metrics), two decimals above (0-100)."""
    if value is None:
        return "n/a"
    return f"{value:.4g}" if abs(value) < 10 else f"{value:.2f}"


def _table(header: Sequence[str], rows: Sequence[Sequence], numeric: Sequence[bool]) -> str:
    def cell(value) -> str:
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(map(cell, header)) + " |"]
    lines.append("|" + "|".join("---:" if n else "---" for n in numeric) + "|")
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


def runs_table(runs: Sequence[Run], labels: Sequence[str]) -> str:
    """One Markdown row per run; an interrupted run's unknown fields read "n/a"."""
    header = (
        "run|label|task|model|prompt length|initializer|trainable / total params|best (metric)"
        "|best step|steps|wall time"
    ).split("|")
    rows = []
    for run, label in zip(runs, labels):
        s, summary, best = run.settings, run.summary or {}, run.best
        trainable, total = summary.get("trainable_params"), summary.get("total_params")
        params = "n/a"
        if trainable is not None and total:
            params = f"{trainable:,} / {total:,} ({100 * trainable / total:.3g}%)"
        wall = summary.get("wall_seconds")
        rows.append(
            (
                run.name + ("" if run.summary else " (no summary)"),
                label,
                s["task"],
                summary.get("model") or s["model"] or "n/a",
                "model tuning" if run.prompt_length is None else run.prompt_length,
                s["initializer"] or "n/a",
                params,
                f"{fmt(best['value'])} ({best['metric']})" if best else "n/a",
                best["step"] if best else "n/a",
                summary.get("steps", run.last_step),
                "n/a" if wall is None else _duration(wall),
            )
        )
    return _table(header, rows, [False] * 6 + [True] * 5)


def comparison_table(comparison: Comparison) -> str:
    """The comparison's numbers: a row per setting value, a column per line of the figure."""
    lines = list(comparison.series)
    rows = []
    for value in comparison.values():
        row = ["model tuning" if comparison.setting == "prompt" and value is None else value]
        for line in lines:
            found = comparison.series[line].get(value)
            if not found:
                row.append("n/a")
                continue
            mean, std = mean_std(found)
            row.append(fmt(mean) + ("" if len(found) == 1 else f" ± {fmt(std)} (n={len(found)})"))
        rows.append(row)
    first = "prompt length" if comparison.setting == "prompt" else "initializer"
    return _table([first, *lines], rows, [comparison.setting == "prompt"] + [True] * len(lines))


def _flat(metrics: dict) -> dict[str, float]:
    return {
        f"{task}/{name}": float(value)
        for task, values in metrics.items()
        if isinstance(values, dict)
        for name, value in values.items()
        if number(value) is not None
    }


def ensemble_table(table: dict, source: str) -> str:
    """A heading and the paper's Table 3 layout: a row per prompt, average, best, ensemble."""
    task, split = table.get("task", "n/a"), table.get("split", "n/a")
    title = f"### {os.path.basename(source)}: {task}, {split} split"
    return f"{title}\n\n{table_3(table)}"


def table_3(table: dict) -> str:
    """`ptune ensemble`'s result in the paper's Table 3 layout (Markdown): a row per prompt,
    their average, the best single prompt, the ensemble; a column per metric."""
    keys = [k for k, v in table["average"].items() if number(v) is not None]
    tasks = {k.split("/", 1)[0] for k in keys}
    header = ["", *(k.split("/", 1)[-1] if len(tasks) == 1 else k for k in keys)]
    rows = []
    for i, prompt in enumerate(table["prompts"], start=1):
        name = str(prompt.get("name", f"prompt {i}"))
        if prompt.get("file"):
            name += f" ({shorten(str(prompt['file']))})"
        rows.append((name, _flat(prompt["metrics"])))
    rows += [
        ("Average", table["average"]),
        (f"Best ({table['best'].get('name', 'n/a')})", table["best"]["metrics"]),
        ("Ensemble", _flat(table["ensemble"])),
    ]
    return _table(
        header,
        [(name, *(fmt(number(v.get(k))) for k in keys)) for name, v in rows],
        [False] + [True] * len(keys),
    )
