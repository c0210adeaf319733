"""The three sweep studies as store layouts and shard work (theory.md §4-§6).

Each study says which grid axes it has, which arrays its store holds, what is
prepared once when the store is created (targets, infinite-width predictions,
Gram matrices, coordinates) and what one task computes: an ensemble shard at one
grid point, written into its own chunks. A task reads what it needs from the
store, so a worker needs nothing but the store's path and its task number.

* ``dynamics`` (paper Figs. 2-3): grid ``train_size x lr_factor x width``; a task
  trains ``shard_size`` members by full-batch GD and writes their losses and the
  shard's sufficient statistics at the logged steps (suite.training).
* ``entanglement`` (Fig. 1): grid ``architecture x width``; a task writes its members'
  entropies, purities and norms (suite.entanglement); the GP estimate and the Page
  value are prepared.
* ``kernels``: grid ``width``; a task writes its members' empirical QS-NTK on the
  train set of the largest train size and its distance from the infinite-width
  kernel; the infinite Gram matrices are prepared in Dask tiles.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from jobs.dynamics import mlp_nnqs
from jobs.entanglement import EntanglementStudy, gp_renyi2
from jobs.spec import SweepSpec
from suite import networks
from suite.dynamics import TrainSpectrum
from suite.entanglement import ensemble_entanglement, haar_purity, page_entropy
from suite.kernels.blocked import store_gram
from suite.kernels.empirical import empirical_qs_ntk
from suite.kernels.qsntk import PairKernel
from suite.store import ArraySpec, Region, SweepStore
from suite.supervised import (
    Problem,
    convergence_step,
    infinite_width_curve_sets,
    log_steps,
    scale_target,
    split_problem,
)
from suite.targets import build_target, make_spec
from suite.training import train_ensemble

#: loss curves of theory.md §5, in the order of the ``curve`` axis
CURVES = ("train_loss_of_mean", "train_mean_of_losses", "test_loss_of_mean", "test_mean_of_losses")
#: QS-NTK blocks, in the order of the ``block`` axis
BLOCKS = ("uu", "uv", "vu", "vv")
SUMS = ("sum_u", "sum_v", "sum_uu", "sum_vv", "sum_uv")
NAN = float("nan")


@dataclass(frozen=True)
class Task:
    """One unit of work: members ``[start, stop)`` of the ensemble at one grid point."""

    id: int
    point: tuple[int, ...]
    shard: int
    start: int
    stop: int

    @property
    def members(self) -> np.ndarray:
        return np.arange(self.start, self.stop)


def grid_axes(spec: SweepSpec) -> dict[str, tuple[Any, ...]]:
    """The grid's axes, in the order of the store's leading dimensions."""
    if spec.sweep.study == "dynamics":
        return {
            "train_size": spec.grid.train_sizes,
            "lr_factor": spec.grid.lr_factors,
            "width": spec.grid.widths,
        }
    if spec.sweep.study == "entanglement":
        return {"architecture": spec.grid.architectures, "width": spec.grid.widths}
    return {"width": spec.grid.widths}


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


@dataclass(frozen=True)
class Layout:
    """What a study's store holds: arrays, values written at creation, attributes."""

    arrays: list[ArraySpec]
    initial: dict[str, np.ndarray]
    attrs: dict[str, Any]
    #: Gram matrices to write in Dask tiles after the arrays exist: (array, prefix, fn, rows, cols)
    grams: list[tuple[str, tuple[int, ...], Callable[[Any], Any], np.ndarray, np.ndarray]]


def _coordinates(spec: SweepSpec) -> tuple[list[ArraySpec], dict[str, np.ndarray]]:
    """One coordinate array per grid axis, with its values."""
    arrays, values = [], {}
    for name, axis in grid_axes(spec).items():
        array, data = _coordinate(name, axis)
        arrays.append(array)
        values[name] = data
    return arrays, values


def _fill(dtype: Any) -> Any:
    if dtype is str:
        return ""
    kind = np.dtype(dtype).kind
    return NAN if kind in "fc" else 0


