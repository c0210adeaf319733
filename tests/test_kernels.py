"""Tests of the tangent and covariance kernels of NNQS (docs/theory.md §3-§4).

Established here:

* empirical (autodiff) NTK and QS-NTK converge to the infinite-width closed forms at
  the rate ``1/sqrt(width)``, for every architecture of the suite, and ensembles of
  finite networks reproduce the NNGP within Monte-Carlo error;
* the algebra of docs/theory.md §4 (``Theta``, ``ThetaH`` from the real blocks, decoupled
  networks have no mixing kernel, identical infinite-width architectures give
  ``Theta = 0`` and ``ThetaH = 2 Theta_inf``), the QS-NTK ``Omega`` is Hermitian PSD
  and drives one gradient step;
* the discrete fast path of :func:`suite.kernels.gram.gram` equals the direct closed
  form, and the CosNet / GaussNet closed forms equal the paper's (Eq. S23-S28).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import suite  # noqa: F401  (first: enables JAX float64)

# isort: split

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from suite import networks as nw
from suite.kernels.empirical import empirical_ntk, empirical_qs_ntk
from suite.kernels.gram import gram
from suite.layers import Kernel, Layer, kernel_of_inputs
from suite.qsntk import PairKernel

#: two evaluations of the same algebra in float64 agree to this (relative to max |entry|)
IDENTITY_RTOL = 1e-12
#: the discrete fast path and the direct closed form agree to this (relative to max |entry|)
FAST_PATH_RTOL = 1e-13
#: Hermiticity and positivity of Omega: smallest eigenvalue >= -PSD_RTOL * largest
PSD_RTOL = 1e-12
#: relative Frobenius error of an empirical kernel at width n must be below C / sqrt(n).
#: The empirical NTK of a one-hidden-layer net is an average over n iid hidden units,
#: each with a relative (Frobenius) spread of order one, so its error is ~ c/sqrt(n) with
#: c of order one to a few (measured 1 to 3.3 for every architecture below, with the
#: moderate GaussNet scales chosen there). C = 6 allows twice the largest of those,
#: and is the same constant as the largest-width bound 0.05 ~ 6/sqrt(16384).
SQRT_WIDTH_CONSTANT = 6.0
#: Monte-Carlo z-scores: the largest |z| over a few hundred correlated entries of a
#: sample covariance; under the null it is ~3.5, and P(|z| > 5) is ~6e-7 per entry.
MAX_Z = 5.0


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------


def _spins(n_sites: int, n_configs: int, seed: int = 0) -> np.ndarray:
    """``n_configs`` distinct spin configurations in ``{-1, +1}^n_sites`` (docs/theory.md §1)."""
    codes = np.random.default_rng(seed).choice(2**n_sites, n_configs, replace=False)
    return _spins_of_codes(codes, n_sites)


def _spins_of_codes(codes: np.ndarray, n_sites: int) -> np.ndarray:
    bits = (np.asarray(codes)[:, None] >> np.arange(n_sites - 1, -1, -1)) & 1
    return 1.0 - 2.0 * bits


def _hubbard_inputs(n_sites: int, n_configs: int, seed: int) -> np.ndarray:
    """Hubbard-encoded rows (site values 0..3, docs/theory.md §1): random, with the empty
    configuration (all zeros, a zero-norm input) and a duplicated row included."""
    rows = np.random.default_rng(seed).integers(0, 4, size=(n_configs, n_sites))
    rows[0] = 0
    rows[-1] = rows[1]
    return rows.astype(np.float64)


def _rel_fro(a: Any, b: Any) -> float:
    """Relative Frobenius error ``||a - b|| / ||b||``."""
    a, b = np.asarray(a), np.asarray(b)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _max_rel(a: Any, b: Any) -> float:
    """``max |a - b| / max |b|``."""
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _max_abs(a: Any) -> float:
    return float(np.max(np.abs(np.asarray(a))))


def _ntk_inf(net: Layer, x: Any) -> np.ndarray:
    """Infinite-width NTK Gram matrix of a real network."""
    return np.asarray(gram(lambda k: net.kernel(k).ntk, x, x))


def _qs(nnqs: nw.NNQS, params: Any, x: Any, x2: Any | None = None) -> PairKernel:
    x2 = x if x2 is None else x2
    return empirical_qs_ntk(nnqs, params, jnp.asarray(x), jnp.asarray(x2), block=32)


def _psi_jacobian(nnqs: nw.NNQS, params: Any, x: Any) -> jax.Array:
    """``d psi(x) / d theta`` of the complex amplitude itself, shape ``(n, P)``.

    Forward mode: ``jax.jacrev`` refuses complex outputs of real inputs, ``jacfwd``
    differentiates ``R^P -> C^n`` directly. Independent of the u/v split of
    :func:`empirical_qs_ntk`.
    """
    trainable, frozen = params
    flat, unravel = ravel_pytree(trainable)
    psi = jax.jit(lambda t: nnqs.apply((unravel(t), frozen), jnp.asarray(x)))
    return jax.jacfwd(psi)(flat)


# ---------------------------------------------------------------------------------------
# 1. empirical -> infinite width
# ---------------------------------------------------------------------------------------

CONVERGENCE_WIDTHS = (256, 1024, 4096, 16384)
CONVERGENCE_SEEDS = (0, 1, 2)


@pytest.mark.slow
def test_empirical_ntk_and_qs_ntk_converge_like_one_over_sqrt_width() -> None:
    """Empirical NTK and Hermitian QS-NTK -> closed forms at rate width^-1/2 (docs/theory.md §4).

    One-hidden-layer ReLU MLP (sw = sb = 1) on 32 spin configurations of 9 sites; the
    Hermitian block of the decoupled NNQS tends to ``2 Theta_inf``. Errors are the RMS
    over three seeds; the log-log slope must be about -1/2, and the error at width
    16384 below 6/sqrt(16384) ~ 0.047 (see SQRT_WIDTH_CONSTANT; measured ~0.007).
    """
    x = jnp.asarray(_spins(9, 32))
    errors: dict[str, list[float]] = {"ntk": [], "hermitian": []}
    for width in CONVERGENCE_WIDTHS:
        net = nw.mlp(1, width, "relu", sw=1.0, sb=1.0)
        nnqs = nw.decoupled(net)
        theta = _ntk_inf(net, x)
        ntk_errors, herm_errors = [], []
        for seed in CONVERGENCE_SEEDS:
            params = net.init(jax.random.key(seed), 9)[1]
            ntk_errors.append(_rel_fro(empirical_ntk(net, params, x, x, block=32), theta))
            qs = _qs(nnqs, nnqs.init(jax.random.key(seed), 9), x)
            herm_errors.append(_rel_fro(qs.hermitian(), 2 * theta))
        # one hidden layer: E[Theta_emp] = Theta_inf exactly and E[err^2] = v / width, so
        # the root-mean-square over seeds is the natural estimate of sqrt(v / width)
        errors["ntk"].append(float(np.sqrt(np.mean(np.square(ntk_errors)))))
        errors["hermitian"].append(float(np.sqrt(np.mean(np.square(herm_errors)))))
    for name, errs in errors.items():
        slope = np.polyfit(np.log(CONVERGENCE_WIDTHS), np.log(errs), 1)[0]
        print(f"{name}: errors {np.round(errs, 5)}, slope {slope:.3f}")
        assert -0.8 <= slope <= -0.3, (name, errs, slope)
        assert errs[-1] < 0.05, (name, errs)


def _moderate_cases() -> list[Any]:
    """(network factory, width): architectures checked at one moderate width."""
    return [
        pytest.param(lambda w: nw.mlp(2, w, "relu", sw=1.0, sb=0.5), 1024, id="relu-depth2"),
        pytest.param(lambda w: nw.mlp(1, w, "erf", sw=1.5, sb=0.5), 4096, id="erf"),
        pytest.param(lambda w: nw.cosnet(w, s0=1.0, s1=1.0), 4096, id="cosnet-features"),
        pytest.param(
            lambda w: nw.cosnet(w, s0=1.0, s1=1.0, train_features=False), 4096, id="cosnet-readout"
        ),
        # GaussNet's features are lognormal: at s0 = sb = 1 on spins (Var z = 2) the
        # per-unit relative variance ~ e^{4 Var z} makes c ~ 10-20; s0 = sb = 0.5 gives
        # Var z = 0.5 and c ~ 2.
        pytest.param(lambda w: nw.gaussnet(w, s0=0.5, s1=1.0, sb=0.5), 4096, id="gaussnet"),
        pytest.param(
            lambda w: nw.gaussnet(w, s0=0.5, s1=1.0, sb=0.5, train_features=False),
            4096,
            id="gaussnet-readout",
        ),
        pytest.param(
            lambda w: nw.mlp(1, w, "relu", sb=0.5, parameterization="standard"),
            4096,
            id="relu-standard",
        ),
    ]


@pytest.mark.parametrize(("make", "width"), _moderate_cases())
def test_empirical_ntk_close_to_closed_form_at_moderate_width(
    make: Callable[[int], Layer], width: int
) -> None:
    """Empirical NTK within C/sqrt(width) of the closed form, several architectures (§4)."""
    x = jnp.asarray(_spins(9, 32))
    net = make(width)
    theta = _ntk_inf(net, x)
    errors = [
        _rel_fro(empirical_ntk(net, net.init(jax.random.key(seed), 9)[1], x, x, block=32), theta)
        for seed in (0, 1)
    ]
    assert np.mean(errors) < SQRT_WIDTH_CONSTANT / np.sqrt(width), errors


def test_shared_trunk_mixing_vanishes_like_one_over_sqrt_width() -> None:
    """shared_trunk: ``||Theta_uv|| / ||Theta_uu||`` and ``||Theta|| / ||ThetaH||`` -> 0 at
    rate width^-1/2 (a sum of n terms with mean-zero readout products ``W_u W_v``), and
    ``ThetaH -> 2 Theta_inf`` of the one-output network (docs/theory.md §4)."""
    x = jnp.asarray(_spins(9, 24))
    widths = (256, 1024, 4096)
    mixing, symmetric = [], []
    for width in widths:
        nnqs = nw.shared_trunk(nw.mlp_trunk(1, width, "relu", sw=1.0, sb=0.5), sw=1.0, sb=0.5)
        kernels = [_qs(nnqs, nnqs.init(jax.random.key(seed), 9), x) for seed in (0, 1)]
        mixing.append(np.mean([np.linalg.norm(k.uv) / np.linalg.norm(k.uu) for k in kernels]))
        symmetric.append(
            np.mean(
                [np.linalg.norm(k.symmetric()) / np.linalg.norm(k.hermitian()) for k in kernels]
            )
        )
    for values in (mixing, symmetric):
        slope = np.polyfit(np.log(widths), np.log(values), 1)[0]
        assert -0.8 <= slope <= -0.3, (values, slope)
        assert values[-1] < SQRT_WIDTH_CONSTANT / np.sqrt(widths[-1])
    target = 2 * _ntk_inf(nw.mlp(1, widths[-1], "relu", sw=1.0, sb=0.5), x)
    errors = [_rel_fro(k.hermitian(), target) for k in kernels]  # at the largest width
    assert np.mean(errors) < SQRT_WIDTH_CONSTANT / np.sqrt(widths[-1]), errors


def test_complex_output_tends_to_a_circular_gp() -> None:
    """complex_output: ``Theta -> 0`` and ``ThetaH ->`` the NTK of the real MLP with the
    same sw, sb, within C/sqrt(width) at width 4096 (networks.py, docs/theory.md §4)."""
    x = jnp.asarray(_spins(9, 24))
    width = 4096
    nnqs = nw.complex_output(nw.mlp_trunk(1, width, "relu", sw=1.0, sb=0.5), sw=1.0, sb=0.5)
    target = _ntk_inf(nw.mlp(1, width, "relu", sw=1.0, sb=0.5), x)
    bound = SQRT_WIDTH_CONSTANT / np.sqrt(width)
    for seed in (0, 1):
        kernel = _qs(nnqs, nnqs.init(jax.random.key(seed), 9), x)
        assert np.linalg.norm(kernel.symmetric()) / np.linalg.norm(target) < bound
        assert _rel_fro(kernel.hermitian(), target) < bound


def _nngp_cases() -> list[Any]:
    """One-hidden-layer NNQS: their NNGP is exact at any width (the readout average of a
    product of iid units), so a small-width ensemble differs from it by sampling only."""
    return [
        pytest.param(lambda: nw.decoupled(nw.mlp(1, 64, "relu", sb=0.5)), id="decoupled-relu"),
        pytest.param(
            lambda: nw.decoupled(nw.mlp(1, 64, "erf", sw=1.5, sb=0.5), nw.cosnet(64, s0=1.5)),
            id="decoupled-erf-cos",
        ),
        pytest.param(
            lambda: nw.decoupled(nw.gaussnet(64, s0=0.5, s1=1.0, sb=0.5)), id="decoupled-gauss"
        ),
        pytest.param(
            lambda: nw.shared_trunk(nw.mlp_trunk(1, 64, "relu", sb=0.5), sb=0.5),
            id="shared-relu",
        ),
        pytest.param(
            lambda: nw.complex_output(nw.cosnet_trunk(64, s0=1.5), sb=0.3), id="complex-cos"
        ),
    ]


@pytest.mark.parametrize("make", _nngp_cases())
def test_ensemble_covariance_matches_nngp(make: Callable[[], nw.NNQS]) -> None:
    """Sample covariances ``E[a(x) b(x')]``, a, b in {u, v}, of 2000 networks = ``infinite(k)[0]``.

    docs/theory.md §4 (NNGP). Each entry's z-score uses its own sample standard error (the
    spread of ``a_m(x) b_m(x')`` over members / sqrt(M)), which also covers the
    non-Gaussian tails of finite-width outputs; all |z| < MAX_Z.
    """
    members = 2000
    nnqs = make()
    x = jnp.asarray(_spins(9, 12, seed=3))
    params = nw.init_ensemble(nnqs, 5, range(members), 9)
    u, v = jax.vmap(nnqs.parts, in_axes=(0, None))(params, x)
    nngp = gram(lambda k: nnqs.infinite(k)[0], x, x)
    parts = {"u": np.asarray(u), "v": np.asarray(v)}
    z_max = 0.0
    for block in ("uu", "uv", "vu", "vv"):
        a, b = parts[block[0]], parts[block[1]]
        products = a[:, :, None] * b[:, None, :]
        mean = products.mean(axis=0)
        stderr = products.std(axis=0, ddof=1) / np.sqrt(members)
        z = (mean - np.asarray(getattr(nngp, block))) / stderr
        z_max = max(z_max, float(np.max(np.abs(z))))
    assert z_max < MAX_Z
    # and the ensemble is not degenerate: the diagonal covariance is clearly resolved
    assert float(np.min(np.diag(np.asarray(nngp.hermitian()).real))) > 0


# ---------------------------------------------------------------------------------------
# 2. docs/theory.md §4 identities
# ---------------------------------------------------------------------------------------


def _wrapper_cases(width: int) -> list[Any]:
    return [
        pytest.param(
            lambda: nw.decoupled(nw.mlp(1, width, "relu", sb=0.5), nw.cosnet(width, 1.2)),
            id="decoupled",
        ),
        pytest.param(
            lambda: nw.shared_trunk(nw.mlp_trunk(2, width, "erf", sw=1.3, sb=0.4), sb=0.4),
            id="shared_trunk",
        ),
        pytest.param(
            lambda: nw.complex_output(nw.mlp_trunk(1, width, "relu", sb=0.5), sb=0.5),
            id="complex_output",
        ),
    ]


@pytest.mark.parametrize("make", _wrapper_cases(16))
def test_qs_ntk_blocks_match_complex_jacobian(make: Callable[[], nw.NNQS]) -> None:
    """``Theta = Theta_uu - Theta_vv + i(Theta_uv + Theta_vu)`` and ``ThetaH`` (docs/theory.md §4).

    Checked against ``sum_p dpsi(x) dpsi(x')`` and ``sum_p dpsi(x) conj dpsi(x')`` from
    the Jacobian of the complex psi itself, on spin and on Hubbard-encoded inputs, to
    IDENTITY_RTOL; for decoupled networks the mixing blocks are exactly zero.
    """
    nnqs = make()
    params = nnqs.init(jax.random.key(7), 6)
    x = np.vstack([_spins(6, 10), _hubbard_inputs(6, 10, seed=1)])
    jac = _psi_jacobian(nnqs, params, x)
    kernel = _qs(nnqs, params, x)
    assert _max_rel(kernel.symmetric(), jac @ jac.T) < IDENTITY_RTOL
    assert _max_rel(kernel.hermitian(), jac @ jnp.conj(jac).T) < IDENTITY_RTOL
    # Theta_uv = sum_p d_p u(x) d_p v(x') = Re J Im J^T (not symmetric in general)
    assert _max_abs(kernel.uv - jac.real @ jac.imag.T) < IDENTITY_RTOL * _max_abs(kernel.uu)
    if nnqs.kind == "decoupled":
        assert np.all(np.asarray(kernel.uv) == 0) and np.all(np.asarray(kernel.vu) == 0)
    else:  # the coupled wrappers do mix at finite width
        assert _max_abs(kernel.uv) > 1e-6 * _max_abs(kernel.uu)


@pytest.mark.parametrize(
    "net",
    [
        nw.mlp(1, 8, "relu", sb=0.0),
        nw.mlp(3, 8, "relu", sw=1.2, sb=0.3),
        nw.mlp(2, 8, "erf", sw=1.5, sb=0.5),
        nw.cosnet(8, s0=1.3, s1=0.7),
        nw.gaussnet(8, s0=0.7, s1=1.2, sb=0.4, train_features=False),
    ],
    ids=["relu1", "relu3", "erf2", "cosnet", "gaussnet"],
)
def test_identical_infinite_architectures_decouple(net: Layer) -> None:
    """Decoupled, identical architectures at infinite width: ``Theta = 0`` exactly and
    ``ThetaH = 2 Theta_inf``; the covariance likewise (pseudo-covariance 0, G = 2K) (§4)."""
    x = jnp.asarray(np.vstack([_spins(7, 12), np.random.default_rng(0).normal(size=(5, 7))]))
    nngp, ntk = nw.decoupled(net).infinite(kernel_of_inputs(x, x))
    k = net.kernel(kernel_of_inputs(x, x))
    for pair, real in ((ntk, k.ntk), (nngp, k.nngp)):
        assert np.all(np.asarray(pair.symmetric()) == 0)
        assert np.all(np.asarray(pair.uv) == 0) and np.all(np.asarray(pair.vu) == 0)
        assert _max_rel(pair.hermitian(), 2 * np.asarray(real)) < IDENTITY_RTOL


def test_coupled_infinite_maps_match_their_one_output_networks() -> None:
    """shared_trunk's infinite blocks are the one-output network's; complex_output's
    ``ThetaH`` (and ``G``) is the real MLP's NTK (NNGP), ``Theta = 0`` (networks.py, §4)."""
    x = jnp.asarray(_spins(8, 20))
    k_in = kernel_of_inputs(x, x)
    for depth, act in ((1, "relu"), (2, "erf")):
        trunk = nw.mlp_trunk(depth, 8, act, sw=1.3, sb=0.4)
        real = nw.mlp(depth, 8, act, sw=1.3, sb=0.4).kernel(k_in)
        nngp, ntk = nw.shared_trunk(trunk, sw=1.3, sb=0.4).infinite(k_in)
        assert _max_rel(ntk.uu, real.ntk) < IDENTITY_RTOL
        assert _max_rel(nngp.vv, real.nngp) < IDENTITY_RTOL
        nngp, ntk = nw.complex_output(trunk, sw=1.3, sb=0.4).infinite(k_in)
        assert _max_rel(ntk.hermitian(), real.ntk) < IDENTITY_RTOL
        assert _max_rel(nngp.hermitian(), real.nngp) < IDENTITY_RTOL
        assert np.all(np.asarray(ntk.symmetric()) == 0)


# ---------------------------------------------------------------------------------------
# 3. Omega: Hermitian PSD, gradient flow
# ---------------------------------------------------------------------------------------


def _assert_hermitian_psd(omega: Any) -> None:
    omega = np.asarray(omega)
    scale = float(np.max(np.abs(omega)))
    assert float(np.max(np.abs(omega - omega.conj().T))) <= PSD_RTOL * scale
    eig = np.linalg.eigvalsh((omega + omega.conj().T) / 2)
    assert eig[0] >= -PSD_RTOL * eig[-1], (eig[0], eig[-1])


@pytest.mark.parametrize("make", _wrapper_cases(16))
def test_empirical_omega_is_hermitian_psd(make: Callable[[], nw.NNQS]) -> None:
    """Empirical ``Omega = [[ThetaH, Theta], [conj Theta, conj ThetaH]]`` is a Gram matrix
    of ``[dpsi; conj dpsi]``, so Hermitian PSD (docs/theory.md §4), for all three wrappers."""
    nnqs = make()
    params = nnqs.init(jax.random.key(1), 8)
    x = _spins(8, 40)
    _assert_hermitian_psd(_qs(nnqs, params, x).omega())


@pytest.mark.parametrize(
    "nnqs",
    [
        nw.decoupled(nw.mlp(2, 8, "relu", sb=0.5), nw.mlp(1, 8, "erf", sw=1.5, sb=0.2)),
        nw.decoupled(nw.cosnet(8, 1.3), nw.gaussnet(8, 0.7, 1.0, 0.4)),
        nw.shared_trunk(nw.mlp_trunk(3, 8, "relu", sb=0.2), sb=0.2),
        nw.complex_output(nw.cosnet_trunk(8, 2.0), sb=0.3),
    ],
    ids=["decoupled-relu-erf", "decoupled-cos-gauss", "shared_trunk", "complex_output"],
)
def test_infinite_omega_is_hermitian_psd(nnqs: nw.NNQS) -> None:
    """Infinite-width ``Omega`` of both the NTK and the NNGP blocks is Hermitian PSD (§4),
    on all 128 spin configurations of 7 sites and on Hubbard-encoded inputs."""
    for x in (_spins_of_codes(np.arange(128), 7), _hubbard_inputs(6, 60, seed=2)):
        for pair in gram(nnqs.infinite, x, x):  # NNGP and NTK blocks
            _assert_hermitian_psd(PairKernel(*(np.asarray(b) for b in pair)).omega())


def _gradient_step_residuals(nnqs: nw.NNQS, etas: tuple[float, ...]) -> list[float]:
    """Relative residuals of the gradient-flow identity of docs/theory.md §4, one GD step each.

    Loss ``L = sum_b |psi_b - phi_b|^2 + Re(a psi_b^2)`` (real, with different Wirtinger
    derivatives ``dl/dpsi = conj(psi - phi) + a psi``, ``dl/dconj psi = conj(dl/dpsi)``),
    so both the ``ThetaH`` and the ``Theta`` blocks of Omega drive the step.
    """
    rng = np.random.default_rng(4)
    x = jnp.asarray(_spins(7, 12))
    batch = x[:5]
    phi = jnp.asarray(rng.normal(size=5) + 1j * rng.normal(size=5))
    a = 0.3 - 0.7j
    trainable, frozen = nnqs.init(jax.random.key(2), 7)
    flat, unravel = ravel_pytree(trainable)

    @jax.jit
    def psi(t: jax.Array, points: jax.Array) -> jax.Array:
        return nnqs.apply((unravel(t), frozen), points)

    def loss(t: jax.Array) -> jax.Array:
        p = psi(t, batch)
        return jnp.sum(jnp.abs(p - phi) ** 2 + jnp.real(a * p**2))

    grad = jax.jit(jax.grad(loss))(flat)
    p_b = psi(flat, batch)
    dl_dpsi = jnp.conj(p_b - phi) + a * p_b
    forcing = jnp.concatenate([jnp.conj(dl_dpsi), dl_dpsi])  # [dl/d conj psi; dl/d psi]
    flow = _qs(nnqs, (trainable, frozen), x, batch).omega() @ forcing
    residuals = []
    for eta in etas:
        step = psi(flat - eta * grad, x) - psi(flat, x)
        change = jnp.concatenate([step, jnp.conj(step)])
        predicted = -eta * flow
        residuals.append(float(jnp.linalg.norm(change - predicted) / jnp.linalg.norm(predicted)))
    return residuals


@pytest.mark.parametrize("make", _wrapper_cases(12))
def test_gradient_step_follows_omega(make: Callable[[], nw.NNQS]) -> None:
    """``d[psi; conj psi] = -eta Omega [dl/d conj psi; dl/d psi]`` to first order (§4).

    One explicit GD step on the real parameters: the residual is second order in eta, so
    it is small at eta = 1e-5 and shrinks ~10x when eta does (roundoff, ~1e-16/eta
    relative, stays far below).
    """
    coarse, fine = _gradient_step_residuals(make(), (1e-5, 1e-6))
    assert coarse < 1e-3
    assert fine < 0.2 * coarse, (coarse, fine)


# ---------------------------------------------------------------------------------------
# 4. the discrete fast path of gram
# ---------------------------------------------------------------------------------------

FAST_PATH_FUNCTIONS: dict[str, Callable[[Kernel], Any]] = {
    "relu1-nobias": nw.mlp(1, 8, "relu", sb=0.0).kernel,
    "relu2": nw.mlp(2, 8, "relu", sw=1.2, sb=0.3).kernel,
    "relu3": nw.mlp(3, 8, "relu", sw=1.4, sb=0.1).kernel,
    "relu2-standard": nw.mlp(2, 8, "relu", sb=0.3, parameterization="standard").kernel,
    "erf2": nw.mlp(2, 8, "erf", sw=1.5, sb=0.5).kernel,
    "cosnet": nw.cosnet(8, s0=1.3, s1=0.8).kernel,
    "gaussnet": nw.gaussnet(8, s0=0.7, s1=1.1, sb=0.4).kernel,
    "nnqs-decoupled": nw.decoupled(nw.mlp(2, 8, "relu", sb=0.3), nw.cosnet(8, 1.1)).infinite,
    "nnqs-shared": nw.shared_trunk(nw.mlp_trunk(1, 8, "erf", sb=0.2), sb=0.2).infinite,
    "nnqs-complex": nw.complex_output(nw.mlp_trunk(2, 8, "relu", sb=0.2), sb=0.2).infinite,
}


def _fast_path_inputs(kind: str) -> tuple[np.ndarray, np.ndarray]:
    if kind == "spins":  # all 1024 configurations of 10 sites vs 100 of them
        x1 = _spins_of_codes(np.arange(1024), 10)
        return x1, x1[np.random.default_rng(0).choice(1024, 100, replace=False)]
    return _hubbard_inputs(8, 300, seed=0), _hubbard_inputs(8, 60, seed=1)


@pytest.mark.parametrize("inputs", ["spins", "hubbard"])
@pytest.mark.parametrize("name", list(FAST_PATH_FUNCTIONS))
def test_fast_path_equals_direct_closed_form(name: str, inputs: str) -> None:
    """``gram(method='table')`` = ``gram(method='direct')`` leaf by leaf to 1e-13 (§4).

    Every leaf (also a Kernel's ``var1``, ``var2``, ``width``) is a full Gram matrix
    ``(len(x1), len(x2))``; ``method='auto'`` takes the table on these inputs.
    """
    fn = FAST_PATH_FUNCTIONS[name]
    x1, x2 = _fast_path_inputs(inputs)
    table = gram(fn, x1, x2, method="table")
    direct = gram(fn, x1, x2, method="direct")
    auto = gram(fn, x1, x2)
    assert jax.tree.structure(table) == jax.tree.structure(direct)
    for t, d, a in zip(*(jax.tree.leaves(r) for r in (table, direct, auto)), strict=True):
        t, d = np.asarray(t), np.asarray(d)
        assert t.shape == d.shape == (len(x1), len(x2))
        assert np.max(np.abs(t - d)) <= FAST_PATH_RTOL * np.max(np.abs(d))
        np.testing.assert_array_equal(np.asarray(a), t)


@pytest.mark.parametrize("method", ["table", "direct"])
@pytest.mark.parametrize("inputs", ["spins", "hubbard"])
def test_gram_out_buffers_give_the_same_result(method: str, inputs: str) -> None:
    """``out=`` (donated float64 buffers of the result's structure) changes nothing."""
    x1, x2 = _fast_path_inputs(inputs)
    net = nw.mlp(2, 8, "relu", sb=0.3)
    nnqs = nw.complex_output(nw.cosnet_trunk(8, 1.5), sb=0.3)
    for fn in (lambda k: (net.kernel(k).nngp, net.kernel(k).ntk), nnqs.infinite):
        expected = gram(fn, x1, x2, method=method)
        buffers = jax.tree.map(lambda a: jnp.full(a.shape, np.nan), expected)
        result = gram(fn, x1, x2, method=method, out=buffers)
        for r, e in zip(jax.tree.leaves(result), jax.tree.leaves(expected), strict=True):
            np.testing.assert_array_equal(np.asarray(r), np.asarray(e))


@pytest.mark.parametrize(
    ("x1", "x2", "method", "name"),
    [
        (np.ones((4, 3)), np.ones((5, 4)), "auto", "x1"),
        (np.ones(3), np.ones((5, 3)), "direct", "x1"),
        (np.full((4, 3), 0.5), np.ones((5, 3)), "table", "method"),
        (np.full((4, 3), 2048.0), np.ones((5, 3)), "table", "method"),
        (np.ones((4, 3)), np.ones((5, 3)), "fast", "method"),
    ],
    ids=["columns", "one-dim", "table-non-integer", "table-too-large", "unknown-method"],
)
def test_gram_rejects_bad_input(x1: np.ndarray, x2: np.ndarray, method: str, name: str) -> None:
    """Bad inputs to gram raise ValueError naming the offending parameter."""
    fn = nw.mlp(1, 4).kernel
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        gram(fn, x1, x2, method=method)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------
# 5. closed forms against the paper
# ---------------------------------------------------------------------------------------


def _closed_form_inputs() -> np.ndarray:
    rng = np.random.default_rng(9)
    return np.vstack([rng.normal(size=(15, 5)) * 1.3, _spins(5, 10)])


@pytest.mark.parametrize("train_features", [True, False])
@pytest.mark.parametrize(("s0", "s1"), [(1.0, 1.0), (2.3, 0.6)])
def test_cosnet_closed_form(s0: float, s1: float, train_features: bool) -> None:
    """CosNet: ``K = (s1^2/2) exp(-s0^2 |x-x'|^2/(2d))``; ``Theta = K (2 + s0^2 x.x'/d)``
    with trainable features, ``Theta = K`` with the readout only (paper Eq. S23-S25, §3)."""
    x = _closed_form_inputs()
    d = x.shape[1]
    sq = np.sum((x[:, None] - x[None]) ** 2, axis=-1)
    nngp = (s1**2 / 2) * np.exp(-(s0**2) * sq / (2 * d))
    ntk = nngp * (2 + s0**2 * (x @ x.T) / d) if train_features else nngp
    k = gram(nw.cosnet(8, s0, s1, train_features).kernel, x, x, method="direct")
    assert _max_rel(k.nngp, nngp) < IDENTITY_RTOL
    assert _max_rel(k.ntk, ntk) < IDENTITY_RTOL


@pytest.mark.parametrize("train_features", [True, False])
@pytest.mark.parametrize(("s0", "s1", "sb"), [(1.0, 1.0, 1.0), (0.6, 1.7, 0.3)])
def test_gaussnet_closed_form(s0: float, s1: float, sb: float, train_features: bool) -> None:
    """GaussNet: ``K = s1^2 exp(-s0^2 |x-x'|^2/(2d))``; ``Theta = K (1 + s0^2 x.x'/d + sb^2)``
    with trainable features, ``Theta = K`` with the readout only (paper Eq. S26-S28, §3)."""
    x = _closed_form_inputs()
    d = x.shape[1]
    sq = np.sum((x[:, None] - x[None]) ** 2, axis=-1)
    nngp = s1**2 * np.exp(-(s0**2) * sq / (2 * d))
    ntk = nngp * (1 + s0**2 * (x @ x.T) / d + sb**2) if train_features else nngp
    k = gram(nw.gaussnet(8, s0, s1, sb, train_features).kernel, x, x, method="direct")
    assert _max_rel(k.nngp, nngp) < IDENTITY_RTOL
    assert _max_rel(k.ntk, ntk) < IDENTITY_RTOL
