"""Ensemble statistics from a sweep's shards, computed with Dask and written into the store.

One Dask task per grid point reads that point's per-shard sufficient statistics and
per-member results from the Zarr store, combines them with the library's estimators
and writes the point's own chunks of the aggregate arrays (one writer per chunk). What
a point's aggregate is, is the study's (:meth:`jobs.registry.Study.aggregate`; the
built-in ones in :mod:`jobs.studies`).

The cluster is a detail: a ``distributed.LocalCluster`` by default, the address of a
running scheduler, or a cluster object such as the TLS-secured dask-jobqueue
``SLURMCluster`` of :mod:`jobs.dask_slurm` (the client takes its credentials).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from distributed import Client, LocalCluster, as_completed
from distributed.deploy import Cluster

from jobs.progress import ProgressBar
from jobs.registry import study
from jobs.spec import aggregation_threads, store_spec
from jobs.studies import grid_axes
from suite.store import StoreError, SweepStore

#: what a client connects to: a scheduler's address, or a cluster object
Scheduler = str | Cluster


def aggregate_point(path: str, point: tuple[int, ...]) -> None:
    """One Dask task: the study of the store at ``path`` aggregates ``point``."""
    store = SweepStore(path)
    study(store.attrs["study"]).aggregate(store, point)


def grid_points(store: SweepStore) -> list[tuple[int, ...]]:
    """Every grid point of the store's study, in C order (as :func:`jobs.studies.expand`)."""
    shape = [len(values) for values in grid_axes(store_spec(store)).values()]
    return [tuple(int(i) for i in index) for index in np.ndindex(*shape)]


@contextmanager
def dask_client(scheduler: Scheduler | None = None, workers: int | None = None) -> Iterator[Client]:
    """A client of ``scheduler`` (an address, or a cluster whose security settings it takes),
    or of a fresh in-process LocalCluster."""
    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    workers = workers or aggregation_threads()
    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=workers,
            processes=False,
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def aggregate(
    path: str | os.PathLike[str], scheduler: Scheduler | None = None, progress: bool = True
) -> dict[str, Any]:
    """Aggregate every grid point of the (complete) sweep at ``path`` on a Dask cluster.

    ``scheduler``: the address of a running Dask scheduler, or a cluster (e.g. a
    SLURMCluster); default an in-process LocalCluster. Refuses a sweep with unfinished tasks.
    """
    store = SweepStore(path)
    records = store.records()
    missing = [r.task for r in records if r.state != "done"]
    if missing:
        raise StoreError(
            f"store {path}: {len(missing)} of {len(records)} tasks are not done "
            f"(first: {missing[:5]}); run `nnqs resubmit {path}` first"
        )
    points = grid_points(store)
    bar = ProgressBar(len(points), "aggregate", enabled=progress)
    with dask_client(scheduler) as client:
        futures = client.map(aggregate_point, [str(Path(path))] * len(points), points, pure=False)
        for future in as_completed(futures):
            future.result()
            bar.advance()
    bar.close()
    return {"store": str(path), "study": store.attrs["study"], "points": len(points)}
