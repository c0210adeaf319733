"""Training on a whole-basis loss: the ground-state, fidelity and tomography studies
(docs/theory.md §7).

The three studies share this module and differ only in their loss:

* ``ground_state``: the energy of the target model's Hamiltonian (the TFIM at ``h``, the
  Hubbard model at ``u_final`` in its sector), logged with the infidelity to its exact
  ground state; the loss's floor is the exact ground energy ``E_0``;
* ``fidelity``: the infidelity to the target state (the quench state of ``[target]``);
  its floor is 0;
* ``tomography``: the sum of the KL divergences from the target's Born distributions in
  all-Z, all-X and ``search.bases`` (or the frequencies of ``search.shots`` shots per
  basis) to the model's, logged with the infidelity to the target; its floor is 0 with
  exact distributions and unknown (NaN) with shots.

Grid ``lr_factor x width``. Preparing the store builds the target state, the
infinite-width kernels on the basis (Walsh-Hadamard on spins, dense on a Hubbard
sector), the learning-rate bound ``eta_max`` at the ensemble's NNGP draws (§7.1; the
rate is ``lr_factor x eta_max``), the logged steps, the infinite-width ensemble:
``members`` NNGP draws (member ``i`` from ``(seed, i)``) in exact discrete steps at the
finite networks' rate (with ``search.continuous`` also in continuous time), and (up to
``suite.kernel_flow.SPECTRUM_DIMENSION`` basis states, a known floor) the
kernel-preconditioned spectrum at the floor state nearest each draw's last function,
which sets its asymptotic rate. A task trains ``shard_size`` members at one grid point
(:func:`suite.training.train_on_loss`) and, with ``search.linearised``, evolves each
under its own empirical QS-NTK at initialisation
(:func:`suite.member_flow.linearised_flows`) and, with ``search.paired``, evolves each
member's own initial function under the infinite-width QS-NTK
(:func:`suite.member_flow.frozen_kernel_flows`); it writes their logged values and the
shard's sums of ``psi``. Aggregating a point gives the members' mean of each value, the
linearisations' mean, the kernel motion (each member against its own linearisation),
with ``search.paired`` the paired departure (each member against its infinite-width
partner) and the paired fluctuation (its linearisation against that partner), and the
ensemble mean of psi.
"""

from __future__ import annotations

from abc import abstractmethod
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
from jobs.studies.problems import INPUTS, dynamics_nnqs, parameter_count
from suite.kernel_flow import (
    SPECTRUM_DIMENSION,
    basis_kernels,
    floor_spectrum,
    infinite_ensemble,
    learning_rate_bound,
    tangent_kernel,
)
from suite.kernels.full_basis import MAX_DENSE_DIMENSION, sample_functions
from suite.losses import Energy, Infidelity, Loss, SparseRows, check_bases, tomography_targets
from suite.member_flow import frozen_kernel_flows, linearised_flows
from suite.networks import init_ensemble
from suite.store import ArraySpec, Region, SweepStore
from suite.supervised import log_steps
from suite.targets import (
    build_target,
    evolution_hamiltonian,
    ground_state,
    is_degenerate,
    make_spec,
)
from suite.training import BLOCK_ELEMENTS, SUMS, LossEnsembleStats, train_on_loss

#: NNGP draws evolved together when the infinite-width ensemble is prepared
INFINITE_CHUNK = 256


@dataclass(frozen=True)
class Problem:
    """What a task trains on: the loss and the observables logged with it."""

    loss: Loss
    observables: dict[str, Loss]

    @property
    def names(self) -> tuple[str, ...]:
        """The logged values, in the order of the store's ``value`` axis."""
        return ("loss", *self.observables)


