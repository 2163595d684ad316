"""The findings from `runner.run`'s records: each finding's numbers (mean and min-max over
seeds), the paper's direction of effect beside them, and whether this scale agrees, checked
by a rule written here before the numbers were read; `write` puts findings.md and one PNG per
finding (`figures`) in the report directory."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional, Sequence

from ptune.errors import UserError
from ptune.findings import design


@dataclasses.dataclass(frozen=True)
class Stat:
    """Mean and range of one condition's scores over its seeds."""

    mean: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        if self.n == 1:
            return f"{self.mean:.1f}"
        return f"{self.mean:.1f} [{self.low:.1f}-{self.high:.1f}]"


def stat(values: Sequence[float]) -> Optional[Stat]:
    values = list(values)
    if not values:
        return None
    return Stat(sum(values) / len(values), min(values), max(values), len(values))


@dataclasses.dataclass
class Finding:
    """One of the paper's findings: `table` rows (label, cells), the paper's claims each with
    this scale's verdict (True agrees, False does not, None not measured)."""

    key: str
    title: str
    paper: str
    columns: list[str]
    table: list[tuple[str, list]]
    claims: list[tuple[str, Optional[bool]]]
    series: dict = dataclasses.field(default_factory=dict)  # for the figure


def read(path: str) -> list[dict]:
    if not os.path.exists(path):
        raise UserError(f"{path} does not exist: run without --report_only first")
    return [json.loads(line) for line in open(path) if line.strip()]


def _scores(records, field="score", **match) -> list[float]:
    return [
        r[field]
        for r in records
        if r["kind"] != "ensemble"
        and r.get(field) is not None
        and all(r.get(k) == v for k, v in match.items())
    ]


def _default(**match) -> dict:
    return {"length": design.DEFAULT_LENGTH, "init": design.DEFAULT_INIT, **match}


def _all(checks) -> Optional[bool]:
    checks = [c for c in checks if c is not None]
    return all(checks) if checks else None


def _lt(a: Optional[Stat], b: Optional[Stat]) -> Optional[bool]:
    return None if a is None or b is None else a.mean < b.mean


def _sizes(records) -> list[str]:
    present = {r["model"] for r in records}
    return [s for s in design.SIZES if s in present]


def scale(records) -> Finding:
    sizes = _sizes(records)
    rows = {
        "prompt tuning": [
            stat(_scores(records, **_default(kind="prompt", model=s))) for s in sizes
        ],
        "model tuning": [stat(_scores(records, kind="model", model=s)) for s in sizes],
        "prompt design: instruction": [
            stat(_scores(records, kind="design", model=s, shots=None)) for s in sizes
        ],
        f"prompt design: {design.SHOTS} shots": [
            stat(_scores(records, kind="design", model=s, shots=design.SHOTS)) for s in sizes
        ],
    }
    pt, mt = rows["prompt tuning"], rows["model tuning"]
    designs = list(
        zip(rows["prompt design: instruction"], rows[f"prompt design: {design.SHOTS} shots"])
    )
    gaps = [None if p is None or m is None else m.mean - p.mean for p, m in zip(pt, mt)]
    closes = None if len(sizes) < 2 or None in (gaps[0], gaps[-1]) else gaps[-1] < gaps[0]

    def beats(tuned):
        return _all(_lt(d, t) for t, ds in zip(tuned, designs) for d in ds)

    claims = [
        ("prompt tuning trails model tuning at the smallest size", _lt(pt[0], mt[0])),
        ("the gap (model minus prompt tuning) is smaller at the largest size", closes),
        ("prompt tuning beats prompt design at every size", beats(pt)),
        ("model tuning beats prompt design at every size", beats(mt)),
    ]
    table = [(name, cells) for name, cells in rows.items()]
    table.append(("gap: model - prompt tuning", [None if g is None else f"{g:+.1f}" for g in gaps]))
    return Finding(
        "scale", "1. Scale (Figure 1)",
        "prompt tuning trails model tuning at small sizes and closes the gap as the model grows; "
        "both beat prompt design",
        sizes, table, claims, {"x": sizes, "rows": rows},
    )  # fmt: skip