def _array(name: str, dims: dict[str, int], chunks: Sequence[int], dtype: str = "<f8") -> ArraySpec:
    return ArraySpec(name, tuple(dims), tuple(dims.values()), tuple(chunks), dtype, _fill(dtype))


def _coordinate(name: str, values: Sequence[Any]) -> tuple[ArraySpec, np.ndarray]:
    data = np.asarray(values)
    dtype = str if data.dtype.kind == "U" else data.dtype.str
    return ArraySpec(name, (name,), data.shape, data.shape, dtype, _fill(dtype)), data


# ---------------------------------------------------------------------------------------
# dynamics
# ---------------------------------------------------------------------------------------


def dynamics_nnqs(spec: SweepSpec, width: int) -> networks.NNQS:
    """The NNQS of ``[network]`` at ``width`` (decoupled, shared trunk or complex output)."""
    net = spec.network
    return mlp_nnqs(net.kind, net.activation, net.depth, width)


def _basis(spec: SweepSpec) -> tuple[np.ndarray, np.ndarray]:
    """The basis inputs and the scaled target ``phi``."""
    target = build_target(make_spec(**spec.target))
    return target.inputs, scale_target(target.psi, spec.training.target_scale)


def _problem(
    spec: SweepSpec,
    inputs: np.ndarray,
    phi: np.ndarray,
    t: int,
    spectrum: TrainSpectrum | None = None,
) -> Problem:
    """The supervised problem of train size ``t`` (``spectrum``: its train-set spectrum
    when known from an earlier pass).

    A problem holds ``O(D B)`` infinite-width kernels: the layouts build one at a time
    and let it go (``del``) before building the next, so that only the largest is ever
    held, not all of them.
    """
    nnqs = dynamics_nnqs(spec, spec.grid.widths[0])  # infinite-width maps ignore the width
    size = spec.grid.train_sizes[t]
    return split_problem(nnqs, inputs, phi, size, spec.sweep.seed, spectrum)


def _train_sets(
    spec: SweepSpec, inputs: np.ndarray, trains: list[np.ndarray], blocks: list[np.ndarray]
) -> tuple[list[ArraySpec], dict[str, np.ndarray], list[Any]]:
    """Per train size (its points and ``2B x 2B`` QS-NTK block): its mask, its QS-NTK
    spectrum and ``Theta(basis, train)`` (Dask tiles)."""
    dimension = inputs.shape[0]
    n_t, b_max = len(trains), max(spec.grid.train_sizes)
    spectra = np.full((n_t, 2 * b_max), NAN)
    masks = np.zeros((n_t, dimension), dtype=bool)
    for t, (train, block) in enumerate(zip(trains, blocks, strict=True)):
        spectra[t, : 2 * train.size] = np.linalg.eigvalsh(block)
        masks[t, train] = True
    arrays = [
        _array("train_mask", {"train_size": n_t, "basis": dimension}, (n_t, dimension), "|b1"),
        _array("ntk_spectrum", {"train_size": n_t, "eigen": 2 * b_max}, (n_t, 2 * b_max)),
        _array(
            "ntk_basis_train",
            {"train_size": n_t, "block": len(BLOCKS), "basis": dimension, "train_point": b_max},
            (1, 1, min(dimension, spec.kernels.block), b_max),
        ),
    ]
    nnqs = dynamics_nnqs(spec, spec.grid.widths[0])
    grams = [
        ("ntk_basis_train", (t, b), _kernel_block(nnqs, 1, block), inputs, inputs[train])
        for t, train in enumerate(trains)
        for b, block in enumerate(BLOCKS)
    ]
    return arrays, {"train_mask": masks, "ntk_spectrum": spectra}, grams


