"""The package as users get it: build the wheel, install it apart from the source tree, and run
the CLI from outside the repository (catches files missing from the package)."""

import os
import subprocess
import sys
import zipfile

from conftest import REPO


def test_wheel_ships_gin_files_tasks_and_demo_data_and_runs_outside_the_tree(tmp_path):
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            REPO,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = [f for f in os.listdir(tmp_path / "dist") if f.endswith(".whl")]
    names = zipfile.ZipFile(tmp_path / "dist" / wheel).namelist()
    assert "ptune/gin/models/t5_1_1_xxl.gin" in names
    assert "ptune/gin/runs/prompt_tuning.gin" in names
    assert "ptune/gin/prompts/class_labels.gin" in names
    assert "ptune/gin/experiments/figure1_prompt_tuning_xxl.gin" in names
    assert "ptune/tasks/superglue.py" in names
    assert "ptune/tasks/data/demo/train.jsonl" in names
    shipped_model = {  # the demo's pretrained model, every file of it
        "ptune/tasks/" + os.path.relpath(os.path.join(d, f), os.path.join(REPO, "tasks"))
        for d, _, files in os.walk(os.path.join(REPO, "tasks", "data", "demo", "model"))
        for f in files
    }
    assert len(shipped_model) > 5 and shipped_model <= set(names)
    sources = {  # every module of every subpackage (a package left out of setup.py's list)
        os.path.relpath(os.path.join(d, f), REPO)
        for d, _, files in os.walk(os.path.join(REPO, "ptune"))
        for f in files
        if f.endswith(".py")
    }
    assert "ptune/family/interface.py" in sources and "ptune/findings/design.py" in sources
    assert sources <= set(names), sorted(sources - set(names))
    assert not any(n.startswith(("tasks/", "gin/", "tests/")) for n in names)

    site = tmp_path / "site"
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(site),
            str(tmp_path / "dist" / wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    env = dict(os.environ, PYTHONPATH=str(site))
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import ptune, ptune.tasks, ptune.ginconfig as g; "
            "print(ptune.__file__); print(g.GIN_DIR); "
            "from ptune.tasks import registry; print(len(registry.list_tasks()))",
        ],
        capture_output=True,
        text=True,
        cwd=str(tmp_path),
        env=env,
        timeout=300,
    )
    assert probe.returncode == 0, probe.stderr[-2000:]
    module_file, gin_dir, count = probe.stdout.split()[-3:]
    assert module_file.startswith(str(site)) and gin_dir.startswith(str(site))
    assert int(count) > 80
    info = subprocess.run(
        [
            sys.executable,
            "-m",
            "ptune.cli",
            "info",
            "--gin_file=models/t5_1_1_small.gin",
            "--no_tree",
        ],
        capture_output=True,
        text=True,
        cwd=str(tmp_path),
        env=env,
        timeout=300,
    )
    assert info.returncode == 0, info.stderr[-2000:]
    assert info.stdout.strip().splitlines()[-1] == "total_params: 76961152"
