"""Executors: one spec and one store, three ways to run its tasks.

Every executor ends in :func:`jobs.sweep.execute_task` for each task it is given;
what differs is where that runs:

* ``local`` (default, no service): in this process, or in a pool of
  ``executor.processes`` spawned processes, with a progress bar;
* ``slurm``: a submitit job array on a cluster profile (``jobs/clusters``), one
  array element per group of tasks; each element is ``Checkpointable``: at its
  time limit or on preemption SLURM requeues it and it resumes from the store
  (finished tasks are skipped);
* ``mpi``: under ``mpirun`` / ``srun`` each rank takes every R-th task; run
  outside an MPI launch it starts ``mpirun -n ranks`` (``srun`` inside a SLURM
  allocation) on this same command.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import submitit

from jobs.checkpoints import TrainingStopped, checkpoints_saved, stop_on_signal, stop_requested
from jobs.progress import ProgressBar
from jobs.spec import SweepSpec
from jobs.sweep import execute_task

#: tasks per SLURM array element, unless the spec's executor says otherwise
DEFAULT_TASKS_PER_JOB = 1
#: requeues of an array element at its time limit (each resumes from the store)
MAX_REQUEUES = 20
#: runs in a row that finish no task before an array element is no longer requeued
MAX_IDLE_RUNS = 3


@dataclass(frozen=True)
class RunReport:
    """What an executor did: tasks it finished, tasks it left to another runner (which
    held or had finished them: :func:`jobs.claims.claim_task`), failed tasks (with the
    error), seconds, SLURM job ids."""

    done: list[int]
    failed: dict[int, str]
    seconds: float
    jobs: list[str]
    elsewhere: list[int] = field(default_factory=list)


def run_local(
    path: Path, tasks: Sequence[int], processes: int = 1, progress: bool = True
) -> RunReport:
    """Run ``tasks`` here: in-process, or in ``processes`` spawned worker processes.

    On Ctrl-C (``KeyboardInterrupt``) the queued tasks are cancelled and the workers
    ended before the interrupt propagates; workers ignore SIGINT themselves (the
    parent decides) and die with their parent, even one killed by SIGKILL. A task
    cut short stays ``running`` in the manifest with a dead owner, so it counts as
    failed and the next run recomputes it.
    """
    with _ctrl_c_latched() as interrupted:
        return _run_local(path, tasks, processes, progress, interrupted)


@contextmanager
def _ctrl_c_latched() -> Iterator[list[int]]:
    """Ctrl-C that cannot be lost. Python drops an exception raised while a
    garbage-collection callback runs (JAX registers one) and only prints "Exception
    ignored", so a KeyboardInterrupt can vanish mid-task; this handler also latches the
    signal in the list it yields, which the task loops check between tasks. Installed
    only over Python's default handler, in the main thread."""
    latched: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        latched.append(signum)
        raise KeyboardInterrupt

    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield latched
        return
    signal.signal(signal.SIGINT, handler)
    try:
        yield latched
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _run_local(
    path: Path, tasks: Sequence[int], processes: int, progress: bool, interrupted: list[int]
) -> RunReport:
    """:func:`run_local` under a latched Ctrl-C (``interrupted`` non-empty once seen)."""
    clock = time.perf_counter()
    bar = ProgressBar(len(tasks), f"run {path.name}", enabled=progress)
    ran: dict[int, bool] = {}
    failed: dict[int, str] = {}
    if processes == 1:
        for task in tasks:
            if interrupted:
                raise KeyboardInterrupt
            try:
                ran[task] = execute_task(path, task)
            except Exception as error:
                failed[task] = f"{type(error).__name__}: {error}"
            bar.advance(note=f"task {task}")
    else:
        pool = ProcessPoolExecutor(
            processes,
            mp_context=get_context("spawn"),
            initializer=_worker_setup,
            initargs=(os.getpid(),),
        )
        try:
            futures = {pool.submit(execute_task, path, task): task for task in tasks}
            for future in as_completed(futures):
                if interrupted:
                    raise KeyboardInterrupt
                task = futures[future]
                try:
                    ran[task] = future.result()
                except Exception as error:
                    failed[task] = f"{type(error).__name__}: {error}"
                bar.advance(note=f"task {task}")
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            for worker in multiprocessing.active_children():
                worker.kill()
            raise
        pool.shutdown()
    if interrupted:
        raise KeyboardInterrupt
    bar.close()
    done = sorted(task for task, computed in ran.items() if computed)
    elsewhere = sorted(task for task, computed in ran.items() if not computed)
    return RunReport(done, failed, time.perf_counter() - clock, [], elsewhere)