def dynamics_layout(spec: SweepSpec) -> Layout:
    """Store of a dynamics sweep; prepares the infinite-width curves at the logged steps.

    The logged steps are common to the grid: a log grid up to the latest
    infinite-width convergence step of any (train size, learning rate), capped by
    ``training.max_steps``.
    """
    inputs, phi = _basis(spec)
    dimension, n_sites = inputs.shape
    n_t, n_r, n_w = (len(v) for v in grid_axes(spec).values())
    factors = np.asarray(spec.grid.lr_factors)
    # first pass: learning rates and convergence steps (they fix the logged steps)
    eta_max, converged, trains, blocks, spectra = [], [], [], [], []
    for t in range(n_t):
        problem = _problem(spec, inputs, phi, t)
        spectra.append(problem.spectrum)
        eta_max.append(problem.eta_max)
        rate = eta_max[-1] * factors
        converged.append([convergence_step(problem, r, spec.training.tolerance) for r in rate])
        trains.append(problem.train)
        blocks.append(problem.train_ntk_block)
        del problem
    eta_max, converged = np.array(eta_max), np.array(converged)
    rates = eta_max[:, None] * factors[None, :]
    last = int(converged.max())
    if spec.training.max_steps:
        last = min(last, spec.training.max_steps)
    steps = log_steps(last, spec.training.log_points)
    n_l, n_s, n_m = len(steps), spec.ensemble.shards, spec.ensemble.members
    shape = {"train_size": n_t, "lr_factor": n_r, "width": n_w}
    point = (1, 1, 1)

    continuous = np.full((n_t, n_r, len(CURVES), n_l), NAN)
    discrete = np.full_like(continuous, NAN)
    at_infinity = np.full((n_t, n_r, len(CURVES)), NAN)
    # second pass: the curves at the logged steps, one pass over the basis per train size
    infinity = np.asarray([np.inf])
    for t in range(n_t):
        problem = _problem(spec, inputs, phi, t, spectra[t])
        modes = ((steps, False), (steps, True), (infinity, False))
        schedules = [(rate, times, mode) for rate in rates[t] for times, mode in modes]
        curves = iter(infinite_width_curve_sets(problem, schedules))
        del problem
        for r in range(n_r):
            for out in (continuous, discrete):
                values = next(curves)
                out[t, r] = [getattr(values, name) for name in CURVES]
            limit = next(curves)
            at_infinity[t, r] = [getattr(limit, name)[0] for name in CURVES]
    train_arrays, train_values, grams = _train_sets(spec, inputs, trains, blocks)
    coords, initial = _coordinates(spec)
    for name, values in (
        ("step", steps),
        ("curve", list(CURVES)),
        ("block", list(BLOCKS)),
        ("member", np.arange(n_m)),
    ):
        array, data = _coordinate(name, values)
        coords.append(array)
        initial[name] = data
    finite = [
        _array(name, {**shape, "member": n_m, "step": n_l}, (*point, spec.ensemble.shard_size, n_l))
        for name in ("member_train_loss", "member_test_loss")
    ] + [
        _array(
            name,
            {**shape, "shard": n_s, "step": n_l, "basis": dimension},
            (*point, 1, n_l, dimension),
        )
        for name in SUMS
    ]
    prepared = (
        [
            _array("inputs", {"basis": dimension, "site": n_sites}, (dimension, n_sites)),
            _array("phi", {"basis": dimension}, (dimension,), "<c16"),
            _array("eta_max", {"train_size": n_t}, (n_t,)),
            _array("learning_rate", {"train_size": n_t, "lr_factor": n_r}, (n_t, n_r)),
            _array("convergence_step", {"train_size": n_t, "lr_factor": n_r}, (n_t, n_r), "<i8"),
        ]
        + [
            _array(
                f"infinite_{name}",
                {"train_size": n_t, "lr_factor": n_r, "curve": len(CURVES), "step": n_l},
                (n_t, n_r, len(CURVES), n_l),
            )
            for name in ("continuous", "discrete")
        ]
        + [
            _array(
                "infinite_t_inf",
                {"train_size": n_t, "lr_factor": n_r, "curve": len(CURVES)},
                (n_t, n_r, len(CURVES)),
            ),
        ]
    )
    aggregated = [
        _array(
            "ensemble_mean",
            {**shape, "step": n_l, "basis": dimension},
            (*point, n_l, dimension),
            "<c16",
        ),
        _array(
            "ensemble_variance",
            {**shape, "step": n_l, "basis": dimension},
            (*point, n_l, dimension),
        ),
    ] + [_array(name, {**shape, "step": n_l}, (*point, n_l)) for name in AGGREGATED_CURVES]
    initial.update(
        train_values,
        inputs=inputs,
        phi=phi,
        eta_max=eta_max,
        learning_rate=rates,
        convergence_step=converged,
        infinite_continuous=continuous,
        infinite_discrete=discrete,
        infinite_t_inf=at_infinity,
    )
    full_arrays, full_grams = _full_grams(spec, inputs)
    arrays = coords + finite + prepared + train_arrays + aggregated + full_arrays
    return Layout(arrays, initial, {}, grams + full_grams)


