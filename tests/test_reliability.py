"""Faults a shared cluster produces, on real stores and real processes (no mocks).

Established here (jobs/claims.py, jobs/repair.py, suite/store.py, jobs/executors.py):

* eight ``nnqs run`` started at once on one fresh store path compute each of its 64
  tasks exactly once, aggregate once, and leave a store bitwise equal to a serial run;
* a store preparation killed midway leaves a staging folder that the next run of that
  store removes, while a live creator's staging is left alone;
* a corrupt task found by a plain ``nnqs run`` is recomputed before aggregating;
* a damaged prepared array (``phi``) is found by ``status --verify`` and rebuilt from
  the spec by the next run; a garbage or invalid manifest record is named (store and
  task) and ``nnqs repair`` makes it pending; a lost root ``zarr.json`` is rebuilt by
  ``nnqs repair --spec`` -- each time the store ends bitwise equal to an intact run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import suite  # noqa: F401  (first: enables JAX float64)

# isort: split

import pytest
from stores import assert_identical, run_nnqs, tiny_dynamics

from jobs.claims import CLAIMS
from nnqs import cli
from suite.store import SweepStore


def _spec(tmp: Path, text: str, name: str = "tiny.toml") -> Path:
    path = tmp / name
    path.write_text(text)
    return path


def _nnqs(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nnqs", *argv], capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny dynamics sweep (8 tasks), run whole and aggregated: (spec, store)."""
    tmp = tmp_path_factory.mktemp("reference")
    spec = _spec(tmp, tiny_dynamics("tiny", seed=3, widths=[16, 48], max_steps=40))
    store = tmp / "reference.zarr"
    assert cli.main(["run", str(spec), "--store", str(store)]) == 0
    return spec, store


def _copy_of(reference: Path, tmp: Path) -> Path:
    """A copy of the reference store to damage (``cp -a``: byte for byte)."""
    copy = tmp / "damaged.zarr"
    subprocess.run(["cp", "-a", str(reference), str(copy)], check=True)
    return copy


def _rerun_restores(spec: Path, store: Path, intact: Path, recomputed: int) -> dict[str, Any]:
    """``nnqs run`` on the damaged ``store`` recomputes ``recomputed`` tasks, aggregates, and
    leaves it bitwise equal to ``intact``; its answer."""
    answer = run_nnqs("run", str(spec), "--store", str(store))
    assert answer["tasks_run"] == recomputed and answer["aggregated"]
    assert_identical(store, intact)
    return answer