class LossSearch(Study):
    """Finite ensembles trained on a whole-basis loss against the infinite-width ensemble
    and their own linearisations (module docstring)."""

    sections = ("target", "network", "grid", "ensemble", "search", "checkpoint")
    grid_keys = ("widths", "lr_factors")
    lowered_by: ClassVar[dict[str, str]] = {
        "preparation": "ensemble.members",
        "shard": "ensemble.shard_size",
        "aggregation": "search.log_points",
    }
    #: the observables this study logs besides its loss (their names)
    observed: ClassVar[tuple[str, ...]]
    #: what the loss is, for the store's attributes and the report
    describes: ClassVar[str]

    def target_state(self, spec: SweepSpec) -> tuple[np.ndarray, float]:
        """The state the values are measured against, and the loss's floor."""
        return build_target(make_spec(**spec.target)).psi, 0.0

    @abstractmethod
    def problem(self, spec: SweepSpec, state: np.ndarray) -> Problem:
        """The loss and observables, from the spec and the prepared ``state``."""

    def check(self, spec: SweepSpec, check: SpecChecker) -> None:
        dimension = target_basis(spec).dimension
        if spec.target["model"] != "tfim" and dimension > MAX_DENSE_DIMENSION:
            requirement = (
                f"has a sector of {dimension} states; the infinite-width kernels of a "
                f"Hubbard sector are dense, up to {MAX_DENSE_DIMENSION} states"
            )
            raise check.error("target", requirement, spec.target)
        if spec.search.bases or spec.search.shots:
            field_name = "search.bases" if spec.search.bases else "search.shots"
            value = spec.search.bases or spec.search.shots
            raise check.error(field_name, "applies to a tomography study only", value)

    def axes(self, spec: SweepSpec) -> dict[str, tuple[Any, ...]]:
        return {"lr_factor": spec.grid.lr_factors, "width": spec.grid.widths}

    def layout(self, spec: SweepSpec) -> Layout:
        """The store; prepares the target state, the learning rates and the
        infinite-width ensemble at the logged steps."""
        basis = target_basis(spec)
        inputs = basis.inputs()
        state, floor = self.target_state(spec)
        problem = self.problem(spec, state)
        names = problem.names
        nngp, ntk = basis_kernels(dynamics_nnqs(spec, spec.grid.widths[0]), inputs)
        members, seed = spec.ensemble.members, spec.sweep.seed
        bound = min(
            learning_rate_bound(ntk, problem.loss, sample_functions(nngp, seed, range(start, stop)))
            for start, stop in _chunks(members, INFINITE_CHUNK)
        )
        steps = log_steps(spec.search.steps, spec.search.log_points)
        rates = bound * np.asarray(spec.grid.lr_factors)
        infinite = np.full((rates.size, len(names), members, steps.size), NAN)
        stable = np.zeros((rates.size, members), dtype=bool)
        with_spectrum = _has_spectrum(spec)
        spectra, continuous = [], []
        for r, rate in enumerate(rates):
            log = infinite_ensemble(
                nngp, ntk, problem.loss, seed, members, float(rate), steps,
                observables=problem.observables, chunk=INFINITE_CHUNK, keep_final=with_spectrum,
            )  # fmt: skip
            infinite[r] = np.stack([log.values[name].T for name in names])
            stable[r] = log.stable
            if with_spectrum:
                spectra.append(floor_spectrum(ntk, problem.loss, state, log.final))
            if spec.search.continuous:
                flow = infinite_ensemble(
                    nngp, ntk, problem.loss, seed, members, float(rate), steps, discrete=False,
                    observables=problem.observables, chunk=INFINITE_CHUNK,
                )  # fmt: skip
                continuous.append(np.stack([flow.values[name].T for name in names]))
        coords, initial = grid_coordinates(spec)
        for name, values, about in (
            ("step", steps, None),
            ("value", list(names), _value_about(self)),
            ("member", np.arange(members), None),
        ):
            array, data = coordinate_spec(name, values, about)
            coords.append(array)
            initial[name] = data
        initial.update(
            inputs=inputs,
            target_state=state,
            loss_floor=np.float64(floor),
            eta_max=np.float64(bound),
            learning_rate=rates,
            infinite_values=infinite,
            infinite_stable=stable,
        )
        if with_spectrum:
            initial["floor_spectrum"] = np.stack(spectra)
        if spec.search.continuous:
            initial["infinite_continuous_values"] = np.stack(continuous)
        arrays = coords + self._arrays(spec, inputs.shape, len(names), steps.size)
        return Layout(arrays, initial, {"loss": self.describes}, [])

    def run(self, spec: SweepSpec, store: SweepStore, task: Task) -> list[tuple[str, Region]]:
        """Train the task's members at its grid point, then their linearisations and their
        infinite-width partners; write their values and the shard's sums."""
        r, w = task.point
        inputs, steps = store.read("inputs"), store.read("step")
        problem = self.problem(spec, store.read("target_state"))
        nnqs = dynamics_nnqs(spec, spec.grid.widths[w])
        rate = float(store.read("learning_rate")[r])
        with TaskCheckpoints(store.path, task.id, spec.checkpoint, int(steps[-1])) as checkpoints:
            stats = train_on_loss(
                nnqs, inputs, problem.loss, seed=spec.sweep.seed, members=task.members,
                learning_rate=rate, log_steps=steps, observables=problem.observables,
                dtype=spec.sweep.dtype, checkpoints=checkpoints,
            )  # fmt: skip
            references = {}
            if spec.search.linearised or spec.search.paired:
                params = init_ensemble(nnqs, spec.sweep.seed, task.members, inputs.shape[1])
            if spec.search.linearised:
                references["linearised_values"] = linearised_flows(
                    nnqs, params, inputs, problem.loss, rate, steps,
                    observables=problem.observables,
                )  # fmt: skip
            if spec.search.paired:
                references["paired_values"] = frozen_kernel_flows(
                    nnqs, params, inputs, tangent_kernel(nnqs, inputs), problem.loss, rate,
                    steps, observables=problem.observables,
                )  # fmt: skip
            logged = {
                name: np.stack([flows.values[value].T for value in problem.names])
                for name, flows in references.items()
            }
            return _write_results(store, task, problem.names, stats, logged)

    def aggregate(self, store: SweepStore, point: tuple[int, ...]) -> None:
        """Members' mean values, the linearisations' means, the kernel motion, in a store
        with partners (``search.paired``) the paired departure and fluctuation, and the
        ensemble mean of psi at ``point`` (standard errors come from the member values:
        :func:`analysis.compare.standard_error`)."""
        r, w = point
        at = (slice(r, r + 1), slice(w, w + 1))
        whole = (slice(None),) * 3
        values = store.read("member_values", (*at, *whole))[0, 0]  # (V, M, L)
        members = values.shape[1]
        store.write("mean_values", (*at, *whole[:2]), values.mean(axis=1)[None, None])
        linear = store.read("linearised_values", (*at, *whole))[0, 0]
        store.write("linearised_mean_values", (*at, *whole[:2]), linear.mean(axis=1)[None, None])
        motion = np.abs(values - linear).mean(axis=1)
        store.write("kernel_motion", (*at, *whole[:2]), motion[None, None])
        if "paired_values" in store.group:
            paired = store.read("paired_values", (*at, *whole))[0, 0]
            departure = np.abs(values - paired).mean(axis=1)
            store.write("paired_departure", (*at, *whole[:2]), departure[None, None])
            if "paired_fluctuation" in store.group:  # with search.linearised
                fluctuation = np.abs(linear - paired).mean(axis=1)
                store.write("paired_fluctuation", (*at, *whole[:2]), fluctuation[None, None])
        mean = (shard_total(store, "sum_u", at) + 1j * shard_total(store, "sum_v", at)) / members
        store.write("ensemble_mean", (*at, *whole[:2]), mean[None, None])

    def cost(self, spec: SweepSpec, task: Task) -> TaskCost:
        """Per step and member, an update on every basis state
        (:func:`jobs.studies.base.member_step_flops` on the ``D`` states), and with
        ``search.linearised`` the linearisations
        (:func:`jobs.studies.base.linearisation_flops`), with ``search.paired`` the
        infinite-width partners (:func:`_partner_step_flops`; on a Hubbard sector the
        task's one dense Gram of the kernel, ``O(D^2)``, is left out: the partners'
        steps cost ``8 D^2`` per member each). The infinite-width ensemble is prepared
        with the store, not by a task."""
        basis = target_basis(spec)
        width, members = grid_value(spec, task)["width"], task.stop - task.start
        depth = spec.network.depth
        per_step = members * member_step_flops(basis.dimension, width, basis.n_sites, depth)
        once = 0.0
        if spec.search.linearised:
            once, linear = linearisation_flops(
                basis.dimension, members, width, basis.n_sites, depth, parameter_count(spec, width)
            )
            per_step += linear
        if spec.search.paired:
            walsh = spec.target["model"] == "tfim"
            per_step += members * _partner_step_flops(basis.dimension, basis.n_sites, walsh)
        return TaskCost(per_step * spec.search.steps + once, per_step)

    def checkpoint_bytes(self, spec: SweepSpec) -> int:
        """Two saved states of a shard at the widest width, and its logs of every value
        (:func:`jobs.checkpoints.bytes_per_task`)."""
        return bytes_per_task(
            spec.ensemble.shard_size,
            parameter_count(spec, max(spec.grid.widths)),
            training_itemsize(spec),
            spec.search.log_points + 1,
            target_basis(spec).dimension,
            values=1 + len(self.observed),
        )

    def memory(self, spec: SweepSpec) -> dict[str, int]:
        """Preparation: the target (a Krylov evolution of the quench, about ``24 (N + 8)``
        bytes a state), on a Hubbard sector the dense ``2D x 2D`` kernels (the Gram
        blocks, the kernels, their roots and the eigendecomposition: about eight such
        float64 arrays), and per chunk of :data:`INFINITE_CHUNK` draws about 16 complex
        ``(chunk, D)`` arrays (draws, flow state, gradients, curvature iterates; 10 more
        for the Dormand-Prince stages with ``search.continuous``); the infinite values of
        every learning rate (twice with ``search.continuous``); with the floor spectrum,
        the members' final functions and one member's dense ``2D x 2D`` preconditioned
        Hessian with its eigensolver's work (about six such float64 arrays) and the
        spectra. A shard: its
        parameters three times, the engine's blocks (``suite.training.BLOCK_ELEMENTS`` per
        lane, three per hidden layer), its outputs on the basis and their gradient (four
        real ``m x D``), the shard's sums (``5 x steps x D`` three times), the
        linearisations (:func:`jobs.studies.base.linearisation_bytes`), and with
        ``search.paired`` the infinite-width partners (as a chunk of the ensemble, and the
        dense kernels on a Hubbard sector). Aggregating a point: its values,
        linearisations, partners, sums and the ensemble mean."""
        basis = target_basis(spec)
        dimension, n_sites = basis.dimension, basis.n_sites
        members, size = spec.ensemble.members, spec.ensemble.shard_size
        steps = spec.search.log_points + 1
        values = 1 + len(self.observed)
        width, depth = max(spec.grid.widths), spec.network.depth
        itemsize = training_itemsize(spec)
        dense = 0 if spec.target["model"] == "tfim" else 8 * 8 * (2 * dimension) ** 2
        chunk = min(members, INFINITE_CHUNK)
        spectrum = 0
        if _has_spectrum(spec):  # the members' final functions, one member's 2D x 2D Hessian
            spectrum = (16 + 16 * len(spec.grid.lr_factors)) * members * dimension
            spectrum += 6 * 8 * (2 * dimension) ** 2
        preparation = (
            BASELINE_BYTES + 24 * dimension * (n_sites + 8) + dense
            + 16 * (26 if spec.search.continuous else 16) * chunk * dimension + spectrum
            + 8 * len(spec.grid.lr_factors) * values * members * steps
            * (2 if spec.search.continuous else 1)
        )  # fmt: skip
        intermediates = 3 * depth * 2 * usable_cores() * BLOCK_ELEMENTS * itemsize
        parameters = 3 * itemsize * size * parameter_count(spec, width)
        outputs = 4 * 8 * size * dimension + 3 * 8 * 5 * steps * dimension
        tangents = 0
        if spec.search.linearised:
            tangents = linearisation_bytes(dimension, size, width, depth)
        partners = 16 * 16 * size * dimension + dense if spec.search.paired else 0
        programs = PROGRAM_BYTES * min(32, grid_point_count(spec))
        shard = (
            BASELINE_BYTES + programs + parameters + intermediates + outputs + tangents
            + partners + 32 * dimension * (n_sites + 2)
        )  # fmt: skip
        point = 8 * ((4 if spec.search.paired else 3) * values * members * steps)
        point += 8 * 4 * steps * dimension
        return {
            "preparation": preparation,
            "shard": shard,
            "aggregation": aggregation_bytes(spec, point),
        }

    def _arrays(
        self, spec: SweepSpec, basis_shape: tuple[int, int], n_v: int, n_l: int
    ) -> list[ArraySpec]:
        dimension, n_sites = basis_shape
        n_r, n_w = len(spec.grid.lr_factors), len(spec.grid.widths)
        n_s, n_m, size = spec.ensemble.shards, spec.ensemble.members, spec.ensemble.shard_size
        point, grid = (1, 1), {"lr_factor": n_r, "width": n_w}
        per_member = {**grid, "value": n_v, "member": n_m, "step": n_l}
        per_value = {**grid, "value": n_v, "step": n_l}
        logged = "at each logged step (docs/theory.md §7)"
        return [
            array_spec(
                "member_values", per_member, (*point, n_v, size, n_l),
                about=About("member's value", "1", f"each member's loss and observables {logged}"),
            ),
            array_spec(
                "linearised_values", per_member, (*point, n_v, size, n_l),
                about=About(
                    "linearised member's value", "1",
                    "each member's values when it is evolved under its own empirical QS-NTK "
                    f"at initialisation {logged} (NaN without search.linearised)",
                ),
            ),
            *(
                array_spec(
                    name, {**grid, "shard": n_s, "step": n_l, "basis": dimension},
                    (*point, 1, n_l, dimension), about=SUM_ABOUT[name],
                )
                for name in SUMS
            ),
            array_spec(
                "inputs", {"basis": dimension, "site": n_sites}, (dimension, n_sites),
                about=INPUTS,
            ),
            array_spec(
                "target_state", {"basis": dimension}, (dimension,), "<c16",
                about=About(
                    "target state", "1",
                    "the normalised state the values measure against: the exact ground state "
                    "(ground_state) or the quench target (fidelity, tomography)",
                ),
            ),
            array_spec(
                "loss_floor", {}, (),
                about=About(
                    "the loss's minimum", "1",
                    "E_0 from exact diagonalisation (ground_state), 0 (fidelity, exact "
                    "tomography), NaN (tomography from shots: unknown)",
                ),
            ),
            array_spec(
                "eta_max", {}, (),
                about=About(
                    "learning-rate bound eta_max", "1",
                    "2 / the largest kernel-preconditioned curvature of the loss at the NNGP "
                    "draws (docs/theory.md §7.1)",
                ),
            ),
            array_spec(
                "learning_rate", {"lr_factor": n_r}, (n_r,),
                about=About("learning rate eta", "1", "lr_factor x eta_max (§7.1)"),
            ),
            array_spec(
                "infinite_values", {"lr_factor": n_r, "value": n_v, "member": n_m, "step": n_l},
                (1, n_v, n_m, n_l),
                about=About(
                    "infinite-width member's value", "1",
                    "each NNGP draw's values under the infinite-width QS-NTK in exact "
                    f"discrete steps at the finite networks' rate {logged}",
                ),
            ),
            *(
                [
                    array_spec(
                        "infinite_continuous_values",
                        {"lr_factor": n_r, "value": n_v, "member": n_m, "step": n_l},
                        (1, n_v, n_m, n_l),
                        about=About(
                            "infinite-width member's value, continuous time", "1",
                            "each NNGP draw's values under the infinite-width QS-NTK in "
                            "continuous time (gradient flow, t counting steps at the finite "
                            f"networks' rate; search.continuous) {logged}",
                        ),
                    )
                ]
                if spec.search.continuous
                else []
            ),
            array_spec(
                "infinite_stable", {"lr_factor": n_r, "member": n_m}, (n_r, n_m), "|b1",
                about=About(
                    "infinite-width member is stable", "1",
                    "its loss is finite and non-increasing along the logged steps (§7.1)",
                ),
            ),
            *(
                [
                    array_spec(
                        "floor_spectrum", {"lr_factor": n_r, "member": n_m, "mode": 2 * dimension},
                        (1, n_m, 2 * dimension),
                        about=About(
                            "kernel-preconditioned spectrum at the floor", "1",
                            "eigenvalues, ascending, of K^(1/2) Hess L K^(1/2) (K the "
                            "infinite-width QS-NTK) at the floor state nearest each "
                            "infinite-width member's last function; eta times one is the "
                            "rate of its mode (docs/theory.md §7.1)",
                        ),
                    )
                ]
                if _has_spectrum(spec)
                else []
            ),
            array_spec(
                "mean_values", per_value, (*point, n_v, n_l),
                about=About("ensemble mean of each value", "1", f"mean over the members {logged}"),
            ),
            array_spec(
                "linearised_mean_values", per_value, (*point, n_v, n_l),
                about=About(
                    "mean value of the linearisations", "1",
                    f"mean over the members' linearisations {logged}",
                ),
            ),
            array_spec(
                "kernel_motion", per_value, (*point, n_v, n_l),
                about=About(
                    "kernel motion", "1",
                    "mean over the members of |value - its linearisation's value|: how far "
                    f"training leaves the lazy regime {logged}",
                ),
            ),
            *(
                [
                    array_spec(
                        "paired_values", per_member, (*point, n_v, size, n_l),
                        about=About(
                            "infinite-width partner's value", "1",
                            "each member's own initial function evolved under the "
                            f"infinite-width QS-NTK at the same rate {logged}",
                        ),
                    ),
                    array_spec(
                        "paired_departure", per_value, (*point, n_v, n_l),
                        about=About(
                            "paired departure", "1",
                            "mean over the members of |value - its infinite-width partner's "
                            f"value|: kernel motion and kernel fluctuation together {logged}",
                        ),
                    ),
                ]
                if spec.search.paired
                else []
            ),
            *(
                [
                    array_spec(
                        "paired_fluctuation", per_value, (*point, n_v, n_l),
                        about=About(
                            "paired kernel fluctuation", "1",
                            "mean over the members of |linearisation's value - infinite-width "
                            "partner's value|: the member's empirical QS-NTK at "
                            f"initialisation against the infinite-width one {logged}",
                        ),
                    ),
                ]
                if spec.search.paired and spec.search.linearised
                else []
            ),
            array_spec(
                "ensemble_mean", {**grid, "step": n_l, "basis": dimension},
                (*point, n_l, dimension), "<c16",
                about=About("ensemble mean of psi", "1", "mean over the members of psi = u + i v"),
            ),
        ]  # fmt: skip


