"""Mid-task checkpoints (README "Checkpoints"; suite.training.checkpoint, jobs.checkpoints).

* the engine: a run stopped after any slice and resumed from its snapshot ends with the
  bits of a run that never stopped (fast and autodiff updates, float32 and float64);
* a local ``nnqs run`` killed by SIGKILL mid-task: the rerun resumes from the task's
  last checkpoint and the store is bitwise equal to an uninterrupted run's;
* a damaged checkpoint is named and skipped: the older one is used, or step 0, with the
  same bits at the end;
* the cadence never changes the results: a store checkpointed at every logged step
  equals one never checkpointed.

The SLURM case (a task three times longer than its array element's time limit) is in
tests/test_slurm_sweep.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
import pytest
from stores import assert_identical, run_nnqs, tiny_dynamics

from jobs import checkpoints
from jobs.spec import Checkpoint, parse_spec, store_spec
from jobs.sweep import open_sweep
from suite import networks, targets
from suite.lattice import Lattice
from suite.losses import Energy, Infidelity, SparseRows
from suite.operators import tfim_hamiltonian
from suite.store import SweepStore
from suite.training import train_ensemble, train_on_loss
from suite.training.checkpoint import MAX_SLICE_STEPS, SLICES, Snapshot, slice_bounds


class _Stop(Exception):
    pass


class _Memory:
    """Checkpoints kept in memory: the run stops (raises) after the slice ending at
    ``stop_at``, keeping its snapshot, which the next run restores."""

    def __init__(self, stop_at: int | None = None, saved: Snapshot | None = None) -> None:
        self.stop_at, self.saved = stop_at, saved
        self.refused: str | None = None

    def restore(self, accept: Callable[[Snapshot], str | None]) -> Snapshot | None:
        if self.saved is not None:
            self.refused = accept(self.saved)
        return self.saved if self.refused is None else None

    def reached(self, step: int, logged: int, snapshot: Callable[[], Snapshot]) -> None:
        if step == self.stop_at:
            self.saved = snapshot()
            raise _Stop


def _problem() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    basis = targets.basis_of(targets.make_spec("tfim", lx=2, ly=3))
    x = basis.inputs()
    rng = np.random.default_rng(4)
    phi = rng.normal(size=x.shape[0]) + 1j * rng.normal(size=x.shape[0])
    return x, phi, np.arange(0, x.shape[0], 3)


@pytest.mark.parametrize(
    ("method", "dtype"),
    [("fast", "float32"), ("fast", "float64"), ("autodiff", "float32"), ("autodiff", "float64")],
)
def test_a_run_resumed_after_any_slice_ends_with_the_same_bits(method: str, dtype: str) -> None:
    x, phi, train = _problem()
    steps = np.array([0, 1, 3, 10, 40, 700])
    kwargs: dict[str, Any] = dict(
        seed=7, members=np.arange(5), learning_rate=0.05, log_steps=steps, dtype=dtype,
        method=method,
    )  # fmt: skip
    nnqs = networks.decoupled(networks.mlp(width=24, depth=1), networks.mlp(width=24, depth=1))
    whole = train_ensemble(nnqs, x, phi, train, **kwargs)
    bounds = slice_bounds(steps)
    assert bounds.size > steps.size  # the 700-step segment is cut into slices
    for stop_at in (1, 10, int(bounds[bounds > 40][0]), int(bounds[-2])):
        first = _Memory(stop_at)
        with pytest.raises(_Stop):
            train_ensemble(nnqs, x, phi, train, checkpoints=first, **kwargs)
        assert first.saved is not None and first.saved.step == stop_at
        assert first.saved.logged == int(np.sum(steps <= stop_at))
        resumed = train_ensemble(
            nnqs, x, phi, train, checkpoints=_Memory(saved=first.saved), **kwargs
        )
        for name in ("train_loss", "test_loss", "sum_u", "sum_v", "sum_uu", "sum_vv", "sum_uv"):
            assert np.array_equal(getattr(resumed, name), getattr(whole, name)), (stop_at, name)


@pytest.mark.parametrize("method", ["fast", "autodiff"])
def test_a_run_on_any_loss_resumed_after_a_slice_ends_with_the_same_bits(method: str) -> None:
    """The same for :func:`suite.training.train_on_loss` (energy loss, an observable)."""
    x = targets.basis_of(targets.make_spec("tfim", lx=2, ly=3)).inputs()
    hamiltonian = tfim_hamiltonian(Lattice(2, 3), J=1.0, h=2.0)
    loss = Energy(SparseRows.from_csr(hamiltonian))
    ground = Infidelity(jnp.asarray(np.linalg.eigh(hamiltonian.toarray())[1][:, 0]))
    steps = np.array([0, 3, 40, 700])
    kwargs: dict[str, Any] = dict(
        seed=2, members=np.arange(3), learning_rate=0.02, log_steps=steps, method=method,
        observables={"infidelity": ground},
    )  # fmt: skip
    nnqs = networks.mlp_nnqs("decoupled", "relu", 1, 24)
    whole = train_on_loss(nnqs, x, loss, **kwargs)
    stop_at = int(slice_bounds(steps)[-3])
    first = _Memory(stop_at)
    with pytest.raises(_Stop):
        train_on_loss(nnqs, x, loss, checkpoints=first, **kwargs)
    assert first.saved is not None and first.saved.values.shape == (3, 2, 3)
    resumed = train_on_loss(nnqs, x, loss, checkpoints=_Memory(saved=first.saved), **kwargs)
    for name in ("loss", "infidelity"):
        assert np.array_equal(resumed.values[name], whole.values[name]), name
    assert np.array_equal(resumed.sum_uv, whole.sum_uv)
    # a snapshot of another problem, with the same shapes, does not resume this run:
    # another field (the same loss type) ...
    other_field = Energy(SparseRows.from_csr(tfim_hamiltonian(Lattice(2, 3), J=1.0, h=1.0)))
    other = _Memory(stop_at)
    with pytest.raises(_Stop):
        train_on_loss(nnqs, x, other_field, checkpoints=other, **kwargs)
    refusing = _Memory(saved=other.saved)
    again = train_on_loss(nnqs, x, loss, checkpoints=refusing, **kwargs)
    assert refusing.refused is not None and "Energy" in refusing.refused
    assert np.array_equal(again.values["loss"], whole.values["loss"])
    # ... or a supervised run (also two values per member: train and test loss)
    supervised = _Memory(stop_at)
    with pytest.raises(_Stop):
        train_ensemble(nnqs, x, np.ones(x.shape[0]), np.arange(10), checkpoints=supervised,
                       **{k: v for k, v in kwargs.items() if k != "observables"})  # fmt: skip
    assert supervised.saved is not None and supervised.saved.values.shape == (3, 2, 3)
    refusing = _Memory(saved=supervised.saved)
    train_on_loss(nnqs, x, loss, checkpoints=refusing, **kwargs)
    assert refusing.refused is not None and "update" in refusing.refused


def test_slices_cut_every_logged_step_and_at_most_every_last_over_slices_steps() -> None:
    steps = np.array([0, 5, 6, 1000, 9503])
    bounds = slice_bounds(steps)
    assert set(steps) <= set(bounds.tolist()) and bounds[0] == 0 and bounds[-1] == 9503
    assert np.diff(bounds).max() <= -(-9503 // SLICES)
    assert bounds.size <= SLICES + steps.size + 1
    long = slice_bounds(np.array([0, 10**6]))  # capped: a slice ends soon after a signal
    assert np.diff(long).max() == MAX_SLICE_STEPS and long.size == 10**6 // MAX_SLICE_STEPS + 1


def test_a_snapshot_of_another_run_is_refused_by_name_and_the_run_starts_at_step_0() -> None:
    x, phi, train = _problem()
    steps = np.array([0, 4, 9])
    nnqs = networks.decoupled(networks.mlp(width=8, depth=1), networks.mlp(width=8, depth=1))
    kwargs: dict[str, Any] = dict(
        seed=1, members=np.arange(3), learning_rate=0.05, log_steps=steps, dtype="float64"
    )
    first = _Memory(4)
    with pytest.raises(_Stop):
        train_ensemble(nnqs, x, phi, train, checkpoints=first, **kwargs)
    autodiff = _Memory(saved=first.saved)
    fresh = train_ensemble(nnqs, x, phi, train, method="autodiff", **kwargs)
    again = train_ensemble(nnqs, x, phi, train, checkpoints=autodiff, method="autodiff", **kwargs)
    assert autodiff.refused == "it holds the state of the 'fast' update, not 'autodiff'"
    assert np.array_equal(again.sum_u, fresh.sum_u)  # from step 0, not from the snapshot
    wider = networks.decoupled(networks.mlp(width=9, depth=1), networks.mlp(width=9, depth=1))
    other = _Memory(saved=first.saved)
    train_ensemble(wider, x, phi, train, checkpoints=other, **kwargs)
    assert other.refused == "its parameters do not have this run's shapes and dtype"
    later = _Memory(saved=first.saved)
    train_ensemble(nnqs, x, phi, train, checkpoints=later, **{**kwargs, "log_steps": [0, 5, 1500]})
    assert later.refused == "step 4 is not a slice bound of this run"


# ---------------------------------------------------------------------------------------
# in a store, through nnqs run
# ---------------------------------------------------------------------------------------

#: one task of ~20 s here: TFIM 3x3, width 256, 8 members, 2,000 steps in 40 logged steps
ONE_TASK = """
[sweep]
name = "checkpointed"
study = "dynamics"
seed = 5
dtype = "float64"
[target]
model = "tfim"
lx = 3
ly = 3
[grid]
widths = [256]
train_sizes = [96]
[ensemble]
members = 8
shard_size = 8
[training]
log_points = 40
max_steps = 2000
tolerance = 1e-9
"""


def _write(tmp: Path, name: str, checkpoint: str) -> Path:
    path = tmp / f"{name}.toml"
    path.write_text(ONE_TASK + checkpoint)
    return path


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one-task sweep run once, never checkpointed."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    store = tmp / "whole.zarr"
    spec = _write(tmp, "never", "[checkpoint]\nevery_seconds = 0\n")
    run_nnqs("run", str(spec), "--store", str(store))
    assert not (store / checkpoints.FOLDER).exists()
    return store


def _runs(store: Path) -> list[dict[str, Any]]:
    return SweepStore(store).record_of(0).info["checkpoint_runs"]


@pytest.mark.slow
def test_sigkill_mid_task_then_a_rerun_resumes_from_the_last_checkpoint(
    tmp_path: Path, uninterrupted: Path
) -> None:
    spec = _write(tmp_path, "every-log", "[checkpoint]\nevery_logs = 1\n")
    store = tmp_path / "killed.zarr"
    process = subprocess.Popen(
        [sys.executable, "-m", "nnqs", "run", str(spec), "--store", str(store), ],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    seen = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        seen = checkpoints.last_step(store, 0)
        if seen is not None and seen >= 400:
            break
        time.sleep(0.2)
    assert process.poll() is None, "the run ended before it could be killed mid-task"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    assert seen is not None and seen >= 400
    last_step = int(SweepStore(store).read("step")[-1])
    assert seen < last_step  # killed mid-task
    status = run_nnqs("status", str(store))
    assert status["tasks"]["failed"] == 1 and status["checkpointed_step"]["0"] >= seen

    run_nnqs("run", str(spec), "--store", str(store))
    assert_identical(store, uninterrupted)
    killed, rerun = _runs(store)
    # the rerun started from the killed run's last save, which is at or after what the
    # test saw: the steps computed twice are those since that save (under one cadence)
    assert rerun["resumed_from"] == killed["saved"] == status["checkpointed_step"]["0"]
    assert rerun["finished"] and "finished" not in killed
    assert not (store / checkpoints.FOLDER).exists()  # dropped once the task was done


def _flip_chunk(folder: Path) -> None:
    chunk = next(p for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "zarr.json")
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x10
    chunk.write_bytes(bytes(data))


def _recompute_task_0(store: Path) -> None:
    """Flip a bit of task 0's results, so that the next run recomputes it (corrupt)."""
    _flip_chunk(store / "sum_u")


