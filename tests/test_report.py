"""`ptune report` on run directories written here as training writes them: real matplotlib
figures read back as PNGs, real Markdown, and the one-line errors bad input must give."""

import dataclasses
import itertools
import json
import re

import matplotlib.image
import matplotlib.text
import pytest

from conftest import tiny_t5
from ptune import family, report
from ptune.errors import UserError
from ptune.models import llama

TASK = "taskless_super_glue_boolq_v102"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
T5_MODEL = tiny_t5(vocab_size=128, emb_dim=64)
# tiny_hf_llama's architecture (conftest.py), as ptune reads it from config.json.
LLAMA_MODEL = llama.LlamaConfig(
    vocab_size=320,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    rms_norm_eps=1e-6,
    rope_theta=10000.0,
    tie_word_embeddings=False,
)


def write_run(
    root,
    name,
    *,
    prompt_length=5,
    initializer="class_labels",
    seed=0,
    scores=(60.0, 70.0, 65.0),
    summary=True,
    label=None,
    task=TASK,
    checkpoint=None,
    model=T5_MODEL,
):
    """A run directory as `ptune train` leaves it: evaluations at steps 100, 200, 300; run.json
    records the model configuration's fields and summary.json its description, as training
    writes them."""
    run = root / name
    run.mkdir()
    prompt = None if prompt_length is None else {"length": prompt_length, "placement": "prefix"}
    fingerprint = {
        "model": dataclasses.asdict(model),
        "task": task,
        "initial_checkpoint_path": checkpoint,
        "random_init": checkpoint is None,
        "task_feature_lengths": {"inputs": 32, "targets": 4},
        "batch_size": 8,
        "prompt": prompt,
        "trainable": ["encoder/prompt/.*"],
        "loss": {"z_loss": 1e-4},
        "frozen_dtype": None,
        "seed": seed,
        "train_split": "train",
    }
    (run / "run.json").write_text(json.dumps(fingerprint))
    lines = []
    for step in range(10, 301, 10):
        loss = (5.0 + (prompt_length or 200) / 50) / (1 + step / 30) + seed * 0.1
        lines.append(
            {
                "step": step,
                "split": "train",
                "loss": loss,
                "z_loss": 1e-4,
                "token_accuracy": 0.5,
                "grad_norm": 1.0,
                "steps_per_sec": 3.0,
            }
        )
        if step % 100 == 0:
            score = scores[step // 100 - 1]
            lines.append(
                {
                    "step": step,
                    "split": "validation/boolq",
                    "accuracy": score,
                    "note": "not a number, ignored",
                }
            )
            lines.append({"step": step, "split": "validation", "score": score})
    (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    if summary:
        best = max(range(3), key=lambda i: scores[i])
        (run / "summary.json").write_text(
            json.dumps(
                {
                    "task": task,
                    "model": family.family_of(model).describe(model),
                    "prompt_length": prompt_length,
                    "initializer": initializer,
                    "trainable_params": 64 * (prompt_length or 0) or 1_000_000,
                    "total_params": 1_000_000 + 64 * (prompt_length or 0),
                    "best": {"step": 100 * (best + 1), "value": scores[best], "metric": "accuracy"},
                    "steps": 300,
                    "wall_seconds": 65.0,
                    "label": label,
                }
            )
        )
    return run


def write_ensemble(path):
    table = {
        "task": TASK,
        "split": "validation",
        "prompts": [
            {
                "name": f"prompt_{i}",
                "file": f"runs/p{i}/best/encoder.prompt.prompt.npy",
                "metrics": {"boolq": {"accuracy": value}},
            }
            for i, value in enumerate((80.0, 82.5, 81.0), start=1)
        ],
        "average": {"boolq/accuracy": 81.16666},
        "best": {
            "name": "prompt_2",
            "metric": "boolq/accuracy",
            "metrics": {"boolq/accuracy": 82.5},
        },
        "ensemble": {"boolq": {"accuracy": 83.75}},
    }
    path.write_text(json.dumps({"step": -1, "results": table}))
    return path


def assert_png(path, min_width, min_height):
    """A real PNG that matplotlib reads back, large enough to read, and not blank."""
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    height, width = image.shape[:2]
    assert width >= min_width and height >= min_height, (width, height)
    assert image[..., :3].std() > 0.05


def table_row(markdown, first_cell):
    """The cells of the Markdown table row that starts with `first_cell`."""
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in\n{markdown}")


def overlapping_texts(figure):
    """Pairs of drawn texts whose boxes overlap, and texts that stick out of the figure."""
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    tick_labels, shown = set(), []
    for ax in figure.axes:
        for axis, limits in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                tick_labels.update((id(tick.label1), id(tick.label2)))
            low, high = sorted(limits)  # a tick outside the view is not drawn
            shown += [
                label
                for location, label in zip(axis.get_majorticklocs(), axis.get_majorticklabels())
                if low <= location <= high
            ]
    texts = [t for t in figure.findobj(matplotlib.text.Text) if id(t) not in tick_labels]
    boxes = [
        (t.get_text(), t.get_window_extent(renderer))
        for t in texts + shown
        if t.get_visible() and t.get_text().strip()
    ]
    problems = [
        (a, b)
        for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2)
        if box_a.overlaps(box_b)
    ]
    problems += [
        (text, "outside the figure")
        for text, box in boxes
        if box.x0 < 0 or box.y0 < 0 or box.x1 > figure.bbox.x1 + 1 or box.y1 > figure.bbox.y1 + 1
    ]
    return problems


def test_runs_differing_in_prompt_length_give_curves_summary_and_a_comparison(tmp_path):
    runs = [
        write_run(tmp_path, "p1", prompt_length=1, scores=(55.0, 58.0, 57.5)),
        write_run(tmp_path, "p5", prompt_length=5, scores=(60.0, 70.0, 65.0)),
        write_run(tmp_path, "p20", prompt_length=20, scores=(66.0, 71.5, 72.25)),
        write_run(tmp_path, "p100", prompt_length=100, scores=(70.0, 75.0, 74.0), summary=False),
    ]
    out = tmp_path / "report"
    written = report.write_report([str(r) for r in runs], str(out))

    assert written == [str(out / n) for n in ("curves.png", "comparison.png", "summary.md")]
    assert_png(out / "curves.png", 1200, 600)
    assert_png(out / "comparison.png", 900, 600)
    summary = (out / "summary.md").read_text()
    assert table_row(summary, "p5") == [
        "p5",
        "prompt 5",
        TASK,
        "t5 emb 64, 2+2 layers",
        "5",
        "class_labels",
        "320 / 1,000,320 (0.032%)",
        "70.00 (accuracy)",
        "200",
        "300",
        "1m 05s",
    ]
    # Without summary.json: what run.json and metrics.jsonl tell, and n/a for the rest.
    assert table_row(summary, "p100 (no summary)") == [
        "p100 (no summary)",
        "prompt 100",
        TASK,
        "t5 emb 64, 2+2 layers",
        "100",
        "n/a",
        "n/a",
        "75.00 (validation score)",
        "200",
        "300",
        "n/a",
    ]
    assert "no summary.json (interrupted)" in summary
    # The comparison has to use the same quantity for every run: the logged score here.
    assert "## Best validation score by prompt length" in summary
    for length, best in (("1", "58.00"), ("5", "70.00"), ("20", "72.25"), ("100", "75.00")):
        assert table_row(summary, length)[1] == best
    assert "![Training loss and evaluation score against step](curves.png)" in summary


def test_summary_best_is_compared_when_every_run_has_the_same_metric(tmp_path):
    runs = [
        write_run(tmp_path, f"p{n}", prompt_length=n, scores=(50.0 + n, 40.0, 30.0))
        for n in (10, 50)
    ]
    out = tmp_path / "out"
    report.write_report([str(r) for r in runs], str(out))
    summary = (out / "summary.md").read_text()
    assert "## Best accuracy by prompt length" in summary
    assert table_row(summary, "10")[1] == "60.00" and table_row(summary, "50")[1] == "100.00"


@pytest.mark.parametrize(
    "settings",
    [
        [
            dict(prompt_length=5, initializer="class_labels"),
            dict(prompt_length=20, initializer="sampled_vocab"),
        ],  # two settings vary
        [dict(prompt_length=5), dict(prompt_length=5)],  # nothing varies
        [dict(prompt_length=5, task="task_a"), dict(prompt_length=20, task="task_b")],
        [dict(prompt_length=5)],  # one run
    ],
    ids=["both-vary", "none-vary", "tasks-differ", "single-run"],
)
def test_no_comparison_unless_runs_of_one_task_differ_in_one_setting(tmp_path, settings):
    runs = [write_run(tmp_path, f"run{i}", **s) for i, s in enumerate(settings)]
    out = tmp_path / "out"
    written = report.write_report([str(r) for r in runs], str(out))
    assert not (out / "comparison.png").exists()
    assert [p.rsplit("/", 1)[1] for p in written] == ["curves.png", "summary.md"]
    assert "## Best" not in (out / "summary.md").read_text()


def test_labels_name_what_differs_else_the_directory_or_the_users_label(tmp_path):
    differ = [
        write_run(tmp_path, "a", prompt_length=5, initializer="class_labels"),
        write_run(tmp_path, "b", prompt_length=None, initializer=None),
        write_run(tmp_path, "c", prompt_length=5, initializer="sampled_vocab"),
        write_run(tmp_path, "d", prompt_length=20, label="my favourite"),
    ]
    assert report.run_labels([report.read_run(str(r)) for r in differ]) == [
        "prompt 5, class_labels",
        "model tuning",
        "prompt 5, sampled_vocab",
        "my favourite",
    ]
    same = [write_run(tmp_path, n) for n in ("first", "second")]
    assert report.run_labels([report.read_run(str(r)) for r in same]) == ["first", "second"]


def test_other_settings_become_lines_and_an_interrupted_run_joins_its_own(tmp_path):
    lm, span = "gs://t5-data/t5_1_1_lm100k_base/checkpoint_1100000", "/ckpt/span_base"
    best = {(lm, 5): 71.0, (lm, 20): 74.5, (span, 5): 52.0, (span, 20): 60.0}
    runs = [
        report.read_run(
            str(
                write_run(
                    tmp_path,
                    f"{checkpoint[-4:]}_{length}",
                    prompt_length=length,
                    checkpoint=checkpoint,
                    summary=length == 5,
                    scores=(value, 0.0, 0.0),
                )
            )
        )
        for (checkpoint, length), value in best.items()
    ]
    assert report.run_labels(runs) == [
        "t5_1_1_lm100k_base/checkpoint_1100000, prompt 5",
        "t5_1_1_lm100k_base/checkpoint_1100000, prompt 20",
        "ckpt/span_base, prompt 5",
        "ckpt/span_base, prompt 20",
    ]
    comparison = report.find_comparison(runs)
    assert comparison.metric == "validation score"  # the interrupted runs have no summary best
    assert comparison.series == {
        "t5_1_1_lm100k_base/checkpoint_1100000": {5: [71.0], 20: [74.5]},
        "ckpt/span_base": {5: [52.0], 20: [60.0]},
    }


@pytest.mark.parametrize("summary", [True, False], ids=["finished", "interrupted"])
def test_report_names_the_model_of_every_family(tmp_path, summary):
    runs = [
        write_run(tmp_path, "t5", model=T5_MODEL, summary=summary),
        write_run(tmp_path, "llama", model=LLAMA_MODEL, summary=summary),
    ]
    out = tmp_path / "out"
    report.write_report([str(r) for r in runs], str(out))
    table = (out / "summary.md").read_text()
    suffix = "" if summary else " (no summary)"  # then the model comes from run.json alone
    assert table_row(table, "t5" + suffix)[3] == "t5 emb 64, 2+2 layers"
    assert table_row(table, "llama" + suffix)[3] == "decoder-only emb 32, 2 layers"
    # The model is what tells these runs apart, so it labels their curves.
    assert report.run_labels([report.read_run(str(r)) for r in runs]) == [
        "t5 emb 64, 2+2 layers",
        "decoder-only emb 32, 2 layers",
    ]


@pytest.mark.parametrize(
    "config",
    [
        T5_MODEL,
        LLAMA_MODEL,
        LLAMA_MODEL.replace(
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192,
            }
        ),
    ],
    ids=["t5", "decoder-only", "decoder-only-rope-scaling"],
)
def test_a_model_recorded_in_run_json_reads_back_as_the_same_configuration(config):
    record = json.loads(json.dumps(dataclasses.asdict(config)))  # as run.json holds it
    assert family.from_record(record) == config


