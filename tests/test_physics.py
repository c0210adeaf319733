"""Tests of lattices, bases, Hamiltonians, quench targets and entropies
(docs/theory.md §1, §2, §6)."""

from __future__ import annotations

import json
import math
import time
import tracemalloc
from functools import reduce

import numpy as np
import openfermion
import pytest

from suite import targets
from suite.entanglement import (
    bipartite_matrix,
    renyi_entropy,
    schmidt_probabilities,
    schmidt_probabilities_blockwise,
    von_neumann_entropy,
)
from suite.hilbert import HubbardBasis, SpinBasis, check_dimension
from suite.lattice import Lattice
from suite.operators import hubbard_hamiltonian, tfim_hamiltonian
from suite.targets import (
    HubbardQuench,
    TFIMQuench,
    build_target,
    make_spec,
    make_target,
    target_summary,
)

PAULI_X = np.array([[0.0, 1.0], [1.0, 0.0]])
PAULI_Z = np.diag([1.0, -1.0])
HUBBARD_2X2_U4_GROUND = -2.1027484835


def _kron_all(factors: list[np.ndarray]) -> np.ndarray:
    """Kronecker product with the first factor as the most significant index."""
    return reduce(np.kron, factors)


def _site_operator(op: np.ndarray, site: int, n_sites: int) -> np.ndarray:
    """Dense single-site operator on ``n_sites`` spins, site 0 the leftmost factor."""
    return _kron_all([op if k == site else np.eye(2) for k in range(n_sites)])


def _dense_tfim(lattice: Lattice, J: float, h: float) -> np.ndarray:
    """Independent Kronecker-product construction of the TFIM Hamiltonian."""
    n = lattice.n_sites
    zz = sum(
        _site_operator(PAULI_Z, i, n) @ _site_operator(PAULI_Z, j, n) for i, j in lattice.bonds
    )
    x = sum(_site_operator(PAULI_X, i, n) for i in range(n))
    return -J * zz - h * x


def _dense_jordan_wigner_hubbard(lattice: Lattice, t: float, U: float) -> np.ndarray:
    """Full Fock-space Hubbard matrix from explicit Jordan-Wigner operators.

    Mode ``m = 2 * site + spin`` is the ``m``-th (most significant first)
    tensor factor, with ``|1>`` occupied and ``c_m = Z x ... x Z x |0><1| x 1 x ...``.
    """
    n_modes = 2 * lattice.n_sites
    lowering = np.array([[0.0, 1.0], [0.0, 0.0]])
    c = [
        _kron_all([PAULI_Z] * m + [lowering] + [np.eye(2)] * (n_modes - m - 1))
        for m in range(n_modes)
    ]
    number = [op.T @ op for op in c]
    hamiltonian = sum(U * number[2 * s] @ number[2 * s + 1] for s in range(lattice.n_sites))
    for i, j in lattice.bonds:
        for spin in (0, 1):
            hop = c[2 * i + spin].T @ c[2 * j + spin]
            hamiltonian = hamiltonian - t * (hop + hop.T)
    return hamiltonian


def _openfermion_hubbard_spectrum(
    lx: int, ly: int, t: float, U: float, n_up: int, n_down: int
) -> np.ndarray:
    """Spectrum of OpenFermion's Hubbard model in the fixed ``(n_up, n_down)`` sector.

    OpenFermion orders modes as ``2 * site + spin`` (up even) and its sparse
    operator has qubit 0 as the most significant bit; the sector is the set of
    computational states with the right number of even and odd occupied modes.
    """
    operator = openfermion.fermi_hubbard(lx, ly, t, U, periodic=False)
    n_modes = 2 * lx * ly
    matrix = openfermion.get_sparse_operator(openfermion.jordan_wigner(operator), n_modes)
    states = np.arange(2**n_modes)
    bits = (states[:, None] >> (n_modes - 1 - np.arange(n_modes))) & 1
    sector = (bits[:, 0::2].sum(axis=1) == n_up) & (bits[:, 1::2].sum(axis=1) == n_down)
    block = matrix[sector][:, sector].toarray()
    np.testing.assert_allclose(block, block.conj().T, atol=1e-14)
    return np.linalg.eigvalsh(block)