@pytest.mark.slow
def test_a_damaged_checkpoint_is_skipped_for_the_older_one_then_for_step_0(
    tmp_path: Path, uninterrupted: Path
) -> None:
    spec = _write(tmp_path, "kept", "[checkpoint]\nevery_logs = 3\nkeep = true\n")
    store = tmp_path / "kept.zarr"
    run_nnqs("run", str(spec), "--store", str(store))
    assert_identical(store, uninterrupted)  # the cadence changes no bit
    folder = checkpoints.task_folder(store, 0)
    steps = {}
    for slot in checkpoints.SLOTS:
        steps[slot] = json.loads((folder / slot / "zarr.json").read_text())["attributes"]["step"]
    newest = max(steps, key=steps.get)
    older = min(steps, key=steps.get)
    assert steps[newest] == int(SweepStore(store).read("step")[-1])  # kept: the final state
    on_disk = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    validate = subprocess.run(
        [sys.executable, "-m", "nnqs", "validate", str(spec)],
        capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    estimate = json.loads(validate.stdout)["checkpoint_disk_gib"]["per_task"] * 2**30
    assert on_disk <= estimate  # the estimate of nnqs validate holds (uncompressed)

    _flip_chunk(folder / newest)
    _recompute_task_0(store)
    run_nnqs("run", str(spec), "--store", str(store))
    assert_identical(store, uninterrupted)
    last = _runs(store)[-1]
    assert last["resumed_from"] == steps[older]
    (note,) = last["damaged"]
    assert note.startswith(f"the checkpoint at step {steps[newest]} is damaged")

    for slot in checkpoints.SLOTS:  # both damaged: from step 0
        _flip_chunk(folder / slot)
    _recompute_task_0(store)
    run_nnqs("run", str(spec), "--store", str(store))
    assert_identical(store, uninterrupted)
    last = _runs(store)[-1]
    assert last["resumed_from"] == 0 and len(last["damaged"]) == 2


# ---------------------------------------------------------------------------------------
# the stop signal, in this process
# ---------------------------------------------------------------------------------------


class _SignalledAt(checkpoints.TaskCheckpoints):
    """A task's checkpoints whose process gets SIGUSR2 after the slice ending at ``step``
    or later (Python runs the handler before the next bytecode: deterministic)."""

    def __init__(self, step: int, *args: Any) -> None:
        super().__init__(*args)
        self.signal_at, self.sent = step, False

    def reached(self, step: int, logged: int, snapshot: Callable[[], Snapshot]) -> None:
        if step >= self.signal_at and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGUSR2)
        super().reached(step, logged, snapshot)


