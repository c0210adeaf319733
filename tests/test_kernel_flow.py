"""The infinite-width ensemble on any loss (docs/theory.md §7): Walsh-Hadamard kernels
against dense Gram matrices, exact NNGP samples, the kernel flow against the closed-form
supervised predictions, and ground-state search reaching exact diagonalisation."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from suite import member_flow
from suite.hilbert import HubbardBasis, SpinBasis
from suite.kernel_flow import (
    basis_kernels,
    contraction,
    floor_spectrum,
    infinite_ensemble,
    kernel_flow,
    learning_rate_bound,
    spectrum_rates,
    tangent_kernel,
)
from suite.kernels.empirical import empirical_qs_ntk
from suite.kernels.full_basis import DensePairKernel, sample_functions
from suite.kernels.gram import gram
from suite.kernels.walsh import WalshPairKernel, fwht, hamming_profile, walsh_eigenvalues
from suite.lattice import Lattice
from suite.losses import Energy, Infidelity, SparseRows, SupervisedMSE, tomography_targets
from suite.member_flow import linearised_flows, member_flows
from suite.networks import init_ensemble, mlp_nnqs
from suite.operators import hubbard_hamiltonian, tfim_hamiltonian
from suite.qsntk import PairKernel
from suite.supervised import scale_target, split_basis, split_problem
from suite.targets import make_target
from suite.training import train_ensemble

RELU = mlp_nnqs("decoupled", "relu", 1, 8)


def _sylvester(n_bits: int) -> np.ndarray:
    codes = np.arange(1 << n_bits)
    return (-1.0) ** np.vectorize(lambda c: bin(c).count("1"))(codes[:, None] & codes[None, :])


def test_fwht_is_the_sylvester_hadamard_matrix_and_an_involution_up_to_d() -> None:
    values = np.random.default_rng(0).normal(size=(3, 32))
    transformed = np.asarray(fwht(jnp.asarray(values)))
    assert np.allclose(transformed, values @ _sylvester(5), atol=1e-12)
    assert np.allclose(np.asarray(fwht(jnp.asarray(transformed))), 32 * values, atol=1e-11)
    with pytest.raises(ValueError, match="power-of-two"):
        fwht(jnp.ones(12))


@pytest.mark.parametrize("kind", ["decoupled", "shared_trunk", "complex_output"])
def test_walsh_kernels_equal_dense_gram_matrices(kind: str) -> None:
    nnqs = mlp_nnqs(kind, "relu", 2, 8)
    inputs = SpinBasis(6).inputs()
    walsh = basis_kernels(nnqs, inputs, "walsh")
    dense = basis_kernels(nnqs, inputs, "dense")
    rng = np.random.default_rng(1)
    u, v = (jnp.asarray(rng.normal(size=(4, 64))) for _ in range(2))
    for fast, slow in zip(walsh, dense, strict=True):
        assert isinstance(fast, WalshPairKernel) and isinstance(slow, DensePairKernel)
        for a, b in zip(fast.apply(u, v), slow.apply(u, v), strict=True):
            assert np.allclose(np.asarray(a), np.asarray(b), rtol=1e-11, atol=1e-11)
        for a, b in zip(fast.apply_root(u, v), slow.apply_root(u, v), strict=True):
            assert np.allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-9)
        values, counts = fast.eigenvalues()
        assert counts.sum() == 128
        assert np.allclose(np.sort(np.repeat(values, counts)), slow.eigenvalues()[0], atol=1e-10)


def test_walsh_blocks_handle_a_mixing_kernel() -> None:
    """Coupled blocks (``K_uv != 0``): the per-mode 2 x 2 algebra against the dense matrix."""
    n_sites = 5
    ntk = hamming_profile(lambda k: RELU.infinite(k)[1], n_sites)
    mixed = PairKernel(ntk.uu, 0.4 * ntk.uu, 0.4 * ntk.uu, 1.3 * ntk.vv)
    walsh = WalshPairKernel.from_profiles(mixed, n_sites)
    hamming = np.bitwise_count(np.arange(32)[:, None] ^ np.arange(32)[None, :])
    dense = DensePairKernel.from_blocks(PairKernel(*(np.asarray(b)[hamming] for b in mixed)))
    rng = np.random.default_rng(2)
    u, v = (jnp.asarray(rng.normal(size=(2, 32))) for _ in range(2))
    for a, b in zip(walsh.apply(u, v), dense.apply(u, v), strict=True):
        assert np.allclose(np.asarray(a), np.asarray(b), atol=1e-11)
    root_twice = walsh.apply_root(*walsh.apply_root(u, v))
    for a, b in zip(root_twice, walsh.apply(u, v), strict=True):
        assert np.allclose(np.asarray(a), np.asarray(b), atol=1e-10)


def test_krawtchouk_eigenvalues_of_a_delta_and_a_constant() -> None:
    n_sites = 7
    delta = np.zeros(n_sites + 1)
    delta[0] = 2.5
    assert np.allclose(walsh_eigenvalues(delta, n_sites), 2.5)
    constant = np.full(n_sites + 1, 1.5)
    expected = np.zeros(n_sites + 1)
    expected[0] = 1.5 * 2**n_sites
    assert np.allclose(walsh_eigenvalues(constant, n_sites), expected, atol=1e-12)


def test_an_indefinite_kernel_is_refused_by_name() -> None:
    profile = np.array([1.0, 0.9, 0.0, 0.0])  # lambda_w = 1 + 0.9 (3 - 2w): negative at w = 3
    kernel = WalshPairKernel.from_profiles(
        PairKernel(profile, 0 * profile, 0 * profile, profile), 3
    )
    with pytest.raises(ValueError, match="not positive semi-definite"):
        kernel.apply_root(jnp.ones((1, 8)), jnp.ones((1, 8)))


def test_dense_kernels_refuse_a_basis_above_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("suite.kernels.full_basis.MAX_DENSE_DIMENSION", 8)
    blocks = PairKernel(*(np.eye(16) for _ in range(4)))
    with pytest.raises(ValueError, match="dimension <= 8"):
        DensePairKernel.from_blocks(blocks)


@pytest.mark.parametrize("route", ["walsh", "dense"])
def test_nngp_samples_are_exact_and_independent_of_chunking(route: str) -> None:
    nngp, _ = basis_kernels(RELU, SpinBasis(4).inputs(), route)
    draws = np.asarray(sample_functions(nngp, 7, range(6000)))
    again = np.asarray(sample_functions(nngp, 7, range(4000, 4003)))
    assert np.array_equal(draws[4000:4003], again)
    u, v = draws.real, draws.imag
    covariance = np.cov(np.concatenate([u, v], axis=1), rowvar=False, bias=True)
    exact = np.asarray(nngp.apply(jnp.eye(16), jnp.zeros((16, 16)))[0])  # K_uu columns
    scale = np.sqrt(np.outer(np.diag(exact), np.diag(exact)) / draws.shape[0])
    assert np.all(np.abs(covariance[:16, :16] - exact) < 5 * np.sqrt(2) * scale)
    assert np.all(
        np.abs(covariance[:16, 16:]) < 5 * np.sqrt(2) * scale
    )  # decoupled: u, v independent


def _supervised_case(route: str):
    target = make_target("tfim", lx=2, ly=2, periodic=False, h=1.0, time=0.5)
    phi = scale_target(target.psi, "unit-rms")
    problem = split_problem(RELU, target.inputs, phi, 6, 0)
    nngp, ntk = basis_kernels(RELU, target.inputs, route)
    return problem, phi, nngp, ntk


@pytest.mark.parametrize("route", ["walsh", "dense"])
@pytest.mark.parametrize("discrete", [True, False])
def test_mse_kernel_flow_equals_the_closed_form_predictions(route: str, discrete: bool) -> None:
    """Loss of the mean and mean of the losses, train and test, to 1e-10 of the initial loss.

    The mean comes from the flow of ``psi_0 = 0``; the variance from the flow of the
    ``2D`` columns of ``K^(1/2)`` on the residual loss (target 0): an exact ensemble of
    covariance ``K``.
    """
    problem, phi, nngp, ntk = _supervised_case(route)
    train, test = problem.train, problem.test
    dimension = phi.size
    rate = 0.5 * problem.eta_max
    steps = np.array([0, 1, 3, 10, 100, 1000])
    zero = jnp.zeros((dimension, dimension))
    root_u, root_v = (
        nngp.apply_root(jnp.eye(dimension), zero),
        nngp.apply_root(zero, jnp.eye(dimension)),
    )
    columns = jnp.concatenate([root_u[0] + 1j * root_u[1], root_v[0] + 1j * root_v[1]])
    flow = {"discrete": discrete, "rtol": 1e-12, "atol": 1e-14}

    def mse(points: np.ndarray, values: np.ndarray) -> SupervisedMSE:
        return SupervisedMSE(jnp.asarray(points), jnp.asarray(values, dtype=jnp.complex128))

    mean = kernel_flow(ntk, mse(train, phi[train]), np.zeros((1, dimension)), rate, steps,
                       observables={"test": mse(test, phi[test])}, **flow)  # fmt: skip
    spread = kernel_flow(ntk, mse(train, 0 * train), columns, rate, steps,
                         observables={"test": mse(test, 0 * test)}, **flow)  # fmt: skip
    filters = problem.filters(rate, steps, discrete)
    for name, points in (("loss", train), ("test", test)):
        loss_of_mean = 2 * mean.values[name][:, 0]
        mean_of_losses = loss_of_mean + 2 * spread.values[name].sum(axis=1)
        closed_mean, closed_ensemble = problem.losses(filters, points)
        assert np.max(np.abs(loss_of_mean - closed_mean)) < 1e-10 * closed_mean[0]
        assert np.max(np.abs(mean_of_losses - closed_ensemble)) < 1e-10 * closed_ensemble[0]
    assert mean.values["loss"][-1, 0] < 1e-6 * mean.values["loss"][0, 0]  # it did train


def test_the_learning_rate_rule_is_eta_max_for_the_mse() -> None:
    problem, phi, _, ntk = _supervised_case("walsh")
    loss = SupervisedMSE(jnp.asarray(problem.train), jnp.asarray(phi[problem.train]))
    bound = learning_rate_bound(ntk, loss, np.zeros((2, phi.size)))
    assert bound == pytest.approx(problem.eta_max, rel=1e-9)


def test_above_the_stability_bound_members_are_marked_unstable() -> None:
    problem, phi, nngp, ntk = _supervised_case("walsh")
    loss = SupervisedMSE(jnp.asarray(problem.train), jnp.asarray(phi[problem.train]))
    steps = np.array([0, 10, 100])
    below = infinite_ensemble(nngp, ntk, loss, 0, 4, 0.9 * problem.eta_max, steps)
    above = infinite_ensemble(nngp, ntk, loss, 0, 4, 1.1 * problem.eta_max, steps)
    assert below.stable.all() and not above.stable.any()


def _energy_case(lattice: Lattice, h: float) -> tuple[Energy, float, np.ndarray]:
    hamiltonian = tfim_hamiltonian(lattice, J=1.0, h=h)
    levels, vectors = np.linalg.eigh(hamiltonian.toarray())
    return Energy(SparseRows.from_csr(hamiltonian)), float(levels[0]), vectors[:, 0]


def test_the_infinite_ensemble_reaches_the_tfim_ground_state() -> None:
    """TFIM 2x2 periodic at h = 3: every member reaches E_0 to 1e-8 relative, discrete
    and continuous, and the Walsh and dense routes give the same trajectories."""
    loss, ground_energy, ground_state = _energy_case(Lattice(2, 2, periodic=True), 3.0)
    inputs = SpinBasis(4).inputs()
    fidelity = {"infidelity": Infidelity(jnp.asarray(ground_state, dtype=jnp.complex128))}
    steps = np.array([0, 100, 1000, 12000])
    logs = {}
    for route in ("walsh", "dense"):
        nngp, ntk = basis_kernels(RELU, inputs, route)
        rate = 0.5 * learning_rate_bound(ntk, loss, sample_functions(nngp, 0, range(16)))
        for discrete in (True, False):
            logs[route, discrete] = log = infinite_ensemble(
                nngp, ntk, loss, 0, 16, rate, steps, discrete=discrete, observables=fidelity
            )
            error = (log.values["loss"] - ground_energy) / abs(ground_energy)
            assert error[0].min() > 1e-2  # the draws start far from the ground state
            assert np.all(error[-1] < 1e-8) and np.all(error[-1] > -1e-12)
            assert np.all(log.values["infidelity"][-1] < 1e-7)
            assert log.stable.all()
    for discrete in (True, False):
        walsh, dense = logs["walsh", discrete], logs["dense", discrete]
        assert np.allclose(walsh.values["loss"], dense.values["loss"], rtol=1e-8)


def test_the_floor_spectrum_is_the_closed_form_at_the_ground_state() -> None:
    """Decoupled identical parts, energy at the ground state g (docs/theory.md §7.1): the
    preconditioned Hessian is diag(B, B), B = 2 Theta^(1/2) Q (H - E_0) Q Theta^(1/2) / |c|^2
    (Q = 1 - g g^T, c = <g|psi>), built here densely from the Gram matrix; its two zero
    modes are the norm and the phase."""
    lattice = Lattice(2, 2, periodic=True)
    loss, ground_energy, ground_state = _energy_case(lattice, 3.0)
    inputs = SpinBasis(4).inputs()
    nngp, ntk = basis_kernels(RELU, inputs, "walsh")
    psi = np.asarray(sample_functions(nngp, 0, range(3)))
    spectrum = floor_spectrum(ntk, loss, ground_state, psi)
    values, vectors = np.linalg.eigh(np.asarray(gram(RELU.infinite, inputs, inputs)[1].uu))
    root = (vectors * np.sqrt(values)) @ vectors.T
    projector = np.eye(16) - np.outer(ground_state, ground_state)
    excitation = tfim_hamiltonian(lattice, J=1.0, h=3.0).toarray() - ground_energy * np.eye(16)
    for member, overlap in zip(spectrum, psi @ ground_state, strict=True):
        block = 2 * root @ projector @ excitation @ projector @ root / abs(overlap) ** 2
        expected = np.sort(np.repeat(np.linalg.eigvalsh(block), 2))
        assert np.allclose(member, expected, rtol=0, atol=1e-12 * expected[-1])
    zero_modes, slowest, largest = spectrum_rates(spectrum)
    assert np.all(zero_modes == 2) and np.array_equal(slowest, spectrum[:, 2])
    assert np.array_equal(largest, spectrum[:, -1])


def test_the_smallest_positive_rate_sets_the_asymptotic_convergence() -> None:
    """TFIM 2x2 at h = 3: near the ground state each step multiplies the energy error by
    (1 - eta lambda_k)^2 along the spectrum's modes, so the error decays no slower than at
    lambda_min, the smallest positive eigenvalue at the member's final function, and tends
    to that rate: measured over 100-step windows while the error is above 1e-11, every
    window is at least 0.98 times as fast and the slowest within 10% of it."""
    loss, ground_energy, ground_state = _energy_case(Lattice(2, 2, periodic=True), 3.0)
    nngp, ntk = basis_kernels(RELU, SpinBasis(4).inputs(), "walsh")
    psi0 = sample_functions(nngp, 0, range(4))
    rate = 0.5 * learning_rate_bound(ntk, loss, psi0)
    steps = np.arange(0, 2001, 100)
    log = kernel_flow(ntk, loss, psi0, rate, steps)
    spectrum = floor_spectrum(ntk, loss, ground_state, np.asarray(log.final))
    errors = (log.values["loss"] - ground_energy) / abs(ground_energy)
    zero_modes, slowest, largest = spectrum_rates(spectrum)
    factor = contraction(rate, slowest, largest)
    assert np.all(zero_modes == 2) and np.allclose(factor, 1 - rate * slowest, rtol=1e-15, atol=0)
    for member in range(psi0.shape[0]):
        predicted = 2 * math.log(factor[member])
        resolved = errors[:, member] > 1e-11
        near = resolved & (errors[:, member] < 1e-5)
        assert not resolved[-1] and near.sum() >= 3  # the windows are there, and it converges
        window = np.flatnonzero(near[:-1] & resolved[1:])
        measured = np.log(errors[window + 1, member] / errors[window, member]) / 100
        assert np.all(measured <= 0.98 * predicted)
        assert measured.max() == pytest.approx(predicted, rel=0.1)


def test_floor_spectrum_refuses_bad_arguments_and_skips_diverged_members() -> None:
    loss, _, ground_state = _energy_case(Lattice(2, 2, periodic=True), 3.0)
    _, ntk = basis_kernels(RELU, SpinBasis(4).inputs())
    with pytest.raises(ValueError, match=r"floor_state must be \(D,\) and psi \(M, D\)"):
        floor_spectrum(ntk, loss, ground_state, np.ones(16))
    diverged = np.stack([np.zeros(16), np.full(16, np.nan), ground_state]).astype(complex)
    spectrum = floor_spectrum(ntk, loss, ground_state, diverged)  # no overlap, not finite
    assert np.isnan(spectrum[:2]).all() and np.isfinite(spectrum[2]).all()
    zero_modes, slowest, largest = spectrum_rates(spectrum)
    assert np.isnan(slowest[:2]).all() and np.isnan(largest[:2]).all() and zero_modes[2] == 2
    with pytest.raises(ValueError, match="floor_state must have the kernel's dimension"):
        floor_spectrum(ntk, loss, np.ones(8), np.ones((1, 8)))


def test_the_infinite_ensemble_reaches_the_hubbard_ground_state() -> None:
    """Hubbard 2x2, 2 up + 2 down, U = 4 (dense route): E_0 = -2.1027484835.

    The gap is 0.30 and the NTK's condition number about 1500, so convergence takes
    1e5 steps at half the stability bound (8e-7 relative then; 1e-8 after about 1.5e5).
    """
    basis = HubbardBasis(4, 2, 2)
    hamiltonian = hubbard_hamiltonian(Lattice(2, 2), basis, t=1.0, U=4.0)
    loss = Energy(SparseRows.from_csr(hamiltonian))
    nngp, ntk = basis_kernels(RELU, basis.inputs())
    assert isinstance(ntk, DensePairKernel)
    rate = 0.5 * learning_rate_bound(ntk, loss, sample_functions(nngp, 0, range(8)))
    log = infinite_ensemble(nngp, ntk, loss, 0, 8, rate, np.array([0, 10000, 100000]))
    error = (log.values["loss"] + 2.1027484835) / 2.1027484835
    assert error[0].min() > 1 and np.all(error[1] > 1e-2)
    assert np.all(error[-1] < 1e-5) and log.stable.all()


def test_fidelity_and_tomography_flows_approach_their_target() -> None:
    """Infidelity and tomography (exact Born distributions in Z, X, Y and a mixed basis) to
    a TFIM 2x2 quench state: every member's loss falls monotonically to a small fraction
    of its start and its fidelity with the target approaches 1."""
    target = make_target("tfim", lx=2, ly=2, periodic=True, h=1.0, time=0.4).psi
    nngp, ntk = basis_kernels(RELU, SpinBasis(4).inputs())
    psi0 = sample_functions(nngp, 3, range(8))
    watch = {"infidelity": Infidelity(jnp.asarray(target))}
    cases = [
        (Infidelity(jnp.asarray(target)), 30000, 1e-3, 1e-3),
        (tomography_targets(target, ["ZZZZ", "XXXX", "YYYY", "XYZX"]), 100000, 2e-2, 3e-2),
    ]
    for loss, steps, loss_ratio, infidelity in cases:
        rate = 0.5 * learning_rate_bound(ntk, loss, psi0)
        log = kernel_flow(
            ntk, loss, psi0, rate, np.array([0, steps // 10, steps]), observables=watch
        )
        assert np.all(log.values["loss"][-1] < loss_ratio * log.values["loss"][0])
        assert np.all(log.values["infidelity"][0] > 0.5)
        assert np.all(log.values["infidelity"][-1] < infidelity) and log.stable.all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": [0, 5, 5]}, "steps must be strictly ascending"),
        ({"steps": [0.0, 1.5]}, "steps must be a non-empty 1-d sequence of integers"),
        ({"steps": [-1, 5]}, "steps must be non-negative"),
        ({"learning_rate": -1.0}, "learning_rate must be a positive"),
        ({"learning_rate": math.inf}, "learning_rate must be a positive"),
        ({"psi0": np.zeros((2, 5))}, r"psi0 must have shape \(members, 16\)"),
    ],
)
def test_bad_flow_arguments_are_refused_by_name(kwargs: dict, match: str) -> None:
    _, ntk = basis_kernels(RELU, SpinBasis(4).inputs())
    loss = Infidelity(jnp.ones(16, dtype=jnp.complex128))
    arguments = {"psi0": np.ones((2, 16)), "learning_rate": 0.1, "steps": [0, 1]} | kwargs
    with pytest.raises(ValueError, match=match):
        kernel_flow(ntk, loss, **arguments)


def test_walsh_route_needs_the_full_spin_basis() -> None:
    with pytest.raises(ValueError, match="full SpinBasis"):
        basis_kernels(RELU, HubbardBasis(4, 2, 2).inputs(), "walsh")
    with pytest.raises(ValueError, match="route must be"):
        basis_kernels(RELU, SpinBasis(3).inputs(), "fast")  # type: ignore[arg-type]


def test_the_tangent_kernel_alone_is_basis_kernels_ntk_without_a_root() -> None:
    """On a Hubbard sector the dense QS-NTK with no square root (none is built); on a full
    spin basis the Walsh-Hadamard one. Members' partners under it
    (:func:`suite.member_flow.frozen_kernel_flows`) are the kernel flow of their own initial
    functions."""
    inputs = HubbardBasis(4, 2, 2).inputs()
    dense = tangent_kernel(RELU, inputs)
    assert isinstance(dense, DensePairKernel) and dense.root is None
    assert np.array_equal(dense.matrix, basis_kernels(RELU, inputs)[1].matrix)
    walsh = tangent_kernel(RELU, SpinBasis(4).inputs())
    assert isinstance(walsh, WalshPairKernel)
    reference = basis_kernels(RELU, SpinBasis(4).inputs(), "dense")[1]
    u, v = np.random.default_rng(0).normal(size=(2, 3, 16))
    for got, want in zip(walsh.apply(u, v), reference.apply(u, v), strict=True):
        assert np.allclose(got, want, rtol=1e-12, atol=1e-12)
    params = init_ensemble(RELU, 3, range(2), inputs.shape[1])
    hamiltonian = hubbard_hamiltonian(Lattice(2, 2), HubbardBasis(4, 2, 2), t=1.0, U=4.0)
    loss = Energy(SparseRows.from_csr(hamiltonian))
    partners = member_flow.frozen_kernel_flows(RELU, params, inputs, dense, loss, 0.01, [0, 5])
    psi0 = np.stack([RELU.apply(jax.tree.map(lambda leaf, i=i: leaf[i], params), inputs)
                     for i in range(2)])  # fmt: skip
    flow = kernel_flow(dense, loss, psi0, 0.01, [0, 5])
    assert np.allclose(partners.values["loss"], flow.values["loss"], rtol=1e-12, atol=0)


def test_gram_and_hamming_profiles_agree() -> None:
    inputs = SpinBasis(5).inputs()
    nngp, ntk = gram(RELU.infinite, inputs, inputs)
    profile_nngp, profile_ntk = hamming_profile(RELU.infinite, 5)
    hamming = np.bitwise_count(np.arange(32)[:, None] ^ np.arange(32)[None, :])
    assert np.allclose(np.asarray(profile_ntk.uu)[hamming], np.asarray(ntk.uu), rtol=1e-13)
    assert np.allclose(np.asarray(profile_nngp.vv)[hamming], np.asarray(nngp.vv), rtol=1e-13)


def _tfim_2x2_energy() -> tuple[Energy, float]:
    loss, ground_energy, _ = _energy_case(Lattice(2, 2, periodic=True), 3.0)
    return loss, ground_energy


def test_a_linearised_member_moves_as_its_empirical_kernel_prescribes() -> None:
    """Parameter-space GD of ``psi_0 + J_0 (theta - theta_0)`` (matrix-free) equals the
    function-space flow under the member's empirical QS-NTK, energy loss, to rounding."""
    loss, _ = _tfim_2x2_energy()
    inputs = SpinBasis(4).inputs()
    nnqs = mlp_nnqs("shared_trunk", "relu", 1, 32)  # coupled: a non-zero mixing kernel
    params = init_ensemble(nnqs, 1, range(2), 4)
    steps = np.array([0, 5, 50, 400])
    linearised = member_flows(nnqs, params, inputs, loss, 0.02, steps, linearised=True)
    for member in range(2):
        one = jax.tree.map(lambda leaf, i=member: leaf[i], params)
        blocks = empirical_qs_ntk(nnqs, one, jnp.asarray(inputs), jnp.asarray(inputs))
        assert np.abs(np.asarray(blocks.uv)).max() > 1e-3
        psi0 = nnqs.apply(one, jnp.asarray(inputs))[None]
        flow = kernel_flow(DensePairKernel.from_blocks(blocks), loss, psi0, 0.02, steps)
        expected = flow.values["loss"][:, 0]
        assert np.allclose(linearised.values["loss"][:, member], expected, rtol=1e-10)
        assert expected[-1] < expected[0] - 0.3  # it moved


