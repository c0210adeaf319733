"""A sweep's results in one Zarr (v3) group: preallocated arrays, a per-task manifest.

The rules (design: one source of truth, resumable, safe under concurrent writers):

* every array is created, with its dimension names (``xarray.open_zarr`` reads the
  group), when the store is created; nothing is created later by workers;
* a task writes only its own chunk-aligned regions, so each chunk has one writer;
  Zarr's local store writes every chunk to a temporary file and renames it, so a
  killed writer leaves either the old or the new chunk, never a torn one;
* completion is recorded in the ``manifest`` array, one JSON record per task in a
  chunk of its own (``state``: running, done or failed; the SHA-256 ``checksum`` of
  the task's regions read back after writing; host, process, SLURM ids, devices,
  seconds) -- never inferred from the existence of chunks;
* the store is created in a temporary directory and renamed into place, so a
  failure during creation leaves nothing behind; the sweep's ``fingerprint`` in the
  attributes guards against mixing two sweeps in one store;
* metadata is consolidated once, by :meth:`SweepStore.consolidate`, at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import zarr

MANIFEST = "manifest"
#: the manifest's attributes (see :class:`ArraySpec`)
MANIFEST_ATTRIBUTES = {
    "long_name": "task record",
    "units": "1",
    "description": "one JSON record per task (state, checksum, seconds, host, pid, SLURM "
    "ids, devices); empty while the task is pending",
}
#: why the manifest's ``task`` dimension has no coordinate array
TASK_DIMENSION = "task id: the grid points in C order, then the ensemble shards (tasks 0..n-1)"
#: packages whose versions the provenance records
PACKAGES = ("nnqs-suite", "jax", "jaxlib", "numpy", "scipy", "zarr", "dask", "xarray", "submitit")
Region = tuple[slice, ...]


class StoreError(ValueError):
    """A store that cannot be used as asked (missing, another sweep's, incomplete)."""


@dataclass(frozen=True)
class ArraySpec:
    """One preallocated array: name, dimension names, shape, chunk shape, dtype, fill, and
    what it holds (required, non-empty; written as the array's attributes): ``long_name``,
    ``units`` (physical units, ``"1"`` when dimensionless) and ``description``."""

    name: str
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    dtype: str
    fill_value: Any = 0
    long_name: str = field(kw_only=True)
    units: str = field(kw_only=True)
    description: str = field(kw_only=True)

    def __post_init__(self) -> None:
        if not (len(self.dims) == len(self.shape) == len(self.chunks)):
            raise ValueError(
                f"array {self.name!r}: dims {self.dims}, shape {self.shape} and chunks "
                f"{self.chunks} must have the same length"
            )
        empty = [key for key, value in self.attributes.items() if not value.strip()]
        if empty:
            raise ValueError(
                f"array {self.name!r}: {', '.join(empty)} must be non-empty strings "
                "(units '1' when dimensionless)"
            )

    @property
    def attributes(self) -> dict[str, str]:
        """The array's Zarr attributes: ``long_name``, ``units``, ``description``."""
        return {"long_name": self.long_name, "units": self.units, "description": self.description}


@dataclass(frozen=True)
class TaskRecord:
    """The manifest's record of one task (``state`` is ``pending`` when never started)."""

    task: int
    state: str
    info: Mapping[str, Any]

    @property
    def checksum(self) -> str | None:
        return self.info.get("checksum")


class SweepStore:
    """Read and write a sweep's Zarr group (see the module docstring for the rules)."""

    def __init__(self, path: str | os.PathLike[str], mode: str = "r+") -> None:
        self.path = Path(path)
        if not (self.path / "zarr.json").is_file():
            raise StoreError(f"store {self.path}: not a Zarr group (no zarr.json)")
        with _quiet():
            self.group = zarr.open_group(self.path, mode=mode)
        if "fingerprint" not in self.group.attrs or MANIFEST not in self.group:
            raise StoreError(f"store {self.path}: not a sweep store (no fingerprint or manifest)")

    # -- creation -------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        arrays: Sequence[ArraySpec],
        attrs: Mapping[str, Any],
        fingerprint: str,
        tasks: int,
        initial: Mapping[str, np.ndarray] | None = None,
        populate: Callable[[zarr.Group], None] | None = None,
        unindexed: Mapping[str, str] | None = None,
    ) -> SweepStore:
        """Create the store at ``path`` (which must not exist) with ``arrays`` preallocated,
        each with its attributes (:attr:`ArraySpec.attributes`).

        ``initial`` values (coordinates, prepared inputs) are written before the store
        is renamed into place, as are ``attrs`` plus ``fingerprint``, the
        :func:`provenance` of this process and ``unindexed_dimensions``; the manifest has
        ``tasks`` records. ``populate(group)`` may fill more (e.g. Gram matrices) before
        the rename. Every dimension needs a coordinate array (an array named after it, of
        that one dimension) or its reason for having none in ``unindexed``
        (:func:`unindexed_dimensions`).
        """
        path = Path(path)
        if path.exists():
            raise StoreError(f"store {path}: already exists")
        reasons = unindexed_dimensions(arrays, {**(unindexed or {}), "task": TASK_DIMENSION})
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.{uuid.uuid4().hex}.creating")
        try:
            with _quiet():
                group = zarr.open_group(staging, mode="w-", zarr_format=3)
                for spec in arrays:
                    group.create_array(
                        spec.name,
                        shape=spec.shape,
                        chunks=spec.chunks,
                        dtype=spec.dtype,
                        fill_value=spec.fill_value,
                        dimension_names=spec.dims,
                        attributes=spec.attributes,
                    )
                group.create_array(
                    MANIFEST,
                    shape=(tasks,),
                    chunks=(1,),
                    dtype=str,
                    dimension_names=("task",),
                    attributes=MANIFEST_ATTRIBUTES,
                )
                for name, values in (initial or {}).items():
                    group[name][...] = values
                if populate is not None:
                    populate(group)
                group.attrs.update(
                    {
                        **attrs,
                        "fingerprint": fingerprint,
                        "provenance": provenance(),
                        "unindexed_dimensions": reasons,
                    }
                )
            staging.rename(path)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return cls(path)

    # -- data -----------------------------------------------------------------------

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self.group.attrs)

    def array(self, name: str) -> zarr.Array:
        try:
            return self.group[name]
        except KeyError:
            raise StoreError(f"store {self.path}: no array {name!r}") from None

    def read(self, name: str, region: Region | None = None) -> np.ndarray:
        array = self.array(name)
        return np.asarray(array[...] if region is None else array[region])

    def write(self, name: str, region: Region, values: np.ndarray) -> None:
        """Write ``values`` into ``region`` of ``name``; the region must be chunk-aligned."""
        array = self.array(name)
        _check_aligned(name, array, region)
        with _quiet():
            array[region] = values

    def checksum(self, regions: Sequence[tuple[str, Region]]) -> str:
        """SHA-256 over the bytes of ``regions`` as stored, in the given order."""
        digest = hashlib.sha256()
        for name, region in regions:
            values = np.ascontiguousarray(self.read(name, region))
            digest.update(f"{name}{values.shape}{values.dtype}".encode())
            digest.update(values.tobytes())
        return digest.hexdigest()

    # -- manifest -------------------------------------------------------------------

    def record(self, task: int, state: str, **info: Any) -> None:
        """Write task ``task``'s manifest record (its own chunk: one writer)."""
        entry = {"state": state, **process_info(), **info}
        with _quiet():
            self.group[MANIFEST][task] = json.dumps(entry, sort_keys=True, default=str)

    def records(self) -> list[TaskRecord]:
        """All manifest records, ``pending`` where a task never started."""
        raw = self.read(MANIFEST)
        records = []
        for task, text in enumerate(raw.tolist()):
            info = json.loads(text) if text else {}
            records.append(TaskRecord(task, info.pop("state", "pending"), info))
        return records

    def consolidate(self) -> None:
        """Consolidate the metadata (once, when every writer has finished)."""
        with _quiet():
            zarr.consolidate_metadata(self.path)

    def update_attrs(self, **values: Any) -> None:
        """Set group attributes (a metadata write: only from a single finalising process)."""
        with _quiet():
            self.group.attrs.update(values)