def _has_spectrum(spec: SweepSpec) -> bool:
    """Whether the store holds ``floor_spectrum``: the floor state is known (no shots) and
    the basis has at most :data:`suite.kernel_flow.SPECTRUM_DIMENSION` states."""
    return not spec.search.shots and target_basis(spec).dimension <= SPECTRUM_DIMENSION


def _partner_step_flops(dimension: int, n_sites: int, walsh: bool) -> float:
    """About the work of one kernel-flow step of one function
    (:func:`suite.kernel_flow.kernel_flow`): the kernel's product with the gradient (dense
    ``2D x 2D``: ``8 D^2``; Walsh-Hadamard: four transforms of ``D N`` additions) and the
    loss's gradient (about ``8 D (N + 1)``, the TFIM Hamiltonian's ``N + 1`` terms a
    state)."""
    product = 4.0 * dimension * n_sites if walsh else 8.0 * dimension**2
    return product + 8.0 * dimension * (n_sites + 1)


def _chunks(total: int, size: int) -> list[tuple[int, int]]:
    return [(start, min(start + size, total)) for start in range(0, total, size)]


def _value_about(study: LossSearch) -> About:
    return About(
        "logged value",
        "1",
        f"'loss' ({study.describes}) and the observables logged with it "
        "(infidelity: to the target state; docs/theory.md §7)",
    )


