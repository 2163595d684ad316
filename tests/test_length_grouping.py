"""Training batches grouped by length (`buckets.group_by_length`, `TrainConfig.group_by_length`):
each window of w batches' examples regrouped so a batch holds examples of similar length. The
window's examples are exactly the stream's (a mixture's rates hold over it), a resume from any
batch continues the same stream, and padding falls."""

import itertools
import json

import numpy as np
import pytest

from ptune import buckets, data, prompts

TASK = "ptune_demo_rank_classification"
MIXTURE = "ptune_demo_mixture"
LENGTHS = {"inputs": 64, "targets": 9}


def _rows(batch) -> list[tuple]:
    """Each example's real tokens (inputs, targets, task tag), so batches of any width and
    order compare as collections of examples."""
    tags = batch.get(prompts.PROMPT_INDEX, np.zeros(len(batch["encoder_input_tokens"])))
    return [
        (
            tuple(int(t) for t in np.trim_zeros(inputs, "b")),
            tuple(int(t) for t in np.trim_zeros(targets, "b")),
            int(tag),
        )
        for inputs, targets, tag in zip(
            batch["encoder_input_tokens"], batch["decoder_target_tokens"], tags
        )
    ]


def _take(iterator, n):
    return list(itertools.islice(iterator, n))


def _padded_inputs(batches) -> int:
    return sum(int(np.prod(b["encoder_input_tokens"].shape)) for b in batches)


def test_a_window_is_regrouped_into_batches_of_similar_length_in_a_drawn_order():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 60, size=32)
    window = {
        "encoder_input_tokens": np.array([[7] * n + [0] * (64 - n) for n in lengths], np.int32),
        "decoder_target_tokens": np.ones((32, 4), np.int32),
        "row": np.arange(32),
    }
    grouped = buckets.group_by_length(window, 8, (3, 0))
    assert len(grouped) == 4 and all(len(b["row"]) == 8 for b in grouped)
    assert sorted(np.concatenate([b["row"] for b in grouped]).tolist()) == list(range(32))
    spans = sorted(
        (lengths[b["row"]].min(), lengths[b["row"]].max()) for b in grouped
    )  # consecutive ranks: no batch's lengths overlap another's
    assert all(hi <= lo for (_, hi), (lo, _) in zip(spans, spans[1:]))
    orders = {
        tuple(int(b["row"][0]) for b in buckets.group_by_length(window, 8, (3, w)))
        for w in range(8)
    }
    assert len(orders) > 1  # the batches' order is drawn, not shortest first
    again = buckets.group_by_length(window, 8, (3, 0))
    assert all(np.array_equal(a["row"], b["row"]) for a, b in zip(grouped, again))
    with pytest.raises(ValueError, match="not a multiple of batch 5"):
        buckets.group_by_length(window, 5, (0, 0))


@pytest.mark.parametrize("name, tagged", [(TASK, False), (MIXTURE, True)])
def test_grouped_batches_hold_exactly_the_streams_examples_and_pad_less(name, tagged):
    """Over each window the examples (and a mixture's task tags) are the stream-order
    batches', only regrouped; cut to buckets, they pad fewer input tokens."""
    window = 4
    fine = buckets.LengthBuckets(inputs=list(range(2, 65, 2)))  # the demo's lengths are close
    common = dict(seed=5, buckets=fine, prompt_index=tagged)
    stream = _take(data.train_batches(name, LENGTHS, 4, **common), 3 * window)
    grouped = _take(data.train_batches(name, LENGTHS, 4, group_by_length=window, **common), 12)
    assert len(stream) == len(grouped) == 3 * window
    for w in range(3):
        part = slice(w * window, (w + 1) * window)
        a = sorted(r for b in stream[part] for r in _rows(b))
        b = sorted(r for b in grouped[part] for r in _rows(b))
        assert a == b and len(a) == 4 * window
    assert [_rows(b) for b in stream] != [_rows(b) for b in grouped]
    assert _padded_inputs(grouped) < _padded_inputs(stream)
    if tagged:
        assert {r[2] for b in grouped for r in _rows(b)} == {0, 1}


def test_a_resume_from_any_batch_continues_the_same_grouped_stream():
    """`start_batch` inside a window, at its edge, and past several windows: the batches
    after it are those an uninterrupted run reads, in shape and content."""
    common = dict(seed=2, buckets=buckets.LengthBuckets(smallest=8), group_by_length=3)
    whole = _take(data.train_batches(TASK, LENGTHS, 4, **common), 9)
    for start in (1, 3, 5, 7):
        resumed = _take(
            data.train_batches(TASK, LENGTHS, 4, start_batch=start, **common), 9 - start
        )
        assert len(resumed) == 9 - start
        for a, b in zip(whole[start:], resumed):
            assert a.keys() == b.keys()
            for key in a:
                np.testing.assert_array_equal(a[key], b[key])


def test_without_buckets_or_with_a_zero_window_batches_keep_stream_order():
    """Grouping only regroups bucketed batches: LENGTH_BUCKETS=None (one shape, as t5x and
    presets/original.gin) and GROUP_BY_LENGTH=0 both read the stream in order."""
    order = _take(data.train_batches(TASK, LENGTHS, 4, seed=1), 4)
    off = _take(data.train_batches(TASK, LENGTHS, 4, seed=1, group_by_length=4), 4)
    zero = _take(
        data.train_batches(
            TASK, LENGTHS, 4, seed=1, buckets=buckets.LengthBuckets(), group_by_length=0
        ),
        4,
    )
    assert [_rows(b) for b in order] == [_rows(b) for b in off] == [_rows(b) for b in zero]


def test_a_run_recorded_before_grouping_resumes_only_as_it_ran(tmp_path):
    """A run.json from before GROUP_BY_LENGTH ran in stream order: resuming it with grouping
    would change its data mid-run, so it is refused naming the flag that resumes it as it
    ran; with that flag it resumes."""
    from ptune import run_dir
    from ptune.errors import UserError

    old = {"task": TASK, "batch_size": 4}
    (tmp_path / "run.json").write_text(json.dumps(old))
    with pytest.raises(UserError) as e:
        run_dir.RunDir(str(tmp_path), {**old, "group_by_length": 32}, overwrite=False).check()
    assert "(changed: group_by_length); to resume it as it ran, pass --gin.GROUP_BY_LENGTH=0;" in (
        str(e.value)
    )
    run_dir.RunDir(str(tmp_path), {**old, "group_by_length": 0}, overwrite=False).check()
    (tmp_path / "run.json").write_text(json.dumps({**old, "group_by_length": 32}))
    with pytest.raises(UserError) as e:  # a run that recorded it: no resume hint
        run_dir.RunDir(str(tmp_path), {**old, "group_by_length": 0}, overwrite=False).check()
    assert "changed: group_by_length" in str(e.value) and "as it ran" not in str(e.value)
