"""The training-dynamics study (paper Figs. 2-3; docs/theory.md §5).

Grid ``train_size x lr_factor x width``. Preparing the store computes the target, the
train sets, their infinite-width QS-NTK spectra, the learning rates (``lr_factor x
eta_max``), the logged steps (a log grid up to the latest infinite-width convergence,
capped by ``training.max_steps``) and the infinite-width loss curves (continuous time,
exact discrete steps, and t = inf). A task trains ``shard_size`` members by full-batch
GD (:func:`suite.training.train_ensemble`) and writes their losses (with
``training.linearised`` also those of each member's linearisation,
:func:`suite.member_flow.linearised_flows`) and the shard's sufficient statistics at the
logged steps; aggregating a grid point gives the ensemble
mean and variance of ``psi`` and the four loss curves (:func:`suite.training.summarize`),
and the delete-a-shard jackknife errors of the debiased losses of the mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import jax.numpy as jnp
import numpy as np

from jobs.checkpoints import TaskCheckpoints, bytes_per_task
from jobs.registry import Layout, Study, Task, TaskCost, register
from jobs.spec import (
    BASELINE_BYTES,
    PROGRAM_BYTES,
    SpecChecker,
    SweepSpec,
    target_basis,
    usable_cores,
)
from jobs.studies.base import (
    NAN,
    SUM_ABOUT,
    About,
    aggregation_bytes,
    array_spec,
    coordinate_spec,
    forward_flop,
    grid_coordinates,
    grid_point_count,
    grid_value,
    linearisation_bytes,
    linearisation_flops,
    member_step_flops,
    shard_total,
    training_itemsize,
    write_shard_sums,
)
from jobs.studies.problems import (
    BLOCKS,
    INPUTS,
    basis_and_target,
    check_train_sizes,
    dynamics_nnqs,
    full_gram_arrays,
    parameter_count,
    preparation_bytes,
    supervised_problem,
    train_set_arrays,
)
from suite.dynamics import TrainSpectrum
from suite.losses import SupervisedMSE
from suite.member_flow import linearised_flows
from suite.networks import NNQS, init_ensemble
from suite.store import ArraySpec, Region, SweepStore
from suite.supervised import CURVES, convergence_step, infinite_width_curve_sets, log_steps
from suite.training import (
    BLOCK_ELEMENTS,
    SUMS,
    EnsembleStats,
    jackknife_sem,
    leave_out,
    summarize,
    train_ensemble,
)

#: the dynamics aggregation's per-step curves (docs/theory.md §5; suite.training.EnsembleSummary)
AGGREGATED_CURVES = (
    "train_mean_of_losses",
    "test_mean_of_losses",
    "train_loss_of_mean",
    "test_loss_of_mean",
    "train_loss_of_mean_debiased",
    "test_loss_of_mean_debiased",
)

#: the curves given a delete-a-shard jackknife standard error, stored as ``<curve>_sem``
#: (a mean of the losses' error comes from its members' losses; docs/theory.md §5)
JACKKNIFED_CURVES = ("train_loss_of_mean_debiased", "test_loss_of_mean_debiased")


class Dynamics(Study):
    """Finite ensembles trained by gradient descent against their infinite-width limit."""

    name = "dynamics"
    sections = ("target", "network", "grid", "ensemble", "training", "kernels", "checkpoint")
    grid_keys = ("widths", "train_sizes", "lr_factors")
    lowered_by: ClassVar[dict[str, str]] = {
        "preparation": "grid.train_sizes",
        "shard": "ensemble.shard_size",
        "aggregation": "training.log_points",
    }

    def axes(self, spec: SweepSpec) -> dict[str, tuple[Any, ...]]:
        return {
            "train_size": spec.grid.train_sizes,
            "lr_factor": spec.grid.lr_factors,
            "width": spec.grid.widths,
        }

    def check(self, spec: SweepSpec, check: SpecChecker) -> None:
        check_train_sizes(spec, check)

    def layout(self, spec: SweepSpec) -> Layout:
        """Store of a dynamics sweep; prepares the infinite-width curves at the logged steps.

        The logged steps are common to the grid: a log grid up to the latest
        infinite-width convergence step of any (train size, learning rate), capped by
        ``training.max_steps``.
        """
        inputs, phi = basis_and_target(spec)
        schedule = _schedule(spec, inputs, phi)
        continuous, discrete, at_infinity = _infinite_curves(spec, inputs, phi, schedule)
        train_arrays, train_values, grams = train_set_arrays(
            spec, inputs, schedule.trains, schedule.blocks
        )
        coords, initial = grid_coordinates(spec)
        for name, values in (
            ("step", schedule.steps),
            ("curve", list(CURVES)),
            ("block", list(BLOCKS)),
            ("member", np.arange(spec.ensemble.members)),
        ):
            array, data = coordinate_spec(name, values)
            coords.append(array)
            initial[name] = data
        initial.update(
            train_values,
            inputs=inputs,
            phi=phi,
            eta_max=schedule.eta_max,
            learning_rate=schedule.rates,
            convergence_step=schedule.converged,
            infinite_continuous=continuous,
            infinite_discrete=discrete,
            infinite_t_inf=at_infinity,
        )
        full_arrays, full_grams = full_gram_arrays(spec, inputs)
        per_task, aggregated = _arrays(spec, inputs.shape, len(schedule.steps))
        arrays = coords + per_task + train_arrays + aggregated + full_arrays
        return Layout(arrays, initial, {}, grams + full_grams)

    def run(self, spec: SweepSpec, store: SweepStore, task: Task) -> list[tuple[str, Region]]:
        """Train the task's members at its grid point; write losses and the shard's sums."""
        t, r, w = task.point
        mask = store.read("train_mask", (slice(t, t + 1), slice(None)))[0]
        train = np.flatnonzero(mask)
        steps, inputs, phi = store.read("step"), store.read("inputs"), store.read("phi")
        nnqs = dynamics_nnqs(spec, spec.grid.widths[w])
        rate = float(store.read("learning_rate")[t, r])
        # a stop signal while the results are written waits for them (the caller acts on it)
        with TaskCheckpoints(store.path, task.id, spec.checkpoint, int(steps[-1])) as checkpoints:
            stats = train_ensemble(
                nnqs, inputs, phi, train, seed=spec.sweep.seed, members=task.members,
                learning_rate=rate, log_steps=steps, dtype=spec.sweep.dtype,
                checkpoints=checkpoints,
            )  # fmt: skip
            linearised = None
            if spec.training.linearised:
                linearised = _linearised_losses(spec, nnqs, inputs, phi, mask, task, rate, steps)
            return _write_results(store, task, stats, linearised)

    def aggregate(self, store: SweepStore, point: tuple[int, ...]) -> None:
        t, r, w = point
        at = (slice(t, t + 1), slice(r, r + 1), slice(w, w + 1))
        losses = {
            name: store.read(f"member_{name}", (*at, slice(None), slice(None)))[0, 0, 0].T
            for name in ("train_loss", "test_loss")
        }
        sums = {name: shard_total(store, name, at) for name in SUMS}
        steps = store.read("step")
        stats = EnsembleStats(np.arange(losses["train_loss"].shape[1]), steps, **losses, **sums)
        train = np.flatnonzero(store.read("train_mask")[t])
        summary = summarize(stats, store.read("phi"), train)
        whole = (slice(None), slice(None))
        store.write("ensemble_mean", (*at, *whole), summary.mean[None, None, None])
        store.write("ensemble_variance", (*at, *whole), summary.variance[None, None, None])
        for name in AGGREGATED_CURVES:
            store.write(name, (*at, slice(None)), getattr(summary, name)[None, None, None])
        if f"{JACKKNIFED_CURVES[0]}_sem" not in store.group:
            return  # a store created before the jackknife errors: they stay absent
        errors = _jackknife_errors(store, at, stats, store.read("phi"), train)
        for name, values in errors.items():
            store.write(f"{name}_sem", (*at, slice(None)), values[None, None, None])

    def cost(self, spec: SweepSpec, task: Task) -> TaskCost:
        """GD steps (:func:`jobs.studies.base.member_step_flops` on the ``B`` train points
        per step and member), with ``training.linearised`` the linearisations
        (:func:`jobs.studies.base.linearisation_flops`), and the evaluations on the basis at
        the logged steps."""
        grid = grid_value(spec, task)
        basis = target_basis(spec)
        width, train, depth = grid["width"], grid["train_size"], spec.network.depth
        members = task.stop - task.start
        member_step = member_step_flops(train, width, basis.n_sites, depth)
        per_step = members * member_step
        logs = spec.training.log_points + 1
        evaluations = members * logs * forward_flop(basis.dimension, width, basis.n_sites, depth)
        once = 0.0
        if spec.training.linearised:
            once, linear = linearisation_flops(
                basis.dimension, members, width, basis.n_sites, depth, parameter_count(spec, width)
            )
            per_step += linear
        steps = spec.training.max_steps
        return TaskCost(per_step * steps + once + evaluations if steps else None, per_step)

    def checkpoint_bytes(self, spec: SweepSpec) -> int:
        """Two saved states of a shard at the widest width, and its logs
        (:func:`jobs.checkpoints.bytes_per_task`)."""
        width = max(spec.grid.widths)
        return bytes_per_task(
            spec.ensemble.shard_size,
            parameter_count(spec, width),
            training_itemsize(spec),
            spec.training.log_points + 1,
            target_basis(spec).dimension,
        )

    def memory(self, spec: SweepSpec) -> dict[str, int]:
        """Preparation: :func:`jobs.studies.problems.preparation_bytes`. A shard (the
        engine of ``suite.training``): the members' parameters three times (state,
        gradients, update) in the training dtype; per lane (two per core) the block
        intermediates the engine bounds by ``suite.training.BLOCK_ELEMENTS`` elements
        (per hidden layer: pre-activations, ``act'(z) r``, ``act(z)``); the per-block sums
        of one evaluation and the shard's sums ``5 x steps x D`` (float64: on device, on
        the host, encoded); the basis inputs; the compiled programs of the grid points a
        process may run in turn (``PROGRAM_BYTES`` each); with ``training.linearised``
        the linearisations (:func:`jobs.studies.base.linearisation_bytes`). Aggregating a
        point: its shards'
        sums accumulated one shard at a time, with the estimators of
        ``suite.training.summarize``, about 25 ``steps x D`` float64 arrays, and for the
        jackknife errors one shard's sums and the rest's again (10 more)."""
        width, members = max(spec.grid.widths), spec.ensemble.shard_size
        itemsize = training_itemsize(spec)
        basis = target_basis(spec)
        dimension, depth = basis.dimension, spec.network.depth
        train = max(spec.grid.train_sizes)
        per_unit = 2 * width  # the engine's block arithmetic (suite.training.layout)
        chunk = max(1, min(train, BLOCK_ELEMENTS // per_unit))
        blocks = -(-members // max(1, BLOCK_ELEMENTS // (per_unit * chunk)))
        intermediates = 3 * depth * 2 * usable_cores() * BLOCK_ELEMENTS * itemsize
        steps = spec.training.log_points + 1
        sums = 8 * 5 * dimension * (blocks + 3 * steps)
        inputs = 32 * dimension * (basis.n_sites + 2)
        programs = PROGRAM_BYTES * min(32, grid_point_count(spec))
        parameters = 3 * itemsize * members * parameter_count(spec, width)
        shard = BASELINE_BYTES + programs + parameters + intermediates + sums + inputs
        if spec.training.linearised:
            shard += linearisation_bytes(dimension, members, width, depth)
        point = 35 * 8 * steps * dimension + 3 * 2 * 8 * spec.ensemble.members * steps
        return {
            "preparation": preparation_bytes(spec),
            "shard": shard,
            "aggregation": aggregation_bytes(spec, point),
        }


def _linearised_losses(
    spec: SweepSpec,
    nnqs: NNQS,
    inputs: np.ndarray,
    phi: np.ndarray,
    mask: np.ndarray,
    task: Task,
    rate: float,
    steps: np.ndarray,
) -> dict[str, np.ndarray]:
    """The task's members evolved under their own empirical QS-NTK at initialisation
    (:func:`suite.member_flow.linearised_flows`): train and test losses ``(steps, members)``,
    each the mean of ``|psi - phi|^2`` over its set as the trained members' (twice the
    :class:`suite.losses.SupervisedMSE` value, docs/theory.md §5)."""
    train, test = np.flatnonzero(mask), np.flatnonzero(~mask)
    params = init_ensemble(nnqs, spec.sweep.seed, task.members, inputs.shape[1])
    flows = linearised_flows(
        nnqs, params, inputs, SupervisedMSE(jnp.asarray(train), jnp.asarray(phi[train])),
        rate, steps, observables={"test": SupervisedMSE(jnp.asarray(test), jnp.asarray(phi[test]))},
    )  # fmt: skip
    return {"train": 2 * flows.values["loss"], "test": 2 * flows.values["test"]}


def _write_results(
    store: SweepStore,
    task: Task,
    stats: EnsembleStats,
    linearised: dict[str, np.ndarray] | None = None,
) -> list[tuple[str, Region]]:
    """A task's member losses (and their linearisations) and shard sums into its own
    chunks; the regions written."""
    at = tuple(slice(i, i + 1) for i in task.point)
    regions: list[tuple[str, Region]] = []
    written = [("member_train_loss", stats.train_loss), ("member_test_loss", stats.test_loss)]
    if linearised is not None:
        written += [(f"linearised_{part}_loss", linearised[part]) for part in ("train", "test")]
    for name, values in written:
        region = (*at, slice(task.start, task.stop), slice(None))
        store.write(name, region, values.T[None, None, None])
        regions.append((name, region))
    return regions + write_shard_sums(store, task, stats)


@dataclass(frozen=True)
class _Schedule:
    """The first pass over the train sets: learning rates, convergence steps, logged
    steps, and what the second pass and the train-set arrays reuse."""

    eta_max: np.ndarray
    rates: np.ndarray
    converged: np.ndarray
    steps: np.ndarray
    trains: list[np.ndarray]
    blocks: list[np.ndarray]
    spectra: list[TrainSpectrum]


def _schedule(spec: SweepSpec, inputs: np.ndarray, phi: np.ndarray) -> _Schedule:
    """Per train size (one problem held at a time): ``eta_max``, the learning rates and
    their infinite-width convergence steps, which fix the logged steps."""
    factors = np.asarray(spec.grid.lr_factors)
    eta_max, converged, trains, blocks, spectra = [], [], [], [], []
    for t in range(len(spec.grid.train_sizes)):
        problem = supervised_problem(spec, inputs, phi, t)
        spectra.append(problem.spectrum)
        eta_max.append(problem.eta_max)
        rate = eta_max[-1] * factors
        converged.append([convergence_step(problem, r, spec.training.tolerance) for r in rate])
        trains.append(problem.train)
        blocks.append(problem.train_ntk_block)
        del problem
    eta, steps_to_converge = np.array(eta_max), np.array(converged)
    last = int(steps_to_converge.max())
    if spec.training.max_steps:
        last = min(last, spec.training.max_steps)
    steps = log_steps(last, spec.training.log_points)
    rates = eta[:, None] * factors[None, :]
    return _Schedule(eta, rates, steps_to_converge, steps, trains, blocks, spectra)


def _infinite_curves(
    spec: SweepSpec, inputs: np.ndarray, phi: np.ndarray, schedule: _Schedule
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The second pass: per train size, one pass over the basis for the infinite-width
    curves of every learning rate (continuous time and discrete steps at the logged
    steps, and t = inf)."""
    n_t, n_r, n_l = *schedule.rates.shape, len(schedule.steps)
    continuous = np.full((n_t, n_r, len(CURVES), n_l), NAN)
    discrete = np.full_like(continuous, NAN)
    at_infinity = np.full((n_t, n_r, len(CURVES)), NAN)
    infinity = np.asarray([np.inf])
    for t in range(n_t):
        problem = supervised_problem(spec, inputs, phi, t, schedule.spectra[t])
        modes = ((schedule.steps, False), (schedule.steps, True), (infinity, False))
        rates = schedule.rates[t]
        schedules = [(rate, times, mode) for rate in rates for times, mode in modes]
        curves = iter(infinite_width_curve_sets(problem, schedules))
        del problem
        for r in range(n_r):
            for out in (continuous, discrete):
                values = next(curves)
                out[t, r] = [getattr(values, name) for name in CURVES]
            limit = next(curves)
            at_infinity[t, r] = [getattr(limit, name)[0] for name in CURVES]
    return continuous, discrete, at_infinity


