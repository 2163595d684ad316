"""What `make paper` runs: every point of the paper's six findings at small scale, each a
`ptune` command line over the shipped findings models (tasks/data/findings).

The design, fixed before any finding was read (issue #33):
- Task: `ptune_demo_rank_classification` (400 train, 80 validation sentences), scored by rank
  classification; the shifted domain is `ptune_demo_shifted_rank_classification`, never trained
  on. Score: validation accuracy at the LAST step (evaluated once, at the end: no checkpoint
  is picked on the validation set).
- Prompt tuning: the demo's recipe unchanged (runs/demo.gin: a 20-vector prefix prompt,
  class-label initialisation, Adafactor at lr 0.3, batch 16, inputs 64 bytes). Model tuning:
  runs/demo_model_tuning.gin (every weight, Adafactor at a constant 0.001). Prompt design: the
  frozen model with a hand-written instruction, or with 4 solved training examples (shot seeds
  0, 1, 2), nothing trained (runs/eval.gin).
- Training length: `STEPS` for every run, the one choice made for this scale, set by the
  budget (every point with 3 seeds in 30 minutes on 2 CPU cores), not by any result.
- Seeds 0, 1 and 2 for every trained point (data order, and a prompt's initialisation).
- Ensemble (Table 3): the three seeds' prompts of each size, decoded greedily on `ptune_demo`
  (generation, the paper's majority vote over predicted labels).

A point is one command line (or one per seed); `points()` lists them in run order. Shapes:
none (no arrays here)."""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

from ptune.tasks import demo

STEPS = 500
SEEDS = (0, 1, 2)
TASK = "ptune_demo_rank_classification"
SHIFTED_TASK = "ptune_demo_shifted_rank_classification"
ENSEMBLE_TASK = demo.TASK  # generation: majority vote over decoded labels
INSTRUCTION = "Is the review positive or negative?"
SHOTS = 4
MODELS_DIR = os.path.join(os.path.dirname(demo.DATA_DIR), "findings")
SIZES = ("small", "medium", "large")
PARAMETERS = {"small": 18_672, "medium": 74_240, "large": 345_408}  # `ptune info` of each
# Figure 3c/d: the medium model pretrained with span corruption only, then LM-adapted.
OBJECTIVES = (
    ("span corruption", "medium_span"),
    ("+ LM 500 steps", "medium_span_lm500"),
    ("+ LM 2,000 steps", "medium_span_lm2000"),
    ("prefix LM (5,000 steps)", "medium"),
)
LENGTHS = (1, 5, 20)
DEFAULT_LENGTH = 20
INITS = (  # (label, prompt gin file), weakest expected first
    ("random uniform", "prompts/random_uniform.gin"),
    ("sampled vocab", "prompts/sampled_vocab.gin"),
    ("class labels", "prompts/class_labels.gin"),
)
DEFAULT_INIT = "class labels"


@dataclasses.dataclass(frozen=True)
class Point:
    """One trained run (`kind` "prompt" or "model") or one evaluation ("design").

    name: its directory under the run's runs/ (unique). model: a shipped findings model's
    name; arch: the models/findings_<arch>.gin it was built from. `length`/`init`: the prompt's.
    `shots`: None for the instruction, else the number of examples. `seed`: the run's.
    `steps`: training steps (0 for prompt design: nothing trains)."""

    name: str
    kind: str
    model: str
    arch: str
    seed: int = 0
    length: int = DEFAULT_LENGTH
    init: str = DEFAULT_INIT
    shots: Optional[int] = None
    steps: int = STEPS

    @property
    def checkpoint(self) -> str:
        return os.path.join(MODELS_DIR, self.model)

    def argv(self, model_dir: str) -> list[str]:
        """The `ptune` command line of this point (its model directory `model_dir`)."""
        common = [
            f"--gin.MIXTURE_OR_TASK_NAME='{TASK}'",
            f"--gin.INITIAL_CHECKPOINT_PATH='{self.checkpoint}'",
        ]
        if self.kind == "design":  # the checkpoint carries its model's configuration
            shots = (
                [f"--gin.INSTRUCTION='{INSTRUCTION}'"]
                if self.shots is None
                else [f"--gin.SHOTS={self.shots}", f"--gin.SHOTS_SEED={self.seed}"]
            )
            out = f"--gin.EVAL_OUTPUT_DIR='{model_dir}'"
            return [
                "eval",
                "--gin_file=runs/eval.gin",
                *common,
                "--gin.NO_PROMPT=True",
                out,
                *shots,
            ]
        common.insert(0, f"--gin_file=models/findings_{self.arch}.gin")
        run = [
            f"--gin.MODEL_DIR='{model_dir}'",
            f"--gin.TRAIN_STEPS={self.steps}",
            f"--gin.EVAL_PERIOD={self.steps}",
            f"--gin.CHECKPOINT_PERIOD={self.steps}",
            f"--gin.LOG_PERIOD={max(1, self.steps // 5)}",
            f"--gin.SEED={self.seed}",
        ]
        if self.kind == "model":
            return [
                "train",
                "--gin_file=runs/demo_model_tuning.gin",
                *common,
                *run,
                "--gin.trainer.TrainConfig.export_model=True",  # the shifted-domain eval's model
            ]
        init_file = dict(INITS)[self.init]
        return [
            "train",
            "--gin_file=runs/demo.gin",
            f"--gin_file={init_file}",
            *common,
            *run,
            f"--gin.PROMPT_LENGTH={self.length}",
        ]


def _prompt(
    model: str, arch: str, seed: int, length=DEFAULT_LENGTH, init=DEFAULT_INIT, steps=STEPS
):
    slug = init.replace(" ", "_")
    return Point(f"prompt_{model}_len{length}_{slug}_s{seed}", "prompt", model, arch, seed, length,
                 init, steps=steps)  # fmt: skip


def points(seeds=SEEDS, steps: int = STEPS, sizes=SIZES, ablations: bool = True) -> list[Point]:
    """Every point, in run order: per size the prompt-design evaluations, the default prompt
    runs, model tuning, then (with `ablations`) prompt lengths, initialisers, objectives."""
    out = []
    for size in sizes:
        out.append(Point(f"design_{size}_instruction", "design", size, size, steps=0))
        out += [
            Point(f"design_{size}_shots_s{s}", "design", size, size, seed=s, shots=SHOTS, steps=0)
            for s in seeds
        ]
        out += [_prompt(size, size, s, steps=steps) for s in seeds]
        out += [
            Point(f"model_{size}_s{s}", "model", size, size, seed=s, steps=steps) for s in seeds
        ]
    if not ablations:
        return out
    for size in sizes:
        for length in LENGTHS:
            if length != DEFAULT_LENGTH:
                out += [_prompt(size, size, s, length=length, steps=steps) for s in seeds]
        for init, _ in INITS:
            if init != DEFAULT_INIT:
                out += [_prompt(size, size, s, init=init, steps=steps) for s in seeds]
    for _, model in OBJECTIVES:
        if model not in sizes:
            out += [_prompt(model, "medium", s, steps=steps) for s in seeds]
    return out