def test_initializers_are_compared_as_bars_averaged_over_seeds(tmp_path):
    runs = [
        write_run(tmp_path, "cl0", initializer="class_labels", seed=0, scores=(80.0, 1, 1)),
        write_run(tmp_path, "cl1", initializer="class_labels", seed=1, scores=(84.0, 1, 1)),
        write_run(tmp_path, "sv", initializer="sampled_vocab", scores=(75.5, 1, 1)),
        write_run(tmp_path, "ru", initializer="random_uniform", scores=(60.25, 1, 1)),
    ]
    out = tmp_path / "out"
    report.write_report([str(r) for r in runs], str(out))
    assert_png(out / "comparison.png", 900, 600)
    summary = (out / "summary.md").read_text()
    assert "## Best accuracy by prompt initializer" in summary
    lines = summary[summary.index("## Best accuracy") :].splitlines()
    initializer_rows = [line.split("|")[1].strip() for line in lines if line.startswith("| ")][1:]
    assert initializer_rows == ["random_uniform", "sampled_vocab", "class_labels"]
    assert table_row(summary, "class_labels")[1] == "82.00 ± 2.828 (n=2)"
    assert table_row(summary, "random_uniform")[1] == "60.25"


def test_figures_keep_long_labels_and_many_runs_readable(tmp_path):
    task = "a_very_long_mixture_name_" + "x" * 80
    runs = [
        report.read_run(
            str(
                write_run(
                    tmp_path,
                    f"run_{n}",
                    prompt_length=n,
                    task=task,
                    seed=n % 2,
                    label=None
                    if n < 50
                    else f"an extremely long label that a user typed for run {n} "
                    "because they like to describe everything in detail",
                )
            )
        )
        for n in (1, 5, 20, 50, 100, 150)
    ]
    labels = report.run_labels(runs)
    assert max(map(len, labels)) <= report.LABEL_CHARS and len(set(labels)) == len(labels)
    assert overlapping_texts(report.curves_figure(runs, labels)) == []
    comparison = report.find_comparison(runs)
    assert comparison.setting == "prompt"
    assert overlapping_texts(report.comparison_figure(comparison)) == []


