"""The infinite-width ensemble on the energy loss (docs/theory.md §7; the
``kernel_flow_scaling`` and ``infinite_ground_state`` cases of ``nnqs bench``).

``kernel_flow_scaling``: seconds per gradient-descent step of an ensemble of NNGP draws
under the infinite-width QS-NTK of a decoupled one-hidden-layer ReLU NNQS, on the
energy of a periodic TFIM at ``h = 3``, for ``D = 2^N`` basis states: the
Walsh-Hadamard route (``O(D log D)``, no ``D x D`` array) at every ``N``, the dense
``2D x 2D`` kernel at the small ``N`` of ``dense_sites``, in the same run. The fitted
exponent ``p`` of ``seconds ~ D^p`` (on the sizes from ``fit_from`` and
``dense_fit_from`` sites up, where fixed costs no longer count; None: not fitted) says
how each scales.

``infinite_ground_state``: the acceptance run of ground-state search at infinite width:
``members`` NNGP draws evolved at ``lr_factor`` times the learning-rate bound; the
relative energy error ``(E_t - E_0) / |E_0|`` of every member against exact
diagonalisation, and its fidelity with the exact ground state.
"""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Mapping
from typing import Any

from analysis.bench.measures import Measured

#: a rectangular lattice of each size (TFIM 4x5 at N = 20)
SHAPES = {4: (2, 2), 6: (3, 2), 8: (4, 2), 9: (3, 3), 10: (5, 2), 12: (4, 3), 14: (7, 2),
          16: (4, 4), 18: (6, 3), 20: (5, 4)}  # fmt: skip
#: a member has reached the ground energy when its relative error is below this
TOLERANCE = 1e-8


def _energy_problem(n_sites: int, h: float) -> tuple[Any, Any]:
    from suite.lattice import Lattice
    from suite.losses import Energy, SparseRows
    from suite.operators import tfim_hamiltonian

    if n_sites not in SHAPES:
        raise ValueError(f"sites must be among {sorted(SHAPES)}, got {n_sites}")
    lattice = Lattice(*SHAPES[n_sites], periodic=True)
    hamiltonian = tfim_hamiltonian(lattice, J=1.0, h=h)
    return Energy(SparseRows.from_csr(hamiltonian)), hamiltonian


def _seconds_per_step(route: str, n_sites: int, params: Mapping[str, Any]) -> float:
    from suite.hilbert import SpinBasis
    from suite.kernel_flow import basis_kernels, kernel_flow, walsh_kernels
    from suite.kernels.full_basis import sample_functions
    from suite.networks import mlp_nnqs

    nnqs = mlp_nnqs("decoupled", "relu", 1, 8)
    loss, _ = _energy_problem(n_sites, params["h"])
    if route == "walsh":  # from the Hamming profiles alone: no basis, no D x D array
        nngp, ntk = walsh_kernels(nnqs, n_sites)
    else:
        nngp, ntk = basis_kernels(nnqs, SpinBasis(n_sites).inputs(), "dense")
    psi0 = sample_functions(nngp, 0, range(params["members"]))
    steps = [0, params["steps"]]
    kernel_flow(ntk, loss, psi0, 1e-4, steps)  # compile
    best = math.inf
    for _ in range(params["repeats"]):
        start = time.perf_counter()
        kernel_flow(ntk, loss, psi0, 1e-4, steps)
        best = min(best, time.perf_counter() - start)
    return best / params["steps"]


def _exponent(sites: list[int], seconds: list[float]) -> float:
    import numpy as np

    log_d = np.log([2.0**n for n in sites])
    return float(np.polyfit(log_d, np.log(seconds), 1)[0])


