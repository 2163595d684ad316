"""Accuracy of the prompt kinds on the shipped pretrained demo model, at equal steps.

    .venv/bin/python benchmarks/prompt_kinds.py [--steps 300] [--out DIR]

Every run is `runs/demo.gin` (the paper's recipe at the demo's scale: a 20-token class-label
prompt, Adafactor lr 0.3, batch 16) over the frozen model in tasks/data/demo/model:

1. one prompt per task vs a multi-task bank, on `ptune_demo_mixture` (sentiment and negation,
   the same sentences): each task alone for `steps`; the mixture for 2 x `steps` (so each task
   sees as many examples as alone) with one shared prompt, and with multi-task prompts
   (`add` and `none`);
2. plain vs residual vs deep prompts on `ptune_demo_rank_classification`, `steps` each.

Reports each run's best validation accuracy per task (the best step by the run's score) as a
Markdown table, and writes it to benchmarks/results/<date>-prompt-kinds.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SENTIMENT = "ptune_demo_rank_classification"
NEGATION = "ptune_demo_negation_rank_classification"
MIXTURE = "ptune_demo_mixture"


def runs(steps: int) -> list[tuple[str, str, int, list[str]]]:
    """(label, task, steps, extra flags) per run."""
    return [
        ("sentiment alone", SENTIMENT, steps, []),
        ("negation alone", NEGATION, steps, []),
        ("mixture, one shared prompt", MIXTURE, 2 * steps, []),
        ("mixture, multi-task prompts (add)", MIXTURE, 2 * steps, ["prompts/multi_task.gin"]),
        (
            "mixture, multi-task prompts (none)",
            MIXTURE,
            2 * steps,
            ["prompts/multi_task.gin", "--gin.prompts.MultiTask.combine='none'"],
        ),
        ("plain prompt", SENTIMENT, steps, []),
        ("residual prompt", SENTIMENT, steps, ["prompts/residual.gin"]),
        ("deep prompt", SENTIMENT, steps, ["prompts/deep.gin"]),
    ]


def train(label: str, task: str, steps: int, extra: list[str], out: str) -> dict:
    model_dir = os.path.join(out, label.replace(" ", "_").replace(",", "").replace("(", ""))
    model_dir = model_dir.replace(")", "")
    flags = [f"--gin_file={e}" if e.endswith(".gin") else e for e in extra]
    command = [
        os.path.join(os.path.dirname(sys.executable), "ptune"),
        "train",
        "--gin_file=runs/demo.gin",
        *flags,
        f"--gin.MIXTURE_OR_TASK_NAME='{task}'",
        f"--gin.MODEL_DIR='{model_dir}'",
        f"--gin.TRAIN_STEPS={steps}",
        "--overwrite",
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    summary = json.load(open(os.path.join(model_dir, "summary.json")))
    best = summary["best"]
    results = json.load(
        open(os.path.join(model_dir, "eval", f"validation_step_{best['step']}.json"))
    )
    accuracy = {t: m["accuracy"] for t, m in results["results"].items()}
    return {
        "run": label,
        "task": task,
        "steps": steps,
        "trainable": summary["trainable_params"],
        "best_step": best["step"],
        "accuracy": accuracy,
        "seconds": seconds,
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| run | trained on | steps | trainable | best step | sentiment | negation |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cells = [
            f"{r['accuracy'][t]:.2f}" if t in r["accuracy"] else "" for t in (SENTIMENT, NEGATION)
        ]
        lines.append(
            f"| {r['run']} | `{r['task']}` | {r['steps']} | {r['trainable']:,} | "
            f"{r['best_step']} | {' | '.join(cells)} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", default="/tmp/ptune_prompt_kinds")
    args = parser.parse_args()
    rows = [train(*run, args.out) for run in runs(args.steps)]
    text = table(rows)
    print(text)
    date = datetime.date.today().isoformat()
    path = os.path.join(HERE, "results", f"{date}-prompt-kinds.md")
    with open(path, "w") as f:
        f.write(
            f"# Prompt kinds on the shipped demo model ({date})\n\n"
            f"`.venv/bin/python benchmarks/prompt_kinds.py --steps {args.steps}`; best "
            "validation accuracy (80 sentences per task) at the best step by the run's score; "
            "the mixture runs take twice the steps, so each task sees as many examples as "
            "alone.\n\n" + text + "\n"
        )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