def prompt_length(records) -> Finding:
    sizes = _sizes(records)
    rows = {
        s: [stat(_scores(records, kind="prompt", model=s, length=n, init=design.DEFAULT_INIT))
            for n in design.LENGTHS]
        for s in sizes
    }  # fmt: skip
    gains = {s: None if None in (c[0], c[-1]) else c[-1].mean - c[0].mean for s, c in rows.items()}
    claims = [
        (f"{design.LENGTHS[-1]} vectors beat 1 at every size", _all(
            None if g is None else g > 0 for g in gains.values())),
        ("the gain from length is largest at the smallest size", None if len(sizes) < 2 or None in (
            gains[sizes[0]], gains[sizes[-1]]) else gains[sizes[0]] > gains[sizes[-1]]),
    ]  # fmt: skip
    return Finding(
        "prompt_length", "2. Prompt length (Figure 3a)",
        "longer prompts help, up to a point, most at small sizes",
        [f"{n} vectors" for n in design.LENGTHS], list(rows.items()), claims,
        {"x": list(design.LENGTHS), "rows": rows},
    )  # fmt: skip


def initialization(records) -> Finding:
    sizes = _sizes(records)
    inits = [name for name, _ in design.INITS]
    rows = {
        s: [stat(_scores(records, kind="prompt", model=s, init=i, length=design.DEFAULT_LENGTH))
            for i in inits]
        for s in sizes
    }  # fmt: skip
    gaps = {s: None if None in (c[0], c[-1]) else c[-1].mean - c[0].mean for s, c in rows.items()}
    claims = [
        ("class labels >= sampled vocabulary at every size", _all(
            None if None in (c[1], c[2]) else c[2].mean >= c[1].mean for c in rows.values())),
        ("sampled vocabulary > random uniform at every size", _all(
            _lt(c[0], c[1]) for c in rows.values())),
        ("the gap (class labels - random uniform) shrinks from smallest to largest size",
         None if len(sizes) < 2 or None in (gaps[sizes[0]], gaps[sizes[-1]])
         else gaps[sizes[-1]] < gaps[sizes[0]]),
    ]  # fmt: skip
    return Finding(
        "initialization", "3. Initialisation (Figure 3b)",
        "class labels >= sampled vocabulary > random uniform, the gap shrinking with size",
        inits, list(rows.items()), claims, {"x": inits, "rows": rows},
    )  # fmt: skip


def objective(records) -> Finding:
    labels = [label for label, _ in design.OBJECTIVES]
    cells = [
        stat(_scores(records, **_default(kind="prompt", model=m))) for _, m in design.OBJECTIVES
    ]
    span, lm500, lm2000, _ = cells
    claims = [
        ("span corruption only is the worst frozen model of the four", _all(
            _lt(span, c) for c in cells[1:])),
        ("LM adaptation improves on span corruption", _lt(span, lm500)),
        ("more LM adaptation steps do better (2,000 > 500)", _lt(lm500, lm2000)),
    ]  # fmt: skip
    return Finding(
        "objective", "4. Pre-training objective (Figure 3c/d, medium size)",
        "span corruption alone is a poor frozen model; LM adaptation fixes it, more steps more so",
        labels, [("prompt tuning", cells)], claims, {"x": labels, "rows": {"medium": cells}},
    )  # fmt: skip


def domain_shift(records) -> Finding:
    sizes = _sizes(records)
    table, drops, rows = [], {}, {}
    for kind, name in (("prompt", "prompt tuning"), ("model", "model tuning")):
        for s in sizes:
            match = _default(kind=kind, model=s) if kind == "prompt" else {"kind": kind, "model": s}
            ins, out = stat(_scores(records, **match)), stat(_scores(records, "shifted", **match))
            drop = None if ins is None or out is None else ins.mean - out.mean
            drops[(kind, s)] = drop
            rows[f"{name}, {s}"] = (ins, out)
            table.append((f"{name}, {s}", [ins, out, None if drop is None else f"{drop:+.1f}"]))
    claims = [
        (f"prompt tuning loses less than model tuning on the shifted domain ({s})",
         None if None in (drops[("prompt", s)], drops[("model", s)])
         else drops[("prompt", s)] < drops[("model", s)])
        for s in sizes
    ]  # fmt: skip
    return Finding(
        "domain_shift", "5. Domain shift (Table 1)",
        "trained on one domain and evaluated on a shifted one, prompt tuning loses less than "
        "model tuning",
        ["in domain", "shifted", "in - shifted"], table, claims, {"rows": rows},
    )  # fmt: skip