def measure_kernel_flow_scaling(params: Mapping[str, Any]) -> Measured:
    """Seconds per step against ``D`` on both routes (module docstring)."""
    values: dict[str, float] = {}
    walsh = {n: _seconds_per_step("walsh", n, params) for n in params["sites"]}
    dense = {n: _seconds_per_step("dense", n, params) for n in params["dense_sites"]}
    for n, seconds in walsh.items():
        values[f"walsh_step_ms_{n}"] = 1e3 * seconds
    for n, seconds in dense.items():
        values[f"dense_step_ms_{n}"] = 1e3 * seconds
        if n in walsh:
            values[f"walsh_speedup_{n}"] = seconds / walsh[n]
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    largest = max(walsh)
    notes = [
        f"{params['members']} members, {params['steps']} steps timed, best of {params['repeats']}",
        f"peak resident memory {peak_gib:.2f} GiB (one D x D float64 array at N = {largest} "
        f"would take {8 * 4.0**largest / 2**30:.3g} GiB)",
    ]
    fits = (("walsh", walsh, params["fit_from"]), ("dense", dense, params["dense_fit_from"]))
    for name, timings, smallest in fits:
        fitted = [] if smallest is None else [n for n in timings if n >= smallest]
        if len(fitted) >= 2:
            values[f"{name}_exponent"] = _exponent(fitted, [timings[n] for n in fitted])
            notes.append(f"{name}_exponent fitted on N = {fitted[0]}..{fitted[-1]}")
    return values, notes


def measure_infinite_ground_state(params: Mapping[str, Any]) -> Measured:
    """The energy error of every member against exact diagonalisation at each field of
    ``fields`` (module docstring); metric names end in ``_h<field>``."""
    values: dict[str, float] = {}
    notes: list[str] = []
    for field in params["fields"]:
        found, said = _ground_state_run(params, field)
        values |= {f"{name}_h{field:g}": value for name, value in found.items()}
        notes += said
    return values, notes


def _ground_state_run(params: Mapping[str, Any], field: float) -> Measured:
    import jax.numpy as jnp
    import numpy as np
    import scipy.sparse.linalg as sla

    from suite.kernel_flow import infinite_ensemble, learning_rate_bound, walsh_kernels
    from suite.kernels.full_basis import sample_functions
    from suite.losses import Infidelity
    from suite.networks import mlp_nnqs
    from suite.supervised import log_steps

    n_sites = params["lx"] * params["ly"]
    if SHAPES.get(n_sites) != (params["lx"], params["ly"]):
        raise ValueError(f"lattice {params['lx']}x{params['ly']} is not one of {SHAPES}")
    loss, hamiltonian = _energy_problem(n_sites, field)
    levels, vectors = sla.eigsh(hamiltonian, k=2, which="SA")
    ground_energy, gap = float(levels[0]), float(levels[1] - levels[0])
    ground = Infidelity(jnp.asarray(vectors[:, 0], dtype=jnp.complex128))
    nngp, ntk = walsh_kernels(mlp_nnqs("decoupled", "relu", 1, 8), n_sites)
    psi0 = sample_functions(nngp, params["seed"], range(params["members"]))
    bound = learning_rate_bound(ntk, loss, psi0)
    steps = log_steps(params["steps"], params["log_points"])
    start = time.perf_counter()
    log = infinite_ensemble(
        nngp, ntk, loss, params["seed"], params["members"], params["lr_factor"] * bound, steps,
        observables={"infidelity": ground}, chunk=params["chunk"],
    )  # fmt: skip
    seconds = time.perf_counter() - start
    error = np.abs(log.values["loss"] - ground_energy) / abs(ground_energy)
    final = error[-1]
    reached = np.all(error < TOLERANCE, axis=1)
    values = {
        "seconds": seconds,
        "gap": gap,
        "eta_max": bound,
        "max_final_error": float(np.max(final)),
        "median_final_error": float(np.median(final)),
        "max_final_infidelity": float(np.max(log.values["infidelity"][-1])),
    }
    if np.any(final < TOLERANCE):
        values["fraction_within_tolerance"] = float(np.mean(final < TOLERANCE))
    if reached.any():
        values["steps_to_tolerance"] = float(steps[int(np.argmax(reached))])
    notes = [
        f"TFIM {params['lx']}x{params['ly']} periodic, h = {field:g}: E_0 = {ground_energy:.10f}, "
        f"gap {gap:.3e}; {params['members']} members at {params['lr_factor']} x eta_max, "
        f"{steps[-1]} steps; stable: {int(log.stable.sum())}/{params['members']}",
    ]
    slow = np.flatnonzero(final >= TOLERANCE)
    if slow.size:
        overlap = 1 - log.values["infidelity"][0, slow]
        left = log.values["infidelity"][-1, slow]
        notes.append(
            f"h = {field:g}: {slow.size} members above {TOLERANCE:g}: initial fidelity with the "
            f"ground state {overlap.min():.3e}..{overlap.max():.3e}, final infidelity "
            f"{left.min():.3e}..{left.max():.3e}"
        )
    return values, notes
