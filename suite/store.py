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

import glob
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


class MetadataError(StoreError):
    """A store whose root metadata (``zarr.json``) cannot be read."""


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
        try:
            with quiet_zarr():  # per-array metadata, the source of truth for writers
                self.group = zarr.open_group(self.path, mode=mode, use_consolidated=False)
        except Exception as error:
            raise MetadataError(
                f"store {self.path}: its root metadata (zarr.json) is unreadable "
                f"({type(error).__name__}); `nnqs repair {self.path} --spec SPEC` rebuilds it "
                "from the spec the store was made from"
            ) from None
        if "fingerprint" not in self.group.attrs:
            raise StoreError(f"store {self.path}: not a sweep store (no fingerprint)")

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
        populate: Callable[[zarr.Group], Sequence[str]] | None = None,
        unindexed: Mapping[str, str] | None = None,
    ) -> SweepStore:
        """Create the store at ``path`` (which must not exist) with ``arrays`` preallocated,
        each with its attributes (:attr:`ArraySpec.attributes`).

        ``initial`` values (coordinates, prepared inputs) are written before the store
        is renamed into place, as are ``attrs`` plus ``fingerprint``, the
        :func:`provenance` of this process and ``unindexed_dimensions``; the manifest has
        ``tasks`` records. ``populate(group)`` may fill more (e.g. Gram matrices) before
        the rename and returns the names it wrote. The checksum of every array so
        prepared is kept in the ``prepared`` attribute (:meth:`damaged_prepared` checks
        them). Every dimension needs a coordinate array (an array named after it, of
        that one dimension) or its reason for having none in ``unindexed``
        (:func:`unindexed_dimensions`).

        The staging folder ``.<name>.<host>.<pid>.<hex>.creating`` names its creator:
        one left by a dead process of this host is removed here. When another process
        creates the same store first, this one's staging is dropped and its store is
        returned (the caller checks its fingerprint).
        """
        path = Path(path)
        if path.exists():
            raise StoreError(f"store {path}: already exists")
        reasons = unindexed_dimensions(arrays, {**(unindexed or {}), "task": TASK_DIMENSION})
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_orphan_staging(path)
        host, pid = socket.gethostname(), os.getpid()
        staging = path.with_name(f".{path.name}.{host}.{pid}.{uuid.uuid4().hex}.creating")
        try:
            with quiet_zarr():
                group = zarr.open_group(staging, mode="w-", zarr_format=3)
                for spec in arrays:
                    create_array(group, spec)
                create_manifest(group, tasks)
                for name, values in (initial or {}).items():
                    group[name][...] = values
                written = list(populate(group)) if populate is not None else []
                group.attrs.update(
                    {
                        **attrs,
                        "fingerprint": fingerprint,
                        "provenance": provenance(),
                        "unindexed_dimensions": reasons,
                    }
                )
            staged = cls(staging)
            checksums = {name: staged.array_checksum(name) for name in [*(initial or {}), *written]}
            staged.update_attrs(prepared=checksums)
            try:
                staging.rename(path)
            except OSError:
                if not (path / "zarr.json").is_file():
                    raise
                shutil.rmtree(staging, ignore_errors=True)  # another process created it first
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
            hint = f"; `nnqs repair {self.path}` rebuilds it" if name == MANIFEST else ""
            raise StoreError(f"store {self.path}: no array {name!r}{hint}") from None
        except Exception as error:  # its zarr.json does not decode
            raise StoreError(
                f"store {self.path}: the metadata of array {name!r} is unreadable "
                f"({type(error).__name__}); `nnqs repair {self.path}` rebuilds it"
            ) from None

    def read(self, name: str, region: Region | None = None) -> np.ndarray:
        array = self.array(name)
        return np.asarray(array[...] if region is None else array[region])

    def write(self, name: str, region: Region, values: np.ndarray) -> None:
        """Write ``values`` into ``region`` of ``name``; the region must be chunk-aligned."""
        array = self.array(name)
        _check_aligned(name, array, region)
        with quiet_zarr():
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
        with quiet_zarr():
            self.group[MANIFEST][task] = json.dumps(entry, sort_keys=True, default=str)

    def records(self) -> list[TaskRecord]:
        """All manifest records, ``pending`` where a task never started.

        A record that cannot be read or decoded raises :class:`StoreError` naming the
        store and the task (``nnqs repair`` rebuilds it).
        """
        try:
            texts = self.read(MANIFEST).tolist()
        except Exception:  # a damaged chunk: read record by record to name its task
            texts = [self._manifest_text(task) for task in range(self.array(MANIFEST).shape[0])]
        return [self._decode(task, text) for task, text in enumerate(texts)]

    def record_of(self, task: int) -> TaskRecord:
        """Task ``task``'s manifest record (one chunk read)."""
        return self._decode(task, self._manifest_text(task))

    def _manifest_text(self, task: int) -> str:
        try:
            return str(self.array(MANIFEST)[task])
        except Exception as error:
            raise StoreError(
                f"store {self.path}: the manifest record of task {task} is unreadable "
                f"({type(error).__name__}); `nnqs repair {self.path}` rebuilds the manifest"
            ) from None

    def _decode(self, task: int, text: str) -> TaskRecord:
        if not text:
            return TaskRecord(task, "pending", {})
        try:
            info = json.loads(text)
            if not isinstance(info, dict) or not isinstance(info.get("state"), str):
                raise ValueError("not a record")
        except ValueError:
            raise StoreError(
                f"store {self.path}: the manifest record of task {task} is not a valid "
                f"record ({text[:40]!r}); `nnqs repair {self.path}` rebuilds the manifest"
            ) from None
        return TaskRecord(task, info.pop("state"), info)

    def clear_record(self, task: int) -> None:
        """Mark task ``task`` pending (its record removed; ``nnqs repair`` only)."""
        with quiet_zarr():
            self.array(MANIFEST)[task] = ""

    def array_checksum(self, name: str) -> str:
        """SHA-256 of a whole array as stored, read one chunk row at a time."""
        array = self.array(name)
        digest = hashlib.sha256(f"{name}{array.shape}{array.dtype}".encode())
        step = array.chunks[0] if array.ndim else 1
        for start in range(0, array.shape[0] if array.ndim else 1, step):
            part = array[start : start + step] if array.ndim else array[...]
            digest.update(np.ascontiguousarray(np.asarray(part)).tobytes())
        return digest.hexdigest()

    def damaged_prepared(self) -> list[str]:
        """The arrays written when the store was prepared whose checksum no longer
        matches the one recorded then (or that can no longer be read)."""
        damaged = []
        for name, checksum in self.attrs.get("prepared", {}).items():
            try:
                if self.array_checksum(name) != checksum:
                    damaged.append(name)
            except Exception:  # a chunk or array metadata that no longer decodes
                damaged.append(name)
        return damaged

    def consolidate(self) -> None:
        """Consolidate the metadata (once, when every writer has finished)."""
        with quiet_zarr():
            zarr.consolidate_metadata(self.path)

    @property
    def aggregated(self) -> bool:
        """Whether the store was aggregated (and nothing changed since)."""
        return "finalized_unix" in self.group.attrs

    def forget_aggregation(self) -> None:
        """Mark the aggregation stale (``nnqs repair``, when results change)."""
        if self.aggregated:
            with quiet_zarr():
                del self.group.attrs["finalized_unix"]

    def update_attrs(self, **values: Any) -> None:
        """Set group attributes (a metadata write: only from a single finalising process)."""
        with quiet_zarr():
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


