"""Scale guards (README "Scale on this machine"): what grows with the basis D, the train
size B and the number of shards stays ``O(D B)`` in memory, never ``O(D^2)``, and the
memory estimate of a spec covers every phase that runs it.

* store preparation holds one supervised problem (its ``O(D B)`` kernels) at a time;
* preparing a TFIM 4x4 dynamics sweep (D = 65,536) allocates no ``D x D`` array;
* the estimates of ``jobs.studies`` cover the measured peak of preparing a store and of
  running a shard (a subprocess each, its own peak resident set size).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
import weakref
from pathlib import Path
from typing import Any

import suite  # noqa: F401  (first: enables JAX float64)

# isort: split

import pytest

from jobs.registry import study
from jobs.spec import load_spec, parse_spec
from jobs.studies import memory_estimates, problems

REPO = Path(__file__).resolve().parents[1]


def dynamics_spec(lattice: tuple[int, int], train_sizes: list[int], **extra: Any) -> Any:
    """A small dynamics spec on a TFIM lattice (two widths, 8 members, 20 steps)."""
    return parse_spec(
        {
            "sweep": {"name": "scale", "study": "dynamics", "dtype": "float32"},
            "target": {"model": "tfim", "lx": lattice[0], "ly": lattice[1]},
            "grid": {"widths": [16, 32], "train_sizes": train_sizes},
            "ensemble": {"members": 8, "shard_size": 4},
            "training": {"log_points": 5, "max_steps": 20},
            **extra,
        },
        "scale.toml",
    )


def test_preparation_holds_one_problem_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each problem is released before the next is built (in both passes of the layout)."""
    built = problems.split_problem
    alive: list[weakref.ref[Any]] = []

    def split_problem(*args: Any, **kwargs: Any) -> Any:
        assert all(ref() is None for ref in alive), "an earlier problem is still held"
        problem = built(*args, **kwargs)
        alive.append(weakref.ref(problem))
        return problem

    monkeypatch.setattr(problems, "split_problem", split_problem)
    study("dynamics").layout(dynamics_spec((2, 3), [8, 16]))
    assert len(alive) == 4  # two train sizes, two passes
    study("kernels").layout(
        parse_spec(
            {
                "sweep": {"name": "k", "study": "kernels"},
                "target": {"model": "tfim", "lx": 2, "ly": 3},
                "grid": {"widths": [16], "train_sizes": [8, 16]},
                "ensemble": {"members": 2, "shard_size": 2},
            },
            "k.toml",
        )
    )
    assert len(alive) == 6


@pytest.mark.slow
def test_tfim_4x4_preparation_allocates_no_basis_squared_array() -> None:
    """TFIM 4x4 (D = 65,536), B = 16: a ``D x D`` array (even of bools: 4 GiB) would show in
    the traced peak; the layout's own arrays are ``O(D B)`` (the kernels, about 64 MiB)."""
    spec = dynamics_spec((4, 4), [16])
    tracemalloc.start()
    try:
        layout = study("dynamics").layout(spec)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    dimension = 2**16
    assert peak < dimension**2 / 16
    assert peak < 1 << 30
    assert {array.shape for array in layout.arrays if array.name == "ntk_basis_train"} == {
        (1, 4, dimension, 16)
    }
    assert not any(a.name in ("ntk", "nngp") for a in layout.arrays)  # kernels.full is off


# the peak of this process image: VmHWM (ru_maxrss would include the RSS of the parent it
# was spawned from, which the kernel carries across exec)
_PHASES = """
import json, sys
import suite
from jobs.spec import load_spec
from jobs.studies import expand
from jobs.sweep import execute_task, open_sweep
spec = load_spec(sys.argv[1])
if sys.argv[3] == "preparation":
    open_sweep(spec, sys.argv[2])
else:
    execute_task(sys.argv[2], len(expand(spec)) - 1)  # the widest
status = open("/proc/self/status").read().split("VmHWM:")[1].split()
print(json.dumps(int(status[0]) * 1024))
"""


def _peak(spec_path: Path, store: Path, phase: str) -> int:
    """Peak resident set size (bytes) of a fresh process running one phase."""
    done = subprocess.run(
        [sys.executable, "-c", _PHASES, str(spec_path), str(store), phase],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return int(json.loads(done.stdout.splitlines()[-1]))


@pytest.mark.slow
def test_memory_estimates_cover_the_measured_phases(tmp_path: Path) -> None:
    """TFIM 4x4, B = 256 (the problem's kernels: 1 GiB), width 256: the estimates of
    preparing the store and of a shard are above the measured peaks, and not far above."""
    text = (REPO / "jobs" / "specs" / "scale-tfim4x4.toml").read_text()
    text = text.replace("train_sizes = [256, 1024]", "train_sizes = [256]")
    text = text.replace("max_steps = 100", "max_steps = 20")
    assert "train_sizes = [256]" in text and "max_steps = 20" in text
    spec_path = tmp_path / "scale-tfim4x4.toml"
    spec_path.write_text(text)
    estimates = memory_estimates(load_spec(spec_path))
    store = tmp_path / "s.zarr"
    for phase in ("preparation", "shard"):
        measured = _peak(spec_path, store, phase)
        assert measured < estimates[phase] < 2.5 * measured, (phase, measured, estimates)