def unindexed_dimensions(arrays: Sequence[ArraySpec], reasons: Mapping[str, str]) -> dict[str, str]:
    """The dimensions of ``arrays`` that no coordinate array indexes, each with its reason
    from ``reasons``; a :class:`StoreError` names the first that has neither."""
    coordinates = {spec.name for spec in arrays if spec.dims == (spec.name,)}
    dims = dict.fromkeys(dim for spec in arrays for dim in spec.dims if dim not in coordinates)
    missing = [dim for dim in dims if not reasons.get(dim, "").strip()]
    if missing:
        raise StoreError(
            f"dimension {missing[0]!r}: expected a coordinate array of that name or a reason "
            "for having none (jobs.studies.base.UNINDEXED)"
        )
    return {dim: reasons[dim] for dim in (*dims, "task")}


# ---------------------------------------------------------------------------------------
# provenance
# ---------------------------------------------------------------------------------------


def provenance() -> dict[str, Any]:
    """Where and with what a store was created: git commit and whether the checkout had
    uncommitted changes (:func:`git_state`), package versions, Python, platform, host."""
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return {
        **git_state(Path(__file__).resolve().parents[1]),
        "packages": versions,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "created_unix": round(time.time(), 3),
        **process_info(),
    }


def process_info() -> dict[str, Any]:
    """This process: host, pid and, under SLURM, the job, array and step ids."""
    info: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid()}
    slurm = {
        key.removeprefix("SLURM_").lower(): os.environ[key]
        for key in (
            "SLURM_JOB_ID",
            "SLURM_ARRAY_JOB_ID",
            "SLURM_ARRAY_TASK_ID",
            "SLURM_PROCID",
            "SLURM_RESTART_COUNT",
            "SLURM_CLUSTER_NAME",
        )
        if key in os.environ
    }
    if slurm:
        info["slurm"] = slurm
    return info


