"""`ptune plan` compiles the sharded train step from shapes alone on simulated CPU devices that
it creates itself from --mesh_shape, and reports per-device memory; prompt tuning holds
(almost) no optimizer state and less than model tuning; bad meshes are one clear error."""

import re
import shlex
import subprocess
import sys

import pytest

TINY = [
    "--gin_file=models/t5_1_1_tiny.gin",
    "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 4}",
    "--gin.BATCH_SIZE=8",
    "--gin.t5.T5Config.vocab_size=64",
]


def _plan(*args):
    return subprocess.run(
        [sys.executable, "-m", "ptune.cli", "plan", *args],
        capture_output=True,
        text=True,
        cwd="/",
        timeout=300,
    )


def _bytes(stdout: str, name: str) -> int:
    return int(re.search(rf"{name}:\s+([\d,]+) bytes", stdout).group(1).replace(",", ""))


# Both plans on the 2x4 mesh, one `ptune plan` command after the other in one process (one
# start-up, the same 8 simulated devices); a line before each names it.
PLANS_2X4 = """
import sys
from ptune import cli
for name, argv in {plans!r}.items():
    print("=== plan", name, flush=True)
    code = cli.main(["plan", *argv])
    if code:
        sys.exit(code)
print("=== imported", [m for m in ("tensorflow", "seqio") if m in sys.modules])
"""


