"""Mid-task checkpoints: a training task saves its state into the sweep's store and a
rerun resumes from it (README, "Checkpoints"; :mod:`suite.training.checkpoint`).

A task's checkpoints live in ``<store>/.checkpoints/task-<id>/``, a Zarr group written
only by the process that holds the task's claim (:mod:`jobs.claims`)::

    logs/train_loss, logs/test_loss  (L, m)      one chunk per logged step
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
import json
import os
import shutil
import signal
import socket
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from jobs.spec import Checkpoint
from suite.training.checkpoint import Snapshot

#: the folder of a store that holds its tasks' checkpoints
FOLDER = ".checkpoints"
#: largest chunk of a saved state leaf (bytes)
CHUNK_BYTES = 64 << 20
SLOTS = ("slot-0", "slot-1")


class TrainingStopped(RuntimeError):
    """A run stopped on request after saving its checkpoint; a rerun resumes there.
    ``advanced``: the steps this run added to the task's checkpoint."""

    def __init__(self, message: str, advanced: int) -> None:
        super().__init__(message)
        self.advanced = advanced


_stop: dict[str, Any] = {"watching": 0, "requested": None}


@contextmanager
def stop_on_signal(signum: int) -> Iterator[Callable[[], None]]:
    """While inside, ``signum`` asks a checkpointing run to save and stop
    (:class:`TrainingStopped`) instead of running the handler installed before (which
    is called at once when no run is checkpointing). Yields that previous handler as a
    call, for the caller to run once the run has stopped."""
    previous = signal.getsignal(signum)

    def handler(number: int, frame: Any) -> None:
        if _stop["watching"]:
            _stop["requested"] = signal.Signals(number).name
        elif callable(previous):
            previous(number, frame)

    signal.signal(signum, handler)
    try:
        yield lambda: previous(signum, None) if callable(previous) else None
    finally:
        signal.signal(signum, previous)
        _stop["requested"] = None


def stop_requested() -> bool:
    """Whether a stop signal arrived (:func:`stop_on_signal`) that no run has acted on."""
    return _stop["requested"] is not None


def task_folder(store: str | os.PathLike[str], task: int) -> Path:
    return Path(store) / FOLDER / f"task-{task}"


def drop(store: str | os.PathLike[str], task: int) -> None:
    """Remove task ``task``'s checkpoints (and the folder, once no task has any)."""
    folder = task_folder(store, task)
    shutil.rmtree(folder, ignore_errors=True)
    try:
        folder.parent.rmdir()
    except OSError:
        pass  # other tasks' checkpoints, or none at all


def runs(store: str | os.PathLike[str], task: int) -> list[dict[str, Any]]:
    """What each run of task ``task`` did with checkpoints (empty without any)."""
    try:
        group = _open(task_folder(store, task), "r")
    except Exception:
        return []
    return list(group.attrs.get("runs", []))


def last_step(store: str | os.PathLike[str], task: int) -> int | None:
    """The step of task ``task``'s newest committed checkpoint (not verified), or None."""
    folder = task_folder(store, task)
    steps = []
    for slot in SLOTS:
        try:
            steps.append(
                int(json.loads((folder / slot / "zarr.json").read_text())["attributes"]["step"])
            )
        except Exception:
            continue
    return max(steps) if steps else None


