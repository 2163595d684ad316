"""`ptune report RUN_DIR... [TABLE.json...] [--output DIR]`: plots and tables from finished runs.

Reads only what `ptune train` and `ptune ensemble` write:
    RUN_DIR/metrics.jsonl   one JSON object per line with an integer "step" and a "split": "train"
                            lines carry "loss"; "<split>" lines (e.g. "validation") the run's
                            selection "score" (the mean over tasks of each task's primary metric);
                            "<split>/<task>" lines a task's own metrics. Values that are not finite
                            numbers are ignored.
    RUN_DIR/run.json        the fingerprint: model, task, prompt {length, placement} or null
                            (model tuning), batch_size, seed, ...
    RUN_DIR/summary.json    optional, absent in an interrupted run: task, model, prompt_length,
                            initializer, trainable_params, total_params, best {step, value,
                            metric}, steps, wall_seconds, label. Without it the report derives what
                            metrics.jsonl tells (best: the highest logged score) and says "n/a".
    TABLE.json              `ptune ensemble --output`: {"step": -1, "results": {"task", "split",
                            "prompts": [{name, file, metrics}], "average", "best", "ensemble"}}
Writes into the output directory:
    curves.png      training loss and evaluation score against step, one coloured line per run
    summary.md      one row per run, then the comparison and ensemble tables when there are any
    comparison.png  only when the runs share a task and differ in exactly one of prompt length
                    and initializer: the best value against prompt length (log axis) or by
                    initializer, one line or bar colour per combination of the other settings;
                    runs that differ only in seed are averaged (error bars: standard deviation)
    ensemble.md     each ensemble table in the layout of the paper's Table 3

Bad input raises `UserError` naming the path (and line) at fault. Figures are drawn on
matplotlib's Agg canvas directly, so pyplot and its process-wide backend are never touched.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import statistics
from typing import Optional, Sequence

import matplotlib
from matplotlib import ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ptune import atomic
from ptune.errors import UserError

DPI = 150
LABEL_CHARS = 48  # longest legend entry; longer ones keep both ends
# What tells runs apart, in the order labels name them; values are display strings.
SETTINGS = ("task", "model", "checkpoint", "prompt", "initializer", "placement", "batch", "seed")
INITIALIZER_ORDER = ("random_uniform", "sampled_vocab", "class_labels")  # the paper's order


@dataclasses.dataclass(frozen=True)
class Run:
    """One run directory as read. `loss`: [(step, loss)] of the train lines; `scores`: each
    evaluation split (in the order logged) -> [(step, score)]; `summary`: None if interrupted."""

    path: str
    fingerprint: dict
    summary: Optional[dict]
    loss: list
    scores: dict
    last_step: int

    @property
    def name(self) -> str:
        return os.path.basename(os.path.normpath(self.path))

    @property
    def prompt_length(self) -> Optional[int]:
        prompt = self.fingerprint.get("prompt")
        return None if prompt is None else prompt["length"]

    @property
    def settings(self) -> dict[str, Optional[str]]:
        """Display value of each of SETTINGS; None where the run did not record it. All but the
        initializer come from run.json, which interrupted runs have too, so that they group
        with finished ones."""
        fp = self.fingerprint
        prompt = fp.get("prompt")
        checkpoint = fp.get("initial_checkpoint_path")
        if checkpoint:
            checkpoint = "/".join(os.path.normpath(checkpoint).split(os.sep)[-2:])
        elif fp.get("random_init"):
            checkpoint = "random weights"
        return {
            "task": fp["task"],
            "model": _describe_model(fp.get("model")),
            "checkpoint": checkpoint,
            "prompt": "model tuning" if prompt is None else f"prompt {prompt['length']}",
            "initializer": (self.summary or {}).get("initializer"),
            "placement": prompt.get("placement") if prompt else None,
            "batch": None if fp.get("batch_size") is None else f"batch {fp['batch_size']}",
            "seed": None if fp.get("seed") is None else f"seed {fp['seed']}",
        }

    def best_logged_score(self) -> Optional[dict]:
        """{step, value, metric} of the highest score of the first evaluation split logged."""
        if not self.scores:
            return None
        split, points = next(iter(self.scores.items()))
        step, value = max(points, key=lambda p: p[1])  # ties: the earliest step
        return {"step": step, "value": value, "metric": f"{split} score"}

    @property
    def best(self) -> Optional[dict]:
        """summary.json's best (the run's own selection metric), else the best logged score."""
        return (self.summary or {}).get("best") or self.best_logged_score()


def _describe_model(model: Optional[dict]) -> Optional[str]:
    """The short description summary.json holds (less its "(random)", which the checkpoint
    setting tells), from run.json's T5Config fields."""
    keys = ("emb_dim", "num_encoder_layers", "num_decoder_layers")
    if not isinstance(model, dict) or any(k not in model for k in keys):
        return None
    layers = f"{model['num_encoder_layers']}+{model['num_decoder_layers']}"
    return f"t5 emb {model['emb_dim']}, {layers} layers"


