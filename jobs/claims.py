"""Task claims: at most one live runner computes a task, whoever started the runners.

Runners of one store (``nnqs run`` started twice, pool processes, SLURM array elements
on several nodes, MPI ranks) claim a task before computing it. A claim is a file
``<store>/.claims/<task>.<n>`` holding its owner (host, pid, SLURM ids), created
atomically and only if absent (a hard link from a complete temporary file: POSIX
``link`` is atomic on local and network file systems, and a reader never sees a
half-written claim). The rule, checked by each claimant *after* creating its file:

    the claim with the lowest number ``n`` whose owner is alive holds the task.

A claimant that does not hold the task removes its file and leaves the task. Numbers
are unique (creation fails if taken) and owners only go from alive to dead, so two
live runners never both hold a task; a dead owner's claim (a killed process, an ended
SLURM job) is ignored, and removed by the next claimant. An owner on another host
without SLURM ids cannot be checked and counts as alive (as its manifest record does).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from suite.store import process_alive, process_info

CLAIMS = ".claims"


@dataclass(frozen=True)
class Claim:
    """The outcome of :func:`claim_task`: ``held`` by us, or by ``owner`` (alive)."""

    held: bool
    owner: dict[str, Any] | None = None

    def describe(self) -> str:
        owner = self.owner or {}
        slurm = owner.get("slurm", {}).get("job_id")
        where = f"SLURM job {slurm}" if slurm else f"pid {owner.get('pid')}"
        return f"claimed by a live runner on {owner.get('host', '?')} ({where})"


@contextlib.contextmanager
def claim_task(store: str | os.PathLike[str], task: int | str) -> Iterator[Claim]:
    """Claim ``task`` of the store at ``store`` for the duration of the ``with`` block.

    ``task`` is a task number, or the name of a once-per-store step (``"aggregation"``).
    Yields a :class:`Claim`; when ``held`` the caller computes the task, and the claim
    is released on leaving the block (whatever happens). When not held, another live
    runner has it and nothing was left behind.
    """
    folder = Path(store) / CLAIMS
    mine = _create(folder, task)
    try:
        owner = _holder(folder, task, mine)
        yield Claim(held=owner is None, owner=owner)
    finally:
        mine.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            folder.rmdir()  # the last claim gone: the store holds Zarr's files only


def _create(folder: Path, task: int | str) -> Path:
    """A new claim file of ours for ``task``, with the next free number."""
    while True:
        folder.mkdir(exist_ok=True)
        staged = folder / f".{uuid.uuid4().hex}"
        try:
            staged.write_text(json.dumps(process_info()))
            numbers = [number for number, _ in _claims(folder, task)]
            path = folder / f"{task}.{max(numbers, default=-1) + 1}"
            os.link(staged, path)
            return path
        except (FileExistsError, FileNotFoundError):
            continue  # that number was taken, or the folder was just removed: again
        finally:
            staged.unlink(missing_ok=True)


def _holder(folder: Path, task: int | str, mine: Path) -> dict[str, Any] | None:
    """The owner of the lowest live claim before ``mine`` (None: we hold the task).

    Dead claimants' files are removed on the way.
    """
    queue = functools.cache(slurm_jobs)
    for _, path in sorted(_claims(folder, task)):
        if path == mine:
            return None
        try:
            owner = json.loads(path.read_text())
        except FileNotFoundError:
            continue  # released meanwhile
        if owner_alive(owner, queue):
            return owner
        path.unlink(missing_ok=True)
    return None


def _claims(folder: Path, task: int | str) -> list[tuple[int, Path]]:
    prefix = f"{task}."
    return [
        (int(entry.name[len(prefix) :]), entry)
        for entry in folder.iterdir()
        if entry.name.startswith(prefix) and entry.name[len(prefix) :].isdigit()
    ]


def owner_alive(info: dict[str, Any], queue: Callable[[], set[str] | None]) -> bool:
    """Whether the process (or SLURM job) a claim or a manifest record names still runs.

    ``queue()`` gives the ids of the jobs in the SLURM queue (None when it cannot be
    asked: then a SLURM owner counts as alive). An earlier run of this very SLURM job
    (requeued since: another ``restart_count``) is dead. A process on another host
    without SLURM ids cannot be checked and counts as alive.
    """
    slurm = info.get("slurm")
    if slurm and "job_id" in slurm:
        mine = process_info().get("slurm", {})
        if slurm["job_id"] == mine.get("job_id") and slurm.get("restart_count", "0") != mine.get(
            "restart_count", "0"
        ):
            return False
        queued = queue()
        return True if queued is None else slurm["job_id"] in queued
    if info.get("host") != socket.gethostname():
        return True
    try:
        pid = int(info["pid"])
    except (KeyError, ValueError):
        return False
    return process_alive(pid)


def slurm_jobs() -> set[str] | None:
    """Ids of the SLURM jobs in the queue (array tasks under their own ids), or None."""
    try:
        result = subprocess.run(
            ["squeue", "-h", "-o", "%A %i"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    return {token for line in result.stdout.split() for token in line.split()}