def test_a_run_stopped_before_its_first_evaluation_still_gets_a_report(tmp_path):
    run = write_run(tmp_path, "early", summary=False)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(lines[:5]) + "\n")  # train, steps 10-50
    out = tmp_path / "out"
    report.write_report([str(run)], str(out))
    assert_png(out / "curves.png", 1200, 600)
    row = table_row((out / "summary.md").read_text(), "early (no summary)")
    assert row[7:] == ["n/a", "n/a", "50", "n/a"]
    figure = report.curves_figure([report.read_run(str(run))], ["early"])
    assert "no evaluation logged" in [t.get_text() for t in figure.axes[1].texts]
    assert overlapping_texts(figure) == []


def test_ensemble_tables_follow_table_3_and_appear_in_the_summary(tmp_path):
    run = write_run(tmp_path, "p5")
    table = write_ensemble(tmp_path / "ensemble_boolq.json")
    out = tmp_path / "out"
    written = report.write_report([str(run), str(table)], str(out))
    assert [p.rsplit("/", 1)[1] for p in written] == ["curves.png", "ensemble.md", "summary.md"]
    ensemble = (out / "ensemble.md").read_text()
    assert "### ensemble_boolq.json: taskless_super_glue_boolq_v102, validation split" in ensemble
    rows = [line for line in ensemble.splitlines() if line.startswith("| ")]
    assert rows == [
        "|  | accuracy |",
        "| prompt_1 (runs/p1/best/encoder.prompt.prompt.npy) | 80.00 |",
        "| prompt_2 (runs/p2/best/encoder.prompt.prompt.npy) | 82.50 |",
        "| prompt_3 (runs/p3/best/encoder.prompt.prompt.npy) | 81.00 |",
        "| Average | 81.17 |",
        "| Best (prompt_2) | 82.50 |",
        "| Ensemble | 83.75 |",
    ]
    assert rows[-1] in (out / "summary.md").read_text()