#: the dynamics aggregation's per-step curves (theory.md §5; suite.training.EnsembleSummary)
AGGREGATED_CURVES = (
    "train_mean_of_losses",
    "test_mean_of_losses",
    "train_loss_of_mean",
    "test_loss_of_mean",
    "train_loss_of_mean_debiased",
    "test_loss_of_mean_debiased",
)


def dynamics_task(spec: SweepSpec, store: SweepStore, task: Task) -> list[tuple[str, Region]]:
    """Train the task's members at its grid point; write losses and the shard's sums."""
    t, r, w = task.point
    train = np.flatnonzero(store.read("train_mask", (slice(t, t + 1), slice(None)))[0])
    stats = train_ensemble(
        dynamics_nnqs(spec, spec.grid.widths[w]),
        store.read("inputs"),
        store.read("phi"),
        train,
        seed=spec.sweep.seed,
        members=task.members,
        learning_rate=float(store.read("learning_rate")[t, r]),
        log_steps=store.read("step"),
        dtype=spec.sweep.dtype,
    )
    at = (slice(t, t + 1), slice(r, r + 1), slice(w, w + 1))
    regions: list[tuple[str, Region]] = []
    for name, values in (
        ("member_train_loss", stats.train_loss),
        ("member_test_loss", stats.test_loss),
    ):
        region = (*at, slice(task.start, task.stop), slice(None))
        store.write(name, region, values.T[None, None, None])
        regions.append((name, region))
    for name in SUMS:
        region = (*at, slice(task.shard, task.shard + 1), slice(None), slice(None))
        store.write(name, region, getattr(stats, name)[None, None, None, None])
        regions.append((name, region))
    return regions


# ---------------------------------------------------------------------------------------
# entanglement
# ---------------------------------------------------------------------------------------


def entanglement_study(spec: SweepSpec) -> EntanglementStudy:
    """The Fig. 1 study's settings (architectures' scales) from ``[entanglement]``."""
    e = spec.entanglement
    return EntanglementStudy(
        n_sites=e.n_sites,
        members=spec.ensemble.members,
        widths=spec.grid.widths,
        architectures=spec.grid.architectures,
        cosnet_s0=e.cosnet_s0,
        cosnet_s1=e.cosnet_s1,
        gaussnet_s0=e.gaussnet_s0,
        gaussnet_sb=e.gaussnet_sb,
        relu_depth=e.relu_depth,
        seed=spec.sweep.seed,
    )


#: the entanglement aggregation's per-cut statistics (jobs.entanglement.ensemble_summary)
ENTANGLEMENT_STATISTICS = (
    "mean_von_neumann",
    "sem_von_neumann",
    "mean_renyi2",
    "sem_renyi2",
    "ratio_renyi2",
    "sem_ratio_renyi2",
)