@pytest.mark.slow
def test_eight_concurrent_runners_compute_every_task_once(tmp_path: Path) -> None:
    # one grid point, 64 shards of 2 members: 64 tasks
    text = tiny_dynamics("crowd", seed=5, widths=[16], max_steps=10).replace(
        "members = 8", "members = 128"
    )
    spec = _spec(tmp_path, text)
    store = tmp_path / "crowd.zarr"
    runners = [
        subprocess.Popen(
            [sys.executable, "-m", "nnqs", "run", str(spec), "--store", str(store)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    outputs = [runner.communicate(timeout=900) for runner in runners]
    assert [r.returncode for r in runners] == [0] * 8, [err[-2000:] for _, err in outputs]
    answers = [json.loads(out) for out, _ in outputs]
    assert sum(answer["tasks_run"] for answer in answers) == 64  # each task computed once
    # the last runner to finish a task sees them all done, and aggregates
    assert sum(answer["aggregated"] for answer in answers) >= 1
    status = run_nnqs("status", str(store), "--verify")
    assert status["tasks"]["done"] == 64 and status["aggregated"]
    assert not (store / CLAIMS).exists()  # every claim released
    assert not list(tmp_path.glob(".crowd.zarr.*.creating"))  # the losers' staging removed

    serial = tmp_path / "serial.zarr"
    assert cli.main(["run", str(spec), "--store", str(serial)]) == 0
    assert_identical(store, serial)


@pytest.mark.slow
def test_a_killed_preparation_is_cleaned_up_by_the_next_run(
    tmp_path: Path, reference: tuple[Path, Path]
) -> None:
    spec, intact = reference
    store = tmp_path / "s.zarr"
    live = tmp_path / f".s.zarr.{os.uname().nodename}.{os.getpid()}.{'0' * 32}.creating"
    live.mkdir()  # a staging folder of a live process (this one): never touched
    process = subprocess.Popen(
        [sys.executable, "-m", "nnqs", "run", str(spec), "--store", str(store)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not [
        p for p in tmp_path.glob(".s.zarr.*.creating") if p != live
    ]:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    orphans = [p for p in tmp_path.glob(".s.zarr.*.creating") if p != live]
    assert orphans and not store.exists()

    assert run_nnqs("run", str(spec), "--store", str(store))["aggregated"]
    assert not any(p.exists() for p in orphans)
    assert live.is_dir()
    assert_identical(store, intact)


@pytest.mark.slow
def test_a_plain_run_recomputes_a_corrupt_task_before_aggregating(
    tmp_path: Path, reference: tuple[Path, Path]
) -> None:
    spec, intact = reference
    store = _copy_of(intact, tmp_path)
    # task 5: width index 1, shard 1 -> chunk (0, 0, 1, 1, 0, 0) of sum_uu: flip one bit
    chunk = store / "sum_uu" / "c" / "0" / "0" / "1" / "1" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x10
    chunk.write_bytes(bytes(data))

    answer = _rerun_restores(spec, store, intact, recomputed=1)
    assert answer["tasks"]["corrupt"] == 0


@pytest.mark.slow
def test_a_damaged_prepared_array_is_found_and_rebuilt_from_the_spec(
    tmp_path: Path, reference: tuple[Path, Path]
) -> None:
    spec, intact = reference
    store = _copy_of(intact, tmp_path)
    (store / "phi" / "c" / "0").unlink()  # the target's only chunk

    verify = _nnqs("status", str(store), "--verify")
    assert verify.returncode == 1
    assert "phi" in json.loads(verify.stdout)["problems"]

    _rerun_restores(spec, store, intact, recomputed=0)
    assert SweepStore(store).damaged_prepared() == []


@pytest.mark.slow
def test_damaged_manifest_records_are_named_then_repaired(
    tmp_path: Path, reference: tuple[Path, Path]
) -> None:
    spec, intact = reference
    store = _copy_of(intact, tmp_path)
    (store / "manifest" / "c" / "3").write_bytes(b"\x00garbage\xff" * 4)
    SweepStore(store).group["manifest"][4] = '{"state": "done", "checksum'  # cut short

    for command in (["status", str(store)], ["run", str(spec), "--store", str(store)]):
        result = _nnqs(*command)
        assert result.returncode == 2, result.stderr
        line = result.stderr.strip()
        assert "\n" not in line and "Traceback" not in line
        assert str(store) in line and "task 3" in line and "nnqs repair" in line

    repaired = run_nnqs("repair", str(store))
    assert repaired["tasks_now_pending"] == [3, 4]
    _rerun_restores(spec, store, intact, recomputed=2)


@pytest.mark.slow
def test_a_lost_manifest_is_rebuilt_with_every_task_pending(
    tmp_path: Path, reference: tuple[Path, Path]
) -> None:
    spec, intact = reference
    store = _copy_of(intact, tmp_path)
    shutil.rmtree(store / "manifest")

    status = _nnqs("status", str(store))
    assert status.returncode == 2 and "manifest" in status.stderr
    assert "nnqs repair" in status.stderr and "Traceback" not in status.stderr
    assert run_nnqs("repair", str(store))["tasks_now_pending"] == list(range(8))
    _rerun_restores(spec, store, intact, recomputed=8)


@pytest.mark.slow
def test_lost_root_metadata_is_rebuilt_from_the_spec(
    tmp_path: Path, reference: tuple[Path, Path]
) -> None:
    spec, intact = reference
    store = _copy_of(intact, tmp_path)
    (store / "zarr.json").write_text('{"zarr_format": 3, "node_type": "gro')

    status = _nnqs("status", str(store))
    assert status.returncode == 2 and "nnqs repair" in status.stderr
    assert "--spec" in _nnqs("repair", str(store)).stderr  # the spec is needed
    repaired = run_nnqs("repair", str(store), "--spec", str(spec))
    assert repaired["root_metadata_rebuilt"] and repaired["tasks_now_pending"] == []
    _rerun_restores(spec, store, intact, recomputed=0)