def test_main_writes_into_the_single_run_directory_by_default(tmp_path, capsys):
    run = write_run(tmp_path, "p5")
    assert report.main([str(run)]) == 0
    paths, tables = capsys.readouterr().out.split("\n\n", 1)
    assert paths.split() == [str(run / "curves.png"), str(run / "summary.md")]
    assert tables == (run / "summary.md").read_text()  # then the tables, as written
    assert_png(run / "curves.png", 1200, 600)


def _no_metrics(tmp_path):
    (tmp_path / "bare").mkdir()
    return [
        str(tmp_path / "bare")
    ], f"{tmp_path / 'bare'} is not a run directory: it has no metrics.jsonl"


def _bad_line(tmp_path):
    run = write_run(tmp_path, "run")
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines[2] = '{"step": 30, "split": "train", "loss": 1.0'
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return [str(run)], f"{run / 'metrics.jsonl'}, line 3: not valid JSON"


def _bad_utf8(tmp_path):
    run = write_run(tmp_path, "run")
    lines = (run / "metrics.jsonl").read_bytes().splitlines()
    lines[3] = b'{"step": 40, "split": "train", "loss": 1.0, "note": "\xff"}'
    (run / "metrics.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return [str(run)], f"{run / 'metrics.jsonl'}, line 4: not UTF-8 text"


def _no_step(tmp_path):
    run = write_run(tmp_path, "run")
    metrics = run / "metrics.jsonl"
    line = len(metrics.read_text().splitlines()) + 1
    with open(metrics, "a") as f:
        f.write('{"split": "train", "loss": 1.0}\n')
    return [str(run)], f"{metrics}, line {line}: expected an object with an integer 'step'"


def _empty(tmp_path):
    run = write_run(tmp_path, "run")
    (run / "metrics.jsonl").write_text("\n")
    return [str(run)], f"{run / 'metrics.jsonl'} is empty"


def _bad_run_json(tmp_path):
    run = write_run(tmp_path, "run")
    (run / "run.json").write_text('{\n  "task": "boolq",\n  oops\n}')
    return [str(run)], f"{run / 'run.json'}, line 3: not valid JSON"


def _not_an_ensemble(tmp_path):
    (tmp_path / "x.json").write_text('{"step": 5, "results": {"boolq": {"accuracy": 1.0}}}')
    return [
        str(tmp_path / "x.json")
    ], f"{tmp_path / 'x.json'} is not a table written by `ptune ensemble"


@pytest.mark.parametrize(
    "make",
    [
        lambda p: ([str(p / "missing")], f"{p / 'missing'}: no such run directory or ensemble"),
        _no_metrics,
        _bad_line,
        _bad_utf8,
        _no_step,
        _empty,
        _bad_run_json,
        _not_an_ensemble,
    ],
    ids=[
        "missing",
        "no-metrics",
        "bad-line",
        "bad-utf8",
        "no-step",
        "empty",
        "bad-run-json",
        "not-ensemble",
    ],
)
def test_bad_input_raises_one_line_naming_the_file_and_writes_nothing(tmp_path, make):
    paths, expected = make(tmp_path)
    good = write_run(tmp_path, "good")
    with pytest.raises(UserError, match=re.escape(expected)) as error:
        report.write_report([str(good), *paths], str(tmp_path / "out"))
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()