#: the aggregated loss curves (docs/theory.md §5, Eqs. 16-18)
CURVE_ABOUT = {
    f"{part}_{kind}": About(
        f"{part} {kind.replace('_', ' ')}",
        "1",
        f"ensemble's {words} on the {part} set (mean of |psi - phi|^2 over the set) at "
        "each logged step (docs/theory.md §5)",
    )
    for part in ("train", "test")
    for kind, words in (
        ("mean_of_losses", "mean over members of the loss"),
        ("loss_of_mean", "loss of the ensemble-mean prediction"),
        (
            "loss_of_mean_debiased",
            "loss of the mean less its finite-ensemble bias (suite.training.summarize)",
        ),
    )
}


def _jackknife_errors(
    store: SweepStore, at: Region, total: EnsembleStats, phi: np.ndarray, train: np.ndarray
) -> dict[str, np.ndarray]:
    """Delete-a-shard jackknife standard errors of :data:`JACKKNIFED_CURVES` at the grid
    point ``at`` (:func:`suite.training.jackknife_sem` over the estimates without each
    shard, :func:`suite.training.leave_out`); NaN with a single shard. One shard's sums
    are read at a time."""
    shards = store.array(SUMS[0]).shape[len(at)]
    if shards < 2:
        return {name: np.full(total.steps.size, np.nan) for name in JACKKNIFED_CURVES}
    size = store.array("member_train_loss").chunks[len(at)]
    estimates = []
    for shard in range(shards):
        region = (*at, slice(shard, shard + 1), slice(None), slice(None))
        sums = {name: store.read(name, region)[(0,) * (len(at) + 1)] for name in SUMS}
        members = slice(shard * size, (shard + 1) * size)
        part = EnsembleStats(
            total.members[members],
            total.steps,
            total.train_loss[:, members],
            total.test_loss[:, members],
            **sums,
        )
        rest = summarize(leave_out(total, part), phi, train)
        estimates.append([getattr(rest, name) for name in JACKKNIFED_CURVES])
    return dict(zip(JACKKNIFED_CURVES, jackknife_sem(np.asarray(estimates)), strict=True))