def test_linearised_flows_by_the_kernel_route_equal_parameter_space(monkeypatch) -> None:
    """:func:`linearised_flows` (each member's empirical kernel, then the kernel flow)
    equals the matrix-free linearisation of ``member_flows`` to 1e-10 on a coupled
    network, with an observable; above the dimension bound it is that route."""
    loss, _ = _tfim_2x2_energy()
    inputs = SpinBasis(4).inputs()
    nnqs = mlp_nnqs("shared_trunk", "relu", 1, 32)
    params = init_ensemble(nnqs, 3, range(3), 4)
    steps = np.array([0, 3, 40, 300])
    target = np.array([1, 1j]) @ np.random.default_rng(5).standard_normal((2, 16))
    watch = {"tomography": tomography_targets(target / np.linalg.norm(target), ["ZZZZ", "XXXX"])}
    expected = member_flows(
        nnqs, params, inputs, loss, 0.02, steps, linearised=True, observables=watch
    )
    by_kernel = linearised_flows(nnqs, params, inputs, loss, 0.02, steps, observables=watch)
    monkeypatch.setattr(member_flow, "KERNEL_ROUTE_DIMENSION", 8)
    fallback = linearised_flows(nnqs, params, inputs, loss, 0.02, steps, observables=watch)
    for name in ("loss", "tomography"):
        assert np.allclose(by_kernel.values[name], expected.values[name], rtol=1e-10)
        assert np.array_equal(fallback.values[name], expected.values[name])
    assert expected.values["loss"][-1].max() < expected.values["loss"][0].min()  # it moved
    monkeypatch.setattr(member_flow, "empirical_qs_ntk", None)  # no kernel may be built
    with pytest.raises(ValueError, match="learning_rate"):
        linearised_flows(nnqs, params, inputs, loss, -0.02, steps)
    with pytest.raises(ValueError, match="steps"):
        linearised_flows(nnqs, params, inputs, loss, 0.02, [5, 3])