def entanglement_layout(spec: SweepSpec) -> Layout:
    """Store of an entanglement sweep; prepares Page, Haar and GP values per cut."""
    study = entanglement_study(spec)
    cuts = study.cuts
    n_a, n_w, n_c = len(spec.grid.architectures), len(spec.grid.widths), len(cuts)
    n_m, size = spec.ensemble.members, spec.ensemble.shard_size
    n = spec.entanglement.n_sites
    dims = [(2**c, 2 ** (n - c)) for c in cuts]
    page = np.array([page_entropy(a, b) for a, b in dims])
    haar = np.array([-math.log(haar_purity(a, b)) for a, b in dims])
    gp = np.array(
        [
            gp_renyi2(study.nnqs(arch, spec.grid.widths[0]), n, cuts)
            for arch in spec.grid.architectures
        ]
    )
    coords, initial = _coordinates(spec)
    for name, values in (("cut", cuts), ("member", np.arange(n_m))):
        array, data = _coordinate(name, values)
        coords.append(array)
        initial[name] = data
    point = {"architecture": n_a, "width": n_w}
    arrays = (
        coords
        + [
            _array("page", {"cut": n_c}, (n_c,)),
            _array("haar_renyi2", {"cut": n_c}, (n_c,)),
            _array("gp_renyi2", {"architecture": n_a, "cut": n_c}, (n_a, n_c)),
            _array("von_neumann", {**point, "member": n_m, "cut": n_c}, (1, 1, size, n_c)),
            _array("purity", {**point, "member": n_m, "cut": n_c}, (1, 1, size, n_c)),
            _array("norm_sq", {**point, "member": n_m}, (1, 1, size)),
        ]
        + [_array(name, {**point, "cut": n_c}, (1, 1, n_c)) for name in ENTANGLEMENT_STATISTICS]
    )
    initial.update(page=page, haar_renyi2=haar, gp_renyi2=gp)
    return Layout(arrays, initial, {"log": "natural"}, [])


def entanglement_task(spec: SweepSpec, store: SweepStore, task: Task) -> list[tuple[str, Region]]:
    """Entropies of the task's members at its (architecture, width)."""
    a, w = task.point
    study = entanglement_study(spec)
    width = spec.grid.widths[w]
    result = ensemble_entanglement(
        study.nnqs(spec.grid.architectures[a], width),
        study.n_sites,
        study.cuts,
        seed=spec.sweep.seed,
        members=task.members,
        member_chunk=study.member_chunk(width),
    )
    members = slice(task.start, task.stop)
    regions: list[tuple[str, Region]] = []
    for name, values in (
        ("von_neumann", result.von_neumann[None, None]),
        ("purity", result.purity[None, None]),
        ("norm_sq", result.norm_sq[None, None]),
    ):
        region = (slice(a, a + 1), slice(w, w + 1), members) + (
            (slice(None),) if name != "norm_sq" else ()
        )
        store.write(name, region, values)
        regions.append((name, region))
    return regions


# ---------------------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------------------


def kernels_layout(spec: SweepSpec) -> Layout:
    """Store of a kernels sweep: infinite NNGP/NTK Grams (Dask tiles), train-set spectra.

    ``ntk_basis_train`` (per train size) always; the full ``D x D`` ``ntk`` and
    ``nngp`` when ``kernels.full``. A task's members get the empirical QS-NTK on the
    train set of the largest train size.
    """
    inputs, phi = _basis(spec)
    trains, blocks = [], []
    for t in range(len(spec.grid.train_sizes)):
        problem = _problem(spec, inputs, phi, t)
        trains.append(problem.train)
        blocks.append(problem.train_ntk_block)
        del problem
    dimension = inputs.shape[0]
    n_w, b_max = len(spec.grid.widths), max(spec.grid.train_sizes)
    n_m, size = spec.ensemble.members, spec.ensemble.shard_size
    coords, initial = _coordinates(spec)
    for name, values in (
        ("train_size", spec.grid.train_sizes),
        ("block", list(BLOCKS)),
        ("member", np.arange(n_m)),
    ):
        array, data = _coordinate(name, values)
        coords.append(array)
        initial[name] = data
    train_arrays, train_values, grams = _train_sets(spec, inputs, trains, blocks)
    arrays = [
        *coords,
        *train_arrays,
        _array("inputs", {"basis": dimension, "site": inputs.shape[1]}, inputs.shape),
        _array("ntk_train", {"row": 2 * b_max, "column": 2 * b_max}, (2 * b_max, 2 * b_max)),
        _array("empirical_deviation", {"width": n_w, "member": n_m}, (1, size)),
        _array(
            "empirical_sum",
            {"width": n_w, "shard": spec.ensemble.shards, "row": 2 * b_max, "column": 2 * b_max},
            (1, 1, 2 * b_max, 2 * b_max),
        ),
        _array("mean_empirical_deviation", {"width": n_w}, (1,)),
        _array("deviation_of_mean_kernel", {"width": n_w}, (1,)),
    ]
    initial.update(
        train_values, inputs=inputs, ntk_train=blocks[int(np.argmax(spec.grid.train_sizes))]
    )
    full_arrays, full_grams = _full_grams(spec, inputs)
    return Layout(arrays + full_arrays, initial, {}, grams + full_grams)