def create_array(group: zarr.Group, spec: ArraySpec, overwrite: bool = False) -> zarr.Array:
    """The array ``spec`` declares, empty (fill values), in ``group`` (``overwrite``: in
    place of one of that name, whose chunks go)."""
    with quiet_zarr():
        return group.create_array(
            spec.name,
            shape=spec.shape,
            chunks=spec.chunks,
            dtype=spec.dtype,
            fill_value=spec.fill_value,
            dimension_names=spec.dims,
            attributes=spec.attributes,
            overwrite=overwrite,
        )


def create_manifest(group: zarr.Group, tasks: int, overwrite: bool = False) -> zarr.Array:
    """The manifest of ``tasks`` records, all pending, in ``group``."""
    with quiet_zarr():
        return group.create_array(
            MANIFEST,
            shape=(tasks,),
            chunks=(1,),
            dtype=str,
            dimension_names=("task",),
            attributes=MANIFEST_ATTRIBUTES,
            overwrite=overwrite,
        )


def remove_orphan_staging(path: Path) -> list[Path]:
    """Remove the staging folders of ``path`` (:meth:`SweepStore.create`) whose creator
    was a process of this host that no longer runs; return them. Another host's, or a
    live process's, are left alone."""
    removed = []
    prefix, host = f".{path.name}.", socket.gethostname()
    for staging in path.parent.glob(f".{glob.escape(path.name)}.*.creating"):
        creator = staging.name[len(prefix) : -len(".creating")].rsplit(".", 2)
        if len(creator) != 3 or creator[0] != host or not creator[1].isdigit():
            continue
        if not process_alive(int(creator[1])):
            shutil.rmtree(staging, ignore_errors=True)
            removed.append(staging)
    return removed


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host runs (a zombie, exited but not yet reaped,
    does not; one we may not signal does)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return True
    return fields[0] != "Z"


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
def quiet_zarr() -> Iterator[None]:
    """Silence Zarr's notices that v3 consolidated metadata and string arrays are extensions."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Zarr format 3 specification.*")
        # the task claims of a running sweep (jobs.claims) sit in the store's .claims/
        warnings.filterwarnings("ignore", message=".*not recognized as a component.*")
        yield
