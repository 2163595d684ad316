"""One PNG per finding (`summary.Finding`): means over seeds with min-max bars, on matplotlib's
Agg canvas (no pyplot), as `ptune report`'s figures are drawn."""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ptune.findings import design

CHANCE = 50.0  # two balanced labels


def _errorbars(ax, xs, cells, label, offset=0.0):
    """A line of means with min-max bars at `xs` (cells: Stat or None)."""
    pts = [(x + offset, c) for x, c in zip(xs, cells) if c is not None]
    if not pts:
        return
    x = np.array([p[0] for p in pts], dtype=float)
    mean = np.array([c.mean for _, c in pts])
    low = mean - np.array([c.low for _, c in pts])
    high = np.array([c.high for _, c in pts]) - mean
    ax.errorbar(x, mean, yerr=[low, high], marker="o", capsize=4, label=label)


def _size_label(size: str) -> str:
    count = design.PARAMETERS.get(size)
    return f"{size}\n({count:,})" if count else size


def _bars(ax, groups, names, values):
    """Grouped bars: `values[g][n]` is a Stat, a float or None, for group g and bar n."""
    width = 0.8 / max(1, len(names))
    for n, name in enumerate(names):
        xs, heights, low, high = [], [], [], []
        for g in range(len(groups)):
            v = values[g][n]
            if v is None:
                continue
            single = isinstance(v, (int, float))
            mean = float(v) if single else v.mean
            xs.append(g + (n - (len(names) - 1) / 2) * width)
            heights.append(mean)
            low.append(0.0 if single else mean - v.low)
            high.append(0.0 if single else v.high - mean)
        ax.bar(xs, heights, width, yerr=[low, high], capsize=3, label=name)
    ax.set_xticks(range(len(groups)), groups)


def draw(finding, path: str) -> None:
    figure = Figure(figsize=(6.4, 4.2), dpi=150, layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    series = finding.series
    if finding.key == "scale":
        xs = list(range(len(series["x"])))
        for i, (name, cells) in enumerate(series["rows"].items()):
            _errorbars(ax, xs, cells, name, offset=(i - 1.5) * 0.04)
        ax.set_xticks(xs, [_size_label(s) for s in series["x"]])
        ax.set_xlabel("frozen model (parameters)")
    elif finding.key == "prompt_length":
        for size, cells in series["rows"].items():
            _errorbars(ax, series["x"], cells, _size_label(size).replace("\n", " "))
        ax.set_xscale("log")
        ax.set_xticks(series["x"], [str(n) for n in series["x"]])
        ax.set_xlabel("prompt length (vectors)")
    elif finding.key in ("initialization", "objective"):
        xs = list(range(len(series["x"])))
        for size, cells in series["rows"].items():
            _errorbars(ax, xs, cells, _size_label(size).replace("\n", " "))
        ax.set_xticks(xs, series["x"], fontsize=8)
    elif finding.key == "domain_shift":
        groups = list(series["rows"])
        _bars(ax, [g.replace(", ", "\n") for g in groups], ["in domain", "shifted"],
              [list(series["rows"][g]) for g in groups])  # fmt: skip
        ax.tick_params(axis="x", labelsize=7)  # six two-line labels side by side
    elif finding.key == "ensembles":
        rows = series["rows"]  # size -> [Stat of the prompts, best prompt, majority vote]
        _bars(ax, list(rows), ["prompts", "best prompt", "majority vote"], list(rows.values()))
    ax.axhline(CHANCE, color="grey", linestyle=":", linewidth=1, label="chance")
    ax.set_ylabel("validation accuracy")
    ax.set_ylim(0, 100)
    ax.set_title(finding.title + " (small scale)", fontsize=10)
    ax.legend(fontsize=7)
    figure.savefig(path)
