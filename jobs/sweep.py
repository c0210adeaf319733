"""A sweep's life: spec -> store -> tasks -> (any executor) -> aggregation.

* :func:`open_sweep` creates the store of a validated spec (preparing the
  infinite-width results) or reopens it, refusing a store of another sweep;
* :func:`execute_task` is all a worker runs (in-process, a pool process, a SLURM
  array task or an MPI rank): it needs the store path and a task number only;
* :func:`task_states` reads the manifest and, for tasks marked running, asks the
  process table or SLURM whether their owner is alive; with ``verify`` it re-reads
  every finished task's regions and compares their checksum;
* :func:`finalize` aggregates with Dask and consolidates the metadata, once.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax

from jobs import checkpoints
from jobs.claims import claim_task, owner_alive, slurm_jobs
from jobs.registry import study
from jobs.spec import SweepSpec, store_spec
from jobs.studies import check_memory, expand, write_grams
from jobs.studies.base import UNINDEXED
from suite.store import StoreError, SweepStore, remove_orphan_staging

if TYPE_CHECKING:
    from jobs.aggregate import Scheduler

STATES = ("pending", "running", "done", "failed", "corrupt")


def default_store(spec: SweepSpec) -> Path:
    """``runs/<sweep name>.zarr`` under the current directory."""
    return Path("runs") / f"{spec.sweep.name}.zarr"


def open_sweep(spec: SweepSpec, path: str | os.PathLike[str]) -> SweepStore:
    """The sweep's store at ``path``: created (and prepared) if missing, else checked.

    A store of another spec (a different :meth:`SweepSpec.fingerprint`) is refused;
    the executor settings may differ. Creation is atomic: on any error nothing is left,
    and a creation that a killed process left half-done is cleaned up here.
    """
    path = Path(path)
    if not path.exists():
        check_memory(spec)
        layout = study(spec.sweep.study).layout(spec)
        SweepStore.create(
            path,
            layout.arrays,
            {"spec": spec.to_dict(), "study": spec.sweep.study, **layout.attrs},
            spec.fingerprint(),
            len(expand(spec)),
            layout.initial,
            populate=lambda group: write_grams(group, layout),
            unindexed=UNINDEXED,
        )
    remove_orphan_staging(path)
    store = SweepStore(path)
    if store.attrs["fingerprint"] != spec.fingerprint():
        held = store.attrs.get("spec", {}).get("sweep", {}).get("name", "?")
        raise StoreError(
            f"store {path} holds another sweep ({held!r}, fingerprint "
            f"{store.attrs['fingerprint'][:12]}), not spec {spec.source} "
            f"({spec.fingerprint()[:12]}); pass another --store or remove it"
        )
    _adopt_cadence(store, spec)
    return store


def _adopt_cadence(store: SweepStore, spec: SweepSpec) -> None:
    """Make the spec's ``[checkpoint]`` the store's, which its tasks use (the cadence is
    not in the fingerprint: it changes when tasks save, never their results)."""
    held = dict(store.attrs["spec"])
    cadence = spec.to_dict().get("checkpoint")
    if cadence is None or held.get("checkpoint") == cadence:
        return
    print(
        f"nnqs: store {store.path.name}: checkpoint cadence {held.get('checkpoint', 'default')} "
        f"-> {cadence} (from {spec.source})",
        file=sys.stderr,
        flush=True,
    )
    store.update_attrs(spec={**held, "checkpoint": cadence})


def execute_task(path: str | os.PathLike[str], task_id: int) -> bool:
    """Run task ``task_id`` of the sweep at ``path`` and record it; True if this call ran it.

    The task is first claimed (:func:`jobs.claims.claim_task`): it is left alone (False)
    when another live runner holds it, or when the manifest says ``done`` and its
    regions still match their checksum (another runner finished it since the caller
    looked). Otherwise the manifest says ``running`` while it works, then ``done`` with
    the checksum of its regions read back (and seconds, devices, host, SLURM ids), or
    ``failed`` with the error, which is re-raised. A task that saved checkpoints
    (:mod:`jobs.checkpoints`) records its runs (``checkpoint_runs``: where each resumed
    and last saved); its checkpoints are then dropped unless ``checkpoint.keep``.
    """
    store = SweepStore(path)
    spec = store_spec(store)
    tasks = expand(spec)
    if not (0 <= task_id < len(tasks)):
        raise ValueError(f"task must be in [0, {len(tasks)}), got {task_id}")
    task = tasks[task_id]
    with claim_task(store.path, task_id) as claim:
        if not claim.held:
            return False
        record = store.record_of(task_id)
        if record.state == "done" and intact(store, record.info):
            return False
        store.record(task_id, "running")
        clock = time.perf_counter()
        try:
            regions = study(spec.sweep.study).run(spec, store, task)
        except BaseException as error:
            store.record(task_id, "failed", error=f"{type(error).__name__}: {error}")
            raise
        checksum = store.checksum(regions)
        resumed = checkpoints.runs(store.path, task_id)
        store.record(
            task_id,
            "done",
            checksum=checksum,
            regions=[[name, [[s.start, s.stop] for s in region]] for name, region in regions],
            seconds=round(time.perf_counter() - clock, 3),
            devices=[str(device) for device in jax.devices()],
            **({"checkpoint_runs": resumed} if resumed else {}),
        )
        if not spec.checkpoint.keep:
            checkpoints.drop(store.path, task_id)
    return True


@dataclass(frozen=True)
class SweepStatus:
    """Per-task states (see :data:`STATES`), what the manifest says of each, and the
    step of the newest checkpoint of each unfinished task that has one."""

    states: dict[int, str]
    records: dict[int, dict[str, Any]]
    checkpointed: dict[int, int]

    def counts(self) -> dict[str, int]:
        counter = Counter(self.states.values())
        return {state: counter.get(state, 0) for state in STATES}

    def todo(self) -> list[int]:
        """Tasks to (re)compute: pending, failed (also a dead owner) and corrupt."""
        return [t for t, s in self.states.items() if s in ("pending", "failed", "corrupt")]

    @property
    def complete(self) -> bool:
        return all(state == "done" for state in self.states.values())


def task_states(store: SweepStore, verify: bool = False) -> SweepStatus:
    """Each task's state; a running task whose owner is gone counts as ``failed``; the
    step each unfinished task has checkpointed.

    With ``verify``, every done task's regions are read back and checksummed: a
    mismatch (or an unreadable chunk) makes it ``corrupt``.
    """
    states, records = {}, {}
    queue = functools.cache(slurm_jobs)  # asked once, and only for a running SLURM task
    for record in store.records():
        state, info = record.state, dict(record.info)
        if state == "running" and not owner_alive(info, queue):
            state = "failed"
            info["error"] = "its process or SLURM job ended without finishing it"
        if state == "done" and verify and not intact(store, info):
            state = "corrupt"
        states[record.task], records[record.task] = state, info
    saved = {
        task: checkpoints.last_step(store.path, task) for task, s in states.items() if s != "done"
    }
    return SweepStatus(states, records, {t: step for t, step in saved.items() if step is not None})


def intact(store: SweepStore, info: dict[str, Any]) -> bool:
    """Whether a done task's regions (its manifest record ``info``) match their checksum."""
    regions = [
        (name, tuple(slice(a, b) for a, b in bounds)) for name, bounds in info.get("regions", [])
    ]
    try:
        return bool(regions) and store.checksum(regions) == info.get("checksum")
    except Exception:  # a chunk that no longer decodes is corruption too
        return False


def finalize(store: SweepStore, scheduler: Scheduler | None = None, progress: bool = True) -> None:
    """Aggregate the ensembles with Dask into the store and consolidate its metadata.

    ``scheduler``: a Dask scheduler's address or a cluster (default: an in-process one)."""
    from jobs.aggregate import aggregate  # here: a task process never loads Dask

    aggregate(store.path, scheduler=scheduler, progress=progress)
    store.update_attrs(finalized_unix=round(time.time(), 3))
    store.consolidate()