def test_a_signal_during_training_saves_and_stops_then_the_rerun_resumes_bitwise(
    tmp_path: Path,
) -> None:
    # SIGUSR2 to this process mid-run (sent after the slice ending at step >= 1000): the
    # run saves and stops (TrainingStopped) at once, the handler installed before is not
    # called (it is the caller's to run: submitit's requeue); outside training it is
    x, phi, train = _problem()
    steps = np.array([0, 10, 100, 4000])
    nnqs = networks.decoupled(networks.mlp(width=64, depth=1), networks.mlp(width=64, depth=1))
    kwargs: dict[str, Any] = dict(
        seed=3, members=np.arange(6), learning_rate=0.05, log_steps=steps, dtype="float64"
    )
    whole = train_ensemble(nnqs, x, phi, train, **kwargs)
    policy = Checkpoint(every_seconds=0)
    called: list[int] = []
    previous = signal.signal(signal.SIGUSR2, lambda number, frame: called.append(number))
    try:
        with checkpoints.stop_on_signal(signal.SIGUSR2) as run_previous:
            with pytest.raises(checkpoints.TrainingStopped, match="SIGUSR2 at step") as stopped:
                with _SignalledAt(1000, tmp_path, 0, policy, 4000) as saved:
                    train_ensemble(nnqs, x, phi, train, checkpoints=saved, **kwargs)
            bounds = slice_bounds(steps)
            assert called == [] and stopped.value.step == bounds[bounds >= 1000][0]
            assert checkpoints.last_step(tmp_path, 0) == stopped.value.step
            run_previous()
            assert called == [signal.SIGUSR2]
            os.kill(os.getpid(), signal.SIGUSR2)  # no run watching: the previous handler
            assert called == [signal.SIGUSR2] * 2
        with checkpoints.TaskCheckpoints(tmp_path, 0, policy, 4000) as saved:
            resumed = train_ensemble(nnqs, x, phi, train, checkpoints=saved, **kwargs)
        assert saved.run["resumed_from"] == stopped.value.step
    finally:
        signal.signal(signal.SIGUSR2, previous)
    for name in ("train_loss", "test_loss", "sum_u", "sum_v", "sum_uu", "sum_vv", "sum_uv"):
        assert np.array_equal(getattr(resumed, name), getattr(whole, name)), name


def test_reopening_a_store_with_another_cadence_makes_it_the_stores(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = parse_spec(tomllib.loads(tiny_dynamics("cadence", 1, [8], 5)), "first.toml")
    store = open_sweep(first, tmp_path / "cadence.zarr")
    assert store_spec(store).checkpoint == Checkpoint()
    faster = tiny_dynamics("cadence", 1, [8], 5) + "[checkpoint]\nevery_logs = 2\n"
    second = parse_spec(tomllib.loads(faster), "second.toml")
    open_sweep(second, tmp_path / "cadence.zarr")
    assert "checkpoint cadence" in capsys.readouterr().err
    assert store_spec(SweepStore(tmp_path / "cadence.zarr")).checkpoint.every_logs == 2
    open_sweep(second, tmp_path / "cadence.zarr")  # the same again: nothing to say
    assert capsys.readouterr().err == ""