# --- lattice ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lx", "ly", "periodic", "n_bonds"),
    [
        (3, 3, False, 12),
        (3, 3, True, 18),
        (2, 2, True, 4),
        (2, 2, False, 4),
        (2, 3, True, 9),
        (4, 3, True, 24),
        (1, 5, False, 4),
        (5, 1, True, 5),
        (1, 2, True, 1),
        (1, 1, True, 0),
    ],
)
def test_lattice_bond_counts(lx: int, ly: int, periodic: bool, n_bonds: int) -> None:
    bonds = Lattice(lx, ly, periodic).bonds
    assert len(bonds) == n_bonds
    assert len(set(bonds)) == n_bonds
    assert list(bonds) == sorted(bonds)
    assert all(0 <= i < j < lx * ly for i, j in bonds)


def test_lattice_explicit_bonds_and_row_major_sites() -> None:
    assert Lattice(3, 2).n_sites == 6
    assert Lattice(3, 2).bonds == ((0, 1), (0, 3), (1, 2), (1, 4), (2, 5), (3, 4), (4, 5))
    assert Lattice(3, 1, periodic=True).bonds == ((0, 1), (0, 2), (1, 2))
    assert Lattice(2, 2, periodic=True).bonds == ((0, 1), (0, 2), (1, 3), (2, 3))


@pytest.mark.parametrize(
    ("args", "name"),
    [((0, 3), "lx"), ((3, -1), "ly"), ((2.0, 2), "lx"), ((True, 2), "lx"), ((2, "3"), "ly")],
)
def test_lattice_rejects_bad_sizes(args: tuple, name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name} must be a positive integer"):
        Lattice(*args)


# --- bases -----------------------------------------------------------------------------------


def test_spin_basis_convention() -> None:
    basis = SpinBasis(3)
    inputs = basis.inputs()
    assert basis.dimension == 8
    assert inputs.dtype == np.float64
    assert inputs.shape == (8, 3)
    np.testing.assert_array_equal(inputs[0], [1, 1, 1])
    np.testing.assert_array_equal(inputs[1], [1, 1, -1])
    np.testing.assert_array_equal(inputs[4], [-1, 1, 1])
    np.testing.assert_array_equal(inputs[7], [-1, -1, -1])


def test_spin_split_matches_reshape() -> None:
    rng = np.random.default_rng(1)
    basis = SpinBasis(5)
    psi = rng.normal(size=32) + 1j * rng.normal(size=32)
    index_a, index_b, dim_a, dim_b = basis.split(2)
    assert (dim_a, dim_b) == (4, 8)
    matrix = np.zeros((dim_a, dim_b), dtype=complex)
    matrix[index_a, index_b] = psi
    np.testing.assert_array_equal(matrix, psi.reshape(4, 8))
    np.testing.assert_array_equal(bipartite_matrix(basis, psi, 2), psi.reshape(4, 8))


def test_hubbard_basis_enumeration_and_inputs() -> None:
    basis = HubbardBasis(2, 1, 1)
    # modes (0 up, 0 down, 1 up, 1 down), mode 0 the most significant bit
    np.testing.assert_array_equal(basis.occupations, [0b0011, 0b0110, 0b1001, 0b1100])
    np.testing.assert_array_equal(basis.inputs(), [[0, 3], [1, 2], [2, 1], [3, 0]])
    custom = HubbardBasis(2, 1, 1, encoding=(-1.0, 0.5, 0.25, 2.0))
    np.testing.assert_array_equal(custom.inputs(), [[-1, 2], [0.5, 0.25], [0.25, 0.5], [2, -1]])
    assert custom == HubbardBasis(2, 1, 1, encoding=[-1, 0.5, 0.25, 2])


