"""Tests of the entanglement of states and NNQS ensembles (docs/theory.md §6).

Established here:

* per-sample entropies for any list of sites, batched over an ensemble axis, equal
  the single-state routines and exact values (Bell pairs across arbitrary cuts);
  targets get an entanglement profile;
* the Page value and Haar purity (exact small cases, huge dimensions, Monte Carlo);
* the Wick formulas of the GP Renyi-2 estimate (complex circular, real, general
  pseudo-covariance) against Monte Carlo; the three routes (dense, chunked Dask/Zarr,
  Hamming closed form) agree for every kernel of the suite; an iid kernel gives the
  Haar purity; the closed form handles 1000 spins;
* finite-width ensembles: sharding-invariant members, replica ratio, and the approach
  to Page and to the GP estimate with width (small sizes; the paper-size figures come
  from the entanglement study, ``nnqs run paper-entanglement``).
"""

from __future__ import annotations

import json
import math
import time
from fractions import Fraction

import suite  # noqa: F401  (first: enables JAX float64)

# isort: split

import jax.numpy as jnp
import numpy as np
import pytest

from suite import networks as nw
from suite import replica
from suite.entanglement import (
    EnsembleEntanglement,
    bipartite_matrix,
    combine_ensembles,
    ensemble_amplitudes,
    ensemble_entanglement,
    entanglement_profile,
    entropy,
    haar_purity,
    page_entropy,
    renyi_entropy,
    schmidt_probabilities,
    schmidt_spectra,
    spin_bipartite_matrices,
    von_neumann_entropy,
)
from suite.hilbert import SpinBasis
from suite.kernels.gram import gram
from suite.targets import HubbardQuench, TFIMQuench, build_target, target_summary

#: two float64 evaluations of the same quantity by different summation orders
ROUNDING_RTOL = 1e-12
#: the issue's agreement between the three GP routes (observed: ~1e-13 and below)
ROUTES_RTOL = 1e-10
#: Monte-Carlo checks: |sample mean - exact| below this many standard errors
Z_MAX = 5.0


def _relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-300)


def _assert_traces_close(a: replica.ReplicaTraces, b: replica.ReplicaTraces) -> None:
    scale = max(abs(v) for v in a)  # terms that vanish are compared against the largest
    for name, x, y in zip(a._fields, a, b, strict=True):
        assert abs(x - y) <= ROUTES_RTOL * max(abs(x), abs(y), 1e-6 * scale), (name, x, y)
    assert _relative(a.renyi2(), b.renyi2()) <= ROUTES_RTOL or abs(a.renyi2()) < 1e-12


# --- per-sample entanglement -----------------------------------------------------------------


def _bell_pairs(n_sites: int, pairs: list[tuple[int, int]]) -> np.ndarray:
    """``prod (|up up> + |down down>)/sqrt2`` over ``pairs`` of sites (SpinBasis order)."""
    inputs = SpinBasis(n_sites).inputs()
    psi = np.ones(2**n_sites)
    for i, j in pairs:
        psi = psi * (inputs[:, i] == inputs[:, j])
    return psi / np.linalg.norm(psi)


@pytest.mark.parametrize(
    ("sites", "n_cut"),
    [([0, 1, 2], 3), ([0, 3], 0), ([0, 4], 2), ([5], 1), ([], 0), ([1, 2, 3, 4, 5, 0], 0)],
)
def test_bell_pairs_across_any_site_list(sites: list[int], n_cut: int) -> None:
    psi = _bell_pairs(6, [(0, 3), (1, 4), (2, 5)])
    p = schmidt_spectra(psi, sites)
    assert p.sum() == pytest.approx(1.0, abs=1e-14)
    for n in (1, 2, 3.5, np.inf):
        assert float(entropy(p, n)) == pytest.approx(n_cut * math.log(2), abs=1e-13)


def test_spin_bipartite_matrices_follow_the_basis_convention() -> None:
    rng = np.random.default_rng(0)
    n_sites, sites = 5, [3, 1]
    psi = rng.normal(size=(2, 2**n_sites)) + 1j * rng.normal(size=(2, 2**n_sites))
    matrices = spin_bipartite_matrices(psi, sites)
    assert matrices.shape == (2, 4, 8)
    bits = (1 - SpinBasis(n_sites).inputs()).astype(int) // 2  # 1 = down
    rest = [0, 2, 4]
    for k in range(2**n_sites):
        a = int("".join(str(bits[k, s]) for s in sorted(sites)), 2)
        b = int("".join(str(bits[k, s]) for s in rest), 2)
        np.testing.assert_array_equal(matrices[:, a, b], psi[:, k])
    np.testing.assert_array_equal(spin_bipartite_matrices(psi, 2), psi.reshape(2, 4, 8))