def _arrays(
    spec: SweepSpec, basis_shape: tuple[int, int], n_l: int
) -> tuple[list[ArraySpec], list[ArraySpec]]:
    """The store's arrays besides coordinates and Grams: per task (member losses, shard
    sums) and prepared (inputs, target, rates, infinite-width curves); aggregated."""
    dimension, n_sites = basis_shape
    n_t, n_r, n_w = len(spec.grid.train_sizes), len(spec.grid.lr_factors), len(spec.grid.widths)
    n_s, n_m, size = spec.ensemble.shards, spec.ensemble.members, spec.ensemble.shard_size
    shape = {"train_size": n_t, "lr_factor": n_r, "width": n_w}
    point = (1, 1, 1)
    rates = {"train_size": n_t, "lr_factor": n_r}
    losses = [
        ("member", "member {} loss", "each member's loss on the {} set, the mean of "
         "|psi - phi|^2 over it (docs/theory.md §5)"),
    ]  # fmt: skip
    if spec.training.linearised:
        losses.append(
            ("linearised", "linearised member {} loss", "each member's loss on the {} set "
             "when it is evolved under its own empirical QS-NTK at initialisation "
             "(training.linearised; docs/theory.md §7.3)"),
        )  # fmt: skip
    finite = [
        array_spec(
            f"{kind}_{part}_loss",
            {**shape, "member": n_m, "step": n_l},
            (*point, size, n_l),
            about=About(long_name.format(part), "1", description.format(part)),
        )
        for kind, long_name, description in losses
        for part in ("train", "test")
    ]
    finite += [
        array_spec(
            name,
            {**shape, "shard": n_s, "step": n_l, "basis": dimension},
            (*point, 1, n_l, dimension),
            about=SUM_ABOUT[name],
        )
        for name in SUMS
    ]
    curves = {**rates, "curve": len(CURVES), "step": n_l}
    prepared = [
        array_spec(
            "inputs", {"basis": dimension, "site": n_sites}, (dimension, n_sites), about=INPUTS
        ),
        array_spec(
            "phi",
            {"basis": dimension},
            (dimension,),
            "<c16",
            about=About(
                "target amplitude phi",
                "1",
                "the quench target on the basis, scaled by training.target_scale "
                "(unit-rms: mean |phi|^2 = 1; docs/theory.md §2.3, §5)",
            ),
        ),
        array_spec(
            "eta_max",
            {"train_size": n_t},
            (n_t,),
            about=About("largest stable learning rate", "1", "eta_max = 2B / lambda_max (§5)"),
        ),
        array_spec(
            "learning_rate",
            rates,
            (n_t, n_r),
            about=About("learning rate eta", "1", "lr_factor x eta_max (docs/theory.md §5)"),
        ),
        array_spec(
            "convergence_step",
            rates,
            (n_t, n_r),
            "<i8",
            about=About(
                "infinite-width convergence step",
                "1",
                "first step at which the infinite-width train loss is training.tolerance of "
                "its start (§5)",
            ),
        ),
        array_spec(
            "infinite_continuous",
            curves,
            (n_t, n_r, len(CURVES), n_l),
            about=About(
                "infinite-width loss, gradient flow",
                "1",
                "the four loss curves of the infinite-width prediction in continuous time at "
                "the logged steps (docs/theory.md §5)",
            ),
        ),
        array_spec(
            "infinite_discrete",
            curves,
            (n_t, n_r, len(CURVES), n_l),
            about=About(
                "infinite-width loss, discrete steps",
                "1",
                "the four loss curves of the infinite-width prediction after exactly `step` "
                "gradient-descent steps (docs/theory.md §5)",
            ),
        ),
        array_spec(
            "infinite_t_inf",
            {**rates, "curve": len(CURVES)},
            (n_t, n_r, len(CURVES)),
            about=About(
                "infinite-width loss at t = inf",
                "1",
                "the four loss curves of the infinite-width prediction at t -> infinity (§5)",
            ),
        ),
    ]
    per_step = {**shape, "step": n_l, "basis": dimension}
    aggregated = [
        array_spec(
            "ensemble_mean",
            per_step,
            (*point, n_l, dimension),
            "<c16",
            about=About("ensemble mean of psi", "1", "mean over the members of psi = u + i v (§5)"),
        ),
        array_spec(
            "ensemble_variance",
            per_step,
            (*point, n_l, dimension),
            about=About(
                "ensemble variance of psi",
                "1",
                "population variance (1/M) over the members of psi, mean |psi - mean psi|^2 (§5)",
            ),
        ),
    ] + [
        array_spec(name, {**shape, "step": n_l}, (*point, n_l), about=CURVE_ABOUT[name])
        for name in AGGREGATED_CURVES
    ]
    aggregated += [
        array_spec(
            f"{name}_sem",
            {**shape, "step": n_l},
            (*point, n_l),
            about=About(
                f"standard error of the {CURVE_ABOUT[name].long_name}",
                "1",
                f"delete-a-shard jackknife standard error of {name} (NaN with one shard; "
                "docs/theory.md §5)",
            ),
        )
        for name in JACKKNIFED_CURVES
    ]
    return finite + prepared, aggregated


register(Dynamics())