def test_kernel_motion_falls_with_width() -> None:
    """The gap between a trained member and its own linearisation (energy error, at the
    same steps) shrinks with width: about width^-1/2 in the lazy regime, so 64x wider
    must shrink it at least 3x (8x expected)."""
    loss, ground_energy = _tfim_2x2_energy()
    inputs = SpinBasis(4).inputs()
    steps = np.array([0, 10, 100])
    gaps = []
    for width in (64, 4096):
        nnqs = mlp_nnqs("decoupled", "relu", 1, width)
        params = init_ensemble(nnqs, 0, range(8), 4)
        trained = member_flows(nnqs, params, inputs, loss, 0.05, steps)
        linearised = member_flows(nnqs, params, inputs, loss, 0.05, steps, linearised=True)
        error = linearised.values["loss"][1:] - ground_energy
        assert np.all(error > 1e-3) and trained.stable.all() and linearised.stable.all()
        gaps.append(
            np.mean(np.abs(trained.values["loss"][1:] - linearised.values["loss"][1:]) / error)
        )
    assert gaps[1] < gaps[0] / 3, gaps


def test_member_flows_on_the_mse_reproduce_the_training_engine() -> None:
    """The new machinery on today's loss: the same members (from ``(seed, i)``), the same
    losses as :func:`suite.training.train_ensemble`, fast and autodiff updates, float64."""
    target = make_target("tfim", lx=2, ly=2, periodic=False, h=1.0, time=0.5)
    phi = scale_target(target.psi, "unit-rms")
    train, test = split_basis(phi.size, 6, 0)
    nnqs = mlp_nnqs("decoupled", "relu", 1, 64)
    steps = np.array([0, 1, 10, 100])
    observables = {"test": SupervisedMSE(jnp.asarray(test), jnp.asarray(phi[test]))}
    loss = SupervisedMSE(jnp.asarray(train), jnp.asarray(phi[train]))
    params = init_ensemble(nnqs, 5, range(3), 4)
    flows = member_flows(nnqs, params, target.inputs, loss, 0.3, steps, observables=observables)
    for method in ("fast", "autodiff"):
        stats = train_ensemble(
            nnqs, target.inputs, phi, train, seed=5, members=range(3), learning_rate=0.3,
            log_steps=steps, method=method,
        )  # fmt: skip
        assert np.allclose(2 * flows.values["loss"], stats.train_loss, rtol=1e-9)
        assert np.allclose(2 * flows.values["test"], stats.test_loss, rtol=1e-9)
    assert flows.values["loss"][-1].max() < 0.1 * flows.values["loss"][0].min()