@pytest.fixture(scope="module")
def plans_2x4():
    mesh = "--mesh_shape=2,4"
    plans = {
        "prompt": [
            *TINY,
            "--gin_file=runs/prompt_tuning.gin",
            "--gin.PROMPT_LENGTH=4",
            mesh,
            "--gin.trainer.TrainConfig.frozen_dtype='bfloat16'",
        ],
        "model": [*TINY, "--gin_file=runs/model_tuning.gin", mesh],
    }
    proc = subprocess.run(
        [sys.executable, "-c", PLANS_2X4.format(plans=plans)],
        capture_output=True,
        text=True,
        cwd="/",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, prompt, model, imported = re.split(
        r"^=== (?:plan prompt\n|plan model\n|imported)", proc.stdout, flags=re.MULTILINE
    )
    return {"prompt": prompt, "model": model, "imported": imported.strip()}


@pytest.fixture(scope="module")
def prompt_plan(plans_2x4):
    return plans_2x4["prompt"]


def test_plan_reports_per_device_memory_on_a_simulated_mesh(prompt_plan):
    lines = prompt_plan.strip().splitlines()
    assert "mesh: 2x4 (data x model), 8 devices" in lines
    peak = int(re.fullmatch(r"per_device_bytes: (\d+)", lines[-1]).group(1))
    assert peak == _bytes(prompt_plan, "peak") > 0
    # tiny T5 1.1 (emb 4): prompt [4, 4] float32 replicated, every device holds all of it.
    assert _bytes(prompt_plan, "trainable params") == 4 * 4 * 4
    # bfloat16 frozen weights: 2 bytes each, vocab/mlp/heads split 4 ways on `model`.
    assert 0 < _bytes(prompt_plan, "frozen params") < 2 * 700
    assert _bytes(prompt_plan, "arguments") >= _bytes(prompt_plan, "frozen params")


def test_plan_starts_without_tensorflow(plans_2x4):
    # A plan compiles from shapes and reads no data: TensorFlow's start-up (about 5 s of a
    # tiny plan's 9 on 2 cores) is not paid; commands that read data import it quietly.
    assert plans_2x4["imported"] == "[]"


def test_model_tuning_holds_more_per_device_than_prompt_tuning(plans_2x4, prompt_plan):
    model_plan = plans_2x4["model"]
    assert _bytes(model_plan, "frozen params") == 0
    assert _bytes(model_plan, "optimizer state") > 10 * _bytes(prompt_plan, "optimizer state")
    # On this tiny model activations dominate the peak; the weights' share shows the saving.
    assert _bytes(model_plan, "arguments") > 1.5 * _bytes(prompt_plan, "arguments")


def test_bad_plan_input_is_one_line(capsys):
    from ptune import cli  # a malformed mesh stops before any device exists: in this process

    assert cli.main(["plan", *TINY, "--gin_file=runs/prompt_tuning.gin", "--mesh_shape=4"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "ptune: error: --mesh_shape must be DATA,MODEL (e.g. 4,4), got '4'"
    )
    # No --mesh_shape and no mesh in the gin files (experiments/*.gin set one): said, no plan.
    assert cli.main(["plan", *TINY, "--gin_file=runs/prompt_tuning.gin"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "ptune: error: give --mesh_shape=DATA,MODEL: the gin files set no "
        "partitioning.MeshConfig.mesh_shape to plan for"
    )
    bad_mesh = "--gin.partitioning.MeshConfig.mesh_shape=(8,)"
    assert cli.main(["plan", *TINY, "--gin_file=runs/prompt_tuning.gin", bad_mesh]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "ptune: error: mesh_shape must be two positive sizes (data, model), got (8,)"
    )
    # Refused before jax makes the devices: a million would never finish.
    assert (
        cli.main(["plan", *TINY, "--gin_file=runs/prompt_tuning.gin", "--mesh_shape=1000,1000"])
        == 2
    )
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "ptune: error: mesh 1000,1000 is 1,000,000 devices; `ptune plan` simulates at most "
        "16,384 (the largest TPU pod slices have 8,960 chips)"
    )
    assert cli.main(["plan", *TINY, "--gin_file=runs/prompt_tuning.gin", "--mesh_shape=3,1"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "ptune: error: batch size 8 is not divisible by the data axis (3); choose a multiple of 3"
    )


def test_fit_settings_are_the_splits_of_the_devices_cheapest_first():
    from ptune import plan_fit

    settings = plan_fit.candidate_settings(8, batch_size=4, frozen_weights=True)
    assert {s.mesh_shape for s in settings} == {(4, 2), (2, 4), (1, 8)}  # data must divide 4
    first = settings[0]
    assert first == plan_fit.Setting((4, 2))  # nothing changed but the smallest model split
    assert [s.cost for s in settings] == sorted(s.cost for s in settings)
    assert settings[-1].frozen_dtype == "bfloat16" and settings[-1].remat_policy == "full"
    model_tuning = plan_fit.candidate_settings(8, batch_size=8, frozen_weights=False)
    assert all(s.frozen_dtype is None for s in model_tuning)
    assert (8, 1) in {s.mesh_shape for s in model_tuning}
    frugal = plan_fit.Setting((2, 4), "full", "bfloat16", "bfloat16", 2)
    assert frugal.saves_at_least_as_much_as(plan_fit.Setting((2, 4), "minimal"))
    assert not plan_fit.Setting((2, 4), "minimal").saves_at_least_as_much_as(frugal)
    assert not frugal.saves_at_least_as_much_as(plan_fit.Setting((4, 2)))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("16GiB", 16 * 2**30),
        ("16G", 16 * 2**30),
        ("1.5GiB", 3 * 2**29),
        ("16GB", 16 * 10**9),
        ("512MiB", 2**29),
        ("17179869184", 2**34),
    ],
)
def test_fit_budget_sizes(text, expected):
    from ptune import plan_fit

    assert plan_fit.parse_bytes(text) == expected


def _per_device(stdout: str) -> int:
    return int(re.search(r"^per_device_bytes: (\d+)$", stdout, re.MULTILINE).group(1))


def test_fit_prints_the_cheapest_setting_that_fits_and_its_flags_reproduce_it(capsys):
    """One device: the default setting's bytes, then a budget one byte below them makes
    `--fit` pick a costlier setting that fits; `ptune plan` with the printed flags reports
    the same bytes. A budget nothing meets says so and exits 1. A 1x1 mesh needs no
    simulated devices, so every plan runs in this process (one import, shared traces)."""
    from ptune import cli

    run = [*TINY, "--gin_file=runs/prompt_tuning.gin", "--gin.PROMPT_LENGTH=4"]

    def plan(*args):
        capsys.readouterr()
        code = cli.main(["plan", *run, "--mesh_shape=1,1", *args])
        out = capsys.readouterr()
        return code, out.out, out.err

    code, roomy, err = plan("--fit=1GiB")
    assert code == 0, err[-3000:]
    assert "cheapest that fits: mesh 1x1, remat none, activations float32, frozen float32" in (
        roomy
    )
    default = _per_device(roomy)
    code, tight, err = plan(f"--fit={default - 1}B")
    assert code == 0, tight + err[-3000:]
    chosen = _per_device(tight)
    assert chosen < default
    pasted = [line for line in tight.splitlines() if line.startswith("  --gin.")]
    flags = shlex.split(" ".join(pasted))  # as a shell reads them when pasted
    assert len(flags) == 6
    code, replay, err = plan(*flags)
    assert code == 0, err[-3000:]
    assert _per_device(replay) == chosen
    code, nothing, _ = plan("--fit=1KiB")
    assert code == 1
    assert "nothing fits in 0.00 GiB per device; the smallest is" in nothing
    code, _, err = plan("--fit=lots")
    assert code == 2
    assert err.strip().splitlines()[-1] == (
        "ptune: error: --fit needs a memory size like 16GiB, got 'lots'"
    )
