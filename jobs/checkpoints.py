"""Mid-task checkpoints: a training task saves its state into the sweep's store and a
rerun resumes from it (README, "Checkpoints within a task"; :mod:`suite.training.checkpoint`).

A task's checkpoints live in ``<store>/.checkpoints/task-<id>/``, a Zarr group written
only by the process that holds the task's claim (:mod:`jobs.claims`)::

    logs/values                      (L, V, m)   one chunk per logged step: the V
                                                 per-member values (train and test loss)
    logs/sums                        (L, 5, D)   one chunk per logged step
    slot-0/leaf-<i>, slot-1/leaf-<i>             the update's state, chunked by members

Two slots alternate, so a save never overwrites the newest checkpoint. A slot's
attributes are its commit, written last: the step, the logged steps it covers, which
update, and the SHA-256 of its state and of the log rows it covers. A slot whose
commit, state or rows do not match its checksum is damaged: the older slot is used, or
step 0, and the task says so (on stderr and in its record). The group's own attributes
keep the task's ``runs``: each run's starting step and its last saved step.

When to save is the spec's ``[checkpoint]`` (:class:`jobs.spec.Checkpoint`): every
``every_seconds`` of training, every ``every_logs`` logged steps, and on a stop request
(:func:`stop_on_signal`: SLURM's signal before its time limit), after which the run
stops with :class:`TrainingStopped`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from jobs.spec import Checkpoint
from suite.store import quiet_zarr
from suite.training.checkpoint import LOG_FIELDS, Snapshot

#: the folder of a store that holds its tasks' checkpoints
FOLDER = ".checkpoints"
#: largest chunk of a saved state leaf (bytes)
CHUNK_BYTES = 64 << 20
SLOTS = ("slot-0", "slot-1")


class TrainingStopped(RuntimeError):
    """A run stopped on request after saving its checkpoint at ``step``; a rerun
    resumes there."""

    def __init__(self, message: str, step: int) -> None:
        super().__init__(message)
        self.step = step


@dataclass
class _StopState:
    """This process's stop requests: ``watching`` checkpointing runs (a signal then
    waits for the run's next slice), the signal ``requested`` and not yet acted on
    (reset when :func:`stop_on_signal` ends), and the checkpoints ``saved`` so far."""

    watching: int = 0
    requested: str | None = None
    saved: int = 0


_stop = _StopState()


@contextmanager
def stop_on_signal(signum: int) -> Iterator[Callable[[], None]]:
    """While inside, ``signum`` asks a checkpointing run to save and stop
    (:class:`TrainingStopped`) at its next slice, instead of acting as the handler
    installed before would (which it does at once when no run is checkpointing). Yields
    that previous action as a call, for the caller to make once the run has stopped."""
    previous = signal.getsignal(signum)

    def act(frame: Any = None) -> None:
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:  # the default action (for SIGUSR2: terminate)
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    def handler(number: int, frame: Any) -> None:
        if _stop.watching:
            _stop.requested = signal.Signals(number).name
        else:
            act(frame)

    signal.signal(signum, handler)
    try:
        yield act
    finally:
        signal.signal(signum, previous)
        _stop.requested = None


def stop_requested() -> bool:
    """Whether a stop signal arrived (:func:`stop_on_signal`) that no run has acted on."""
    return _stop.requested is not None


def checkpoints_saved() -> int:
    """Checkpoints this process has saved (progress that a stopped run keeps)."""
    return _stop.saved


def task_folder(store: str | os.PathLike[str], task: int) -> Path:
    """Where task ``task``'s checkpoints live in the store at ``store``."""
    return Path(store) / FOLDER / f"task-{task}"


def drop(store: str | os.PathLike[str], task: int) -> None:
    """Remove task ``task``'s checkpoints (and the folder, once no task has any)."""
    folder = task_folder(store, task)
    shutil.rmtree(folder, ignore_errors=True)
    try:
        folder.parent.rmdir()
    except OSError:
        pass  # other tasks' checkpoints, or none at all


def drop_finished(store: str | os.PathLike[str], done: Collection[int]) -> list[int]:
    """Remove the checkpoints of the ``done`` tasks that still have some (a run killed
    between recording a task done and dropping them); return those tasks."""
    root = Path(store) / FOLDER
    held = [int(p.name.removeprefix("task-")) for p in root.glob("task-*")] if root.is_dir() else []
    left = sorted(task for task in held if task in done)
    for task in left:
        drop(store, task)
    return left


def runs(store: str | os.PathLike[str], task: int) -> list[dict[str, Any]]:
    """What each run of task ``task`` did with checkpoints (empty without any)."""
    folder = task_folder(store, task)
    if not folder.is_dir():
        return []
    try:
        return list(_open(folder, "r").attrs.get("runs", []))
    except Exception:  # damaged metadata: the history is lost, the task is not
        return []


