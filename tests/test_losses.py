"""Losses on the whole basis (docs/theory.md §7): closed-form gradients against autodiff,
values against dense linear algebra, and the measurement-basis conventions."""

from __future__ import annotations

from functools import reduce

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from suite import losses
from suite.hilbert import HubbardBasis
from suite.lattice import Lattice
from suite.losses import (
    ROTATIONS,
    Energy,
    Infidelity,
    SparseRows,
    SupervisedMSE,
    rotate,
    tomography_targets,
)
from suite.operators import hubbard_hamiltonian, tfim_hamiltonian


def _random_state(dimension: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=dimension) + 1j * rng.normal(size=dimension)


def _autodiff_gradient(loss, psi: np.ndarray) -> np.ndarray:
    """``dL/d conj psi = (dL/d Re psi + i dL/d Im psi) / 2`` by autodiff of ``value``."""
    real, imag = jax.grad(lambda a, b: loss.value(a + 1j * b), argnums=(0, 1))(
        jnp.asarray(psi.real), jnp.asarray(psi.imag)
    )
    return 0.5 * (np.asarray(real) + 1j * np.asarray(imag))


def _losses() -> dict[str, object]:
    lattice = Lattice(2, 2, periodic=False)
    tfim = tfim_hamiltonian(lattice, J=1.0, h=0.7)
    phi = _random_state(16, 1)
    rng = np.random.default_rng(2)
    train = np.sort(rng.choice(16, size=6, replace=False))
    return {
        "mse": SupervisedMSE(jnp.asarray(train), jnp.asarray(phi[train])),
        "energy": Energy(SparseRows.from_csr(tfim)),
        "infidelity": Infidelity(jnp.asarray(phi)),
        "tomography": tomography_targets(phi, ["ZZZZ", "XXXX", "YXZY"]),
        "tomography-shots": tomography_targets(phi, ["ZZZZ", "XXXX"], shots=5000, seed=3),
    }


@pytest.mark.parametrize("name", ["mse", "energy", "infidelity", "tomography", "tomography-shots"])
def test_closed_form_gradient_equals_autodiff(name: str) -> None:
    loss = _losses()[name]
    for seed in range(3):
        psi = _random_state(16, 10 + seed)
        closed = np.asarray(jax.jit(loss.gradient)(jnp.asarray(psi)))
        assert np.allclose(closed, _autodiff_gradient(loss, psi), rtol=1e-10, atol=1e-13)
        assert np.abs(closed).max() > 1e-6  # not a trivially vanishing gradient


def test_values_against_dense_algebra() -> None:
    lattice = Lattice(2, 3, periodic=True)
    basis = HubbardBasis(6, 3, 3)
    hubbard = hubbard_hamiltonian(lattice, basis, t=1.0, U=4.0)
    psi, phi = _random_state(basis.dimension, 4), _random_state(basis.dimension, 5)
    dense = hubbard.toarray()
    energy = Energy(SparseRows.from_csr(hubbard)).value(jnp.asarray(psi))
    assert float(energy) == pytest.approx(np.vdot(psi, dense @ psi).real / np.vdot(psi, psi).real)
    infidelity = Infidelity(jnp.asarray(phi)).value(jnp.asarray(psi))
    overlap = abs(np.vdot(phi, psi)) ** 2 / (np.vdot(phi, phi).real * np.vdot(psi, psi).real)
    assert float(infidelity) == pytest.approx(1 - overlap, rel=1e-12)
    assert float(Infidelity(jnp.asarray(phi)).value(jnp.asarray(3j * phi))) == pytest.approx(
        0.0, abs=1e-14
    )


