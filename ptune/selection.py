"""Best-prompt selection: the metric that picks a run's best prompt, checked before any
training (`check_metric`: "score", the SuperGLUE-leaderboard mean of each task's primary
metrics, or one reported metric), its value in an evaluation's results (`select`, `score`),
and the best prompt so far with early stopping (`BestPrompt`, saved with every checkpoint).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional

from ptune.errors import UserError, did_you_mean

SCORE = "score"


def primary_metrics(name: str) -> Optional[dict[str, tuple[str, ...]]]:
    """The task's primary metrics, or None for a task registered outside `ptune.tasks`."""
    from ptune.tasks import registry

    try:
        return registry.primary_metrics(name)
    except UserError:
        return None


def check_metric(name: str, metric: Optional[str]) -> str:
    """The selection metric of a run, checked before any training: 'score' (the default: the
    mean of the primary metrics) or one of the task's primary metrics, as 'metric' or
    'task/metric'. A task registered outside `ptune.tasks` declares no primary metrics: it
    needs a named metric, which is then checked at the first evaluation."""
    primary = primary_metrics(name)
    if primary is None:
        if metric is None or metric == SCORE:
            raise UserError(
                f"task {name} was registered outside ptune.tasks and declares no primary "
                "metrics: name the metric that picks the best prompt, e.g. "
                "--gin.trainer.TrainConfig.eval_metric=\"'accuracy'\""
            )
        return metric
    if metric is None or metric == SCORE:
        return SCORE
    known = sorted({f"{t}/{m}" for t, ms in primary.items() for m in ms})
    if "/" in metric:
        task, short = metric.split("/", 1)
        ok = short in primary.get(task, ())
    else:
        owners = [t for t, ms in primary.items() if metric in ms]
        if len(owners) > 1:
            raise UserError(
                f"eval metric {metric!r} is reported by several tasks of {name}; name one as "
                f"'task/{metric}' (one of {', '.join(known)})"
            )
        ok = bool(owners)
    if not ok:
        raise UserError(
            f"eval metric {metric!r} is not reported by {name}"
            + did_you_mean(metric, known + [m.split("/", 1)[1] for m in known])
            + f" (choose 'score' or one of {', '.join(known)})"
        )
    return metric


def score(results: Mapping[str, Mapping[str, float]], name: str) -> float:
    """The SuperGLUE-leaderboard score of `results` (see `ptune.tasks.registry.primary_score`):
    each task's primary metrics averaged, then the mean over a mixture's tasks."""
    from ptune.tasks import registry

    return registry.primary_score(name, results)


def select(results: Mapping[str, Mapping[str, float]], name: str, metric: str) -> float:
    """The value `metric` (from `check_metric`) takes in `results`."""
    if metric == SCORE:
        return score(results, name)
    task, _, short = metric.rpartition("/")
    found = [m[short] for t, m in results.items() if short in m and task in ("", t)]
    if len(found) != 1:
        reported = sorted(f"{t}/{k}" for t, m in results.items() for k in m)
        raise UserError(
            f"eval metric {metric!r} was reported {len(found)} times; the evaluation reported "
            f"{', '.join(reported)}"
        )
    return float(found[0])


@dataclasses.dataclass
class BestPrompt:
    """Best-prompt selection and early stopping: the best score (step, value, metric) and the
    number of evaluations since it improved. Saved with every checkpoint."""

    metric: str
    patience: Optional[int] = None
    best: Optional[dict] = None
    evals_without_improvement: int = 0

    def update(self, step: int, value: float) -> bool:
        """Records an evaluation; True when it is the best so far."""
        if self.best is None or value > self.best["value"]:
            self.best = {"step": step, "value": float(value), "metric": self.metric}
            self.evals_without_improvement = 0
            return True
        self.evals_without_improvement += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.evals_without_improvement >= self.patience

    def to_meta(self) -> dict:
        return {"best": self.best, "evals_without_improvement": self.evals_without_improvement}

    def restore(self, meta: Mapping) -> None:
        self.best = meta.get("best")
        self.evals_without_improvement = int(meta.get("evals_without_improvement", 0))