def _full_grams(spec: SweepSpec, inputs: np.ndarray) -> tuple[list[ArraySpec], list[Any]]:
    """With ``kernels.full``: the ``D x D`` NNGP and NTK blocks, in Dask tiles."""
    if not spec.kernels.full:
        return [], []
    dimension = inputs.shape[0]
    tile = min(dimension, spec.kernels.block)
    nnqs = dynamics_nnqs(spec, spec.grid.widths[0])
    arrays, grams = [], []
    for name, index in (("nngp", 0), ("ntk", 1)):
        dims = {"block": len(BLOCKS), "basis": dimension, "basis_column": dimension}
        arrays.append(_array(name, dims, (1, tile, tile)))
        grams += [
            (name, (b,), _kernel_block(nnqs, index, block), inputs, inputs)
            for b, block in enumerate(BLOCKS)
        ]
    return arrays, grams


def _kernel_block(nnqs: networks.NNQS, index: int, block: str) -> Callable[[Any], Any]:
    def fn(kernel: Any) -> Any:
        return getattr(nnqs.infinite(kernel)[index], block)

    return fn


def kernels_task(spec: SweepSpec, store: SweepStore, task: Task) -> list[tuple[str, Region]]:
    """Empirical QS-NTK of the task's members on the largest train set, and its deviation."""
    (w,) = task.point
    width = spec.grid.widths[w]
    t = int(np.argmax(spec.grid.train_sizes))
    x = store.read("inputs")[np.flatnonzero(store.read("train_mask")[t])]
    reference = store.read("ntk_train")
    nnqs = dynamics_nnqs(spec, width)
    total = np.zeros_like(reference)
    deviations = []
    for member in task.members:
        key = networks.member_keys(spec.sweep.seed, np.array([member]))[0]
        params = nnqs.init(key, x.shape[1])
        blocks = empirical_qs_ntk(nnqs, params, jax.numpy.asarray(x), jax.numpy.asarray(x))
        empirical = _block_matrix(blocks)
        total += empirical
        deviations.append(np.linalg.norm(empirical - reference) / np.linalg.norm(reference))
    regions: list[tuple[str, Region]] = []
    region: Region = (slice(w, w + 1), slice(task.start, task.stop))
    store.write("empirical_deviation", region, np.asarray(deviations)[None])
    regions.append(("empirical_deviation", region))
    region = (slice(w, w + 1), slice(task.shard, task.shard + 1), slice(None), slice(None))
    store.write("empirical_sum", region, total[None, None])
    regions.append(("empirical_sum", region))
    return regions


def _block_matrix(blocks: PairKernel) -> np.ndarray:
    uu, uv, vu, vv = (np.asarray(b) for b in blocks)
    return np.block([[uu, uv], [vu, vv]])


LAYOUTS: dict[str, Callable[[SweepSpec], Layout]] = {
    "dynamics": dynamics_layout,
    "entanglement": entanglement_layout,
    "kernels": kernels_layout,
}
TASKS: dict[str, Callable[[SweepSpec, SweepStore, Task], list[tuple[str, Region]]]] = {
    "dynamics": dynamics_task,
    "entanglement": entanglement_task,
    "kernels": kernels_task,
}


def write_grams(group: Any, layout: Layout) -> None:
    """The layout's Gram matrices, in Dask tiles, into their arrays of the Zarr ``group``."""
    for name, prefix, fn, rows, columns in layout.grams:
        store_gram(fn, rows, columns, group[name], prefix)
