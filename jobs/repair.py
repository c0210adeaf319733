"""Repair a damaged sweep store from its spec (``nnqs repair STORE [--spec SPEC]``).

What can be damaged, and how it is rebuilt (the prepared arrays and the metadata are
deterministic functions of the spec; task results are recomputed by the next run):

* the root metadata (``zarr.json``: attributes, consolidated metadata): rewritten from
  the spec, which must then be given (``--spec``), and every prepared array with it
  (their checksums recorded anew); task records carry their own checksums, so done
  tasks that still match them are kept;
* a manifest record that cannot be read or decoded, or the manifest array itself:
  the task becomes pending (its result is recomputed by the next run);
* a prepared array (target, inputs, masks, infinite-width results, Gram matrices)
  whose checksum no longer matches the one recorded at creation, or whose chunks or
  metadata cannot be read: recreated and rewritten from the spec, then checked
  against the recorded checksum;
* a done task whose regions no longer match its checksum: pending.

Whenever a task becomes pending or an array is rewritten, the aggregation is stale:
the store is marked not aggregated, and the next ``nnqs run`` or ``nnqs resubmit``
recomputes what is missing and aggregates again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import zarr

from jobs.registry import Layout, study
from jobs.spec import SweepSpec, load_spec, store_spec
from jobs.studies import expand, write_grams
from jobs.studies.base import UNINDEXED
from jobs.sweep import intact
from suite.store import (
    MANIFEST,
    TASK_DIMENSION,
    MetadataError,
    StoreError,
    SweepStore,
    create_array,
    create_manifest,
    provenance,
    unindexed_dimensions,
)


def repair(path: str | os.PathLike[str], spec_source: str | None = None) -> dict[str, Any]:
    """Repair the store at ``path`` (see the module docstring); return what was done."""
    path = Path(path)
    if not path.is_dir():
        raise StoreError(f"store {path}: no such directory")
    given = load_spec(spec_source) if spec_source else None
    layout = None  # computed (the store's whole preparation) only when something needs it
    try:
        store = SweepStore(path)
    except MetadataError:
        if given is None:
            raise
        layout = _layout(given)
        store = _rebuild_root(path, given, layout)
    rebuilt_root = layout is not None
    spec = store_spec(store)
    if given is not None and given.fingerprint() != spec.fingerprint():
        raise StoreError(
            f"store {path} holds another sweep than spec {given.source} (their fingerprints differ)"
        )
    pending = _repair_manifest(store, len(expand(spec)))
    damaged = _prepared_names(layout) if layout is not None else store.damaged_prepared()
    if damaged:
        _rebuild_prepared(store, layout or _layout(spec), damaged, record=rebuilt_root)
    changed = bool(pending or damaged or rebuilt_root)
    if changed:
        store.forget_aggregation()
    store.consolidate()
    return {
        "store": str(path),
        "root_metadata_rebuilt": rebuilt_root,
        "prepared_rebuilt": damaged,
        "tasks_now_pending": pending,
        "next": f"nnqs resubmit {path}" if pending else "nothing to recompute",
    }


def repair_prepared(store: SweepStore) -> list[str]:
    """Rebuild from the spec the prepared arrays whose checksum no longer matches (a run
    and a resubmit do this first); return their names."""
    damaged = store.damaged_prepared()
    if damaged:
        _rebuild_prepared(store, _layout(store_spec(store)), damaged)
        store.forget_aggregation()
    return damaged


def _repair_manifest(store: SweepStore, tasks: int) -> list[int]:
    """Make pending every task whose record is unreadable, or that is done but no longer
    matches its checksum; return them. (Failed tasks, and running ones whose runner
    died, keep their records: every run recomputes them anyway.)"""
    try:
        manifest = store.array(MANIFEST)
        if manifest.shape != (tasks,):
            raise StoreError("manifest of the wrong shape")
    except Exception:  # the manifest array itself is gone or unreadable: all pending
        create_manifest(store.group, tasks, overwrite=True)
        return list(range(tasks))
    pending = []
    for task in range(tasks):
        try:
            record = store.record_of(task)
        except StoreError:
            store.clear_record(task)
            pending.append(task)
            continue
        if record.state == "done" and not intact(store, dict(record.info)):
            store.clear_record(task)
            pending.append(task)
    return pending


def _layout(spec: SweepSpec) -> Layout:
    """The store layout of ``spec``: computing it prepares everything (target, kernels)."""
    return study(spec.sweep.study).layout(spec)


def _prepared_names(layout: Layout) -> list[str]:
    """The arrays written when a store of ``layout`` is created (their checksums kept)."""
    return [*layout.initial, *(name for name, *_ in layout.grams)]


def _rebuild_prepared(
    store: SweepStore, layout: Layout, names: list[str], record: bool = False
) -> None:
    """Recreate and rewrite the prepared arrays ``names`` of ``layout``; check each
    against its recorded checksum (``record``: record the new checksums instead)."""
    declared = {array.name: array for array in layout.arrays}
    for name in names:
        create_array(store.group, declared[name], overwrite=True)
        if name in layout.initial:
            store.group[name][...] = layout.initial[name]
    write_grams(store.group, layout, [name for name in names if name not in layout.initial])
    checksums = {name: store.array_checksum(name) for name in names}
    if record:
        store.update_attrs(prepared={**store.attrs.get("prepared", {}), **checksums})
        return
    differ = [name for name in names if checksums[name] != store.attrs["prepared"][name]]
    if differ:
        raise StoreError(
            f"store {store.path}: the rebuilt {', '.join(differ)} differ from the checksums "
            "recorded at creation (the code or its dependencies changed since): run the spec "
            "into a new store"
        )


def _rebuild_root(path: Path, spec: SweepSpec, layout: Layout) -> SweepStore:
    """A fresh root ``zarr.json`` for the store at ``path`` from ``spec`` and its ``layout``
    (arrays kept); the prepared arrays' checksums are recorded when they are rewritten."""
    (path / "zarr.json").unlink()
    group = zarr.open_group(path, mode="a", zarr_format=3)
    group.attrs.update(
        {
            "spec": spec.to_dict(),
            "study": spec.sweep.study,
            **layout.attrs,
            "fingerprint": spec.fingerprint(),
            "provenance": {**provenance(), "root_metadata_rebuilt": True},
            "unindexed_dimensions": unindexed_dimensions(
                layout.arrays, {**UNINDEXED, "task": TASK_DIMENSION}
            ),
        }
    )
    return SweepStore(path)