def test_hubbard_basis_counts_and_index_of() -> None:
    basis = HubbardBasis(6, 2, 3)
    assert basis.dimension == math.comb(6, 2) * math.comb(6, 3)
    assert np.all(np.diff(basis.occupations) > 0)
    states = basis.site_states()
    assert np.all(((states >> 1) & 1).sum(axis=1) == 2)
    assert np.all((states & 1).sum(axis=1) == 3)
    order = np.random.default_rng(2).permutation(basis.dimension)
    np.testing.assert_array_equal(basis.index_of(basis.occupations[order]), order)
    with pytest.raises(ValueError, match="occupations"):
        basis.index_of([0])


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_sites": 0, "n_up": 0, "n_down": 0}, "n_sites"),
        ({"n_sites": 4, "n_up": 5, "n_down": 0}, "n_up"),
        ({"n_sites": 4, "n_up": 1, "n_down": -1}, "n_down"),
        ({"n_sites": 4, "n_up": 1, "n_down": 1, "encoding": (0, 1, 2)}, "encoding"),
        ({"n_sites": 40, "n_up": 1, "n_down": 0}, "n_sites"),
    ],
)
def test_hubbard_basis_rejects_bad_input(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name} must"):
        HubbardBasis(**kwargs)


@pytest.mark.parametrize(
    "build",
    [
        lambda: SpinBasis(36),
        lambda: tfim_hamiltonian(Lattice(6, 6)),
        lambda: build_target(TFIMQuench(lx=6, ly=6)),
        lambda: build_target(HubbardQuench(lx=4, ly=4, n_up=8, n_down=8)),
        lambda: HubbardBasis(6, 3, 3, max_dimension=399),
    ],
)
def test_too_large_space_is_refused_before_allocation(build) -> None:
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ValueError, match="exceeds max_dimension="):
            build()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 1.0
    assert peak < 1_000_000


def test_check_dimension_budget() -> None:
    assert check_dimension(400, 400) == 400
    with pytest.raises(ValueError, match="max_dimension"):
        check_dimension(401, 400)
    with pytest.raises(ValueError, match=r"^max_dimension must be a positive integer"):
        check_dimension(1, 0)
    assert HubbardBasis(6, 3, 3, max_dimension=400).dimension == 400


# --- Hamiltonians ----------------------------------------------------------------------------


def test_hubbard_2x2_reference_energies() -> None:
    lattice, basis = Lattice(2, 2), HubbardBasis(4, 2, 2)
    assert basis.dimension == 36
    interacting = hubbard_hamiltonian(lattice, basis, t=1.0, U=4.0).toarray()
    free = hubbard_hamiltonian(lattice, basis, t=1.0, U=0.0).toarray()
    np.testing.assert_allclose(interacting, interacting.T, atol=0)
    assert np.linalg.eigvalsh(interacting)[0] == pytest.approx(HUBBARD_2X2_U4_GROUND, abs=1e-8)
    assert np.linalg.eigvalsh(free)[0] == pytest.approx(-4.0, abs=1e-12)


@pytest.mark.parametrize(
    ("lx", "ly", "t", "U", "n_up", "n_down"),
    [
        (2, 2, 1.0, 4.0, 2, 2),
        (2, 2, 0.7, 2.5, 2, 1),
        (2, 3, 1.0, 4.0, 2, 2),
        (2, 3, 1.3, 3.1, 3, 2),
    ],
)
def test_hubbard_spectrum_matches_openfermion(
    lx: int, ly: int, t: float, U: float, n_up: int, n_down: int
) -> None:
    basis = HubbardBasis(lx * ly, n_up, n_down)
    ours = np.linalg.eigvalsh(hubbard_hamiltonian(Lattice(lx, ly), basis, t, U).toarray())
    reference = _openfermion_hubbard_spectrum(lx, ly, t, U, n_up, n_down)
    assert reference.size == basis.dimension
    np.testing.assert_allclose(ours, reference, atol=1e-10)


@pytest.mark.parametrize(
    ("lattice", "n_up", "n_down"), [(Lattice(2, 2), 2, 1), (Lattice(3, 1, periodic=True), 2, 2)]
)
def test_hubbard_matrix_equals_jordan_wigner_restriction(
    lattice: Lattice, n_up: int, n_down: int
) -> None:
    """Element-wise check of signs: the basis occupations are full Fock-space indices."""
    basis = HubbardBasis(lattice.n_sites, n_up, n_down)
    full = _dense_jordan_wigner_hubbard(lattice, t=0.8, U=3.0)
    restricted = full[np.ix_(basis.occupations, basis.occupations)]
    ours = hubbard_hamiltonian(lattice, basis, t=0.8, U=3.0).toarray()
    np.testing.assert_allclose(ours, restricted, atol=1e-14)