def bytes_per_task(
    members: int, parameters: int, itemsize: int, logged: int, dimension: int
) -> int:
    """Disk taken by one task's checkpoints: two slots of ``members x parameters`` values
    in the training dtype, and the logs (float64)."""
    return 2 * members * parameters * itemsize + 8 * logged * (2 * members + 5 * dimension)


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
        _stop["watching"] += 1
        return self

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        """Stop watching for stop requests; a run that ended well is recorded finished."""
        _stop["watching"] -= 1
        if kind is None and self.run and self.folder.exists():
            self.run["finished"] = True
            self._record_run()

    def restore(self) -> Snapshot | None:
        """The newest checkpoint whose checksum holds; a damaged one is named and skipped."""
        notes = []
        found = None
        if self.folder.exists():
            group = _open(self.folder, "a")
            candidates = []
            for slot in SLOTS:
                commit = _commit(group, slot)
                if commit is not None:
                    candidates.append((commit["step"], slot, commit))
            for step, slot, commit in sorted(candidates, reverse=True):
                snapshot = _read(group, slot, commit)
                if isinstance(snapshot, Snapshot):
                    found, self.newest, self.rows = snapshot, slot, snapshot.logged
                    break
                notes.append(f"the checkpoint at step {step} is damaged ({snapshot})")
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
        """Save when the cadence or a stop request says so; stop after saving on request."""
        requested = _stop["requested"]
        by_time = (
            self.policy.every_seconds and time.monotonic() - self.clock >= self.policy.every_seconds
        )
        by_count = self.policy.every_logs and logged - self.saved_logged >= self.policy.every_logs
        at_end = self.policy.keep and step == self.final_step
        if requested or by_time or by_count or at_end:
            self.save(snapshot())
        if requested:
            self.run["stopped"] = step
            self._record_run()
            raise TrainingStopped(
                f"{requested} at step {step}: checkpoint saved, a rerun resumes there",
                step - self.run["resumed_from"],
            )

    # -- saving ------------------------------------------------------------------------

    def save(self, snapshot: Snapshot) -> None:
        """Write ``snapshot`` into the slot that does not hold the newest checkpoint."""
        group = _open(self.folder, "a")
        slot = SLOTS[1] if self.newest == SLOTS[0] else SLOTS[0]
        if slot in group:
            group[slot].attrs.clear()  # uncommitted while its state is overwritten
        logs = _log_arrays(group, snapshot)
        for name, array in logs.items():
            rows = getattr(snapshot, name)
            for row in range(self.rows, snapshot.logged):
                array[row] = rows[row]
        self.rows = snapshot.logged
        state = group.require_group(slot)
        for i, leaf in enumerate(snapshot.state):
            per_member = max(1, leaf[:1].nbytes)
            array = state.create_array(
                f"leaf-{i}", shape=leaf.shape, dtype=leaf.dtype, overwrite=True,
                chunks=(max(1, min(leaf.shape[0], CHUNK_BYTES // per_member)), *leaf.shape[1:]),
            )  # fmt: skip
            array[...] = leaf
        state.attrs.update(
            step=snapshot.step,
            logged=snapshot.logged,
            engine=snapshot.engine,
            leaves=len(snapshot.state),
            checksum=_checksum(snapshot),
            saved_unix=round(time.time(), 3),
        )
        self.newest = slot
        self.saved_logged = snapshot.logged
        self.clock = time.monotonic()
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
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Zarr format 3 specification.*")
        return zarr.open_group(folder, mode=mode, zarr_format=3, use_consolidated=False)


def _log_arrays(group: zarr.Group, snapshot: Snapshot) -> dict[str, zarr.Array]:
    logs = group.require_group("logs")
    rows = max(snapshot.logged, 1)
    arrays = {}
    for name in ("train_loss", "test_loss", "sums"):
        values = getattr(snapshot, name)
        shape = values.shape[1:]
        if name in logs and logs[name].shape[1:] == shape:
            array = logs[name]
            if array.shape[0] < rows:
                array.resize((rows, *shape))
        else:
            array = logs.create_array(
                name, shape=(rows, *shape), chunks=(1, *shape), dtype="<f8", overwrite=True
            )
        arrays[name] = array
    return arrays


def _commit(group: zarr.Group, slot: str) -> dict[str, Any] | None:
    try:
        attrs = dict(group[slot].attrs)
        return attrs if {"step", "logged", "engine", "leaves", "checksum"} <= set(attrs) else None
    except Exception:
        return None


def _read(group: zarr.Group, slot: str, commit: dict[str, Any]) -> Snapshot | str:
    """The snapshot ``slot`` commits, or why not: a part of it is unreadable, or its
    checksum differs."""
    try:
        logged = int(commit["logged"])
        state = tuple(
            np.asarray(group[slot][f"leaf-{i}"][...]) for i in range(int(commit["leaves"]))
        )
        logs = {}
        for name in ("train_loss", "test_loss", "sums"):
            array = group["logs"][name]
            logs[name] = np.asarray(array[:logged]) if logged else np.zeros((0, *array.shape[1:]))
        snapshot = Snapshot(int(commit["step"]), str(commit["engine"]), state, **logs)
    except Exception as error:
        return f"unreadable: {type(error).__name__}"
    return snapshot if _checksum(snapshot) == commit["checksum"] else "its checksum differs"


def _checksum(snapshot: Snapshot) -> str:
    digest = hashlib.sha256(f"{snapshot.step}:{snapshot.engine}:{snapshot.logged}".encode())
    for values in (*snapshot.state, snapshot.train_loss, snapshot.test_loss, snapshot.sums):
        values = np.ascontiguousarray(values)
        digest.update(f"{values.shape}{values.dtype}".encode())
        digest.update(values.tobytes())
    return digest.hexdigest()
