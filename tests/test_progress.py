"""`ptune eval` and `ptune ensemble` (and training's periodic evaluations) show a progress bar
over the examples while the model runs (`Evaluation.model_outputs`): on stderr, when it is a
terminal, on the primary process; never otherwise."""

import numpy as np
import pytest

from ptune import evaluator


@pytest.fixture(scope="module")
def demo_eval():
    """The offline demo task's validation split in batches of 16 (its byte vocabulary needs
    no file); the model is replaced by functions of the right shapes."""
    return evaluator.Evaluation("ptune_demo", None, 16)


def _outputs(ev: evaluator.Evaluation, **kwargs) -> dict:
    targets = ev.lengths["targets"]
    calls = []

    def generate(tokens):
        calls.append(len(tokens))
        return np.zeros((len(tokens), targets), np.int32)

    def score(tokens, target_tokens):
        return np.zeros((len(tokens),), np.float32)

    out = ev.model_outputs(generate, score, **kwargs)
    assert calls, "the demo task has no prediction metric: nothing ran"
    return out


def test_evaluation_shows_a_progress_bar_over_the_examples(demo_eval, capsys):
    total = demo_eval.num_examples
    assert total > 16  # more than one batch
    outputs = _outputs(demo_eval, progress=True)
    err = capsys.readouterr().err
    assert f"eval validation:   0%|          | 0/{total} [" in err
    assert sum(len(r["predictions"]) for r in outputs.values()) == total


def test_the_progress_bar_counts_every_example(demo_eval, monkeypatch):
    """The bar ends at the number of examples (updated once per batch, not per padded row)."""
    import tqdm

    seen = []
    original = tqdm.tqdm.close

    def close(bar):
        if not bar.disable:
            seen.append((bar.n, bar.total, bar.unit))
        return original(bar)

    monkeypatch.setattr(tqdm.tqdm, "close", close)
    _outputs(demo_eval, progress=True)
    assert seen == [(demo_eval.num_examples, demo_eval.num_examples, "ex")]


def test_no_progress_bar_when_stderr_is_not_a_terminal(demo_eval, capsys):
    """The default (None) follows stderr: captured here, so not a terminal."""
    _outputs(demo_eval)
    assert "eval validation" not in capsys.readouterr().err
    _outputs(demo_eval, progress=False)
    assert capsys.readouterr().err == ""


def test_the_progress_setting_can_be_given_once_for_the_evaluation(capsys):
    quiet = evaluator.Evaluation("ptune_demo", None, 16, progress=False)
    _outputs(quiet)
    assert capsys.readouterr().err == ""
