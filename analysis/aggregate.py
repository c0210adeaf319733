"""Ensemble statistics from a sweep's shards, computed with Dask and written into the store.

One Dask task per grid point reads that point's per-shard sufficient statistics and
per-member results from the Zarr store, combines them with the library's estimators
and writes the point's own chunks of the aggregate arrays (one writer per chunk):

* dynamics: ensemble mean and variance of ``psi`` at every logged step and basis
  point, the mean of the member losses, the loss of the mean and its debiased
  estimate, train and test (theory.md §5; :func:`suite.training.summarize`);
* entanglement: means and standard errors of ``S_vN`` and ``S_2``, the replica
  ratio and its jackknife error (theory.md §6);
* kernels: the members' mean relative distance of the empirical QS-NTK from the
  infinite-width one, and the distance of their mean kernel (theory.md §4).

The cluster is a detail: a ``distributed.LocalCluster`` by default, or a
dask-jobqueue ``SLURMCluster`` from a cluster profile when asked.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from distributed import Client, LocalCluster, as_completed

from jobs.entanglement import ensemble_summary
from jobs.progress import ProgressBar
from jobs.spec import aggregation_threads
from jobs.studies import AGGREGATED_CURVES, ENTANGLEMENT_STATISTICS, SUMS, grid_axes
from jobs.sweep import store_spec
from suite.entanglement import EnsembleEntanglement
from suite.store import StoreError, SweepStore
from suite.training import EnsembleStats, summarize


def _dynamics_point(path: str, point: tuple[int, ...]) -> None:
    store = SweepStore(path)
    t, r, w = point
    at = (slice(t, t + 1), slice(r, r + 1), slice(w, w + 1))
    losses = {
        name: store.read(f"member_{name}", (*at, slice(None), slice(None)))[0, 0, 0].T
        for name in ("train_loss", "test_loss")
    }
    sums = {name: _shard_total(store, name, at) for name in SUMS}
    steps = store.read("step")
    stats = EnsembleStats(np.arange(losses["train_loss"].shape[1]), steps, **losses, **sums)
    train = np.flatnonzero(store.read("train_mask")[t])
    summary = summarize(stats, store.read("phi"), train)
    whole = (slice(None), slice(None))
    store.write("ensemble_mean", (*at, *whole), summary.mean[None, None, None])
    store.write("ensemble_variance", (*at, *whole), summary.variance[None, None, None])
    for name in AGGREGATED_CURVES:
        store.write(name, (*at, slice(None)), getattr(summary, name)[None, None, None])


def _shard_total(store: SweepStore, name: str, at: tuple[slice, ...]) -> np.ndarray:
    """Sum over the shards of a grid point's per-shard statistic (``at``: the point, then a
    shard axis and two more), read a shard at a time: memory of two shards whatever their
    number (the same additions in the same order as summing the stacked shards)."""

    def shard(index: int) -> np.ndarray:
        region = (*at, slice(index, index + 1), slice(None), slice(None))
        return store.read(name, region)[(0,) * (len(at) + 1)]

    total = shard(0)
    for index in range(1, store.array(name).shape[len(at)]):
        total += shard(index)
    return total


def _entanglement_point(path: str, point: tuple[int, ...]) -> None:
    store = SweepStore(path)
    a, w = point
    at = (slice(a, a + 1), slice(w, w + 1))
    members = slice(None)
    cuts = store.read("cut")
    result = EnsembleEntanglement(
        subsystems=tuple(tuple(range(c)) for c in cuts),
        members=store.read("member"),
        von_neumann=store.read("von_neumann", (*at, members, slice(None)))[0, 0],
        purity=store.read("purity", (*at, members, slice(None)))[0, 0],
        norm_sq=store.read("norm_sq", (*at, members))[0, 0],
    )
    summary = ensemble_summary(result)
    for name in ENTANGLEMENT_STATISTICS:
        store.write(name, (*at, slice(None)), np.asarray(summary[name])[None, None])


def _kernels_point(path: str, point: tuple[int, ...]) -> None:
    store = SweepStore(path)
    (w,) = point
    deviations = store.read("empirical_deviation")[w]
    mean_kernel = _shard_total(store, "empirical_sum", (slice(w, w + 1),)) / deviations.size
    reference = store.read("ntk_train")
    gap = np.linalg.norm(mean_kernel - reference) / np.linalg.norm(reference)
    store.write("mean_empirical_deviation", (slice(w, w + 1),), np.array([deviations.mean()]))
    store.write("deviation_of_mean_kernel", (slice(w, w + 1),), np.array([gap]))


POINTS: dict[str, Callable[[str, tuple[int, ...]], None]] = {
    "dynamics": _dynamics_point,
    "entanglement": _entanglement_point,
    "kernels": _kernels_point,
}


def grid_points(store: SweepStore) -> list[tuple[int, ...]]:
    """Every grid point of the store's study, in C order (as :func:`jobs.studies.expand`)."""
    shape = [len(values) for values in grid_axes(store_spec(store)).values()]
    return [tuple(int(i) for i in index) for index in np.ndindex(*shape)]


@contextmanager
def dask_client(scheduler: str | None = None, workers: int | None = None) -> Iterator[Client]:
    """A client of ``scheduler`` (an address), or of a fresh in-process LocalCluster."""
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


@contextmanager
def slurm_cluster(profile: str, workers: int, log_directory: str) -> Iterator[str]:
    """A dask-jobqueue SLURMCluster of ``workers`` workers on a cluster profile; its address."""
    from dask_jobqueue import SLURMCluster

    from jobs.profiles import jobqueue_parameters, load_profile

    with SLURMCluster(**jobqueue_parameters(load_profile(profile), log_directory)) as cluster:
        cluster.scale(workers)
        with Client(cluster) as client:
            client.wait_for_workers(workers, timeout=300)
        yield cluster.scheduler_address


def aggregate(
    path: str | os.PathLike[str], scheduler: str | None = None, progress: bool = True
) -> dict[str, Any]:
    """Aggregate every grid point of the (complete) sweep at ``path`` on a Dask cluster.

    ``scheduler``: the address of a running Dask scheduler (e.g. of a SLURMCluster);
    default an in-process LocalCluster. Refuses a sweep with unfinished tasks.
    """
    store = SweepStore(path)
    records = store.records()
    missing = [r.task for r in records if r.state != "done"]
    if missing:
        raise StoreError(
            f"store {path}: {len(missing)} of {len(records)} tasks are not done "
            f"(first: {missing[:5]}); run `nnqs resubmit {path}` first"
        )
    study = store.attrs["study"]
    points = grid_points(store)
    bar = ProgressBar(len(points), "aggregate", enabled=progress)
    with dask_client(scheduler) as client:
        futures = client.map(POINTS[study], [str(Path(path))] * len(points), points, pure=False)
        for future in as_completed(futures):
            future.result()
            bar.advance()
    bar.close()
    return {"store": str(path), "study": study, "points": len(points)}
