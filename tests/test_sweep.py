"""Tests of the sweep engine on real Zarr stores: runs, resume, faults, aggregation.

Established here (jobs/sweep.py, jobs/studies/, suite/store.py, jobs/aggregate.py):

* a local sweep's per-member results equal :func:`suite.training.train_ensemble` run
  directly on all members, and the Dask aggregation equals :func:`summarize` of the
  combined shards; the entanglement and kernels studies likewise match their
  library functions; ``xarray.open_zarr`` reads the store with named dimensions;
* a run killed with SIGKILL mid-sweep resumes: only unfinished tasks are recomputed
  and the store ends bitwise identical to an uninterrupted run; the task in flight
  at the kill is reported ``failed`` (its process is gone) by ``status``;
* two processes writing disjoint tasks of one store at once corrupt nothing;
* a corrupted chunk is found by ``status --verify`` and recomputed, alone, by
  ``resubmit``; a pool of processes gives the same bytes as one process.
"""

from __future__ import annotations

import gc
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

import numpy as np
import pytest
import xarray as xr
import zarr
from stores import assert_identical, run_nnqs, tiny_dynamics

from analysis.compare import open_aggregated, relative_deviations
from analysis.report import write_report
from jobs import executors
from jobs.aggregate import aggregate
from jobs.spec import load_spec
from jobs.studies import expand
from jobs.studies.entanglement import architecture_nnqs, cuts
from jobs.studies.problems import dynamics_nnqs
from jobs.sweep import execute_task, open_sweep, task_states
from nnqs import cli
from suite.entanglement import ensemble_entanglement
from suite.kernels.gram import gram
from suite.store import SweepStore
from suite.training import SUMS, combine, summarize, train_ensemble


def dynamics(max_steps: int) -> str:
    return tiny_dynamics("tiny", seed=3, widths=[16, 48], max_steps=max_steps)