def test_batched_spectra_equal_single_state_routines() -> None:
    rng = np.random.default_rng(1)
    n_sites = 6
    psi = rng.normal(size=(3, 4, 2**n_sites)) + 1j * rng.normal(size=(3, 4, 2**n_sites))
    for n_a in range(n_sites + 1):
        p = schmidt_spectra(psi, n_a)
        assert p.shape == (3, 4, 2 ** min(n_a, n_sites - n_a))
        np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=ROUNDING_RTOL)
        for index in np.ndindex(3, 4):
            single = schmidt_probabilities(bipartite_matrix(SpinBasis(n_sites), psi[index], n_a))
            kept = p.shape[-1]
            np.testing.assert_allclose(p[index], single[:kept], atol=1e-14)
            assert entropy(p, 1)[index] == pytest.approx(von_neumann_entropy(single), abs=1e-13)
            assert entropy(p, 2)[index] == pytest.approx(renyi_entropy(single, 2), abs=1e-13)
    # a subsystem and its complement have the same spectrum (pure states)
    np.testing.assert_allclose(
        schmidt_spectra(psi, [0, 2, 5]), schmidt_spectra(psi, [1, 3, 4]), atol=1e-14
    )


def test_entropy_orders_and_the_von_neumann_limit() -> None:
    p = np.array([[0.5, 0.3, 0.2, 0.0], [0.25, 0.25, 0.25, 0.25]])
    np.testing.assert_allclose(entropy(p, 1 + 1e-7), entropy(p, 1), atol=1e-6)
    np.testing.assert_allclose(entropy(p, 1 - 1e-7), entropy(p, 1), atol=1e-6)
    assert np.all(entropy(p[:1], 0.5) > entropy(p[:1], 1))
    assert np.all(entropy(p[:1], 1) > entropy(p[:1], 2))
    assert np.all(entropy(p[:1], 2) > entropy(p[:1], np.inf))
    np.testing.assert_allclose(entropy(p[1], 3), math.log(4), rtol=1e-15)
    assert renyi_entropy(p[0], 2) == float(entropy(p[0], 2))


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: schmidt_spectra(np.ones(8), [0, 0]), "sites"),
        (lambda: schmidt_spectra(np.ones(8), [3]), "sites"),
        (lambda: schmidt_spectra(np.ones(8), 4), "sites"),
        (lambda: schmidt_spectra(np.ones(8), [-1]), "sites"),
        (lambda: schmidt_spectra(np.ones(6), 1), "psi"),
        (lambda: schmidt_spectra(np.zeros((2, 8)), 1), "psi"),
        (lambda: entropy(np.ones(2), -1), "n"),
        (lambda: page_entropy(0, 4), "dim_a"),
        (lambda: haar_purity(2, 2.0), "dim_b"),
        (lambda: haar_purity(2, 2, "quaternion"), "field"),
    ],
)
def test_bad_input_is_refused(call, name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name} must"):
        call()


def test_target_entanglement_profile() -> None:
    tfim = build_target(TFIMQuench(lx=3, ly=2))
    profile = entanglement_profile(tfim.basis, tfim.psi, orders=(1, 2, np.inf))
    assert [entry["sites"] for entry in profile] == [[0], [0, 1], [0, 1, 2]]
    summary = target_summary(tfim)
    half = profile[summary["n_subsystem_sites"] - 1]["entropies"]
    assert half["von_neumann"] == pytest.approx(summary["entanglement_entropy"], abs=1e-12)
    assert half["von_neumann"] >= half["renyi_2"] >= half["renyi_inf"] > 0
    json.dumps(profile)
    columns = entanglement_profile(tfim.basis, tfim.psi, [[0, 3], [1, 4]])
    assert columns[0]["entropies"]["von_neumann"] > 0
    hubbard = build_target(HubbardQuench())
    (entry,) = entanglement_profile(hubbard.basis, hubbard.psi, [3])
    assert entry["entropies"]["von_neumann"] == pytest.approx(
        target_summary(hubbard)["entanglement_entropy"], abs=1e-12
    )
    with pytest.raises(ValueError, match="first n_a sites"):
        entanglement_profile(hubbard.basis, hubbard.psi, [[1, 2]])


