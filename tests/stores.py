"""Helpers shared by the store tests: run ``nnqs`` as a user does, compare stores bytewise."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from suite.store import MANIFEST


def tiny_dynamics(
    name: str, seed: int, widths: list[int], max_steps: int, lr_factor: float = 0.5
) -> str:
    """A dynamics spec small enough for a test: TFIM 2x3 (64 states), B = 12, 8 members in
    shards of 2, float64 (so runs compare bit for bit); ``lr_factor`` 0.5 is the default."""
    return f"""
[sweep]
name = "{name}"
study = "dynamics"
seed = {seed}
dtype = "float64"
[target]
model = "tfim"
lx = 2
ly = 3
[grid]
widths = {widths}
train_sizes = [12]
lr_factors = [{lr_factor}]
[ensemble]
members = 8
shard_size = 2
[training]
log_points = 5
max_steps = {max_steps}
"""


def run_nnqs(*argv: str, env: dict[str, str] | None = None, timeout: float = 600) -> Any:
    """``nnqs ARGV`` in a fresh process; its JSON answer (``{}`` when it printed none).

    Its exit status must be the documented one: 1 when the answer counts failed or
    corrupt tasks, 0 otherwise (bad input, 2, fails here).
    """
    result = subprocess.run(
        [sys.executable, "-m", "nnqs", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr[-3000:]
    answer = json.loads(result.stdout) if result.stdout.strip() else {}
    counts = answer.get("tasks", {}) if isinstance(answer, dict) else {}
    problems = counts.get("failed", 0) + counts.get("corrupt", 0)
    assert result.returncode == (1 if problems else 0), (result.returncode, counts)
    return answer


def results(path: Path) -> dict[str, np.ndarray]:
    """Every array of a store but the manifest (whose records name hosts and pids)."""
    group = zarr.open_group(path, mode="r")
    return {name: np.asarray(a[...]) for name, a in group.arrays() if name != MANIFEST}


def assert_identical(a: Path, b: Path) -> None:
    """The two stores hold the same arrays, bit for bit (NaN equal to NaN)."""
    first, second = results(a), results(b)
    assert first.keys() == second.keys()
    for name, values in first.items():
        assert values.dtype == second[name].dtype, name
        assert np.array_equal(values, second[name], equal_nan=values.dtype.kind in "fc"), name
