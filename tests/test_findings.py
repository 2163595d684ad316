"""`make paper` (`python -m ptune.findings`): a miniature of it end to end (every kind of point:
prompt design, prompt tuning, model tuning, the shifted domain and an ensemble, a few steps
each over the shipped small findings model), the rules that read each finding, and its bad
inputs."""

import contextlib
import io
import json
import os

import pytest

from ptune.findings import __main__ as findings_main
from ptune.findings import design, summary

MINI_POINTS = (
    "design_small_shots_s0",
    "prompt_small_len20_class_labels_s0",
    "prompt_small_len20_class_labels_s1",
    "model_small_s0",
)


@pytest.fixture(scope="module")
def miniature(tmp_path_factory):
    """The miniature run by `python -m ptune.findings`'s entry point, in this process."""
    out = tmp_path_factory.mktemp("paper") / "run"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = findings_main.main(
            [f"--output={out}", "--seeds=0,1", "--steps=2", "--sizes=small", "--no_ablations",
             f"--points={','.join(MINI_POINTS)}"]
        )  # fmt: skip
    assert code == 0, stdout.getvalue()[-3000:]
    return out, stdout.getvalue()


def test_miniature_runs_every_kind_of_point_and_writes_the_report(miniature):
    out, stdout = miniature
    records = summary.read(str(out / "results.jsonl"))
    assert [r["name"] for r in records] == [*MINI_POINTS, "ensemble_small"]
    for r in records[:-1]:
        assert 0.0 <= r["score"] <= 100.0
        assert (r["shifted"] is None) == (r["kind"] == "design"), r
        assert r["steps"] == (0 if r["kind"] == "design" else 2)  # nothing trained in design
    ensemble = records[-1]
    assert len(ensemble["members"]) == 2 and ensemble["average"] == pytest.approx(
        sum(ensemble["members"]) / 2
    )
    # The shifted-domain evaluation really used the other task.
    shifted = json.load(open(out / "runs" / MINI_POINTS[1] / "shifted" / "eval_validation.json"))
    assert list(shifted["results"]) == [design.SHIFTED_TASK]
    report = out / "report"
    text = (report / "findings.md").read_text()
    assert text.count("\n## ") == 6
    pt = summary.stat([records[1]["score"], records[2]["score"]])
    assert f"| prompt tuning | {pt} |" in text  # the table is the records' mean and range
    for f in summary.FINDINGS:
        key = f(records).key
        assert (report / f"{key}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", key
    assert "ran 4 points" in stdout and str(report / "findings.md") in stdout


def _records(pt, mt, shifted_pt, shifted_mt, sizes=("small", "large")):
    """Synthetic records: per size, prompt and model tuning scores (three seeds, +-1)."""
    out = []
    for i, size in enumerate(sizes):
        for seed, d in enumerate((-1.0, 0.0, 1.0)):
            base = {"model": size, "seed": seed, "steps": 5, "shots": None}
            out.append({**base, "kind": "prompt", "length": 20, "init": "class labels",
                        "score": pt[i] + d, "shifted": shifted_pt[i] + d})  # fmt: skip
            out.append({**base, "kind": "model", "length": 20, "init": "class labels",
                        "score": mt[i] + d, "shifted": shifted_mt[i] + d})  # fmt: skip
        out.append({"model": size, "seed": 0, "kind": "design", "shots": None, "score": 50.0,
                    "shifted": None, "length": 20, "init": "class labels", "steps": 0})  # fmt: skip
    return out


def test_the_rules_read_agreement_and_disagreement_from_the_numbers():
    agrees = summary.scale(_records(pt=[60, 90], mt=[80, 92], shifted_pt=[0, 0], shifted_mt=[0, 0]))
    assert [v for _, v in agrees.claims] == [True, True, True, True]
    disagrees = summary.scale(
        _records(pt=[60, 70], mt=[62, 95], shifted_pt=[0, 0], shifted_mt=[0, 0])
    )
    assert [v for _, v in disagrees.claims] == [True, False, True, True]
    # Domain shift: prompt tuning drops 5, model tuning 20 -> agrees; reversed -> does not.
    shift = summary.domain_shift(_records([80, 90], [80, 90], [75, 85], [60, 70]))
    assert [v for _, v in shift.claims] == [True, True]
    shift = summary.domain_shift(_records([80, 90], [80, 90], [60, 70], [75, 85]))
    assert [v for _, v in shift.claims] == [False, False]
    # Nothing measured is said so, not counted as agreeing.
    assert [v for _, v in summary.objective([]).claims] == [None, None, None]
    assert "0 of 0 measured" in summary.markdown([summary.objective([])], [])


def test_points_cover_every_finding_with_unique_names_and_three_seeds():
    points = design.points()
    names = [p.name for p in points]
    assert len(names) == len(set(names))
    trained = [p for p in points if p.kind != "design"]
    assert all(sum(q.name[:-1] == p.name[:-1] for q in trained) == 3 for p in trained)
    assert {p.model for p in points} == {m for _, m in design.OBJECTIVES} | set(design.SIZES)
    for size in design.SIZES:
        mine = [p for p in trained if p.model == size and p.kind == "prompt"]
        assert {p.length for p in mine} == set(design.LENGTHS)
        assert {p.init for p in mine} == {name for name, _ in design.INITS}
        assert {p.kind for p in trained if p.model == size} == {"prompt", "model"}


@pytest.mark.parametrize(
    "argv, cause",
    [
        (["--seeds=a"], "--seeds='a'"),
        (["--sizes=huge"], "--sizes='huge'"),
        (["--steps=0"], "--steps=0"),
        (["--points=nope"], "no point named nope"),
        (["--report_only"], "results.jsonl does not exist"),
        (["--steps=many"], "argument --steps: invalid int value: 'many'"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, argv, cause):
    out = tmp_path / "new"
    assert findings_main.main([f"--output={out}", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert cause in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def test_an_existing_output_directory_is_refused_untouched(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("keep")
    assert findings_main.main([f"--output={tmp_path}"]) == 2
    assert "exists" in capsys.readouterr().err
    assert os.listdir(tmp_path) == ["mine.txt"] and (tmp_path / "mine.txt").read_text() == "keep"
