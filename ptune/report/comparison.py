"""What tells runs apart: their labels, and the comparison they support.

Runs of one task that differ in exactly one of prompt length and initializer support a
`Comparison`: the best value of each run by that setting, one line per combination of the other
settings; runs that differ only in seed share a point (`mean_std`).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from typing import Optional, Sequence

from ptune.report.runs import SETTINGS, Run

LABEL_CHARS = 48  # longest legend entry; longer ones keep both ends
INITIALIZER_ORDER = ("random_uniform", "sampled_vocab", "class_labels")  # the paper's order


def shorten(text: str, limit: int = LABEL_CHARS) -> str:
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
        shorten(
            (r.summary or {}).get("label") or ", ".join(s[k] for k in differing if s[k]) or r.name
        )
        for r, s in zip(runs, settings)
    ]
    names = [shorten(r.name, 20) for r in runs]
    return [
        label
        if labels.count(label) == 1
        else f"{shorten(label, LABEL_CHARS - len(name) - 3)} ({name})"
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
        series.setdefault(shorten(line), {}).setdefault(value, []).append(best["value"])
    comparison = Comparison(setting, settings[0]["task"], metrics.pop(), series)
    return comparison if len(comparison.values()) > 1 else None


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard deviation; NaN deviation for one value, which draws no error bar."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan
