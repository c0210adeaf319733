"""An installed ``nnqs`` works outside the source checkout: specs, cluster profiles,
batch templates and bench references are package data (pyproject.toml), and the
command line lists every command."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from nnqs.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "target", "demo", "run", "validate", "status", "resubmit",
    "aggregate", "report", "bench",
}  # fmt: skip


def test_help_lists_every_command() -> None:
    text = build_parser().format_help()
    for command in COMMANDS:
        assert command in text, command


@pytest.mark.slow
def test_the_installed_wheel_runs_outside_the_checkout(tmp_path: Path) -> None:
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    assert uv, "uv is installed in the project's venv by make setup"
    subprocess.run(
        [uv, "build", "--wheel", "--out-dir", str(tmp_path / "dist"), "-q", str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("nnqs_suite-*.whl")
    # the wheel holds the checkout's modules, no more (a stale build/ folder would add some)
    with zipfile.ZipFile(wheel) as archive:
        packed = {name for name in archive.namelist() if name.endswith(".py")}
    tracked = subprocess.run(
        ["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    packages = ("suite/", "jobs/", "analysis/", "nnqs/", "gpu/")
    assert packed == {name for name in tracked if name.startswith(packages)}
    site = tmp_path / "site"
    subprocess.run(
        [uv, "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}  # before the checkout's editable install
    probe = (
        "import json, jobs, analysis.bench.records as r; from jobs.profiles import "
        "load_profile, render_sbatch; p = load_profile('local'); "
        "print(json.dumps([jobs.__file__, str(r.REFERENCE_DIR), "
        "len(render_sbatch('sweep-mpi', p, spec='x', store='y', ranks=2))]))"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe], cwd=elsewhere, env=env, capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip
    assert found.returncode == 0, found.stderr[-2000:]
    module, references, script = json.loads(found.stdout)
    assert Path(module).is_relative_to(site) and Path(references).is_relative_to(site)
    assert any(Path(references).glob("*.json")) and script > 0
    plan = subprocess.run(
        [sys.executable, "-m", "nnqs", "validate", "paper-tfim", "--gflops", "10"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert plan.returncode == 0, plan.stderr[-2000:]
    assert json.loads(plan.stdout)["tasks"] == 160
    assert list(elsewhere.iterdir()) == []
