"""Exact quench target states (docs/theory.md §2).

* ``TFIMQuench``: ``psi = exp(-i H t) |all up>`` with the transverse-field
  Ising Hamiltonian ``H = -J sum_<ij> Z_i Z_j - h sum_i X_i``.
* ``HubbardQuench``: ``psi = exp(-i H(U1) t) |g(U0)>`` with ``|g(U0)>`` the
  ground state of the Fermi-Hubbard Hamiltonian at ``U = U0`` and fixed
  ``(N_up, N_down)``.

``build_target`` checks the Hilbert-space dimension before building anything,
finds the initial ground state (dense ``eigh`` up to ``DENSE_EIGH_LIMIT``
states, ``eigsh`` beyond), refuses a degenerate one (the target would be
ill-defined) and evolves with ``scipy.sparse.linalg.expm_multiply`` in
complex128. Bases and sign conventions are those of docs/theory.md §1
(``suite.hilbert``); entropies in ``target_summary`` use the natural log
(docs/theory.md §6).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from suite.entanglement import schmidt_probabilities_blockwise, von_neumann_entropy
from suite.hilbert import DEFAULT_MAX_DIMENSION, Basis, HubbardBasis, SpinBasis
from suite.lattice import Lattice, check_int
from suite.operators import hubbard_hamiltonian, tfim_hamiltonian

DENSE_EIGH_LIMIT = 2000
"""Largest dimension diagonalised densely; larger spaces use Lanczos (``eigsh``)."""

DEGENERACY_TOLERANCE = 1e-8
"""Ground states with ``E_1 - E_0 <= DEGENERACY_TOLERANCE * max(1, |E_0|)`` are refused."""


def _check_real(name: str, value: object, *, non_negative: bool = False) -> float:
    """Return ``value`` as a float if it is a finite real number, else raise ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    if not math.isfinite(value) or (non_negative and value < 0):
        requirement = "a finite non-negative number" if non_negative else "finite"
        raise ValueError(f"{name} must be {requirement}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class TFIMQuench:
    """Quench ``psi = exp(-i H t)|all up>`` of the transverse-field Ising model (docs/theory.md §2).

    ``H = -J sum_<ij> Z_i Z_j - h sum_i X_i``; ``|all up>`` is ``SpinBasis`` index 0.

    Attributes:
        lx, ly, periodic: the lattice (``suite.lattice.Lattice``).
        J: Ising coupling.
        h: transverse field.
        time: evolution time ``t >= 0`` (units with hbar = 1).
    """

    model: ClassVar[str] = "tfim"

    lx: int = 3
    ly: int = 3
    periodic: bool = True
    J: float = 1.0
    h: float = 1.0
    time: float = 1.0

    def __post_init__(self) -> None:
        Lattice(self.lx, self.ly, self.periodic)
        _check_real("J", self.J)
        _check_real("h", self.h)
        _check_real("time", self.time, non_negative=True)

    @property
    def lattice(self) -> Lattice:
        """The lattice of this quench."""
        return Lattice(self.lx, self.ly, self.periodic)


@dataclass(frozen=True)
class HubbardQuench:
    """Quench ``psi = exp(-i H(U1) t)|g(U0)>`` of the Fermi-Hubbard model (docs/theory.md §2).

    Attributes:
        lx, ly, periodic: the lattice (``suite.lattice.Lattice``).
        n_up, n_down: fixed numbers of up and down fermions.
        hopping: hopping amplitude ``t``.
        u_initial: interaction ``U0`` whose ground state is the initial state.
        u_final: interaction ``U1`` of the evolution Hamiltonian.
        time: evolution time ``t >= 0`` (units with hbar = 1).
    """

    model: ClassVar[str] = "hubbard"

    lx: int = 2
    ly: int = 3
    periodic: bool = False
    n_up: int = 2
    n_down: int = 2
    hopping: float = 1.0
    u_initial: float = 0.0
    u_final: float = 4.0
    time: float = 1.0

    def __post_init__(self) -> None:
        n_sites = Lattice(self.lx, self.ly, self.periodic).n_sites
        for name in ("n_up", "n_down"):
            count = check_int(name, getattr(self, name), minimum=0)
            if count > n_sites:
                raise ValueError(f"{name} must be at most lx * ly = {n_sites}, got {count}")
        _check_real("hopping", self.hopping)
        _check_real("u_initial", self.u_initial)
        _check_real("u_final", self.u_final)
        _check_real("time", self.time, non_negative=True)

    @property
    def lattice(self) -> Lattice:
        """The lattice of this quench."""
        return Lattice(self.lx, self.ly, self.periodic)


Spec = TFIMQuench | HubbardQuench
"""Any quench specification."""

TARGETS: dict[str, type[TFIMQuench] | type[HubbardQuench]] = {
    TFIMQuench.model: TFIMQuench,
    HubbardQuench.model: HubbardQuench,
}
"""Registry of quench specifications by model name."""


@dataclass(frozen=True, eq=False)
class Target:
    """An exact quench target (docs/theory.md §2).

    Attributes:
        name: short identifier, e.g. ``"tfim-3x3-pbc"``.
        basis: the basis that indexes ``inputs``, ``psi0`` and ``psi``.
        inputs: network inputs, ``(dimension, n_sites)`` float64 (docs/theory.md §1).
        psi0: normalised initial state, complex128.
        psi: normalised evolved state, complex128.
        hamiltonian: evolution Hamiltonian (csr, float64) in ``basis`` order.
        initial_energy: ground energy of the initial Hamiltonian, or None when
            the initial state is not a ground state.
        lattice: the lattice.
        spec: the specification it was built from.
    """

    name: str
    basis: Basis
    inputs: np.ndarray
    psi0: np.ndarray
    psi: np.ndarray
    hamiltonian: sp.csr_matrix
    initial_energy: float | None
    lattice: Lattice
    spec: Spec


def make_spec(model: str, **params: Any) -> Spec:
    """Quench specification of the registered ``model`` with the given parameters."""
    if model not in TARGETS:
        raise ValueError(f"unknown model {model!r}; known models: {', '.join(sorted(TARGETS))}")
    spec_class = TARGETS[model]
    known = {field.name for field in dataclasses.fields(spec_class)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(
            f"unknown parameters {unknown} for model {model!r}; known: {sorted(known)}"
        )
    return spec_class(**params)


def make_target(model: str, *, max_dimension: int = DEFAULT_MAX_DIMENSION, **params: Any) -> Target:
    """Target of the registered ``model``: ``build_target(make_spec(model, **params))``."""
    return build_target(make_spec(model, **params), max_dimension=max_dimension)


def _lowest_eigenpair(
    operator: spla.LinearOperator | sp.csr_matrix, seed: int
) -> tuple[float, np.ndarray]:
    """Lowest eigenpair by Lanczos (``eigsh``) from a seeded random start vector."""
    start = np.random.default_rng(seed).standard_normal(operator.shape[0])
    energies, vectors = spla.eigsh(operator, k=1, which="SA", v0=start)
    return float(energies[0]), vectors[:, 0]


def ground_state(hamiltonian: sp.csr_matrix) -> tuple[float, np.ndarray, float]:
    """Lowest eigenpair and the gap to the next level (``inf`` for a 1-state space).

    Dense ``eigh`` up to ``DENSE_EIGH_LIMIT`` states. Beyond, Lanczos finds
    ``E_0, v`` and then ``E_1`` as the lowest level of the deflated operator
    ``H + (c - E_0) |v><v|``, ``c`` a Gershgorin bound on the spectrum: a
    single Krylov space cannot resolve a degenerate level, the deflated one can.
    The eigenvector is normalised with its largest component real positive.
    """
    dimension = hamiltonian.shape[0]
    if dimension == 1:
        return float(hamiltonian[0, 0]), np.ones(1), math.inf
    if dimension <= DENSE_EIGH_LIMIT:
        energies, vectors = np.linalg.eigh(hamiltonian.toarray())
        energy, vector, excited = float(energies[0]), vectors[:, 0], float(energies[1])
    else:
        energy, vector = _lowest_eigenpair(hamiltonian, seed=0)
        shift = float(abs(hamiltonian).sum(axis=1).max()) - energy

        def deflated(x: np.ndarray) -> np.ndarray:
            x = np.ravel(x)
            return hamiltonian @ x + shift * vector * (vector @ x)

        operator = spla.LinearOperator(hamiltonian.shape, matvec=deflated, dtype=np.float64)
        excited, _ = _lowest_eigenpair(operator, seed=1)
    vector = vector / np.linalg.norm(vector)
    vector = vector * np.sign(vector[np.argmax(np.abs(vector))])
    return energy, vector, excited - energy


def _evolve(hamiltonian: sp.csr_matrix, psi0: np.ndarray, time: float) -> np.ndarray:
    """``exp(-i H t) psi0`` by ``expm_multiply`` in complex128 (unitary to round-off)."""
    generator = (-1j * time) * hamiltonian.astype(np.complex128)
    return np.asarray(spla.expm_multiply(generator, psi0.astype(np.complex128)))


def _name(spec: Spec) -> str:
    """Short identifier ``model-LXxLY-pbc|obc``."""
    boundary = "pbc" if spec.periodic else "obc"
    return f"{spec.model}-{spec.lx}x{spec.ly}-{boundary}"


def basis_of(spec: Spec, max_dimension: int = DEFAULT_MAX_DIMENSION) -> Basis:
    """The basis of ``spec``'s target (dimension checked; nothing diagonalised)."""
    n_sites = spec.lattice.n_sites
    if isinstance(spec, TFIMQuench):
        return SpinBasis(n_sites, max_dimension=max_dimension)
    return HubbardBasis(n_sites, spec.n_up, spec.n_down, max_dimension=max_dimension)


def is_degenerate(energy: float, gap: float) -> bool:
    """Whether a ground level is degenerate: gap ``<= DEGENERACY_TOLERANCE * max(1, |E_0|)``."""
    return gap <= DEGENERACY_TOLERANCE * max(1.0, abs(energy))


def evolution_hamiltonian(spec: Spec, max_dimension: int = DEFAULT_MAX_DIMENSION) -> sp.csr_matrix:
    """The Hamiltonian a quench evolves under (TFIM at ``h``; Hubbard at ``u_final`` in
    its sector), in ``basis_of(spec)`` order; nothing diagonalised."""
    if isinstance(spec, TFIMQuench):
        return tfim_hamiltonian(spec.lattice, spec.J, spec.h, max_dimension=max_dimension)
    basis = basis_of(spec, max_dimension)
    return hubbard_hamiltonian(spec.lattice, basis, spec.hopping, spec.u_final)


def _build_tfim(spec: TFIMQuench, max_dimension: int) -> Target:
    """TFIM quench from the all-up state (basis index 0)."""
    lattice = spec.lattice
    basis = basis_of(spec, max_dimension)
    hamiltonian = evolution_hamiltonian(spec, max_dimension)
    psi0 = np.zeros(basis.dimension, dtype=np.complex128)
    psi0[0] = 1.0
    return Target(
        name=_name(spec),
        basis=basis,
        inputs=basis.inputs(),
        psi0=psi0,
        psi=_evolve(hamiltonian, psi0, spec.time),
        hamiltonian=hamiltonian,
        initial_energy=None,
        lattice=lattice,
        spec=spec,
    )


def _build_hubbard(spec: HubbardQuench, max_dimension: int) -> Target:
    """Hubbard quench from the (non-degenerate) ground state at ``u_initial``."""
    lattice = spec.lattice
    basis = basis_of(spec, max_dimension)
    initial = hubbard_hamiltonian(lattice, basis, spec.hopping, spec.u_initial)
    energy, ground, gap = ground_state(initial)
    if is_degenerate(energy, gap):
        raise ValueError(
            f"u_initial={spec.u_initial}: the initial ground state on {lattice} with "
            f"n_up={spec.n_up}, n_down={spec.n_down} is degenerate (gap {gap:.3e}), so the "
            "target would be ill-defined; change u_initial, the filling or the lattice"
        )
    psi0 = ground.astype(np.complex128)
    hamiltonian = evolution_hamiltonian(spec, max_dimension)
    return Target(
        name=_name(spec),
        basis=basis,
        inputs=basis.inputs(),
        psi0=psi0,
        psi=_evolve(hamiltonian, psi0, spec.time),
        hamiltonian=hamiltonian,
        initial_energy=energy,
        lattice=lattice,
        spec=spec,
    )


def build_target(spec: Spec, max_dimension: int = DEFAULT_MAX_DIMENSION) -> Target:
    """Exact quench target of ``spec`` (docs/theory.md §2).

    The Hilbert-space dimension is checked against ``max_dimension`` before any
    allocation. A degenerate initial ground state (gap ``<= DEGENERACY_TOLERANCE
    * max(1, |E_0|)``) raises ``ValueError``.
    """
    if isinstance(spec, TFIMQuench):
        return _build_tfim(spec, max_dimension)
    if isinstance(spec, HubbardQuench):
        return _build_hubbard(spec, max_dimension)
    raise ValueError(f"spec must be one of {sorted(TARGETS)} specifications, got {spec!r}")


def target_summary(target: Target) -> dict[str, Any]:
    """JSON-serialisable summary of ``target`` (plain floats and ints).

    ``energy`` is ``Re <psi|H|psi>`` of the evolution Hamiltonian,
    ``loschmidt_echo`` is ``|<psi0|psi>|^2`` and ``entanglement_entropy`` the
    von Neumann entropy (natural log, docs/theory.md §6) of the first
    ``n_subsystem_sites = floor(N / 2)`` sites in row-major order.
    """
    spec, lattice, psi = target.spec, target.lattice, target.psi
    lattice_fields = {"lx", "ly", "periodic"}
    parameters = {
        field.name: getattr(spec, field.name)
        for field in dataclasses.fields(spec)
        if field.name not in lattice_fields
    }
    n_a = lattice.n_sites // 2
    probabilities = schmidt_probabilities_blockwise(target.basis, psi, n_a)
    return {
        "name": target.name,
        "model": spec.model,
        "lattice": {"lx": int(lattice.lx), "ly": int(lattice.ly), "periodic": lattice.periodic},
        "parameters": {
            key: int(value) if isinstance(value, (int, np.integer)) else float(value)
            for key, value in parameters.items()
        },
        "dimension": int(target.basis.dimension),
        "norm": float(np.linalg.norm(psi)),
        "energy": float(np.vdot(psi, target.hamiltonian @ psi).real),
        "initial_energy": target.initial_energy,
        "loschmidt_echo": float(abs(np.vdot(target.psi0, psi)) ** 2),
        "entanglement_entropy": von_neumann_entropy(probabilities),
        "n_subsystem_sites": n_a,
    }
