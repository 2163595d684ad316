"""`ptune similar`: SPoT's prompt-similarity measures, the ranking, and the command."""

import json

import numpy as np
import pytest

from ptune import cli, similarity
from ptune.errors import UserError


def _cos(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_measures_equal_their_definitions_written_as_loops():
    rng = np.random.default_rng(0)
    source, target = rng.normal(size=(7, 5)), rng.normal(size=(3, 5))  # lengths may differ
    got = similarity.measures(source, target)
    pairs = [[_cos(s, t) for t in target] for s in source]
    assert got["cos_avg"] == pytest.approx(_cos(source.mean(0), target.mean(0)), abs=1e-12)
    assert got["per_token_avg"] == pytest.approx(
        sum(map(sum, pairs)) / (len(source) * len(target)), abs=1e-12
    )
    best = [max(pairs[i][j] for i in range(len(source))) for j in range(len(target))]
    assert got["max_mean"] == pytest.approx(sum(best) / len(target), abs=1e-12)


def test_measures_ignore_scale_and_token_order_and_are_one_for_the_same_prompt():
    rng = np.random.default_rng(1)
    prompt = rng.normal(size=(6, 4))
    same = similarity.measures(prompt, prompt)
    assert same["cos_avg"] == pytest.approx(1.0) and same["max_mean"] == pytest.approx(1.0)
    assert same["per_token_avg"] < 1.0  # unequal tokens of one prompt are not parallel
    other = rng.normal(size=(5, 4))
    base = similarity.measures(prompt, other)
    moved = similarity.measures(3.0 * prompt[::-1], other[[4, 2, 0, 1, 3]])
    for name in similarity.MEASURES:
        assert moved[name] == pytest.approx(base[name], abs=1e-9)


def test_the_source_a_target_was_tuned_from_ranks_first():
    rng = np.random.default_rng(2)
    sources = {name: rng.normal(size=(8, 16)) for name in ("a", "b", "c")}
    target = sources["b"] + 0.1 * rng.normal(size=(8, 16))
    assert similarity.MEASURES
    for measure in similarity.MEASURES:
        rows = similarity.rank(sources, target, measure)
        assert rows[0]["prompt"] == "b"
        values = [row[measure] for row in rows]
        assert values == sorted(values, reverse=True)


def test_the_command_prints_a_table_and_writes_json(tmp_path, capsys):
    rng = np.random.default_rng(3)
    paths = []
    for name in ("x", "y"):
        paths.append(str(tmp_path / f"{name}.npy"))
        np.save(paths[-1], rng.normal(size=(4, 8)).astype(np.float32))
    target = str(tmp_path / "t.npy")
    np.save(target, np.load(paths[1]) + 0.01)
    out = tmp_path / "rank" / "similar.json"
    code = cli.main(
        ["similar", f"--prompts={','.join(paths)}", f"--target={target}", f"--json={out}"]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert f"| 1 | {paths[1]} |" in printed and f"| 2 | {paths[0]} |" in printed
    written = json.loads(out.read_text())
    assert written["measure"] == "cos_avg" and written["target"] == target
    assert [row["prompt"] for row in written["ranking"]] == [paths[1], paths[0]]
    assert written["ranking"][0]["cos_avg"] == pytest.approx(
        similarity.measures(np.load(paths[1]), np.load(target))["cos_avg"]
    )


@pytest.mark.parametrize(
    "case, message",
    [
        ("width", "has width 8 but the target"),
        ("zero", "has an all-zero vector"),
        ("missing", "does not exist"),
        ("twice", "--prompts names a prompt twice"),
    ],
)
def test_bad_input_is_one_line(case, message, tmp_path, capsys):
    good = str(tmp_path / "good.npy")
    np.save(good, np.ones((3, 8), np.float32))
    target = str(tmp_path / "target.npy")
    np.save(target, np.ones((2, 8 if case != "width" else 6), np.float32))
    sources = {
        "width": good,
        "zero": str(tmp_path / "zero.npy"),
        "missing": str(tmp_path / "absent.npy"),
        "twice": f"{good},{good}",
    }[case]
    np.save(tmp_path / "zero.npy", np.zeros((3, 8), np.float32))
    out = tmp_path / "out.json"
    code = cli.main(["similar", f"--prompts={sources}", f"--target={target}", f"--json={out}"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0], lines
    assert not out.exists()


def test_an_unknown_measure_is_refused():
    with pytest.raises(UserError, match="one of cos_avg, per_token_avg, max_mean"):
        similarity.rank({"a": np.ones((1, 2))}, np.ones((1, 2)), "euclid")


def test_an_all_zero_prompt_is_named_whichever_side_it_is_on():
    zeros, ones = np.zeros((2, 3)), np.ones((2, 3))
    with pytest.raises(UserError, match="^prompt t.npy's mean has an all-zero vector"):
        similarity.rank({"s.npy": ones}, zeros, target_name="t.npy")
    with pytest.raises(UserError, match="^prompt s.npy's mean has an all-zero vector"):
        similarity.rank({"s.npy": zeros}, ones, target_name="t.npy")