def _worker_setup(parent: int) -> None:
    """A pool worker: SIGINT is its parent's to handle, and it dies with its parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent)


def die_with_parent(parent: int) -> None:
    """Ask Linux to SIGKILL this process when its parent (pid ``parent``) ends
    (``PR_SET_PDEATHSIG``); elsewhere nothing. If the parent is already gone, end now."""
    if not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


class ShardJob(submitit.helpers.Checkpointable):
    """A SLURM array element: run a group of tasks, skipping those the store has done.

    As a submitit ``Checkpointable``, when SLURM signals the time limit or a
    preemption, submitit requeues the same call, which resumes from the store. A
    training task first saves its checkpoint and stops (:mod:`jobs.checkpoints`), so
    the requeued run resumes it from that step. After :data:`MAX_IDLE_RUNS` runs in a
    row that made no progress (no task finished, no checkpoint advanced) the element
    is not requeued again: it fails and says so instead of spending all its requeues.
    One idle run is not enough to give up: SLURM checks time limits every 30 s or so,
    so a run can be signalled well before its limit.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.progressed = False
        self.saved_before = checkpoints_saved()
        self.idle_runs = 0  # pickled with the requeued call: counts across runs

    def __call__(self, tasks: Sequence[int]) -> list[int]:
        """Run the group; return the tasks this run computed (:func:`execute_task` leaves
        one another runner holds, or one done and intact)."""
        self.progressed = False
        self.saved_before = checkpoints_saved()
        computed = []
        usr_signal = getattr(signal, f"SIG{submitit.JobEnvironment.USR_SIG}")
        with stop_on_signal(usr_signal) as requeue:
            for task in tasks:
                if stop_requested():  # signalled after the last slice of the previous task
                    requeue()
                try:
                    ran = execute_task(self.path, task)
                except TrainingStopped:
                    requeue()  # submitit's own handler: checkpoint() below, requeue, exit
                    raise
                if ran:
                    computed.append(task)
                    self.progressed = True
        return computed

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission | None:
        saved = checkpoints_saved() > self.saved_before  # a checkpoint advanced this run
        self.idle_runs = 0 if self.progressed or saved else self.idle_runs + 1
        if self.idle_runs >= MAX_IDLE_RUNS:
            print(
                f"nnqs: no progress in {self.idle_runs} runs in a row (no task finished, no "
                "checkpoint advanced), so this job is not requeued; raise "
                "executor.slurm.time_min",
                file=sys.stderr,
                flush=True,
            )
            return None
        return super().checkpoint(*args, **kwargs)


def submit_slurm(
    path: Path,
    spec: SweepSpec,
    tasks: Sequence[int],
    tasks_per_job: int = DEFAULT_TASKS_PER_JOB,
    wait: bool = True,
    progress: bool = True,
) -> RunReport:
    """Submit ``tasks`` as a submitit job array on the spec's cluster profile.

    Logs go to ``<store>.slurm/``; with ``wait`` the call follows the array to its end.
    """
    from jobs.profiles import load_profile, submitit_parameters

    profile = load_profile(spec.executor.profile)
    if spec.executor.slurm:
        profile = profile.with_overrides(**spec.executor.slurm)
    clock = time.perf_counter()
    folder = log_folder(path)
    executor = submitit.AutoExecutor(
        folder=folder, cluster="slurm", slurm_max_num_timeout=MAX_REQUEUES
    )
    executor.update_parameters(name=f"nnqs-{spec.sweep.name}", **submitit_parameters(profile))
    groups = [list(tasks[i : i + tasks_per_job]) for i in range(0, len(tasks), tasks_per_job)]
    jobs = _submit_array(executor, ShardJob(str(path)), groups)
    ids = [job.job_id for job in jobs]
    done: list[int] = []
    failed: dict[int, str] = {}
    if wait:
        bar = ProgressBar(len(jobs), f"slurm {ids[0].split('_')[0]}", enabled=progress)
        for job, group in zip(jobs, groups, strict=True):
            try:
                job.result()
                done += group
            except Exception as error:  # submitit's FailedJobError / UncompletedJobError
                for task in group:
                    failed[task] = f"{type(error).__name__}: {str(error).splitlines()[0]}"
            bar.advance()
        bar.close()
    return RunReport(sorted(done), failed, time.perf_counter() - clock, ids)