# --- random-state references -----------------------------------------------------------------


def test_page_value_exact_cases_and_huge_dimensions() -> None:
    assert page_entropy(2, 2) == pytest.approx(1 / 3, rel=1e-15)
    assert page_entropy(1, 7) == 0.0
    assert page_entropy(3, 5) == page_entropy(5, 3)
    exact = sum(Fraction(1, k) for k in range(6, 16)) - Fraction(2, 10)
    assert page_entropy(3, 5) == pytest.approx(float(exact), rel=1e-15)
    # the Euler-Maclaurin branch against the term-by-term sum, both sides of the switch
    for m, n in ((999, 999), (1000, 1000), (3, 4096)):
        direct = float(np.sum(1.0 / np.arange(n + 1, m * n + 1))) - (m - 1) / (2 * n)
        assert page_entropy(m, n) == pytest.approx(direct, rel=1e-13)
    assert page_entropy(2**500, 2**500) == pytest.approx(500 * math.log(2) - 0.5, rel=1e-15)
    assert haar_purity(2, 2) == pytest.approx(0.8)
    assert haar_purity(2**600, 2**600) == pytest.approx(2.0**-599)


@pytest.mark.parametrize("field", ["complex", "real"])
def test_haar_states_reach_page_and_purity(field: str) -> None:
    rng = np.random.default_rng(2)
    samples, n_sites, n_a = 4000, 6, 3
    psi = rng.normal(size=(samples, 2**n_sites))
    if field == "complex":
        psi = psi + 1j * rng.normal(size=psi.shape)
    p = schmidt_spectra(psi, n_a)
    for values, exact in (
        (np.sum(p**2, axis=-1), haar_purity(8, 8, field)),
        (entropy(p, 1), page_entropy(8, 8) if field == "complex" else None),
    ):
        if exact is not None:
            error = values.std(ddof=1) / math.sqrt(samples)
            assert abs(values.mean() - exact) < Z_MAX * error


# --- GP replica estimate: Wick formulas by Monte Carlo ---------------------------------------