def git_state(root: Path) -> dict[str, Any]:
    """``git_commit`` (HEAD) and ``git_dirty`` (tracked files changed, staged or not, as
    ``git describe --dirty`` counts them; untracked files do not count) of the checkout at
    ``root``; both ``None`` when ``root`` is not a git checkout or git is missing."""
    commit = _git(root, "rev-parse", "HEAD")
    if commit is None:
        return {"git_commit": None, "git_dirty": None}
    changes = _git(root, "status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": None if changes is None else bool(changes)}


def _git(root: Path, *args: str) -> str | None:
    """``git -C root ARGS``: its stripped output, or ``None`` when it fails."""
    try:
        result = subprocess.run(
            ["git", "-C", str(root), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def _check_aligned(name: str, array: zarr.Array, region: Region) -> None:
    """Refuse a region that would share a chunk with another writer."""
    if len(region) != array.ndim:
        raise ValueError(f"array {name!r}: region {region} must index all {array.ndim} axes")
    for axis, (part, size, chunk) in enumerate(zip(region, array.shape, array.chunks, strict=True)):
        start, stop, step = part.indices(size)
        if step != 1 or start % chunk or (stop % chunk and stop != size):
            raise ValueError(
                f"array {name!r}: region {part} on axis {axis} is not aligned to chunks of {chunk}"
            )


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence Zarr's notices that v3 consolidated metadata and string arrays are extensions."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Zarr format 3 specification.*")
        yield
