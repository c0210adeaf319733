"""Sweeps through a real SLURM (submitit, dask-jobqueue) and a real MPI; no mocks.

Established here (jobs/executors.py, nnqs/cli.py, jobs/aggregate.py), against the
single-host SLURM of ``slurm/cluster.sh`` (fixture ``slurm_cluster``) and Open MPI:

* ``nnqs run --executor slurm`` runs the tasks as a submitit job array and ends
  bitwise identical to a local run; the manifest records each task's SLURM job;
* ``scancel`` of one array task mid-run, then ``resubmit``: the lost task is
  reported ``failed`` by ``status``, recomputed, and nothing done is done twice;
* a ``Checkpointable`` array element that reaches its time limit is requeued and
  finishes the remaining tasks from the store;
* ``nnqs aggregate --cluster slurm`` on a dask-jobqueue SLURMCluster writes the same
  aggregate as a LocalCluster;
* ``mpirun -n 2`` and ``srun --mpi=pmix -n 2``: two ranks share the tasks and rank 0
  aggregates, bitwise identical to a local run.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import pickle
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from stores import assert_identical, run_nnqs, tiny_dynamics

from jobs.executors import MAX_IDLE_RUNS, ShardJob
from suite.store import SweepStore

SLURM_OVERRIDES = """
[executor.slurm]
mem_gb = 2
time_min = 5
signal_delay_s = 15
"""


NNQS_RUN = (sys.executable, "-m", "nnqs", "run")


def _spec(tmp_path: Path) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(tiny_dynamics("tiny-slurm", 5, [16, 32], 30) + SLURM_OVERRIDES)
    return path


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("local")
    store = tmp / "local.zarr"
    run_nnqs("run", str(_spec(tmp)), "--store", str(store))
    return store


@pytest.mark.slurm
@pytest.mark.slow
def test_submitit_sweep_equals_local_run(
    slurm_cluster: Path, tmp_path: Path, local_reference: Path
) -> None:
    store = tmp_path / "slurm.zarr"
    answer = run_nnqs(
        "run", str(_spec(tmp_path)), "--store", str(store), "--executor", "slurm",
        "--tasks-per-job", "4",
    )  # fmt: skip
    assert answer["executor"] == "slurm" and answer["tasks"]["done"] == 8
    assert len(answer["slurm_jobs"]) == 2 and answer["aggregated"]
    jobs = {r.info["slurm"]["job_id"] for r in SweepStore(store).records()}
    assert len(jobs) == 2  # two array elements, four tasks each
    assert list(Path(f"{store}.slurm").iterdir())  # per-task logs
    assert_identical(store, local_reference)


@pytest.mark.slurm
def test_an_unreachable_controller_is_one_line_before_anything_is_written(
    slurm_cluster: Path, tmp_path: Path
) -> None:
    conf = tmp_path / "slurm.conf"
    lines = slurm_cluster.read_text().splitlines()
    conf.write_text(
        "\n".join(line for line in lines if not line.startswith("SlurmctldPort"))
        + "\nSlurmctldPort=1\n"  # nothing listens there
    )
    store = tmp_path / "s.zarr"
    result = subprocess.run(
        [*NNQS_RUN, str(_spec(tmp_path)), "--store", str(store), "--executor", "slurm"],
        capture_output=True,
        text=True,
        env={**os.environ, "SLURM_CONF": str(conf)},
        timeout=300,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "SLURM controller is not reachable" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slurm.conf", "spec.toml"]


@pytest.mark.slurm
@pytest.mark.slow
def test_a_refused_job_array_leaves_no_pickles_and_resubmit_runs_locally(
    slurm_cluster: Path, tmp_path: Path, local_reference: Path
) -> None:
    spec = _spec(tmp_path)
    spec.write_text(spec.read_text() + 'partition = "nosuch"\n')  # in [executor.slurm]
    store = tmp_path / "refused.zarr"
    result = subprocess.run(
        [*NNQS_RUN, str(spec), "--store", str(store), "--executor", "slurm"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    ours = [line for line in result.stderr.splitlines() if line.startswith("nnqs:")]
    assert len(ours) == 1 and "SLURM refused the job array" in ours[0]
    assert "partition" in ours[0].lower() and "Traceback" not in result.stderr
    logs = Path(f"{store}.slurm")
    assert not logs.exists() or not any(logs.rglob("*"))  # no orphan pickles
    # the store remembers nothing of SLURM: a resubmit runs here unless told otherwise
    answer = run_nnqs("resubmit", str(store))
    assert answer["executor"] == "local" and answer["tasks"]["done"] == 8
    assert_identical(store, local_reference)


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _queue(job: str) -> str:
    return subprocess.run(
        ["squeue", "-h", "-j", job, "-o", "%i %T"], capture_output=True, text=True, check=False
    ).stdout


#: the tiny sweep with tasks of a few seconds (10^6 steps at a small rate), so that an
#: array element is still on its first task when scancel reaches it, however fast the
#: machine (the 30-step tasks of ``_spec`` take 0.06 s here after compilation)
SLOW_TASKS = tiny_dynamics("tiny-slurm-cancel", 5, [16, 32], 10**6, lr_factor=0.0001)


@pytest.mark.slurm
@pytest.mark.slow
def test_scancel_one_array_task_then_resubmit(slurm_cluster: Path, tmp_path: Path) -> None:
    spec = tmp_path / "slow.toml"
    spec.write_text(SLOW_TASKS + SLURM_OVERRIDES)
    local_reference = tmp_path / "local.zarr"
    run_nnqs("run", str(spec), "--store", str(local_reference))
    store = tmp_path / "cancelled.zarr"
    answer = run_nnqs(
        "run", str(spec), "--store", str(store), "--executor", "slurm",
        "--tasks-per-job", "2", "--no-wait",
    )  # fmt: skip
    array = answer["slurm_jobs"][0].split("_")[0]

    def running_first_of_group() -> dict | None:
        if not store.exists():
            return None
        for record in SweepStore(store).records():
            if record.state == "running" and "slurm" in record.info and record.task % 2 == 0:
                return {"task": record.task, **record.info["slurm"]}
        return None

    # cancel an array element while it works on the first of its two tasks
    _wait_for(lambda: running_first_of_group() is not None, 180, "a running array task")
    victim = running_first_of_group()
    assert victim is not None
    # SLURM 22.05 refuses (exit 0!) an array task's own job id: name it ARRAY_TASK
    subprocess.run(["scancel", f"{array}_{victim['array_task_id']}"], check=True)
    _wait_for(lambda: not _queue(array).strip(), 300, "the array to leave the queue")

    status = run_nnqs("status", str(store))
    counts = status["tasks"]
    assert counts["running"] == 0
    # the element's second task never started (its first may have finished in KillWait)
    assert counts["done"] < 8 and counts["pending"] + counts["failed"] == 8 - counts["done"]
    records = {r.task: r for r in SweepStore(store).records()}
    assert records[victim["task"] + 1].state == "pending"
    before = {t: r.info for t, r in records.items() if r.state == "done"}

    again = run_nnqs("resubmit", str(store), "--executor", "slurm")
    assert victim["task"] + 1 in again["resubmitted"]
    assert sorted(again["resubmitted"]) == sorted(set(range(8)) - set(before))
    assert again["tasks"]["done"] == 8
    after = {r.task: r.info for r in SweepStore(store).records()}
    for task, info in before.items():  # nothing done twice
        assert after[task] == info
    assert_identical(store, local_reference)


#: one task of about 105 s here (measured 103 s; 4-5 minutes on a slower
#: machine of this kind): 16 members of width 512, 57,727 float32 steps on TFIM 3x3 (to
#: the convergence step at 0.2 eta_max), well over the 1-minute limit
LONG_TASK = """
[sweep]
name = "requeue"
study = "dynamics"
seed = 11
dtype = "float32"
[target]
model = "tfim"
lx = 3
ly = 3
[grid]
widths = [512]
train_sizes = [128]
lr_factors = [0.2]
[ensemble]
members = 16
shard_size = 16
[training]
log_points = 30
max_steps = 60000
tolerance = 1e-9
"""


@pytest.mark.slurm
@pytest.mark.slow
def test_a_task_longer_than_the_time_limit_finishes_after_requeues_bitwise(
    slurm_cluster: Path, tmp_path: Path
) -> None:
    # a task of about 105 s on an array element with a 1-minute limit: each run
    # trains until SLURM's SIGUSR2, saves its checkpoint, stops, and submitit requeues the
    # element; the next run resumes from that step. SLURM checks time limits every 30 s and signals
    # early ("up to 60 seconds earlier than specified"): with --signal=USR2@5 runs last
    # 30-55 s here (with @20 they lasted 17 s, ~12 s of it start-up, and the element ran
    # out of requeues). The 20-second cadence bounds what a run killed unsignalled loses.
    reference = tmp_path / "uninterrupted.toml"
    reference.write_text(LONG_TASK + "[checkpoint]\nevery_seconds = 0\n")
    uninterrupted = tmp_path / "uninterrupted.zarr"
    run_nnqs("run", str(reference), "--store", str(uninterrupted), timeout=900)
    seconds = SweepStore(uninterrupted).record_of(0).info["seconds"]

    spec = tmp_path / "requeue.toml"
    spec.write_text(
        LONG_TASK + "[checkpoint]\nevery_seconds = 20\n"
        "[executor.slurm]\nmem_gb = 2\ntime_min = 1\nsignal_delay_s = 5\n"
    )
    store = tmp_path / "requeued.zarr"
    answer = run_nnqs("run", str(spec), "--store", str(store), "--executor", "slurm", timeout=1500)
    (job,) = answer["slurm_jobs"]
    states = subprocess.run(
        ["sacct", "-D", "-X", "-n", "-P", "-j", job.split("_")[0], "--format=State"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.split()  # fmt: skip
    assert "REQUEUED" in states, states  # requeued at its time limit, by SLURM
    record = SweepStore(store).record_of(0)
    assert record.state == "done" and answer["tasks"]["done"] == 1
    assert_identical(store, uninterrupted)

    runs = record.info["checkpoint_runs"]
    last = int(SweepStore(store).read("step")[-1])
    # a run lasts under the 1-minute limit, at the uninterrupted run's pace: at least
    # ceil(seconds / 60) runs, and at least one requeued run resumed the task
    assert len(runs) >= max(2, math.ceil(seconds / 60)), (seconds, runs)
    assert runs[-1]["finished"]
    # every run before the last was stopped by SLURM's signal after saving, and the next
    # resumed exactly there: no step was computed twice
    for run, after in itertools.pairwise(runs):
        assert "stopped" in run and after["resumed_from"] == run["stopped"] == run["saved"], runs
    print(f"task {seconds:.0f} s ({last} steps) uninterrupted; {len(runs)} runs")


def test_an_element_that_finishes_no_task_in_three_runs_is_not_requeued(tmp_path: Path) -> None:
    # requeueing runs that make no progress would loop through every requeue; one idle
    # run is tolerated (SLURM may signal a run early), MAX_IDLE_RUNS in a row are not
    job = ShardJob(str(tmp_path / "store.zarr"))
    for _ in range(MAX_IDLE_RUNS - 1):
        again = job.checkpoint([0, 1])
        assert again is not None and again.args == ([0, 1],)
        job = pickle.loads(pickle.dumps(again.function))  # what the requeued run unpickles
    job.progressed = True  # progress (a task finished, a checkpoint advanced) resets the count
    assert job.checkpoint([0, 1]) is not None and job.idle_runs == 0
    job.progressed = False
    for _ in range(MAX_IDLE_RUNS - 1):
        assert job.checkpoint([0, 1]) is not None
    assert job.checkpoint([0, 1]) is None


@pytest.mark.slurm
@pytest.mark.slow
def test_aggregation_on_a_slurm_dask_cluster(
    slurm_cluster: Path, tmp_path: Path, local_reference: Path
) -> None:
    store = tmp_path / "dask.zarr"
    run_nnqs("run", str(_spec(tmp_path)), "--store", str(store), "--no-aggregate")
    assert np.isnan(SweepStore(store).read("train_mean_of_losses")).all()
    answer = run_nnqs("aggregate", str(store), "--cluster", "slurm", "--workers", "1")
    assert answer["aggregated"] and answer["cluster"] == "slurm"
    assert_identical(store, local_reference)
    logs = list(Path(f"{store}.dask").iterdir())
    assert logs  # the Dask worker ran as a SLURM job


@pytest.mark.mpi
@pytest.mark.slow
def test_mpirun_two_ranks_share_the_sweep(
    mpirun: object, tmp_path: Path, local_reference: Path
) -> None:
    store = tmp_path / "mpi.zarr"
    env = {**os.environ, **mpirun.env, "PATH": f"{Path(mpirun.path).parent}:{os.environ['PATH']}"}
    env.pop("SLURM_JOB_ID", None)
    answer = run_nnqs(
        "run", str(_spec(tmp_path)), "--store", str(store), "--executor", "mpi", "--ranks", "2",
        env=env,
    )  # fmt: skip
    assert answer["tasks"]["done"] == 8 and answer["aggregated"]
    pids = {r.info["pid"] for r in SweepStore(store).records()}
    assert len(pids) == 2  # both ranks worked
    assert_identical(store, local_reference)


@pytest.mark.slurm
@pytest.mark.mpi
@pytest.mark.slow
def test_srun_pmix_two_ranks_share_the_sweep(
    slurm_cluster: Path, tmp_path: Path, local_reference: Path
) -> None:
    store = tmp_path / "srun.zarr"
    result = subprocess.run(
        [
            "srun", "--mpi=pmix", "-n", "2", "--mem-per-cpu=2G", sys.executable, "-m",
            "nnqs", "run", str(_spec(tmp_path)), "--store", str(store), "--executor", "mpi",
        ],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout)
    assert answer["tasks"]["done"] == 8
    ranks = {r.info["slurm"]["procid"] for r in SweepStore(store).records()}
    assert ranks == {"0", "1"}
    assert_identical(store, local_reference)