def _replica_samples(psi: np.ndarray, dim_a: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample ``Tr rho~_A^2`` and ``(Tr rho~)^2`` of unnormalised states."""
    matrices = psi.reshape(len(psi), dim_a, -1)
    rho_a = matrices @ np.conj(np.swapaxes(matrices, -1, -2))
    return np.sum(np.abs(rho_a) ** 2, axis=(-1, -2)), np.sum(np.abs(psi) ** 2, axis=-1) ** 2


@pytest.mark.parametrize("ensemble", ["circular", "real", "general"])
def test_wick_moments_match_monte_carlo(ensemble: str) -> None:
    rng = np.random.default_rng(3)
    dim, dim_a, samples = 16, 4, 200_000
    # psi = M xi, xi real standard normal: G = M M^dagger, C = M M^T (no Hamming structure)
    if ensemble == "circular":
        lower = rng.normal(size=(dim, dim)) + 1j * rng.normal(size=(dim, dim))
        mixing = np.hstack([lower, 1j * lower]) / math.sqrt(2)
    elif ensemble == "real":
        mixing = rng.normal(size=(dim, 2 * dim))
    else:
        mixing = rng.normal(size=(dim, 2 * dim)) + 0.5j * rng.normal(size=(dim, 2 * dim))
    covariance, pseudo = mixing @ np.conj(mixing.T), mixing @ mixing.T
    if ensemble == "circular":
        np.testing.assert_allclose(pseudo, 0, atol=1e-12)
        pseudo = None
    traces = replica.dense_traces(covariance, dim_a, pseudo)
    psi = rng.normal(size=(samples, 2 * dim)) @ mixing.T
    purity, norm = _replica_samples(psi, dim_a)
    for values, exact in ((purity, traces.purity_moment()), (norm, traces.norm_moment())):
        z = (values.mean() / dim**2 - exact) / (values.std(ddof=1) / dim**2 / math.sqrt(samples))
        assert abs(z) < Z_MAX, (ensemble, z)


def test_real_gp_on_spins_matches_monte_carlo() -> None:
    """Real GP with a CosNet kernel on 4 spins: the third Wick pairing, by sampling."""
    n_sites, samples = 4, 200_000
    net = nw.cosnet(s0=1.2)
    fn = lambda k: net.kernel(k).nngp  # noqa: E731
    x = SpinBasis(n_sites).inputs()
    covariance = np.asarray(gram(fn, x, x))
    psi = np.random.default_rng(4).multivariate_normal(np.zeros(16), covariance, size=samples)
    for n_a in (1, 2):
        (traces,) = replica.hamming_traces(fn, n_sites, [n_a], pseudo=fn)
        purity, norm = _replica_samples(psi, 2**n_a)
        for values, exact in ((purity, traces.purity_moment()), (norm, traces.norm_moment())):
            mean, error = values.mean() / 256, values.std(ddof=1) / 256 / math.sqrt(samples)
            assert abs(mean - exact) < Z_MAX * error
        # the sampling resolves the third pairing: without it (circular formula) it fails
        (circular,) = replica.hamming_traces(fn, n_sites, [n_a])
        assert abs(purity.mean() / 256 - circular.purity_moment()) > Z_MAX * error


# --- GP replica estimate: the three routes ---------------------------------------------------


def _suite_kernels() -> dict[str, tuple[replica.KernelFn, replica.KernelFn | None]]:
    """Covariance and pseudo-covariance (real GP unless given) of every kernel family."""
    relu = nw.mlp(depth=2, width=8)
    erf = nw.mlp(depth=1, width=8, activation="erf", sb=0.5)
    cos = nw.cosnet(s0=1.5, s1=0.7)
    gauss = nw.gaussnet(s0=0.8, s1=1.3)
    mixed = nw.decoupled(nw.cosnet(s0=2.0), nw.mlp())  # parts differ: non-circular
    kernels: dict[str, tuple[replica.KernelFn, replica.KernelFn | None]] = {}
    for name, net in (("relu", relu), ("erf", erf), ("cosnet", cos), ("gaussnet", gauss)):
        kernels[f"{name}-nngp"] = ((lambda k, net=net: net.kernel(k).nngp), None)
        kernels[f"{name}-ntk"] = ((lambda k, net=net: net.kernel(k).ntk), None)
    kernels["nnqs"] = (
        lambda k: mixed.infinite(k)[0].hermitian(),
        lambda k: mixed.infinite(k)[0].symmetric(),
    )
    return kernels


KERNELS = _suite_kernels()


@pytest.mark.parametrize("name", sorted(KERNELS))
@pytest.mark.parametrize("ensemble", ["complex", "real"])
def test_dense_equals_closed_form(name: str, ensemble: str) -> None:
    fn, pseudo_fn = KERNELS[name]
    if ensemble == "real":
        pseudo_fn = pseudo_fn or fn
    elif name == "nnqs":
        pseudo_fn = None  # its circular part alone
    for n_sites, cuts in ((5, range(6)), (12, (1, 6) if name.endswith("ntk") else ())):
        x = SpinBasis(n_sites).inputs()
        covariance = np.asarray(gram(fn, x, x))
        pseudo = None if pseudo_fn is None else np.asarray(gram(pseudo_fn, x, x))
        for n_a in cuts:
            dense = replica.dense_traces(covariance, 2**n_a, pseudo)
            (closed,) = replica.hamming_traces(fn, n_sites, [n_a], pseudo_fn)
            _assert_traces_close(dense, closed)
            assert replica.hamming_renyi2(fn, n_sites, [n_a], pseudo_fn)[0] == pytest.approx(
                closed.renyi2(), rel=ROUTES_RTOL, abs=1e-14
            )


def _iid(k):
    return jnp.where(k.dist == 0, 1.0, 0.0)


@pytest.mark.parametrize("field", ["complex", "real"])
def test_iid_kernel_gives_haar_purity_on_every_route(field: str, tmp_path) -> None:
    n_sites = 6
    pseudo = _iid if field == "real" else None
    x = SpinBasis(n_sites).inputs()
    covariance = np.asarray(gram(_iid, x, x))
    np.testing.assert_array_equal(covariance, np.eye(64))
    chunked = replica.chunked_traces(_iid, n_sites, range(7), tmp_path / "gp", pseudo, block=16)
    for n_a in range(n_sites + 1):
        exact = haar_purity(2**n_a, 2 ** (n_sites - n_a), field)
        routes = (
            replica.dense_traces(covariance, 2**n_a, None if pseudo is None else covariance),
            replica.hamming_traces(_iid, n_sites, [n_a], pseudo)[0],
            chunked[n_a],
        )
        for traces in routes:
            ratio = traces.purity_moment() / traces.norm_moment()
            assert ratio == pytest.approx(exact, rel=ROUNDING_RTOL)
        assert replica.hamming_renyi2(_iid, n_sites, [n_a], pseudo)[0] == pytest.approx(
            -math.log(exact), rel=ROUNDING_RTOL, abs=1e-15
        )


@pytest.mark.parametrize("block", [16, 64])
@pytest.mark.parametrize("ensemble", ["complex", "real", "pseudo"])
def test_chunked_equals_closed_form_small(block: int, ensemble: str, tmp_path) -> None:
    """Blocks smaller, equal to and larger than ``2**N_B`` (both regimes of zarr_traces)."""
    n_sites = 8
    fn, pseudo = KERNELS["nnqs"]
    pseudo = {"complex": None, "real": fn, "pseudo": pseudo}[ensemble]
    if ensemble == "real":
        fn = pseudo = KERNELS["cosnet-ntk"][0]
    cuts = list(range(n_sites + 1))
    chunked = replica.chunked_traces(fn, n_sites, cuts, tmp_path / "gp", pseudo, block=block)
    closed = replica.hamming_traces(fn, n_sites, cuts, pseudo)
    for traces, exact in zip(chunked, closed, strict=True):
        _assert_traces_close(traces, exact)
    assert (tmp_path / "gp" / "pseudo").exists() == (ensemble == "pseudo")


@pytest.mark.slow
def test_chunked_equals_closed_form_14_spins(tmp_path) -> None:
    """2**14 configurations (2 GiB of float64 Gram matrix, on disk only), 2048-row tiles."""
    fn = KERNELS["relu-ntk"][0]
    cuts = [1, 4, 7]
    chunked = replica.chunked_traces(fn, 14, cuts, tmp_path / "gp", block=2048)
    for traces, exact in zip(chunked, replica.hamming_traces(fn, 14, cuts), strict=True):
        _assert_traces_close(traces, exact)


def test_chunked_route_refuses_bad_input_before_work(tmp_path) -> None:
    fn = KERNELS["cosnet-nngp"][0]
    store = tmp_path / "gp"
    for kwargs, name in (
        ({"block": 3}, "block"),
        ({"block": 0}, "block"),
        ({"n_a": [9]}, "n_a"),
        ({"workers": 0}, "workers"),
        ({"n_sites": 0}, "n_sites"),
    ):
        arguments = {"fn": fn, "n_sites": 8, "n_a": [1], "store": store, "block": 16, **kwargs}
        with pytest.raises(ValueError, match=f"^{name} must"):
            replica.chunked_traces(**arguments)
    assert not store.exists()
    with pytest.raises(ValueError, match="no array"):
        replica.zarr_traces(store, [1])
    array = replica.write_gram_zarr(fn, 4, store, block=4)
    array.attrs["complete"] = False  # e.g. an interrupted write
    with pytest.raises(ValueError, match="incomplete"):
        replica.zarr_traces(store, [1])


def test_closed_form_scales_to_a_thousand_spins() -> None:
    n_sites = 1000
    for name, (fn, _) in KERNELS.items():
        start = time.perf_counter()
        s2 = replica.hamming_renyi2(fn, n_sites, [1, 250, 500])
        assert time.perf_counter() - start < 1.0, name
        assert 0 < s2[0] < s2[1] <= s2[2] < -math.log(haar_purity(2**500, 2**500)) + 1e-9, name
    # a nearly iid kernel (N exp(-4 s0^2 / N) ~ 4e-15) reaches the Haar value at half system
    cos = nw.cosnet(s0=100.0)
    (s2,) = replica.hamming_renyi2(lambda k: cos.kernel(k).nngp, n_sites, [500])
    assert s2 == pytest.approx(-math.log(haar_purity(2**500, 2**500)), rel=1e-12)


def test_estimate_is_symmetric_and_vanishes_without_a_cut() -> None:
    fn = KERNELS["erf-ntk"][0]
    s2 = replica.hamming_renyi2(fn, 9, range(10))
    assert s2[0] == pytest.approx(0.0, abs=1e-15) and s2[9] == pytest.approx(0.0, abs=1e-15)
    np.testing.assert_allclose(s2, s2[::-1], rtol=1e-14)


# --- finite-width ensembles ------------------------------------------------------------------


def test_ensemble_members_do_not_depend_on_chunking() -> None:
    nnqs = nw.decoupled(nw.cosnet(width=32, s0=3.0))
    cuts = [1, 3, [0, 2, 4]]
    full = ensemble_entanglement(nnqs, 6, cuts, seed=5, members=range(7), member_chunk=7)
    chunked = ensemble_entanglement(nnqs, 6, cuts, seed=5, members=range(7), member_chunk=3)
    shard = ensemble_entanglement(nnqs, 6, cuts, seed=5, members=[4, 5, 6], member_chunk=3)
    for field in ("von_neumann", "purity", "norm_sq"):
        np.testing.assert_allclose(
            getattr(chunked, field), getattr(full, field), rtol=ROUNDING_RTOL
        )
    first = ensemble_entanglement(nnqs, 6, cuts, seed=5, members=range(4), member_chunk=3)
    merged = combine_ensembles([first, shard])
    np.testing.assert_array_equal(merged.members, np.arange(7))
    for field in ("von_neumann", "purity", "norm_sq"):
        np.testing.assert_allclose(getattr(merged, field), getattr(full, field), rtol=ROUNDING_RTOL)
    with pytest.raises(ValueError, match="disjoint"):
        combine_ensembles([first, first])
    psi = ensemble_amplitudes(nnqs, 6, 5, [2])[0]
    single = schmidt_probabilities(bipartite_matrix(SpinBasis(6), psi, 3))
    assert full.von_neumann[2, 1] == pytest.approx(von_neumann_entropy(single), abs=1e-13)
    assert full.renyi2[2, 1] == pytest.approx(renyi_entropy(single, 2), abs=1e-13)
    assert full.norm_sq[2] == pytest.approx(np.vdot(psi, psi).real, rel=ROUNDING_RTOL)


def test_ratio_estimate_is_the_ratio_of_ensemble_means() -> None:
    rng = np.random.default_rng(6)
    psi = rng.normal(size=(50, 64)) + 1j * rng.normal(size=(50, 64))
    purity = np.sum(schmidt_spectra(psi, 3) ** 2, axis=-1)
    result = EnsembleEntanglement(
        ((0, 1, 2),),
        np.arange(50),
        np.zeros((50, 1)),
        purity[:, None],
        np.sum(np.abs(psi) ** 2, axis=-1),
    )
    tilde_purity, tilde_norm = _replica_samples(psi, 8)
    assert result.ratio_renyi2()[0] == pytest.approx(
        -math.log(tilde_purity.mean() / tilde_norm.mean()), rel=ROUNDING_RTOL
    )
    keep = ~np.eye(50, dtype=bool)
    leave_one_out = [-math.log(tilde_purity[k].mean() / tilde_norm[k].mean()) for k in keep]
    jackknife = math.sqrt(49 / 50 * np.sum((leave_one_out - np.mean(leave_one_out)) ** 2))
    assert result.ratio_renyi2_sem()[0] == pytest.approx(jackknife, rel=1e-10)


def test_finite_cosnet_approaches_page_and_the_gp_estimate() -> None:
    """N = 8, s0 = 10 (nearly iid kernel): the gap to Page and to the GP shrinks with width."""
    n_sites, members, cuts = 8, 40, [2, 4]
    gaps, gp_gaps = [], []
    for width in (8, 512):
        cos = nw.cosnet(width=width, s0=10.0)
        nnqs = nw.decoupled(cos)
        result = ensemble_entanglement(
            nnqs, n_sites, cuts, seed=7, members=range(members), member_chunk=members
        )
        page = np.array([page_entropy(2**n_a, 2 ** (n_sites - n_a)) for n_a in cuts])
        gaps.append(np.abs(result.von_neumann.mean(axis=0) / page - 1))
        gp_gaps.append(np.abs(result.ratio_renyi2() - replica.nnqs_renyi2(nnqs, n_sites, cuts)))
    assert np.all(gaps[1] < gaps[0]) and np.all(gaps[1] < 0.02)
    assert np.all(gp_gaps[1] < gp_gaps[0])
