"""What every study shares: tasks and their grid, store layouts and the array
declarations they are made of, task costs, and the memory check of a spec."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from jobs.registry import Layout, Task, study
from jobs.spec import (
    BASELINE_BYTES,
    SpecError,
    SweepSpec,
    aggregation_threads,
    available_memory_bytes,
)
from suite.member_flow import KERNEL_ROUTE_DIMENSION
from suite.store import ArraySpec, Region, SweepStore
from suite.training import SUMS
from suite.training.engines import flops_per_member_step

NAN = float("nan")


class About(NamedTuple):
    """What an array holds, written as its attributes (:class:`suite.store.ArraySpec`):
    ``long_name``, ``units`` (``"1"`` when dimensionless) and ``description``."""

    long_name: str
    units: str
    description: str


#: the coordinate arrays of every built-in study, by dimension name
COORDINATES = {
    "width": About("hidden-layer width", "1", "neurons per hidden layer of each network"),
    "train_size": About("train-set size B", "1", "basis states in the train set"),
    "lr_factor": About(
        "learning-rate factor",
        "1",
        "learning rate in units of the stability bound eta_max (docs/theory.md §5, §7.1)",
    ),
    "architecture": About("network architecture", "1", "cosnet, gaussnet or relu (§3)"),
    "cosnet_s0": About(
        "CosNet input scale s0", "1", "CosNet's input-weight scale (§3; the grid's scan)"
    ),
    "step": About(
        "gradient-descent step",
        "1",
        "logged full-batch gradient-descent steps, log-spaced from 0 (docs/theory.md §5)",
    ),
    "curve": About("loss curve", "1", "loss of the mean, mean of the losses; train, test (§5)"),
    "block": About(
        "QS-NTK block", "1", "uu, uv, vu, vv: blocks of the kernels of psi = u + i v (§4)"
    ),
    "member": About(
        "ensemble member", "1", "member i is seeded by (sweep.seed, i) whatever the sharding"
    ),
    "cut": About(
        "subsystem size N_A", "1", "sites of subsystem A: the first N_A in row-major order (§6)"
    ),
}

#: the dimensions without a coordinate array, and why (written to the store's attributes
#: as ``unindexed_dimensions``; :func:`suite.store.unindexed_dimensions`)
UNINDEXED = {
    "basis": "basis-state index k (docs/theory.md §1); the configurations are `inputs`",
    "site": "lattice site, row-major (site = y*Lx + x; docs/theory.md §2.1)",
    "shard": "ensemble shard: members [shard * shard_size, (shard + 1) * shard_size)",
    "eigen": "eigenvalue index, ascending; NaN-padded beyond 2B for smaller train sizes",
    "train_point": "position in the train set (ascending basis index); NaN-padded beyond B",
    "basis_column": "basis-state index k of the Gram's second argument (as `basis`)",
    "row": "row of the 2B x 2B QS-NTK block matrix [[uu, uv], [vu, vv]] on the train set",
    "column": "column of the 2B x 2B QS-NTK block matrix (as `row`)",
    "mode": "eigenvalue index of a 2D x 2D kernel-preconditioned Hessian, ascending",
}

#: the sentence on NaN padding in the descriptions of arrays padded across train sizes
NAN_PADDED = (
    "; padded with NaN along the train-set axis beyond this train size's own length "
    "(the arrays hold every train size in one shape)"
)


def grid_axes(spec: SweepSpec) -> dict[str, tuple[Any, ...]]:
    """The grid's axes (the study's), in the order of the store's leading dimensions."""
    return study(spec.sweep.study).axes(spec)


def expand(spec: SweepSpec) -> list[Task]:
    """All tasks of ``spec``: grid points in C order, then shards (deterministic)."""
    axes = grid_axes(spec)
    members, size = spec.ensemble.members, spec.ensemble.shard_size
    tasks = []
    for point in itertools.product(*(range(len(values)) for values in axes.values())):
        for shard in range(spec.ensemble.shards):
            start = shard * size
            tasks.append(Task(len(tasks), point, shard, start, min(start + size, members)))
    return tasks