def _spec_file(tmp_path: Path, text: str, name: str = "tiny.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted in-process run of the tiny dynamics sweep."""
    tmp = tmp_path_factory.mktemp("reference")
    spec_path = _spec_file(tmp, dynamics(max_steps=40))
    store = tmp / "reference.zarr"
    assert cli.main(["run", str(spec_path), "--store", str(store)]) == 0
    return store


def test_local_sweep_equals_direct_training_and_summary(reference: Path) -> None:
    store = SweepStore(reference)
    spec = load_spec(_spec_file(reference.parent, dynamics(max_steps=40), "again.toml"))
    assert task_states(store, verify=True).counts()["done"] == len(expand(spec)) == 8
    steps, inputs, phi = store.read("step"), store.read("inputs"), store.read("phi")
    train = np.flatnonzero(store.read("train_mask")[0])
    rate = float(store.read("learning_rate")[0, 0])
    for w, width in enumerate(spec.grid.widths):
        direct = train_ensemble(
            dynamics_nnqs(spec, width),
            inputs,
            phi,
            train,
            seed=3,
            members=np.arange(8),
            learning_rate=rate,
            log_steps=steps,
            dtype="float64",
        )
        stored = store.read("member_train_loss")[0, 0, w]
        np.testing.assert_allclose(stored, direct.train_loss.T, rtol=1e-10)
        halves = [
            train_ensemble(
                dynamics_nnqs(spec, width),
                inputs,
                phi,
                train,
                seed=3,
                members=np.arange(s, s + 4),
                learning_rate=rate,
                log_steps=steps,
                dtype="float64",
            )
            for s in (0, 4)
        ]
        summary = summarize(combine(halves), phi, train)
        np.testing.assert_allclose(
            store.read("ensemble_mean")[0, 0, w], summary.mean, rtol=1e-9, atol=1e-12
        )
        for name in ("train_loss_of_mean_debiased", "test_mean_of_losses"):
            np.testing.assert_allclose(
                store.read(name)[0, 0, w], getattr(summary, name), rtol=1e-9, atol=1e-14
            )
    # the analytic prediction at t = 0 is the prior: finite and infinite agree roughly
    prior = store.read("infinite_continuous")[0, 0, 1, 0]
    assert 0.5 < store.read("train_mean_of_losses")[0, 0, 1, 0] / prior < 2


def test_the_run_writes_a_report_with_the_deviation_tables(reference: Path) -> None:
    report = Path(f"{reference}.report")
    text = (report / "report.md").read_text()
    for name in ("fig2-B12-lr0.5", "deviation-B12-lr0.5", "spectra"):
        assert (report / f"{name}.png").stat().st_size > 1000
        assert (report / f"{name}.pdf").is_file()
        assert f"({name}.png)" in text
    deviations = relative_deviations(open_aggregated(reference, "dynamics"), "discrete")
    largest = np.nanmax(deviations.sel(train_size=12, lr_factor=0.5, width=48).values[:, 1:], -1)
    row = f"| 48 | {' | '.join(f'{v:.4g}' for v in largest)} |"
    assert row in text
    assert "| exponent |" in text


def test_report_of_an_unaggregated_store_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = load_spec(_spec_file(tmp_path, dynamics(max_steps=5)))
    open_sweep(spec, tmp_path / "raw.zarr")
    assert cli.main(["report", str(tmp_path / "raw.zarr")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "not aggregated yet" in error


def test_xarray_reads_the_store(reference: Path) -> None:
    ds = xr.open_zarr(reference)
    assert ds.train_mean_of_losses.dims == ("train_size", "lr_factor", "width", "step")
    assert list(ds.width.values) == [16, 48]
    assert ds.attrs["spec"]["sweep"]["name"] == "tiny"
    assert ds.attrs["provenance"]["packages"]["zarr"]
    assert "finalized_unix" in ds.attrs


def _recording_reads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[int, ...]]]:
    """Every ``SweepStore.read`` from now on, as (array name, shape read)."""
    reads: list[tuple[str, tuple[int, ...]]] = []
    original = SweepStore.read

    def read(self: SweepStore, name: str, region: Any = None) -> np.ndarray:
        values = original(self, name, region)
        reads.append((name, values.shape))
        return values

    monkeypatch.setattr(SweepStore, "read", read)
    return reads


def test_aggregation_reads_one_shard_at_a_time(
    tmp_path: Path, reference: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A grid point's shard sums are read and added one shard at a time (memory of two
    shards, not of all of them), and give the reference run's aggregates bit for bit; the
    jackknife errors read them once more, one at a time."""
    copy = tmp_path / "copy.zarr"
    shutil.copytree(reference, copy)
    store = SweepStore(copy)
    for name in ("ensemble_mean", "ensemble_variance", "train_mean_of_losses"):
        array = store.array(name)
        array[...] = np.full(array.shape, np.nan, dtype=array.dtype)
    reads = _recording_reads(monkeypatch)
    aggregate(copy, progress=False)
    shards = [shape for name, shape in reads if name in SUMS]
    assert len(shards) == 2 * 2 * 4 * len(SUMS)  # twice: 2 grid points x 4 shards x 5 sums
    assert all(shape[3] == 1 for shape in shards)
    assert_identical(reference, copy)


def test_the_report_reads_no_basis_sized_array(tmp_path: Path, reference: Path) -> None:
    """The report reads grid-sized arrays only: with every chunk of an array with a
    ``basis`` axis (D = 2^N) made unreadable, it writes the same report."""
    copy = tmp_path / "copy.zarr"
    shutil.copytree(reference, copy)
    group = zarr.open_group(copy, mode="r")
    basis = {name for name, array in group.arrays() if "basis" in array.metadata.dimension_names}
    assert {"ensemble_mean", "phi", "inputs", "sum_u"} <= basis
    for name in basis:
        chunks = [chunk for chunk in (copy / name / "c").rglob("*") if chunk.is_file()]
        assert chunks, name  # every basis-sized array holds data to make unreadable
        for chunk in chunks:
            chunk.write_bytes(b"not a chunk")
    with pytest.raises(Exception):  # noqa: B017 (whatever the codec raises)
        SweepStore(copy).read("phi")
    original = write_report(reference, tmp_path / "original").read_text()
    again = write_report(copy, tmp_path / "report").read_text()
    assert again.replace(str(copy), str(reference)) == original


@pytest.mark.slow
def test_ctrl_c_ends_a_run_in_one_line_with_status_130(tmp_path: Path) -> None:
    """SIGINT mid-sweep: one line on stderr, exit status 130, and a consistent store (the
    interrupted task is marked failed, none is left running; ``resubmit`` redoes it)."""
    spec_path = _spec_file(tmp_path, dynamics(max_steps=40))
    store_path = tmp_path / "interrupted.zarr"
    process = subprocess.Popen(
        [sys.executable, "-m", "nnqs", "run", str(spec_path), "--store", str(store_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if (store_path / "zarr.json").exists():
            if any(r.state == "done" for r in SweepStore(store_path).records()):
                break
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be interrupted"
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "nnqs: interrupted"
    counts = run_nnqs("status", str(store_path))["tasks"]
    assert counts["running"] == 0 and counts["done"] < 8
    assert counts["failed"] <= 1  # at most the task it was computing


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the drop
def test_a_ctrl_c_swallowed_by_a_gc_callback_is_still_latched() -> None:
    """Python drops a KeyboardInterrupt raised while a garbage-collection callback runs
    (JAX registers one; seen once in the test above: the run went on to the end). The
    local executor's handler latches the signal, and its task loop stops on it."""

    def callback(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(10_000):  # the handler runs here, inside the callback
                pass

    # Python's own handler, as in a fresh ``nnqs run``: an earlier test's import may have
    # replaced it (dask_jobqueue installs its own SIGINT handler when imported).
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with executors._ctrl_c_latched() as latched:
            gc.callbacks.append(callback)
            try:
                gc.collect()  # the interrupt is raised in the callback and dropped
            finally:
                gc.callbacks.remove(callback)
            assert latched == [signal.SIGINT]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)


def _live_in_group(group: int) -> list[int]:
    """Processes of process group ``group`` that still run (zombies excluded)."""
    live = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            live.append(int(entry.name))
    return live


NNQS_RUN = (sys.executable, "-m", "nnqs", "run")


def _start_pool_run(spec_path: Path, store_path: Path) -> subprocess.Popen[str]:
    """``nnqs run --processes 2`` in a session of its own, once a worker computes a task."""
    process = subprocess.Popen(
        [*NNQS_RUN, str(spec_path), "--store", str(store_path), "--processes", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if (store_path / "zarr.json").exists():
            records = SweepStore(store_path).records()
            if any(r.state == "done" for r in records):
                break
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be interrupted"
    return process


def _gone(group: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _live_in_group(group) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not _live_in_group(group)


@pytest.mark.slow
def test_ctrl_c_of_a_pool_cancels_its_tasks_and_ends_its_workers(
    tmp_path: Path, reference: Path
) -> None:
    """Ctrl-C in a terminal signals the whole foreground group: the parent cancels the
    queued tasks and ends the workers, prints one line and exits 130; nothing of the
    group is left, and a resubmit completes the store bitwise."""
    spec_path = _spec_file(tmp_path, dynamics(max_steps=40))
    store_path = tmp_path / "pool.zarr"
    process = _start_pool_run(spec_path, store_path)
    clock = time.monotonic()
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "nnqs: interrupted"
    assert time.monotonic() - clock < 30  # not after the queued tasks
    assert _gone(process.pid, 10)
    counts = run_nnqs("status", str(store_path))["tasks"]
    assert counts["running"] == 0 and counts["done"] < 8
    answer = run_nnqs("resubmit", str(store_path), "--processes", "2")
    assert answer["tasks"]["done"] == 8
    assert_identical(store_path, reference)


@pytest.mark.slow
def test_pool_workers_die_with_their_parent(tmp_path: Path) -> None:
    """SIGKILL of ``nnqs run`` alone (no chance to clean up): its workers end too."""
    spec_path = _spec_file(tmp_path, dynamics(max_steps=40))
    process = _start_pool_run(spec_path, tmp_path / "orphans.zarr")
    assert len(_live_in_group(process.pid)) >= 3  # the parent and its two workers
    process.kill()
    process.communicate(timeout=60)
    assert _gone(process.pid, 15), _live_in_group(process.pid)


@pytest.mark.slow
def test_sigkill_mid_sweep_then_resume_is_bitwise_identical(
    tmp_path: Path, reference: Path
) -> None:
    spec_path = _spec_file(tmp_path, dynamics(max_steps=40))
    store_path = tmp_path / "killed.zarr"
    process = subprocess.Popen(
        [sys.executable, "-m", "nnqs", "run", str(spec_path), "--store", str(store_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    done: list[int] = []
    while time.monotonic() < deadline and process.poll() is None:
        if (store_path / "zarr.json").exists():
            records = SweepStore(store_path).records()
            done = [r.task for r in records if r.state == "done"]
            if len(done) >= 3:
                break
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = {r.task: r for r in SweepStore(store_path).records()}
    status = run_nnqs("status", str(store_path))
    counts = status["tasks"]
    assert counts["done"] >= 3 and counts["done"] < 8
    assert counts["running"] == 0  # the killed owner is detected
    assert counts["failed"] + counts["pending"] + counts["done"] == 8

    resumed = run_nnqs("run", str(spec_path), "--store", str(store_path))
    assert resumed["tasks"]["done"] == 8
    assert resumed["tasks_run"] == 8 - counts["done"]
    after = {r.task: r for r in SweepStore(store_path).records()}
    for task, record in before.items():
        if record.state == "done":  # not recomputed: the record is the killed run's
            assert after[task].info == record.info
        else:
            assert after[task].info["pid"] != process.pid
    assert_identical(store_path, reference)


@pytest.mark.slow
def test_two_writers_on_disjoint_tasks_and_a_process_pool(tmp_path: Path, reference: Path) -> None:
    spec = load_spec(_spec_file(tmp_path, dynamics(max_steps=40)))
    store_path = tmp_path / "shared.zarr"
    open_sweep(spec, store_path)
    code = "import sys; from jobs.sweep import execute_task\n" + (
        "for t in sys.argv[2:]: execute_task(sys.argv[1], int(t))"
    )
    writers = [
        subprocess.Popen([sys.executable, "-c", code, str(store_path), *map(str, tasks)])
        for tasks in ([0, 2, 4, 6], [1, 3, 5, 7])
    ]
    assert [w.wait(timeout=300) for w in writers] == [0, 0]
    assert task_states(SweepStore(store_path), verify=True).counts()["done"] == 8
    assert cli.main(["aggregate", str(store_path)]) == 0
    assert_identical(store_path, reference)

    pooled = tmp_path / "pooled.zarr"
    answer = run_nnqs(
        "run", str(tmp_path / "tiny.toml"), "--store", str(pooled), "--processes", "2"
    )
    assert answer["tasks_run"] == 8
    assert_identical(pooled, reference)


@pytest.mark.slow
def test_corrupted_chunk_is_detected_and_only_it_recomputed(
    tmp_path: Path, reference: Path
) -> None:
    spec_path = _spec_file(tmp_path, dynamics(max_steps=40))
    store_path = tmp_path / "corrupt.zarr"
    assert cli.main(["run", str(spec_path), "--store", str(store_path)]) == 0
    before = {r.task: r.info for r in SweepStore(store_path).records()}
    # task 5: width index 1, shard 1 -> chunk (0, 0, 1, 1, 0, 0) of sum_uu
    chunk = store_path / "sum_uu" / "c" / "0" / "0" / "1" / "1" / "0" / "0"
    assert chunk.is_file()
    chunk.write_bytes(os.urandom(chunk.stat().st_size))

    status = run_nnqs("status", str(store_path), "--verify")
    assert status["tasks"]["corrupt"] == 1 and status["tasks"]["done"] == 7
    assert list(status["problems"]) == ["5"]
    assert run_nnqs("status", str(store_path))["tasks"]["done"] == 8  # no verify: not looked at

    answer = run_nnqs("resubmit", str(store_path))
    assert answer["resubmitted"] == [5] and answer["tasks"]["done"] == 8
    after = {r.task: r.info for r in SweepStore(store_path).records()}
    assert [t for t in after if after[t] != before[t]] == [5]
    assert_identical(store_path, reference)


def test_failed_task_is_recorded_with_its_error(tmp_path: Path) -> None:
    spec = load_spec(_spec_file(tmp_path, dynamics(max_steps=5)))
    store = open_sweep(spec, tmp_path / "s.zarr")
    (tmp_path / "s.zarr" / "phi" / "c" / "0").write_bytes(b"not a chunk")
    with pytest.raises(Exception):  # noqa: B017  (the codec's own error type)
        execute_task(store.path, 0)
    status = task_states(store)
    assert status.states[0] == "failed" and status.records[0]["error"]
    assert status.todo()[0] == 0


def test_entanglement_sweep_matches_the_library(tmp_path: Path) -> None:
    text = """
[sweep]
name = "ent"
study = "entanglement"
seed = 1
[grid]
widths = [16]
architectures = ["cosnet", "relu"]
cosnet_s0 = [1.0]
[ensemble]
members = 6
shard_size = 3
[entanglement]
n_sites = 6
"""
    spec = load_spec(_spec_file(tmp_path, text, "ent.toml"))
    store_path = tmp_path / "ent.zarr"
    assert cli.main(["run", str(tmp_path / "ent.toml"), "--store", str(store_path)]) == 0
    store = SweepStore(store_path)
    for a, architecture in enumerate(spec.grid.architectures):
        direct = ensemble_entanglement(
            architecture_nnqs(spec, architecture, 16, 1.0),
            6,
            cuts(spec),
            seed=1,
            members=np.arange(6),
        )
        np.testing.assert_allclose(
            store.read("von_neumann")[a, 0, 0], direct.von_neumann, rtol=1e-10, atol=1e-12
        )
        np.testing.assert_allclose(
            store.read("ratio_renyi2")[a, 0, 0], direct.ratio_renyi2(), rtol=1e-10
        )
    page = store.read("page")
    assert page.shape == (3,) and np.all(np.diff(page) > 0)
    text = (Path(f"{store_path}.report") / "report.md").read_text()
    assert "### cosnet" in text and "### relu" in text
    assert (Path(f"{store_path}.report") / "fig1.png").is_file()


def test_cosnet_s0_scan_is_a_grid_axis(tmp_path: Path) -> None:
    """The crossover: the GP estimate of CosNet rises with s0 towards the Haar value, the
    finite ensembles follow, and the report holds the crossover table and figure."""
    text = """
[sweep]
name = "scan"
study = "entanglement"
[grid]
widths = [16]
architectures = ["cosnet"]
cosnet_s0 = [0.3, 3.0]
[ensemble]
members = 6
shard_size = 3
[entanglement]
n_sites = 6
"""
    spec = load_spec(_spec_file(tmp_path, text, "scan.toml"))
    assert len(expand(spec)) == 4  # 2 values of s0 x 2 shards
    store_path = tmp_path / "scan.zarr"
    assert cli.main(["run", str(tmp_path / "scan.toml"), "--store", str(store_path)]) == 0
    data = xr.open_zarr(store_path).sel(architecture="cosnet", width=16, cut=3)
    gp = data["gp_renyi2"].values
    assert gp[0] < gp[1] < float(data["haar_renyi2"])
    entropy = data["mean_von_neumann"].values
    assert entropy[0] < entropy[1]
    for s0 in (0.3, 3.0):
        direct = ensemble_entanglement(
            architecture_nnqs(spec, "cosnet", 16, s0), 6, [3], seed=0, members=np.arange(6)
        )
        stored = data["von_neumann"].sel(cosnet_s0=s0).values  # (member,) at N_A = 3
        np.testing.assert_allclose(stored, direct.von_neumann[:, 0], rtol=1e-10, atol=1e-12)
    report = Path(f"{store_path}.report")
    assert "## CosNet crossover at N_A = 3" in (report / "report.md").read_text()
    assert (report / "crossover.png").stat().st_size > 1000


def test_kernels_sweep_grams_and_empirical_deviation(tmp_path: Path) -> None:
    text = """
[sweep]
name = "ker"
study = "kernels"
[target]
model = "tfim"
lx = 2
ly = 3
[grid]
widths = [32, 2048]
train_sizes = [8, 16]
[ensemble]
members = 4
shard_size = 2
[kernels]
full = true
block = 16
"""
    spec = load_spec(_spec_file(tmp_path, text, "ker.toml"))
    store_path = tmp_path / "ker.zarr"
    assert cli.main(["run", str(tmp_path / "ker.toml"), "--store", str(store_path)]) == 0
    store = SweepStore(store_path)
    inputs = store.read("inputs")
    nnqs = dynamics_nnqs(spec, 32)
    nngp, ntk = gram(nnqs.infinite, inputs, inputs)
    np.testing.assert_allclose(store.read("ntk")[0], ntk.uu, rtol=1e-12)
    np.testing.assert_allclose(store.read("nngp")[3], nngp.vv, rtol=1e-12)
    train = np.flatnonzero(store.read("train_mask")[1])
    np.testing.assert_allclose(store.read("ntk_basis_train")[1, 0][:, :16], ntk.uu[:, train])
    narrow, wide = store.read("mean_empirical_deviation")
    assert wide < narrow / 3  # fluctuations fall like width^(-1/2): 64x wider, 8x closer
    text = (Path(f"{store_path}.report") / "report.md").read_text()
    assert f"| 2048 | {wide:.4g} |" in text