def _write_results(
    store: SweepStore,
    task: Task,
    names: tuple[str, ...],
    stats: LossEnsembleStats,
    references: dict[str, np.ndarray],
) -> list[tuple[str, Region]]:
    """A task's member values, the values of their references (``linearised_values``,
    NaN without ``search.linearised``; ``paired_values`` with ``search.paired``) and its
    shard sums into its own chunks."""
    at = tuple(slice(i, i + 1) for i in task.point)
    members = (*at, slice(None), slice(task.start, task.stop), slice(None))
    values = np.stack([stats.values[name].T for name in names])
    logged = {
        "member_values": values,
        "linearised_values": np.full_like(values, NAN),
        **references,
    }
    for name, array in logged.items():
        store.write(name, members, array[None, None])
    return [(name, members) for name in logged] + write_shard_sums(store, task, stats)


class GroundState(LossSearch):
    """Ground-state search: the energy, logged with the infidelity to the ground state."""

    name = "ground_state"
    observed = ("infidelity",)
    describes = "energy <psi|H|psi> / <psi|psi> of the target model's Hamiltonian"

    def target_state(self, spec: SweepSpec) -> tuple[np.ndarray, float]:
        """The exact ground state and ``E_0``; a degenerate ground state (gap below
        ``suite.targets.is_degenerate``) is refused, as its infidelity
        would depend on the eigensolver's choice within the level."""
        energy, vector, gap = ground_state(evolution_hamiltonian(make_spec(**spec.target)))
        if is_degenerate(energy, gap):
            field_name = "h" if spec.target["model"] == "tfim" else "u_final"
            raise ValueError(
                f"target.{field_name}={spec.target[field_name]}: the ground state of the "
                f"target's Hamiltonian is degenerate (gap {gap:.3e}), so the infidelity to "
                "it is ill-defined; change the field, the filling or the lattice"
            )
        return vector.astype(np.complex128), energy

    def problem(self, spec: SweepSpec, state: np.ndarray) -> Problem:
        energy = Energy(SparseRows.from_csr(evolution_hamiltonian(make_spec(**spec.target))))
        return Problem(energy, {"infidelity": Infidelity(jnp.asarray(state, dtype=jnp.complex128))})