def test_hubbard_jordan_wigner_sign_example() -> None:
    """Two sites, modes (0 up, 0 down, 1 up, 1 down), one up and one down fermion.

    Hopping the up fermion 1 -> 0 past the down fermion on site 0 (mode 1, between
    modes 0 and 2): ``c+_0 c_2 c+_1 c+_2 |0> = -c+_0 c+_1 |0>``, so the element is
    ``-t * (-1) = +t``. With site 0 empty (site 1 doubly occupied):
    ``c+_0 c_2 c+_2 c+_3 |0> = +c+_0 c+_3 |0>``, element ``-t``.
    """
    t = 0.9
    basis = HubbardBasis(2, 1, 1)
    matrix = hubbard_hamiltonian(Lattice(2, 1), basis, t=t, U=0.0).toarray()
    index = dict(zip(basis.occupations.tolist(), range(basis.dimension), strict=True))
    assert matrix[index[0b1100], index[0b0110]] == pytest.approx(t, abs=0)
    assert matrix[index[0b1001], index[0b0011]] == pytest.approx(-t, abs=0)


def test_hubbard_hamiltonian_rejects_mismatched_basis() -> None:
    with pytest.raises(ValueError, match="n_sites"):
        hubbard_hamiltonian(Lattice(2, 2), HubbardBasis(6, 1, 1))


@pytest.mark.parametrize(
    ("lattice", "J", "h"),
    [(Lattice(2, 2, periodic=True), 1.0, 1.0), (Lattice(3, 2), 0.7, -1.3), (Lattice(1, 3), 0, 2)],
)
def test_tfim_matches_kronecker_construction(lattice: Lattice, J: float, h: float) -> None:
    ours = tfim_hamiltonian(lattice, J, h).toarray()
    reference = _dense_tfim(lattice, J, h)
    np.testing.assert_allclose(ours, reference, atol=1e-14)
    np.testing.assert_allclose(np.linalg.eigvalsh(ours), np.linalg.eigvalsh(reference), atol=1e-10)


# --- targets ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        TFIMQuench(lx=3, ly=2, periodic=True, J=0.8, h=1.4, time=1.3),
        HubbardQuench(lx=2, ly=2, u_initial=2.0, u_final=6.0, time=0.9),
        HubbardQuench(lx=3, ly=2, n_up=2, n_down=1, u_initial=1.0, u_final=-3.0, time=2.0),
        HubbardQuench(),
    ],
)
def test_evolution_conserves_norm_and_energy(spec) -> None:
    target = build_target(spec)
    hamiltonian = target.hamiltonian
    assert target.psi.dtype == np.complex128
    assert target.psi0.dtype == np.complex128
    assert target.inputs.shape == (target.basis.dimension, target.lattice.n_sites)
    assert np.linalg.norm(target.psi0) == pytest.approx(1.0, abs=1e-14)
    assert np.linalg.norm(target.psi) == pytest.approx(1.0, abs=1e-10)
    initial = np.vdot(target.psi0, hamiltonian @ target.psi0)
    final = np.vdot(target.psi, hamiltonian @ target.psi)
    assert abs(final - initial) < 1e-10
    assert not np.allclose(target.psi, target.psi0)


@pytest.mark.parametrize(("J", "h"), [(1.0, 1.0), (0.5, 2.0), (-1.2, 0.3), (2.0, 0.0)])
@pytest.mark.parametrize("lattice", [(3, 3, True), (3, 2, False)])
def test_tfim_quench_energy_is_minus_j_times_bonds(J: float, h: float, lattice: tuple) -> None:
    lx, ly, periodic = lattice
    target = build_target(TFIMQuench(lx=lx, ly=ly, periodic=periodic, J=J, h=h, time=0.8))
    n_bonds = len(Lattice(lx, ly, periodic).bonds)
    assert target_summary(target)["energy"] == pytest.approx(-J * n_bonds, abs=1e-10)
    assert target.initial_energy is None


