"""The real single-host SLURM of ``slurm/cluster.sh``: sbatch, accounting, submitit, MPI, Dask.

No mocks: every test submits real jobs (the ``slurm_cluster`` fixture starts the cluster when
needed). Jobs run this interpreter (``sys.executable``) and call only standard-library
functions, so that they unpickle without the test module on the job's path.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import submitit
from submitit.core.utils import FailedJobError

from jobs.profiles import jobqueue_parameters, load_profile, render_sbatch, submitit_parameters

# Each rank prints its rank, the world size and an allreduce over all ranks (0 + 1 = 1).
# Only rank 0 prints: the launcher forwards each rank's stdout in chunks of its own choosing, so
# two ranks printing at once can interleave mid-line (seen with OpenMPI's mpirun in CI).
MPI_HELLO = (
    "from mpi4py import MPI; c = MPI.COMM_WORLD; "
    "ranks = c.gather(c.Get_rank()); total = c.allreduce(c.Get_rank()); "
    "c.Get_rank() == 0 and print(f'ranks {ranks} of {c.Get_size()} sum {total}')"
)
MPI_EXPECTED = ["ranks [0, 1] of 2 sum 1"]
JOB_TIMEOUT_S = 60


def run(*argv: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=JOB_TIMEOUT_S, **kwargs)
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stderr}"
    return done


def sacct_state(job_id: str) -> str:
    """The job's final state in accounting, polled: slurmctld reports to slurmdbd asynchronously."""
    deadline = time.monotonic() + 20
    state = ""
    while time.monotonic() < deadline:
        state = run("sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State").stdout.strip()
        if state and state not in {"PENDING", "RUNNING", "COMPLETING"}:
            break
        time.sleep(0.5)
    return state


def wait_done(job: submitit.Job, timeout_s: float = JOB_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not job.done():
        if time.monotonic() > deadline:
            job.cancel(check=False)
            pytest.fail(f"submitit job {job.job_id} not done after {timeout_s} s")
        time.sleep(0.25)


@pytest.fixture
def executor(slurm_cluster: Path, tmp_path: Path) -> submitit.AutoExecutor:
    """A submitit executor on the local cluster, parameters from the ``local`` profile."""
    ex = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
    ex.update_parameters(**submitit_parameters(load_profile("local")))
    return ex


@pytest.mark.slurm
def test_sbatch_job_completes_and_is_accounted(slurm_cluster: Path, tmp_path: Path) -> None:
    out = tmp_path / "job.out"
    submitted = run(
        "sbatch", "--parsable", "--wait", f"--output={out}", "--wrap", "echo job $SLURM_JOB_ID"
    )
    job_id = submitted.stdout.strip().split(";")[0]
    assert out.read_text().strip() == f"job {job_id}"
    assert sacct_state(job_id) == "COMPLETED"


@pytest.mark.slurm
def test_submitit_returns_a_value_computed_in_the_job(executor: submitit.AutoExecutor) -> None:
    job = executor.submit(os.getenv, "SLURM_JOB_ID")
    wait_done(job)
    assert job.result() == job.job_id  # the variable only exists inside the SLURM job


@pytest.mark.slurm
def test_submitit_map_array(executor: submitit.AutoExecutor) -> None:
    jobs = executor.map_array(math.factorial, [3, 4, 5])
    for job in jobs:
        wait_done(job)
    assert [job.result() for job in jobs] == [6, 24, 120]
    assert len({job.job_id.split("_")[0] for job in jobs}) == 1  # one SLURM job array


@pytest.mark.slurm
def test_submitit_job_exception_is_a_failed_job_error(executor: submitit.AutoExecutor) -> None:
    job = executor.submit(math.sqrt, -1.0)
    wait_done(job)
    with pytest.raises(FailedJobError, match="math domain error"):
        job.result()


@pytest.mark.slurm
def test_submitit_sees_a_cancelled_job_finish(executor: submitit.AutoExecutor) -> None:
    """Needs accounting: without slurmdbd a cancelled job never reaches done()."""
    job = executor.submit(time.sleep, 120)
    deadline = time.monotonic() + 30
    while job.state in {"UNKNOWN", "PENDING"} and time.monotonic() < deadline:
        time.sleep(0.25)
    job.cancel()
    wait_done(job, timeout_s=30)
    assert job.state.startswith("CANCELLED")


@pytest.mark.slurm
@pytest.mark.mpi
def test_srun_pmix_runs_two_mpi_ranks(slurm_cluster: Path) -> None:
    out = run("srun", "--mpi=pmix", "-n", "2", sys.executable, "-c", MPI_HELLO).stdout
    assert out.splitlines() == MPI_EXPECTED


@pytest.mark.mpi
def test_mpirun_runs_two_mpi_ranks_outside_slurm(mpirun: tuple[str, dict[str, str]]) -> None:
    path, env = mpirun
    out = run(path, "-n", "2", sys.executable, "-c", MPI_HELLO, env=env).stdout
    assert out.splitlines() == MPI_EXPECTED


@pytest.mark.slurm
def test_dask_jobqueue_workers_compute_a_sum(slurm_cluster: Path, tmp_path: Path) -> None:
    import dask.array as da
    from dask_jobqueue import SLURMCluster
    from distributed import Client

    params = jobqueue_parameters(load_profile("local"), tmp_path / "dask-logs")
    with SLURMCluster(**params) as cluster, Client(cluster) as client:
        cluster.scale(2)
        client.wait_for_workers(1, timeout=JOB_TIMEOUT_S)
        total = da.arange(10_000, chunks=1_000).sum().compute()
    assert total == 10_000 * 9_999 // 2


@pytest.mark.slurm
@pytest.mark.parametrize(
    ("template", "values"),
    [
        ("sweep-mpi", {"spec": "spec.toml", "store": "runs/s.zarr", "ranks": 2}),
        ("bench", {"out": "b.json"}),
    ],
)
def test_rendered_templates_pass_sbatch_test_only(
    slurm_cluster: Path, tmp_path: Path, template: str, values: dict[str, object]
) -> None:
    """sbatch validates the rendered directives against the cluster without running the job."""
    script = tmp_path / f"{template}.sbatch"
    script.write_text(render_sbatch(template, load_profile("local"), **values))
    run("sbatch", "--test-only", str(script))