class Fidelity(LossSearch):
    """The infidelity to the quench target."""

    name = "fidelity"
    observed = ()
    describes = "infidelity 1 - |<phi|psi>|^2 / (<phi|phi><psi|psi>) to the target state"

    def problem(self, spec: SweepSpec, state: np.ndarray) -> Problem:
        return Problem(Infidelity(jnp.asarray(state, dtype=jnp.complex128)), {})


class Tomography(LossSearch):
    """Tomography of the quench target from its measurement distributions."""

    name = "tomography"
    observed = ("infidelity",)
    describes = "sum over measurement bases of KL(target's distribution || model's)"

    def check(self, spec: SweepSpec, check: SpecChecker) -> None:
        if spec.target["model"] != "tfim":
            requirement = "must be 'tfim' for a tomography study (Pauli bases act on spins)"
            raise check.error("target.model", requirement, spec.target["model"])
        try:
            check_bases(self.bases(spec), target_basis(spec).n_sites)
        except ValueError as error:
            raise check.error("search.bases", str(error), list(spec.search.bases)) from None

    def target_state(self, spec: SweepSpec) -> tuple[np.ndarray, float]:
        return build_target(make_spec(**spec.target)).psi, NAN if spec.search.shots else 0.0

    def problem(self, spec: SweepSpec, state: np.ndarray) -> Problem:
        shots = spec.search.shots or None
        loss = tomography_targets(state, self.bases(spec), shots, spec.sweep.seed)
        return Problem(loss, {"infidelity": Infidelity(jnp.asarray(state, dtype=jnp.complex128))})

    @staticmethod
    def bases(spec: SweepSpec) -> tuple[str, ...]:
        """All-Z, all-X, then ``search.bases``."""
        n_sites = target_basis(spec).n_sites
        return ("Z" * n_sites, "X" * n_sites, *spec.search.bases)


for _study in (GroundState(), Fidelity(), Tomography()):
    register(_study)