def test_hubbard_default_target_initial_state() -> None:
    """Defaults (2x3 open, 2 up + 2 down, U0 = 0): free fermions, E0 = -4 - 2 sqrt 2, gapped."""
    target = build_target(HubbardQuench())
    assert target.initial_energy == pytest.approx(-4.0 - 2.0 * math.sqrt(2.0), abs=1e-12)
    initial = hubbard_hamiltonian(target.lattice, target.basis, 1.0, 0.0)
    residual = initial @ target.psi0 - target.initial_energy * target.psi0
    assert np.linalg.norm(residual) < 1e-10


def test_lanczos_ground_state_path(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = HubbardQuench(lx=2, ly=2, n_up=2, n_down=2, u_initial=4.0, time=0.5)
    dense = build_target(spec)
    monkeypatch.setattr(targets, "DENSE_EIGH_LIMIT", 10)
    lanczos = build_target(spec)
    assert lanczos.initial_energy == pytest.approx(HUBBARD_2X2_U4_GROUND, abs=1e-8)
    assert lanczos.initial_energy == pytest.approx(dense.initial_energy, abs=1e-10)
    assert abs(np.vdot(dense.psi0, lanczos.psi0)) == pytest.approx(1.0, abs=1e-10)
    with pytest.raises(ValueError, match="degenerate"):
        build_target(HubbardQuench(lx=2, ly=2, u_initial=0.0))


def test_degenerate_initial_ground_state_is_refused() -> None:
    # 2x2 open, U0 = 0: single-particle levels -2, 0, 0, 2; the second fermion of
    # each spin has two choices, so the ground level E = -4 is degenerate.
    with pytest.raises(ValueError, match=r"^u_initial=0\.0: .* degenerate .* ill-defined"):
        build_target(HubbardQuench(lx=2, ly=2, n_up=2, n_down=2, u_initial=0.0))


def test_loschmidt_echo_and_summary() -> None:
    at_zero = target_summary(build_target(TFIMQuench(lx=2, ly=2, time=0.0)))
    assert at_zero["loschmidt_echo"] == pytest.approx(1.0, abs=1e-14)
    assert at_zero["entanglement_entropy"] == pytest.approx(0.0, abs=1e-12)
    for spec in (TFIMQuench(), HubbardQuench()):
        summary = target_summary(build_target(spec))
        assert 0.0 <= summary["loschmidt_echo"] <= 1.0
        assert summary["loschmidt_echo"] < 0.99
        decoded = json.loads(json.dumps(summary))
        assert decoded == summary
        assert set(summary) >= {
            "model",
            "lattice",
            "parameters",
            "dimension",
            "norm",
            "energy",
            "initial_energy",
            "loschmidt_echo",
            "entanglement_entropy",
            "n_subsystem_sites",
        }
        assert summary["model"] == spec.model
        assert summary["lattice"] == {"lx": spec.lx, "ly": spec.ly, "periodic": spec.periodic}
        assert summary["n_subsystem_sites"] == (spec.lx * spec.ly) // 2
        assert summary["norm"] == pytest.approx(1.0, abs=1e-10)
        assert summary["parameters"]["time"] == 1.0
    assert summary["initial_energy"] == pytest.approx(-4.0 - 2.0 * math.sqrt(2.0))


def test_registry() -> None:
    assert make_spec("tfim", lx=2, ly=2) == TFIMQuench(lx=2, ly=2)
    assert make_target("hubbard", lx=2, ly=2, n_up=1, n_down=1).basis.dimension == 16
    with pytest.raises(
        ValueError, match=r"^unknown model 'heisenberg'; known models: hubbard, tfim"
    ):
        make_spec("heisenberg")
    with pytest.raises(ValueError, match="unknown parameters \\['U'\\]"):
        make_spec("hubbard", U=4.0)


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: TFIMQuench(lx=0), "lx"),
        (lambda: TFIMQuench(ly=-2), "ly"),
        (lambda: TFIMQuench(J=float("nan")), "J"),
        (lambda: TFIMQuench(time=-1.0), "time"),
        (lambda: HubbardQuench(n_up=7), "n_up"),
        (lambda: HubbardQuench(n_down=-1), "n_down"),
        (lambda: HubbardQuench(hopping="1"), "hopping"),
        (lambda: HubbardQuench(u_final=float("inf")), "u_final"),
    ],
)
def test_quench_specs_reject_bad_fields(make, name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name} must"):
        make()