def last_step(store: str | os.PathLike[str], task: int) -> int | None:
    """The step of task ``task``'s newest committed checkpoint (not verified), or None."""
    folder = task_folder(store, task)
    if not folder.is_dir():
        return None
    try:
        group = _open(folder, "r")
    except Exception:  # damaged metadata: no checkpoint a run could use
        return None
    steps = [int(commit["step"]) for slot in SLOTS if (commit := _commit(group, slot))]
    return max(steps) if steps else None


def bytes_per_task(
    members: int, parameters: int, itemsize: int, logged: int, dimension: int, values: int = 2
) -> int:
    """Disk taken by one task's checkpoints: two slots of ``members x parameters`` values
    in the training dtype, and the logs (float64): ``values`` per member (the train and
    test losses of a supervised run) and the five sums per basis state."""
    per_step = values * members + 5 * dimension
    return 2 * members * parameters * itemsize + 8 * logged * per_step


class TaskCheckpoints:
    """The checkpoints of one task in its store (:class:`suite.training.checkpoint.Checkpoints`).

    ``policy`` says when to save (with ``keep``, also at ``final_step``, the run's last);
    ``log`` gets one line per resume or fallback.
    """

    def __init__(
        self, store: str | os.PathLike[str], task: int, policy: Checkpoint, final_step: int,
        log: Callable[[str], None] | None = None,
    ) -> None:  # fmt: skip
        self.folder = task_folder(store, task)
        self.task = task
        self.policy = policy
        self.final_step = final_step
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.newest: str | None = None  # the slot of the newest valid checkpoint
        self.rows = 0  # log rows on disk that this run wrote or verified
        self.saved_logged = 0
        self.clock = time.monotonic()
        self.run: dict[str, Any] = {}

    # -- Checkpoints protocol ----------------------------------------------------------

    def __enter__(self) -> TaskCheckpoints:
        _stop.watching += 1
        return self

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        """Stop watching for stop requests; a run that ended well is recorded finished."""
        _stop.watching -= 1
        if kind is None and self.run and self.folder.exists():
            self.run["finished"] = True
            self._record_run()

    def restore(self, accept: Callable[[Snapshot], str | None]) -> Snapshot | None:
        """The newest checkpoint whose checksum holds and that ``accept`` takes (it says
        why not); one that does not is named, and the older one or step 0 used."""
        notes: list[str] = []
        found = None
        try:
            group = _open(self.folder, "r") if self.folder.is_dir() else None
        except Exception as error:  # damaged metadata: start afresh
            notes.append(f"its checkpoints are unreadable ({type(error).__name__})")
            shutil.rmtree(self.folder, ignore_errors=True)
            group = None
        commits = [
            (c["step"], slot, c)
            for slot in SLOTS
            if group is not None and (c := _commit(group, slot)) is not None
        ]
        for step, slot, commit in sorted(commits, reverse=True):
            snapshot = _read(group, slot, commit)
            reason = f"is damaged ({snapshot})" if isinstance(snapshot, str) else None
            if reason is None and (refused := accept(snapshot)) is not None:
                reason = f"cannot resume this run ({refused})"
            if reason is None:
                found, self.newest, self.rows = snapshot, slot, snapshot.logged
                break
            notes.append(f"the checkpoint at step {step} {reason}")
        start = found.step if found is not None else 0
        if notes:
            self.log(f"nnqs: task {self.task}: {'; '.join(notes)}; resuming from step {start}")
        elif found is not None:
            self.log(f"nnqs: task {self.task}: resumes from its checkpoint at step {start}")
        self.run = {"run": uuid.uuid4().hex[:12], "host": socket.gethostname(), "pid": os.getpid()}
        self.run["resumed_from"] = start
        if notes:
            self.run["damaged"] = notes
        self.saved_logged = found.logged if found is not None else 0
        self.clock = time.monotonic()
        return found

    def reached(self, step: int, logged: int, snapshot: Callable[[], Snapshot]) -> None:
        """Save when the cadence or a stop request says so, and then stop on request;
        after the last slice, save only to keep the final state (``keep``) and never stop
        (the task is done; a pending request is the caller's, :func:`stop_requested`)."""
        requested = _stop.requested
        if step == self.final_step:
            if self.policy.keep:
                self.save(snapshot())
            return
        every = self.policy.every_seconds
        by_time = bool(every) and time.monotonic() - self.clock >= every
        by_count = bool(self.policy.every_logs) and (
            logged - self.saved_logged >= self.policy.every_logs
        )
        if requested or by_time or by_count:
            self.save(snapshot())
        if requested:
            self.run["stopped"] = step
            self._record_run()
            raise TrainingStopped(
                f"{requested} at step {step}: checkpoint saved, a rerun resumes there", step
            )

    # -- saving ------------------------------------------------------------------------

    def save(self, snapshot: Snapshot) -> None:
        """Write ``snapshot`` into the slot that does not hold the newest checkpoint (the
        slot is removed first: a save cut short leaves it uncommitted, never mixed)."""
        slot = SLOTS[1] if self.newest == SLOTS[0] else SLOTS[0]
        shutil.rmtree(self.folder / slot, ignore_errors=True)
        group = _open(self.folder, "a")
        logs, created = _log_arrays(group, snapshot)
        for name, array in logs.items():
            rows = getattr(snapshot, name)
            for row in range(0 if created else self.rows, snapshot.logged):
                array[row] = rows[row]
        self.rows = snapshot.logged
        state = group.require_group(slot)
        for i, leaf in enumerate(snapshot.state):
            per_member = max(1, leaf[:1].nbytes)
            array = state.create_array(
                f"leaf-{i}", shape=leaf.shape, dtype=leaf.dtype,
                chunks=(max(1, min(leaf.shape[0], CHUNK_BYTES // per_member)), *leaf.shape[1:]),
            )  # fmt: skip
            array[...] = leaf
        state.attrs.put(  # the commit: one metadata write, last
            {
                "step": snapshot.step,
                "logged": snapshot.logged,
                "engine": snapshot.engine,
                "leaves": len(snapshot.state),
                "checksum": _checksum(snapshot),
                "saved_unix": round(time.time(), 3),
            }
        )
        self.newest = slot
        self.saved_logged = snapshot.logged
        self.clock = time.monotonic()
        _stop.saved += 1
        self.run["saved"] = snapshot.step
        self._record_run()

    def _record_run(self) -> None:
        group = _open(self.folder, "a")
        history = list(group.attrs.get("runs", []))
        if history and history[-1].get("run") == self.run["run"]:
            history[-1] = self.run
        else:
            history.append(self.run)
        group.attrs["runs"] = history


def _open(folder: Path, mode: str) -> zarr.Group:
    with quiet_zarr():
        return zarr.open_group(folder, mode=mode, zarr_format=3, use_consolidated=False)


def _log_arrays(group: zarr.Group, snapshot: Snapshot) -> tuple[dict[str, zarr.Array], bool]:
    """The log arrays, grown to the snapshot's rows, and whether any had to be (re)created
    (then every row is written again)."""
    logs = group.require_group("logs")
    for stale in ("train_loss", "test_loss"):  # an older version's logs (see _read)
        if stale in logs:
            del logs[stale]
    rows = max(snapshot.logged, 1)
    arrays, created = {}, False
    for name in LOG_FIELDS:
        shape = getattr(snapshot, name).shape[1:]
        try:
            array = logs[name]
            if array.shape[1:] != shape:
                raise ValueError(f"logs of shape {array.shape}")
            if array.shape[0] < rows:
                array.resize((rows, *shape))
        except Exception:  # missing, or damaged metadata: (re)created
            array = logs.create_array(
                name, shape=(rows, *shape), chunks=(1, *shape), dtype="<f8", overwrite=True
            )
            created = True
        arrays[name] = array
    return arrays, created


def _commit(group: zarr.Group, slot: str) -> dict[str, Any] | None:
    """The commit of ``slot``, or None: never committed, being rewritten, or unreadable."""
    try:
        attrs = dict(group[slot].attrs)
    except Exception:  # absent, or its metadata no longer decodes
        return None
    return attrs if {"step", "logged", "engine", "leaves", "checksum"} <= set(attrs) else None


def _read(group: zarr.Group, slot: str, commit: dict[str, Any]) -> Snapshot | str:
    """The snapshot ``slot`` commits, or why not: a part of it is unreadable, or its
    checksum differs."""
    try:
        logs = group["logs"]
        if "values" not in logs and "train_loss" in logs:
            return (
                "written by an older nnqs-suite, whose logs were train_loss and test_loss "
                "arrays (now one values array)"
            )
        logged = int(commit["logged"])
        state = tuple(
            np.asarray(group[slot][f"leaf-{i}"][...]) for i in range(int(commit["leaves"]))
        )
        values = {}
        for name in LOG_FIELDS:
            array = logs[name]
            values[name] = np.asarray(array[:logged]) if logged else np.zeros((0, *array.shape[1:]))
        snapshot = Snapshot(int(commit["step"]), str(commit["engine"]), state, **values)
    except Exception as error:  # a chunk or metadata that no longer decodes
        return f"unreadable: {type(error).__name__}"
    return snapshot if _checksum(snapshot) == commit["checksum"] else "its checksum differs"


def _checksum(snapshot: Snapshot) -> str:
    """SHA-256 of a snapshot: its step, update, and every array's shape, dtype and bytes."""
    digest = hashlib.sha256(f"{snapshot.step}:{snapshot.engine}:{snapshot.logged}".encode())
    for values in (*snapshot.state, *(getattr(snapshot, name) for name in LOG_FIELDS)):
        values = np.ascontiguousarray(values)
        digest.update(f"{values.shape}{values.dtype}".encode())
        digest.update(values.tobytes())
    return digest.hexdigest()