def grid_value(spec: SweepSpec, task: Task) -> dict[str, Any]:
    """The grid coordinates of ``task`` by axis name."""
    return {
        name: values[i]
        for (name, values), i in zip(grid_axes(spec).items(), task.point, strict=True)
    }


def grid_coordinates(spec: SweepSpec) -> tuple[list[ArraySpec], dict[str, np.ndarray]]:
    """One coordinate array per grid axis, with its values."""
    arrays, values = [], {}
    for name, axis in grid_axes(spec).items():
        array, data = coordinate_spec(name, axis)
        arrays.append(array)
        values[name] = data
    return arrays, values


def _fill(dtype: Any) -> Any:
    if dtype is str:
        return ""
    kind = np.dtype(dtype).kind
    return NAN if kind in "fc" else 0


def array_spec(
    name: str, dims: dict[str, int], chunks: Sequence[int], dtype: str = "<f8", *, about: About
) -> ArraySpec:
    """A float64 (or ``dtype``) array of named ``dims`` in chunks of ``chunks``, holding
    what ``about`` says."""
    shape = tuple(dims.values())
    return ArraySpec(
        name, tuple(dims), shape, tuple(chunks), dtype, _fill(dtype), **about._asdict()
    )


def coordinate_spec(
    name: str, values: Sequence[Any], about: About | None = None
) -> tuple[ArraySpec, np.ndarray]:
    """A coordinate array of ``values`` (one chunk), and its data; ``about`` defaults to
    the entry of :data:`COORDINATES`."""
    if about is None and name not in COORDINATES:
        raise ValueError(f"coordinate {name!r}: expected an entry in COORDINATES or an about=")
    data = np.asarray(values)
    dtype = str if data.dtype.kind == "U" else data.dtype.str
    spec = ArraySpec(
        name,
        (name,),
        data.shape,
        data.shape,
        dtype,
        _fill(dtype),
        **(about or COORDINATES[name])._asdict(),
    )
    return spec, data


def write_grams(group: Any, layout: Layout, names: Sequence[str] | None = None) -> list[str]:
    """The layout's Gram matrices (those of ``names``, default all), in Dask tiles, into
    their arrays of the Zarr ``group``; returns the names written."""
    from suite.kernels.blocked import store_gram  # Dask: only when a store is created

    written = []
    for name, prefix, fn, rows, columns in layout.grams:
        if names is None or name in names:
            store_gram(fn, rows, columns, group[name], prefix)
            written.append(name)
    return written


def shard_total(store: SweepStore, name: str, at: tuple[slice, ...]) -> np.ndarray:
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


def forward_flop(points: int, width: int, in_dim: int, depth: int) -> float:
    """One forward pass of a u and a v network of ``depth`` hidden layers on ``points``."""
    return 2.0 * points * width * (2 * in_dim + 2 + 2 * (depth - 1) * width)


def memory_estimates(spec: SweepSpec) -> dict[str, int]:
    """Rough peak memory (bytes) of each phase: ``preparation``, ``shard``, ``aggregation``
    (the study's :meth:`~jobs.registry.Study.memory`)."""
    return study(spec.sweep.study).memory(spec)


#: what each phase is called in a refusal
PHASES = {
    "preparation": "preparing the store",
    "shard": "a shard",
    "aggregation": "aggregating a grid point",
}


def check_memory(spec: SweepSpec, available: int | None = None) -> None:
    """Refuse a sweep whose most demanding phase (creating the store, a shard, aggregating;
    :func:`memory_estimates`) would not fit in ``available`` bytes (default: this host).

    The message names that phase and the field that lowers it.
    """
    available = available_memory_bytes() if available is None else available
    estimates = memory_estimates(spec)
    name = max(estimates, key=estimates.__getitem__)
    needed = estimates[name]
    if needed <= available:
        return
    field_name = study(spec.sweep.study).lowered_by[name]
    both = field_name == "ensemble.shard_size"
    lower = f"{field_name} or grid.widths" if both else field_name
    raise SpecError(
        f"spec {spec.source}: {field_name}: {PHASES[name]} needs about "
        f"{needed / 2**30:.1f} GiB, more than the {available / 2**30:.1f} GiB available; "
        f"lower {lower}"
    )