def _submit_array(
    executor: submitit.AutoExecutor, job: ShardJob, groups: list[list[int]]
) -> list[submitit.Job[Any]]:
    """``executor.map_array(job, groups)``; when SLURM refuses the array, the files
    submitit wrote for it are removed and a ``ValueError`` gives sbatch's reason."""
    folder = Path(str(executor.folder)).parent  # <store>.slurm (the %j is per job)
    before = set(folder.rglob("*")) if folder.exists() else set()
    try:
        return executor.map_array(job, groups)
    except Exception as error:
        for leftover in sorted(set(folder.rglob("*")) - before, reverse=True):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
        if not before and folder.exists() and not any(folder.iterdir()):
            folder.rmdir()
        reason = " ".join(str(getattr(error, "stderr", "") or error).split())
        raise ValueError(f"SLURM refused the job array: {reason[:300]}") from None


def check_slurm_controller() -> None:
    """SLURM's commands are on PATH and its controller answers ``scontrol ping``; else a
    ``ValueError`` that says which (checked before a store is created)."""
    if shutil.which("sbatch") is None or shutil.which("scontrol") is None:
        raise ValueError("executor.kind = 'slurm' needs SLURM's sbatch and scontrol on PATH")
    try:
        result = subprocess.run(
            ["scontrol", "ping"], capture_output=True, text=True, timeout=60, check=False
        )
    except subprocess.TimeoutExpired:
        raise ValueError("the SLURM controller did not answer `scontrol ping` in 60 s") from None
    answer = (result.stdout + result.stderr).strip().splitlines()
    if result.returncode != 0 or not answer or "UP" not in answer[0]:
        raise ValueError(
            f"the SLURM controller is not reachable (`scontrol ping`: "
            f"{answer[0] if answer else 'no answer'}); check that slurmctld runs and "
            "SLURM_CONF points at its configuration"
        )


def log_folder(path: Path) -> Path:
    """Where SLURM jobs of the store at ``path`` keep their logs: ``<store>.slurm/%j``."""
    return Path(f"{path}.slurm") / "%j"


def mpi_world() -> tuple[int, int]:
    """``(rank, size)`` of this process in MPI_COMM_WORLD (``(0, 1)`` outside MPI)."""
    if not any(key in os.environ for key in ("OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE")):
        return 0, 1
    from mpi4py import MPI

    return MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size()


def mpi_barrier() -> None:
    if mpi_world()[1] > 1:
        from mpi4py import MPI

        MPI.COMM_WORLD.Barrier()


def mpi_broadcast(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (``value`` itself outside MPI)."""
    if mpi_world()[1] == 1:
        return value
    from mpi4py import MPI

    return MPI.COMM_WORLD.bcast(value, root=0)


def mpi_launch_command(ranks: int, argv: Sequence[str]) -> list[str]:
    """``srun --mpi=pmix -n R`` inside a SLURM allocation, else ``mpirun -n R``, on argv."""
    if "SLURM_JOB_ID" in os.environ and shutil.which("srun"):
        return ["srun", "--mpi=pmix", "-n", str(ranks), *argv]
    mpirun = shutil.which("mpirun")
    if mpirun is None:
        raise ValueError(
            "executor.kind = 'mpi' needs Open MPI's mpirun on PATH (Debian: openmpi-bin)"
        )
    return [mpirun, "--oversubscribe", "-n", str(ranks), *argv]


def mpi_environment(base: Mapping[str, str], euid: int) -> dict[str, str]:
    """The environment of an MPI relaunch: ``base``, plus Open MPI's two consents to run as
    root when the effective user ``euid`` is root (its ``mpirun`` refuses root otherwise).

    Any other user gets ``base`` as it is: the consent is never given on their behalf.
    """
    if euid != 0:
        return dict(base)
    return {**base, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def relaunch_under_mpi(ranks: int, argv: Sequence[str]) -> int:
    """Run ``python -m nnqs argv`` as ``ranks`` MPI processes; return its exit status."""
    env = mpi_environment(os.environ, os.geteuid())
    command = mpi_launch_command(ranks, [sys.executable, "-m", "nnqs", *argv])
    return subprocess.run(command, env=env, check=False).returncode