@pytest.mark.parametrize("budget", [losses.GATHER_ELEMENTS, 0], ids=["at-once", "per-term"])
def test_sparse_rows_apply_equals_csr_on_an_ensemble(
    budget: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both ways of gathering: every term at once, and one term at a time (past the budget)."""
    monkeypatch.setattr(losses, "GATHER_ELEMENTS", budget)
    hamiltonian = tfim_hamiltonian(Lattice(3, 2, periodic=True), J=1.0, h=0.4)
    rows = SparseRows.from_csr(hamiltonian)
    psi = np.stack([_random_state(64, seed) for seed in range(3)])
    assert np.allclose(
        np.asarray(rows.apply(jnp.asarray(psi))), (hamiltonian @ psi.T).T, atol=1e-12
    )


def test_sparse_rows_refuse_a_non_symmetric_matrix() -> None:
    with pytest.raises(ValueError, match="real symmetric"):
        SparseRows.from_csr(np.triu(np.ones((4, 4))))


def test_rotations_map_the_plus_eigenvector_to_spin_up() -> None:
    paulis = {
        "X": np.array([[0, 1], [1, 0]]),
        "Y": np.array([[0, -1j], [1j, 0]]),
        "Z": np.diag([1.0, -1.0]),
    }
    for letter, pauli in paulis.items():
        values, vectors = np.linalg.eigh(pauli)
        plus = vectors[:, np.argmax(values)]
        rotated = ROTATIONS[letter] @ plus
        assert abs(rotated[0]) == pytest.approx(1.0) and abs(rotated[1]) < 1e-12
        assert np.allclose(ROTATIONS[letter].conj().T @ ROTATIONS[letter], np.eye(2))


def test_rotate_equals_the_kronecker_product_and_its_adjoint() -> None:
    basis = "XYZY"
    psi = _random_state(16, 6)
    dense = reduce(np.kron, [ROTATIONS[letter] for letter in basis])  # site 0 most significant
    assert np.allclose(np.asarray(rotate(jnp.asarray(psi), basis)), dense @ psi, atol=1e-13)
    back = rotate(rotate(jnp.asarray(psi), basis), basis, adjoint=True)
    assert np.allclose(np.asarray(back), psi, atol=1e-13)


def test_tomography_is_zero_at_the_target_and_positive_elsewhere() -> None:
    phi = _random_state(16, 7)
    loss = tomography_targets(phi, ["ZZZZ", "XXXX", "YYYY"])
    assert float(loss.value(jnp.asarray(2.5 * phi))) == pytest.approx(0.0, abs=1e-13)
    assert float(loss.value(jnp.asarray(_random_state(16, 8)))) > 0.1
    # a phase per basis state is invisible to Z alone but not to X and Y
    z_only = tomography_targets(phi, ["ZZZZ"])
    rotated = phi * np.exp(1j * np.arange(16))
    assert float(z_only.value(jnp.asarray(rotated))) == pytest.approx(0.0, abs=1e-13)
    assert float(loss.value(jnp.asarray(rotated))) > 1e-3


def test_tomography_shots_are_seeded_frequencies() -> None:
    phi = _random_state(16, 9)
    first = tomography_targets(phi, ["ZZZZ", "XXXX"], shots=1000, seed=4)
    again = tomography_targets(phi, ["ZZZZ", "XXXX"], shots=1000, seed=4)
    other = tomography_targets(phi, ["ZZZZ", "XXXX"], shots=1000, seed=5)
    assert np.array_equal(np.asarray(first.targets), np.asarray(again.targets))
    assert not np.array_equal(np.asarray(first.targets), np.asarray(other.targets))
    assert np.allclose(np.asarray(first.targets).sum(axis=1), 1.0)
    assert np.all(np.asarray(first.targets) * 1000 == np.round(np.asarray(first.targets) * 1000))


@pytest.mark.parametrize(
    ("bases", "match"),
    [("ZZZZ", "list of strings"), (["ZZZ"], "4 letters"), (["ZZQZ"], "X, Y, Z"), ([], "non-empty")],
)
def test_tomography_refuses_bad_bases(bases, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        tomography_targets(_random_state(16, 0), bases)


def test_tomography_refuses_bad_shots() -> None:
    with pytest.raises(ValueError, match="shots"):
        tomography_targets(_random_state(16, 0), ["ZZZZ"], shots=0)