def grid_point_count(spec: SweepSpec) -> int:
    """Number of grid points of ``spec``'s study."""
    return math.prod(len(values) for values in grid_axes(spec).values())


def aggregation_bytes(spec: SweepSpec, per_point: int) -> int:
    """Peak memory of aggregating: :func:`jobs.spec.aggregation_threads` grid points at once,
    ``per_point`` bytes each, plus :data:`jobs.spec.BASELINE_BYTES`."""
    threads = min(aggregation_threads(), grid_point_count(spec))
    return BASELINE_BYTES + threads * per_point


#: the shard sums of ``suite.training.SUMS`` (docs/theory.md §5)
SUM_ABOUT = {
    name: About(
        f"shard sum of {term}",
        "1",
        f"sum over the shard's members of {term} at each logged step and basis state "
        "(psi = u + i v; docs/theory.md §5)",
    )
    for name, term in zip(SUMS, ("u", "v", "u^2", "v^2", "u v"), strict=True)
}


def write_shard_sums(store: SweepStore, task: Task, stats: Any) -> list[tuple[str, Region]]:
    """A task's shard sums (``stats.sum_u`` ... of ``suite.training``) into its own chunks
    of the ``(grid..., shard, step, basis)`` arrays; the regions written."""
    at = tuple(slice(i, i + 1) for i in task.point)
    region = (*at, slice(task.shard, task.shard + 1), slice(None), slice(None))
    for name in SUMS:
        values = getattr(stats, name)
        store.write(name, region, values.reshape((1,) * (len(at) + 1) + values.shape))
    return [(name, region) for name in SUMS]


def training_itemsize(spec: SweepSpec) -> int:
    """Bytes of one parameter in the training dtype (``sweep.dtype``)."""
    return 4 if spec.sweep.dtype == "float32" else 8


def linearisation_bytes(dimension: int, members: int, width: int, depth: int) -> int:
    """Memory of a shard's linearisations (:func:`suite.member_flow.linearised_flows`): one
    member's ``2D x 2D`` empirical kernel at a time on a basis of up to
    ``suite.member_flow.KERNEL_ROUTE_DIMENSION`` states, else the whole shard's saved
    residuals (the activations of u and v and their derivatives: about ``4 m D n`` float64
    per hidden layer)."""
    per_state = dimension if dimension <= KERNEL_ROUTE_DIMENSION else members * width * depth
    return 4 * 8 * dimension * per_state


def member_step_flops(points: int, width: int, n_sites: int, depth: int) -> float:
    """Floating-point work of one member's gradient-descent step on ``points`` basis
    states: :func:`suite.training.engines.flops_per_member_step` for the first hidden layer
    and ``12 B n^2`` for each further one."""
    return flops_per_member_step(points, width, n_sites) + 12.0 * points * width**2 * (depth - 1)


def linearisation_flops(
    dimension: int, members: int, width: int, n_sites: int, depth: int, parameters: int
) -> tuple[float, float]:
    """Floating-point work of a shard's linearisations
    (:func:`suite.member_flow.linearised_flows`), once and per step: on a basis of up to
    ``suite.member_flow.KERNEL_ROUTE_DIMENSION`` states each member's ``2D x 2D``
    empirical kernel once (``8 D^2 P``) and a ``2D x 2D`` product a step (``8 D^2``);
    beyond, a JVP and its transpose through the network on the whole basis a step (a
    training step on ``D`` points, :func:`member_step_flops`)."""
    if dimension <= KERNEL_ROUTE_DIMENSION:
        return members * 8.0 * dimension**2 * parameters, members * 8.0 * dimension**2
    return 0.0, members * member_step_flops(dimension, width, n_sites, depth)