def _read_json(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}, line {e.lineno}: not valid JSON ({e.msg})") from e
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from e


def _number(value) -> Optional[float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _read_metrics(path: str) -> tuple[list, dict, int]:
    """-> (train losses, scores per evaluation split, last step); every problem names its line."""
    loss, scores, steps = [], {}, []
    number = 0
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(f"{path}, line {number}: not valid JSON ({e.msg})") from e
                if not (
                    isinstance(record, dict)
                    and type(record.get("step")) is int  # bool is no step
                    and isinstance(record.get("split"), str)
                ):
                    raise UserError(
                        f"{path}, line {number}: expected an object with an integer 'step' "
                        "and a 'split' name"
                    )
                step, split = record["step"], record["split"]
                steps.append(step)
                if split == "train" and _number(record.get("loss")) is not None:
                    loss.append((step, _number(record["loss"])))
                elif "/" not in split and _number(record.get("score")) is not None:
                    scores.setdefault(split, []).append((step, _number(record["score"])))
    except UnicodeDecodeError as e:
        raise UserError(f"{path}, line {number + 1}: not UTF-8 text") from e
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from e
    if not steps:
        raise UserError(f"{path} is empty: the run has logged no metrics")
    return sorted(loss), {s: sorted(p) for s, p in scores.items()}, max(steps)


def read_run(path: str) -> Run:
    """Reads one run directory; a missing or malformed file raises UserError naming it."""
    if not os.path.isdir(path):
        raise UserError(f"{path}: no such run directory")
    metrics_file, run_file = (os.path.join(path, n) for n in ("metrics.jsonl", "run.json"))
    for required in (metrics_file, run_file):
        if not os.path.isfile(required):
            raise UserError(
                f"{path} is not a run directory: it has no {os.path.basename(required)} "
                "(written by `ptune train` once the run has started logging)"
            )
    fingerprint = _read_json(run_file)
    prompt = fingerprint.get("prompt", {}) if isinstance(fingerprint, dict) else None
    if (
        not isinstance(fingerprint, dict)
        or not isinstance(fingerprint.get("task"), str)
        or not (
            prompt is None or isinstance(prompt, dict) and isinstance(prompt.get("length"), int)
        )
    ):
        raise UserError(
            f"{run_file}: not a run fingerprint (expected 'task' and 'prompt': "
            "{length, placement} or null)"
        )
    summary_file = os.path.join(path, "summary.json")
    summary = _read_json(summary_file) if os.path.exists(summary_file) else None
    if summary is not None and not isinstance(summary, dict):
        raise UserError(f"{summary_file}: expected a JSON object")
    loss, scores, last_step = _read_metrics(metrics_file)
    return Run(path, fingerprint, summary, loss, scores, last_step)


def read_ensemble(path: str) -> dict:
    """The `results` table of a `ptune ensemble --output` file."""
    data = _read_json(path)
    table = data.get("results") if isinstance(data, dict) else None
    prompts = table.get("prompts") if isinstance(table, dict) else None
    if not (
        isinstance(prompts, list)
        and prompts
        and all(isinstance(p, dict) and isinstance(p.get("metrics"), dict) for p in prompts)
        and all(isinstance(table.get(k), dict) for k in ("average", "best", "ensemble"))
        and isinstance(table["best"].get("metrics"), dict)
    ):
        raise UserError(
            f"{path} is not a table written by `ptune ensemble --output` (expected "
            "results.prompts, .average, .best and .ensemble)"
        )
    return table


def _shorten(text: str, limit: int = LABEL_CHARS) -> str:
    """Keeps both ends, where run names and settings tend to differ."""
    if len(text) <= limit:
        return text
    head = (limit - 1) // 2
    return text[:head] + "…" + text[len(text) - (limit - 1 - head) :]


def _differing(settings: Sequence[dict], keys: Sequence[str]) -> list[str]:
    """Keys with more than one recorded value (an unrecorded value differs from none)."""
    return [k for k in keys if len({s[k] for s in settings if s[k] is not None}) > 1]


def run_labels(runs: Sequence[Run]) -> list[str]:
    """Legend labels: the summary's label, else the settings that differ between the runs (a
    setting a run did not record, like model tuning's initializer, is left out), else the
    directory name; a label two runs share gets its directory name appended."""
    settings = [r.settings for r in runs]
    differing = _differing(settings, SETTINGS)
    labels = [
        _shorten(
            (r.summary or {}).get("label") or ", ".join(s[k] for k in differing if s[k]) or r.name
        )
        for r, s in zip(runs, settings)
    ]
    names = [_shorten(r.name, 20) for r in runs]
    return [
        label
        if labels.count(label) == 1
        else f"{_shorten(label, LABEL_CHARS - len(name) - 3)} ({name})"
        for label, name in zip(labels, names)
    ]


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Best values of runs that differ in one `setting`, "prompt" or "initializer": `series`
    maps a line label (the other settings) to {setting value: [best value of each run]}, where a
    prompt-length value is the length, or None for model tuning."""

    setting: str
    task: str
    metric: str
    series: dict

    @property
    def subject(self) -> str:
        return "prompt length" if self.setting == "prompt" else "prompt initializer"

    def values(self) -> list:
        """The setting's values in axis order: lengths ascending then model tuning; or the
        initializers in the paper's order, then others alphabetically."""
        found = {v for points in self.series.values() for v in points}
        if self.setting == "prompt":
            return sorted(v for v in found if v is not None) + ([None] if None in found else [])
        rank = {name: i for i, name in enumerate(INITIALIZER_ORDER)}
        return sorted(found, key=lambda v: (rank.get(v, len(rank)), v))


def find_comparison(runs: Sequence[Run]) -> Optional[Comparison]:
    """The comparison the runs support, or None (another task, both or neither setting vary)."""
    settings = [r.settings for r in runs]
    if len(runs) < 2 or len({s["task"] for s in settings}) != 1:
        return None
    varied = _differing(settings, ("prompt", "initializer"))
    if len(varied) != 1:
        return None
    setting = varied[0]
    bests = [r.best for r in runs]
    if len({b["metric"] for b in bests if b}) != 1:  # compare like with like: the logged score
        bests = [r.best_logged_score() for r in runs]
    metrics = {b["metric"] for b in bests if b}
    if len(metrics) != 1:
        return None
    others = [k for k in _differing(settings, SETTINGS) if k not in ("task", setting, "seed")]
    series = {}
    for run, s, best in zip(runs, settings, bests):
        value = run.prompt_length if setting == "prompt" else s["initializer"]
        if best is None or (setting == "initializer" and value is None):
            continue
        line = ", ".join(s[k] for k in others if s[k]) or s["model"] or "runs"
        series.setdefault(_shorten(line), {}).setdefault(value, []).append(best["value"])
    comparison = Comparison(setting, settings[0]["task"], metrics.pop(), series)
    return comparison if len(comparison.values()) > 1 else None


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard deviation; NaN deviation for one value, which draws no error bar."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def _fmt(value: Optional[float]) -> str:
    """Four significant digits below 10 (losses, 0-1 metrics), two decimals above (0-100)."""
    if value is None:
        return "n/a"
    return f"{value:.4g}" if abs(value) < 10 else f"{value:.2f}"


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
    figure.suptitle(f"{_shorten(tasks.pop(), 70)}: {count}" if len(tasks) == 1 else count)
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
        means, errors = zip(*(_mean_std(points[v]) for v in present)) if present else ((), ())
        if comparison.setting == "prompt":
            if present:
                ax.errorbar(present, means, errors, marker="o", capsize=3, color=color, label=line)
            if None in points:
                level = _mean_std(points[None])[0]
                ax.axhline(level, color=color, linestyle="--", label=f"{line}: model tuning")
        else:
            offset = (i - (len(series) - 1) / 2) * width
            xs = [values.index(v) + offset for v in present]
            bars = ax.bar(xs, means, width, yerr=errors, capsize=3, color=color, label=line)
            ax.bar_label(bars, labels=[_fmt(m) for m in means], padding=2, fontsize="small")
    if comparison.setting == "prompt":
        ax.set_xscale("log")
        ax.set_xticks(lengths, [str(x) for x in lengths])
        ax.minorticks_off()
        ax.set_xlabel("prompt length (tokens, log scale)")
    else:
        ax.set_xticks(range(len(values)), [_shorten(v, 20) for v in values])
        ax.margins(y=0.12)
        ax.set_xlabel("prompt initializer")
    ax.set_ylabel(_shorten(comparison.metric, 40))
    ax.set_title(
        f"Best {_shorten(comparison.metric, 40)} by {comparison.subject}\n"
        f"{_shorten(comparison.task, 70)}"
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
                f"{_fmt(best['value'])} ({best['metric']})" if best else "n/a",
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
            mean, std = _mean_std(found)
            row.append(_fmt(mean) + ("" if len(found) == 1 else f" ± {_fmt(std)} (n={len(found)})"))
        rows.append(row)
    first = "prompt length" if comparison.setting == "prompt" else "initializer"
    return _table([first, *lines], rows, [comparison.setting == "prompt"] + [True] * len(lines))


def _flat(metrics: dict) -> dict[str, float]:
    return {
        f"{task}/{name}": float(value)
        for task, values in metrics.items()
        if isinstance(values, dict)
        for name, value in values.items()
        if _number(value) is not None
    }


def ensemble_table(table: dict, source: str) -> str:
    """A heading and the paper's Table 3 layout: a row per prompt, average, best, ensemble."""
    task, split = table.get("task", "n/a"), table.get("split", "n/a")
    title = f"### {os.path.basename(source)}: {task}, {split} split"
    return f"{title}\n\n{table_3(table)}"


def table_3(table: dict) -> str:
    """`ptune ensemble`'s result in the paper's Table 3 layout (Markdown): a row per prompt,
    their average, the best single prompt, the ensemble; a column per metric."""
    keys = [k for k, v in table["average"].items() if _number(v) is not None]
    tasks = {k.split("/", 1)[0] for k in keys}
    header = ["", *(k.split("/", 1)[-1] if len(tasks) == 1 else k for k in keys)]
    rows = []
    for i, prompt in enumerate(table["prompts"], start=1):
        name = str(prompt.get("name", f"prompt {i}"))
        if prompt.get("file"):
            name += f" ({_shorten(str(prompt['file']))})"
        rows.append((name, _flat(prompt["metrics"])))
    rows += [
        ("Average", table["average"]),
        (f"Best ({table['best'].get('name', 'n/a')})", table["best"]["metrics"]),
        ("Ensemble", _flat(table["ensemble"])),
    ]
    return _table(
        header,
        [(name, *(_fmt(_number(v.get(k))) for k in keys)) for name, v in rows],
        [False] + [True] * len(keys),
    )


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
    parser = argparse.ArgumentParser(
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
