"""The Dask cluster of ``nnqs aggregate --cluster slurm``: a dask-jobqueue ``SLURMCluster``
behind mutual TLS, whose worker jobs are watched so that one SLURM will not run fails early.

**TLS.** Each cluster gets fresh self-signed credentials (``Security.temporary()``, which needs
the ``cryptography`` package): one key and certificate, the certificate also the only trusted
authority. Scheduler, workers and client all present them and require them of their peer, so
a connection without them (plain TCP, or TLS with other credentials) is refused. The worker
jobs read them as files (mode 0600) in a private folder (mode 0700) under the cluster's log
folder, which they share with this process; the folder is removed when the cluster closes.

**Failing early.** Before any job is submitted, ``sbatch --test-only`` of the worker job
script asks SLURM whether it would take it (a partition that does not exist, more memory or
CPUs than a node has...). While waiting for the workers, every worker job is looked up with
``squeue``: a job that ended before its worker connected, or that is pending for a reason no
wait resolves (:data:`HOPELESS_REASONS`), ends the wait at once. Each failure is a
:class:`WorkerJobError`, one line with SLURM's reason; the cluster's jobs are cancelled.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import TYPE_CHECKING

from distributed import Client
from distributed.security import Security

if TYPE_CHECKING:
    from dask_jobqueue import SLURMCluster

#: seconds to wait for every worker to connect, when nothing says it never will
WORKER_TIMEOUT_S = 300
#: seconds between two looks at the worker jobs while waiting
POLL_S = 1.0
#: seconds a SLURM command (sbatch --test-only, squeue) may take
SLURM_COMMAND_TIMEOUT_S = 60
#: job states (squeue %T) from which a job may still start its worker
LIVE_STATES = frozenset({"PENDING", "CONFIGURING", "RUNNING", "REQUEUED", "RESIZING", "SUSPENDED"})
#: reasons (squeue %r) for which a pending job waits for a change of configuration, a
#: release or a fix, never for other jobs to end: waiting for them is pointless
HOPELESS_REASONS = frozenset(
    {
        "BadConstraints",
        "PartitionConfig",
        "PartitionDown",
        "PartitionInactive",
        "PartitionNodeLimit",
        "PartitionTimeLimit",
        "NodeDown",
        "ReqNodeNotAvail",
        "InvalidAccount",
        "InvalidQOS",
        "DependencyNeverSatisfied",
        "JobHeldAdmin",
        "JobHeldUser",
    }
)


class WorkerJobError(OSError):
    """SLURM will not run a Dask worker job: refused, ended, or stuck; one line, its reason."""


@dataclass(frozen=True)
class JobState:
    """One SLURM job as ``squeue`` lists it: id, state (``%T``) and reason (``%r``)."""

    job_id: str
    state: str
    reason: str


def hopeless(job: JobState) -> str | None:
    """Why ``job`` will never bring up its worker, or None while it may."""
    if job.state not in LIVE_STATES:
        return f"ended {job.state} ({job.reason}) before its worker connected"
    reason = job.reason.split(",")[0].strip()  # "ReqNodeNotAvail, UnavailableNodes:vm"
    limit_per_job = reason.startswith(("QOSMax", "AssocMax")) and "PerJob" in reason
    if job.state == "PENDING" and (
        reason in HOPELESS_REASONS or limit_per_job or reason.startswith("launch failed")
    ):
        return f"is pending with reason {job.reason!r}, which no wait resolves"
    return None


def _slurm(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a SLURM command; one that does not answer in time is a :class:`WorkerJobError`."""
    try:
        return subprocess.run(
            argv,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=SLURM_COMMAND_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise WorkerJobError(
            f"{argv[0]} did not answer within {SLURM_COMMAND_TIMEOUT_S} s"
        ) from None


def check_submission(job_script: str, profile: str) -> None:
    """``sbatch --test-only`` of the worker job script: SLURM's refusal, if any, in one line."""
    done = _slurm(["sbatch", "--test-only"], stdin=job_script)
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit status {done.returncode}"
        raise WorkerJobError(f"SLURM refuses the Dask worker job of profile {profile}: {reason}")


def job_states(job_ids: Iterable[str]) -> dict[str, JobState] | None:
    """The jobs as ``squeue`` lists them (finished ones too, while it remembers them); None
    when squeue fails (e.g. a busy controller: look again later)."""
    ids = sorted(job_ids)
    if not ids:
        return {}
    done = _slurm(["squeue", "-h", "-t", "all", "-j", ",".join(ids), "-o", "%i|%T|%r"])
    if done.returncode != 0:
        return None
    jobs = [
        JobState(*line.split("|", 2)) for line in done.stdout.splitlines() if line.count("|") >= 2
    ]
    return {job.job_id: job for job in jobs}


def check_worker_jobs(cluster: SLURMCluster, logs: Path) -> None:
    """A :class:`WorkerJobError` for the first worker job that will never bring up its worker:
    refused by sbatch (no job id once submitted), ended, or hopelessly pending (its log is
    in the folder ``logs``)."""
    jobs = {name: job.job_id for name, job in cluster.workers.items()}
    refused = sorted(str(name) for name, job_id in jobs.items() if job_id is None)
    if refused:
        raise WorkerJobError(f"sbatch refused Dask worker job {refused[0]} (see the log above)")
    states = job_states(str(job_id) for job_id in jobs.values())
    for job in (states or {}).values():
        problem = hopeless(job)
        if problem:
            raise WorkerJobError(f"Dask worker job {job.job_id} {problem}; logs in {logs}")


def wait_for_workers(
    cluster: SLURMCluster,
    client: Client,
    workers: int,
    logs: Path,
    timeout_s: float = WORKER_TIMEOUT_S,
) -> None:
    """Wait until ``workers`` workers are connected, looking at their jobs every
    :data:`POLL_S` s; a :class:`WorkerJobError` as soon as one will never connect, or after
    ``timeout_s`` s. ``logs``: the folder of the jobs' logs, named in the errors."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.wait_for_workers(workers, timeout=POLL_S)
            return
        except TimeoutError:
            pass
        check_worker_jobs(cluster, logs)
        if time.monotonic() > deadline:
            states = job_states(str(job.job_id) for job in cluster.workers.values()) or {}
            queue = ", ".join(f"{j.job_id} {j.state} ({j.reason})" for j in states.values())
            raise WorkerJobError(
                f"{workers} Dask worker(s) not connected after {timeout_s:g} s "
                f"(worker jobs: {queue or 'none listed'})"
            )


def _write_private(path: Path, text: str) -> str:
    """Write ``text`` to a new file only its owner can read; its path."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    return str(path)


@contextmanager
def temporary_credentials(directory: Path) -> Iterator[Security]:
    """Fresh mutual-TLS credentials for every role, as files in a private temporary folder
    under ``directory`` (which the worker jobs must see), removed on exit."""
    generated = Security.temporary()  # one self-signed key and certificate
    with TemporaryDirectory(prefix=".tls-", dir=directory) as folder:
        cert = _write_private(Path(folder) / "cert.pem", generated.tls_worker_cert)
        key = _write_private(Path(folder) / "key.pem", generated.tls_worker_key)
        roles = {
            f"tls_{role}_{part}": path
            for role in ("client", "scheduler", "worker")
            for part, path in (("cert", cert), ("key", key))
        }
        yield Security(require_encryption=True, tls_ca_file=cert, **roles)


@contextmanager
def slurm_cluster(
    profile: str, workers: int, log_directory: str | os.PathLike[str]
) -> Iterator[SLURMCluster]:
    """A dask-jobqueue SLURMCluster behind TLS on a cluster profile, once its ``workers``
    workers are connected; its jobs are cancelled and its credentials removed on exit."""
    from dask_jobqueue import SLURMCluster

    from jobs.profiles import jobqueue_parameters, load_profile

    parameters = jobqueue_parameters(load_profile(profile), log_directory)
    logs = Path(log_directory)
    logs.mkdir(mode=0o700, parents=True, exist_ok=True)
    with (
        temporary_credentials(logs) as security,
        SLURMCluster(security=security, **parameters) as cluster,
    ):
        check_submission(cluster.job_script(), profile)
        cluster.scale(workers)
        with Client(cluster) as client:
            wait_for_workers(cluster, client, workers, logs)
        yield cluster
