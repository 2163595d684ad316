"""The report's figures: curves.png (training loss and evaluation score against step) and
comparison.png (a `Comparison`'s best values). Each is drawn on matplotlib's Agg canvas
directly, so pyplot and its process-wide backend are never touched."""

from __future__ import annotations

import itertools
import math
from typing import Sequence

import matplotlib
from matplotlib import ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ptune.report.comparison import Comparison, mean_std, shorten
from ptune.report.runs import Run
from ptune.report.tables import fmt

DPI = 150


def _figure(size: tuple[float, float]) -> Figure:
    """A figure on its own Agg canvas: no pyplot, no process-wide backend switch."""
    figure = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _colors(count: int) -> list:
    cmap = matplotlib.colormaps["tab10" if count <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(count)]


def _legend_columns(labels: Sequence[str], width_chars: int) -> int:
    return max(1, min(len(labels), width_chars // (max(map(len, labels)) + 8)))


def _note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="grey")


def curves_figure(runs: Sequence[Run], labels: Sequence[str]) -> Figure:
    """Training loss (left) and evaluation score (right) against step, a colour per run."""
    columns = _legend_columns(labels, 130)
    figure = _figure((11, 4.4 + 0.2 * math.ceil(len(labels) / columns)))  # room for the legend
    loss_ax, score_ax = figure.subplots(1, 2)
    splits = list(dict.fromkeys(s for r in runs for s in r.scores))
    styles = dict(zip(splits, itertools.cycle(["-", "--", ":", "-."])))
    colors = _colors(len(runs))
    for run, color in zip(runs, colors):
        if run.loss:
            loss_ax.plot(*zip(*run.loss), color=color, linewidth=1.4)
        for split, points in run.scores.items():
            score_ax.plot(*zip(*points), color=color, linestyle=styles[split], marker="o", ms=3)
    losses = [v for r in runs for _, v in r.loss]
    if losses and min(losses) > 0 and max(losses) > 10 * min(losses):
        loss_ax.set_yscale("log")
        # Ticks at 1, 2, 5 of each decade, written 0.5 rather than 5 x 10^-1.
        loss_ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        loss_ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
        loss_ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    loss_ax.set(title="Training loss", xlabel="step", ylabel="loss per target token")
    score_ax.set(
        title=f"Evaluation score ({', '.join(splits) or 'none logged'})",
        xlabel="step",
        ylabel="score (mean primary metric over tasks)",
    )
    for ax, empty, text in (
        (loss_ax, not losses, "no training loss logged"),
        (score_ax, not splits, "no evaluation logged"),
    ):
        ax.grid(alpha=0.3)
        if empty:
            _note(ax, text)
    if len(splits) > 1:
        score_ax.legend(
            handles=[Line2D([], [], color="grey", linestyle=styles[s], label=s) for s in splits],
            title="split",
            fontsize="small",
        )
    tasks = {r.settings["task"] for r in runs}
    count = f"{len(runs)} run{'s' if len(runs) > 1 else ''}"
    figure.suptitle(f"{shorten(tasks.pop(), 70)}: {count}" if len(tasks) == 1 else count)
    figure.legend(
        handles=[Line2D([], [], color=c, linewidth=2, label=lb) for c, lb in zip(colors, labels)],
        loc="outside lower center",
        ncols=columns,
        fontsize="small",
        frameon=False,
    )
    return figure


def comparison_figure(comparison: Comparison) -> Figure:
    """Best value against prompt length (log axis, the lengths as ticks; model tuning as a
    dashed level) or a bar per initializer, a colour per combination of the other settings;
    error bars where several seeds share a point."""
    figure = _figure((7.5, 5.0))
    ax = figure.add_subplot()
    values = comparison.values()
    lengths = [v for v in values if v is not None]
    series = comparison.series.items()
    width = 0.8 / len(series)
    for i, ((line, points), color) in enumerate(zip(series, _colors(len(series)))):
        present = [v for v in values if v in points and v is not None]
        means, errors = zip(*(mean_std(points[v]) for v in present)) if present else ((), ())
        if comparison.setting == "prompt":
            if present:
                ax.errorbar(present, means, errors, marker="o", capsize=3, color=color, label=line)
            if None in points:
                level = mean_std(points[None])[0]
                ax.axhline(level, color=color, linestyle="--", label=f"{line}: model tuning")
        else:
            offset = (i - (len(series) - 1) / 2) * width
            xs = [values.index(v) + offset for v in present]
            bars = ax.bar(xs, means, width, yerr=errors, capsize=3, color=color, label=line)
            ax.bar_label(bars, labels=[fmt(m) for m in means], padding=2, fontsize="small")
    if comparison.setting == "prompt":
        ax.set_xscale("log")
        ax.set_xticks(lengths, [str(x) for x in lengths])
        ax.minorticks_off()
        ax.set_xlabel("prompt length (tokens, log scale)")
    else:
        ax.set_xticks(range(len(values)), [shorten(v, 20) for v in values])
        ax.margins(y=0.12)
        ax.set_xlabel("prompt initializer")
    ax.set_ylabel(shorten(comparison.metric, 40))
    ax.set_title(
        f"Best {shorten(comparison.metric, 40)} by {comparison.subject}\n"
        f"{shorten(comparison.task, 70)}"
    )
    ax.grid(alpha=0.3, axis="y")
    labels = ax.get_legend_handles_labels()[1]
    figure.legend(
        loc="outside lower center",
        ncols=_legend_columns(labels, 90),
        fontsize="small",
        frameon=False,
    )
    return figure