# --- entanglement ----------------------------------------------------------------------------


def test_product_state_has_zero_entropy() -> None:
    rng = np.random.default_rng(3)
    sites = [rng.normal(size=2) + 1j * rng.normal(size=2) for _ in range(4)]
    psi = _kron_all(sites)
    p = schmidt_probabilities(bipartite_matrix(SpinBasis(4), psi, 2))
    assert p.sum() == pytest.approx(1.0, abs=1e-14)
    assert von_neumann_entropy(p) == pytest.approx(0.0, abs=1e-12)
    assert renyi_entropy(p, 2) == pytest.approx(0.0, abs=1e-12)


def test_bell_state_has_ln2() -> None:
    psi = np.array([1.0, 0.0, 0.0, 1.0])  # (|up up> + |down down>), normalised internally
    p = schmidt_probabilities(bipartite_matrix(SpinBasis(2), psi, 1))
    np.testing.assert_allclose(p, [0.5, 0.5], atol=1e-15)
    for entropy in (von_neumann_entropy(p), renyi_entropy(p, 2), renyi_entropy(p, np.inf)):
        assert entropy == pytest.approx(math.log(2.0), abs=1e-14)


def test_renyi_entropy_limits_and_validation() -> None:
    p = np.array([0.5, 0.3, 0.2, 0.0])
    assert renyi_entropy(p, 1) == von_neumann_entropy(p)
    assert renyi_entropy(p, 1 + 1e-7) == pytest.approx(von_neumann_entropy(p), abs=1e-6)
    assert renyi_entropy(p, 0.5) > von_neumann_entropy(p) > renyi_entropy(p, 2)
    with pytest.raises(ValueError, match=r"^n must be positive"):
        renyi_entropy(p, 0)
    with pytest.raises(ValueError, match="psi_matrix"):
        schmidt_probabilities(np.zeros((2, 2)))


@pytest.mark.parametrize("n_a", [0, 1, 3, 6])
def test_hubbard_split_entropy_equals_full_fock_space(n_a: int) -> None:
    target = build_target(HubbardQuench())
    basis, psi = target.basis, target.psi
    n_b = basis.n_sites - n_a
    full = np.zeros(4**basis.n_sites, dtype=np.complex128)
    full[basis.occupations] = psi
    reference = von_neumann_entropy(schmidt_probabilities(full.reshape(4**n_a, 4**n_b)))
    for compact in (True, False):
        matrix = bipartite_matrix(basis, psi, n_a, compact=compact)
        assert von_neumann_entropy(schmidt_probabilities(matrix)) == pytest.approx(
            reference, abs=1e-12
        )
    blockwise = schmidt_probabilities_blockwise(basis, psi, n_a)
    assert blockwise.sum() == pytest.approx(1.0, abs=1e-12)
    assert von_neumann_entropy(blockwise) == pytest.approx(reference, abs=1e-12)
    assert bipartite_matrix(basis, psi, n_a, compact=False).shape == (4**n_a, 4**n_b)
    if n_a in (0, basis.n_sites):
        assert reference == pytest.approx(0.0, abs=1e-12)
    else:
        assert reference > 0.1


def test_blockwise_schmidt_probabilities_match_dense() -> None:
    rng = np.random.default_rng(4)
    for basis in (SpinBasis(6), HubbardBasis(5, 2, 3)):
        psi = rng.normal(size=basis.dimension) + 1j * rng.normal(size=basis.dimension)
        for n_a in range(basis.n_sites + 1):
            dense = schmidt_probabilities(bipartite_matrix(basis, psi, n_a))
            blockwise = schmidt_probabilities_blockwise(basis, psi, n_a)
            kept = min(dense.size, blockwise.size)
            np.testing.assert_allclose(blockwise[:kept], dense[:kept], atol=1e-12)
            assert np.all(np.abs(dense[kept:]) < 1e-12)
            assert np.all(np.abs(blockwise[kept:]) < 1e-12)