def ensembles(records) -> Finding:
    found = [r for r in records if r["kind"] == "ensemble"]
    table = [
        (r["model"], [stat(r["members"]), f"{r['best']:.1f}", f"{r['ensemble']:.1f}"])
        for r in found
    ]
    claims = [
        ("the majority vote beats the average prompt at every size",
         _all(r["ensemble"] > r["average"] for r in found) if found else None),
        ("the majority vote matches or beats the best single prompt at most sizes",
         sum(r["ensemble"] >= r["best"] for r in found) * 2 > len(found) if found else None),
    ]  # fmt: skip
    return Finding(
        "ensembles", "6. Ensembles (Table 3)",
        "the majority vote of N prompts beats their average and usually the best single prompt",
        ["prompts (mean [min-max])", "best prompt", "majority vote"], table, claims,
        {"rows": {r["model"]: [stat(r["members"]), r["best"], r["ensemble"]] for r in found}},
    )  # fmt: skip


FINDINGS = (scale, prompt_length, initialization, objective, domain_shift, ensembles)


def _verdict(value: Optional[bool]) -> str:
    return {True: "agrees", False: "**does not agree**", None: "not measured"}[value]


def markdown(findings: Sequence[Finding], records) -> str:
    steps = sorted({r["steps"] for r in records if r["kind"] in ("prompt", "model")})
    seeds = sorted({r["seed"] for r in records if r["kind"] in ("prompt", "model")})
    lines = [
        "# The paper's findings at small scale",
        "",
        f"Small-scale reproduction (`make paper`): frozen models of 18,672 to 345,408 parameters "
        f"on a generated sentiment task (`{design.TASK}`, 80 validation sentences; chance is "
        f"50). Training steps {', '.join(map(str, steps))}; seeds {', '.join(map(str, seeds))}. "
        "Cells are validation accuracy at the last step, mean [min-max] over seeds. The design, "
        "fixed before any result was read, is in `ptune/findings/design.py`. This is not the "
        "paper's scale (T5 of 60M to 11B parameters on SuperGLUE): read agreement or "
        "disagreement as a statement about these models only.",
        "",
    ]
    for f in findings:
        lines += [f"## {f.title}", "", f"The paper: {f.paper}.", ""]
        lines += [f"| | {' | '.join(f.columns)} |", "|---" * (len(f.columns) + 1) + "|"]
        for label, cells in f.table:
            lines.append(
                f"| {label} | " + " | ".join("-" if c is None else str(c) for c in cells) + " |"
            )
        lines += ["", f"![{f.key}]({f.key}.png)", ""]
        lines += [f"- {claim}: {_verdict(v)}" for claim, v in f.claims]
        lines.append("")
    agree = sum(v is True for f in findings for _, v in f.claims)
    total = sum(v is not None for f in findings for _, v in f.claims)
    lines += [f"Claims that agree at this scale: {agree} of {total} measured.", ""]
    return "\n".join(lines)


def write(records: Sequence[dict], report_dir: str) -> str:
    """findings.md and one PNG per finding in `report_dir`; returns findings.md's path."""
    from ptune.findings import figures

    os.makedirs(report_dir, exist_ok=True)
    findings = [make(records) for make in FINDINGS]
    for f in findings:
        figures.draw(f, os.path.join(report_dir, f"{f.key}.png"))
    path = os.path.join(report_dir, "findings.md")
    with open(path, "w") as out:
        out.write(markdown(findings, records))
    return path
