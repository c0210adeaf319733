"""Tests of the infinite-width gradient-descent predictions (docs/theory.md §5, suite/dynamics.py).

Established here: :func:`predict_gd` equals the formulas of docs/theory.md §5 evaluated
explicitly (``scipy.linalg.expm``, matrix powers and ``solve``), equals the exact
mean and covariance of an ensemble of linear models trained by gradient descent in
parameter space (and a sampled ensemble within Monte-Carlo error), has the right
limits (t = 0: the prior; t = inf: interpolation of the train set), handles complex
targets and rank-deficient train kernels (duplicate points), and that the learning-rate
bound ``eta_max = 2B / lambda_max`` is computed and enforced.
"""

from __future__ import annotations

import math
import re
import warnings

import suite  # noqa: F401  (first: enables JAX float64)

# isort: split

import numpy as np
import pytest
import scipy.linalg

from suite import networks as nw
from suite.dynamics import (
    RowBlock,
    gd_filters,
    max_learning_rate,
    predict_gd,
    set_loss_sums,
    train_spectrum,
)
from suite.kernels.gram import gram

#: predict_gd vs the explicit formulas (relative to max |entry|). The train kernels below
#: have condition numbers < 1e3, so solve() and the eigendecomposition agree to
#: ~cond * eps ~ 1e-13; expm (Pade, scaling and squaring) adds ~1e-14. 1e-10 leaves margin
#: for the products without hiding any algebraic error (those are O(1)).
RTOL = 1e-10
#: Monte-Carlo z-score bound (largest over a few dozen entries; P(|z|>5) ~ 6e-7 each)
MAX_Z = 5.0

N_TRAIN, N_TEST, N_FEATURES = 6, 5, 20


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------


class LinearModel:
    """``f(x) = phi(x) . w`` with random features: NTK ``Theta = Phi Phi^T`` exactly, and
    with ``w_0 ~ N(0, diag(prior))`` the NNGP ``K = Phi diag(prior) Phi^T``. Its GD
    dynamics are exactly linear, so docs/theory.md §5 holds with no linearisation error.
    Rows: the B train points first, then the test points."""

    def __init__(self, seed: int, train_scales: np.ndarray | None = None) -> None:
        rng = np.random.default_rng(seed)
        self.phi = rng.normal(size=(N_TRAIN + N_TEST, N_FEATURES)) / np.sqrt(N_FEATURES)
        if train_scales is not None:  # train point i sees feature i only: Theta(X, X) diagonal
            self.phi[:N_TRAIN] = 0.0
            self.phi[np.arange(N_TRAIN), np.arange(N_TRAIN)] = train_scales
        self.prior = rng.uniform(0.5, 2.0, size=N_FEATURES)
        self.y = rng.normal(size=N_TRAIN)
        theta = self.phi @ self.phi.T
        nngp = (self.phi * self.prior) @ self.phi.T
        b = N_TRAIN
        self.ntk_train_train, self.ntk_test_train = theta[:b, :b], theta[b:, :b]
        self.nngp_train_train, self.nngp_test_train = nngp[:b, :b], nngp[b:, :b]
        self.nngp_test_test = nngp[b:, b:]
        self.phi_train, self.phi_test = self.phi[:b], self.phi[b:]

    def kernels(self) -> tuple[np.ndarray, ...]:
        return (
            self.ntk_train_train,
            self.ntk_test_train,
            self.nngp_train_train,
            self.nngp_test_train,
            self.nngp_test_test,
        )

    def predict(
        self, y: np.ndarray, eta: float, times: list[float], discrete: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        mean, cov = predict_gd(*self.kernels(), y, eta, times, discrete=discrete)
        assert cov is not None
        return mean, cov


def _reference(
    model: LinearModel, y: np.ndarray, eta: float, t: float, discrete: bool
) -> tuple[np.ndarray, np.ndarray]:
    """docs/theory.md §5 literally: ``T_t = Theta(x,X) Theta(X,X)^-1 (I - E_t)`` with expm/solve."""
    theta, b = model.ntk_train_train, N_TRAIN
    eye = np.eye(b)
    if math.isinf(t):
        decay = np.zeros((b, b))
    elif discrete:
        decay = np.linalg.matrix_power(eye - eta * theta / b, int(t))
    else:
        decay = scipy.linalg.expm(-eta * theta * t / b)
    transfer = model.ntk_test_train @ scipy.linalg.solve(theta, eye - decay, assume_a="pos")
    k_XX, k_xX, k_xx = model.nngp_train_train, model.nngp_test_train, model.nngp_test_test
    cov = k_xx + transfer @ k_XX @ transfer.T - transfer @ k_xX.T - k_xX @ transfer.T
    return transfer @ y, cov


def _max_rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


# ---------------------------------------------------------------------------------------
# against explicit formulas and exact / sampled ensembles
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(
    ("discrete", "times", "fraction"),
    [
        (False, [0.0, 0.3, 2.0, 25.0, math.inf], 0.8),
        (False, [1.0, 100.0], 3.0),  # continuous time has no step-size bound
        (True, [0, 1, 4, 37, math.inf], 0.8),
        (True, [2, 9], 0.3),
    ],
)
def test_predict_gd_matches_expm_and_solve(
    seed: int, discrete: bool, times: list[float], fraction: float
) -> None:
    """Mean and covariance of docs/theory.md §5 against expm / matrix_power and solve."""
    model = LinearModel(seed)
    assert np.linalg.cond(model.ntk_train_train) < 1e3  # the premise of RTOL
    eta = fraction * max_learning_rate(model.ntk_train_train)
    mean, cov = model.predict(model.y, eta, times, discrete)
    assert mean.shape == (len(times), N_TEST) and cov.shape == (len(times), N_TEST, N_TEST)
    for i, t in enumerate(times):
        ref_mean, ref_cov = _reference(model, model.y, eta, t, discrete)
        if t == 0:
            assert np.all(mean[i] == 0)
        else:
            assert _max_rel(mean[i], ref_mean) < RTOL
        assert _max_rel(cov[i], ref_cov) < RTOL


@pytest.mark.parametrize("discrete", [False, True])
def test_complex_targets_are_predicted_linearly(discrete: bool) -> None:
    """Complex ``Y``: mean ``T_t Y`` (real and imaginary parts separately), covariance
    independent of the targets (docs/theory.md §5, psi = u + i v)."""
    model = LinearModel(2)
    rng = np.random.default_rng(5)
    y = rng.normal(size=N_TRAIN) + 1j * rng.normal(size=N_TRAIN)
    eta = 0.6 * max_learning_rate(model.ntk_train_train)
    times = [1, 6, math.inf] if discrete else [0.5, 6.0, math.inf]
    mean, cov = model.predict(y, eta, times, discrete)
    mean_re, cov_re = model.predict(y.real, eta, times, discrete)
    mean_im, _ = model.predict(y.imag, eta, times, discrete)
    assert np.iscomplexobj(mean)
    np.testing.assert_array_equal(cov, cov_re)
    assert _max_rel(mean, mean_re + 1j * mean_im) < 1e-14
    for i, t in enumerate(times):
        ref_mean, _ = _reference(model, y, eta, t, discrete)
        assert _max_rel(mean[i], ref_mean) < RTOL


def _parameter_space_gd(
    model: LinearModel, y: np.ndarray, eta: float, t: float, discrete: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Ensemble mean and covariance of linear models trained in parameter space.

    ``w <- w - (eta/B) Phi_X^T (Phi_X w - y)``: the map ``w_0 -> w_t`` is affine,
    ``w_t = A_t w_0 + c_t``, so the ensemble mean is the model trained from ``w_0 = 0``
    and the covariance ``Phi_x A_t diag(prior) A_t^T Phi_x^T``. Continuous time: the
    gradient flow, integrated with the augmented matrix exponential (Van Loan), a route
    in parameter space (P x P) independent of the eigenbasis of Theta(X, X).
    """
    b, p = N_TRAIN, N_FEATURES
    drift = (eta / b) * model.phi_train.T @ model.phi_train
    forcing = (eta / b) * model.phi_train.T @ y
    if discrete:
        step = np.eye(p) - drift
        amplification, w = np.eye(p), np.zeros(p)
        for _ in range(int(t)):
            w = step @ w + forcing
            amplification = step @ amplification
    else:
        augmented = np.zeros((p + 1, p + 1))
        augmented[:p, :p], augmented[:p, p] = -drift, forcing
        flow = scipy.linalg.expm(t * augmented)
        amplification, w = flow[:p, :p], flow[:p, p]
    features = model.phi_test @ amplification
    return model.phi_test @ w, (features * model.prior) @ features.T


@pytest.mark.parametrize(
    ("discrete", "times"), [(True, [0, 1, 3, 20, 150]), (False, [0.0, 0.7, 5.0, 60.0])]
)
def test_predict_gd_equals_exact_linear_model_ensemble(discrete: bool, times: list[float]) -> None:
    """predict_gd = mean and covariance of an ensemble of linear(ised) models trained by
    GD in parameter space, computed exactly (docs/theory.md §5)."""
    model = LinearModel(3)
    eta = 0.9 * max_learning_rate(model.ntk_train_train)
    mean, cov = model.predict(model.y, eta, times, discrete)
    for i, t in enumerate(times):
        ens_mean, ens_cov = _parameter_space_gd(model, model.y, eta, t, discrete)
        if t == 0:
            assert np.all(mean[i] == 0) and np.all(ens_mean == 0)
        else:
            assert _max_rel(mean[i], ens_mean) < RTOL
        assert _max_rel(cov[i], ens_cov) < RTOL


def test_predict_gd_matches_sampled_ensemble() -> None:
    """A sampled ensemble of 4000 linear models after 12 GD steps: sample mean and
    variance agree with predict_gd within Monte-Carlo error (docs/theory.md §5)."""
    model = LinearModel(4)
    members, steps = 4000, 12
    eta = 0.7 * max_learning_rate(model.ntk_train_train)
    rng = np.random.default_rng(6)
    w = rng.normal(size=(members, N_FEATURES)) * np.sqrt(model.prior)
    for _ in range(steps):
        residual = w @ model.phi_train.T - model.y
        w = w - (eta / N_TRAIN) * residual @ model.phi_train
    outputs = w @ model.phi_test.T  # (members, n_test)
    mean, cov = model.predict(model.y, eta, [steps], discrete=True)
    variance = np.diag(cov[0])
    z_mean = (outputs.mean(axis=0) - mean[0]) / np.sqrt(variance / members)
    deviations = (outputs - mean[0]) ** 2
    z_var = (deviations.mean(axis=0) - variance) / (deviations.std(axis=0) / np.sqrt(members))
    assert np.max(np.abs(z_mean)) < MAX_Z and np.max(np.abs(z_var)) < MAX_Z


# ---------------------------------------------------------------------------------------
# limits
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("discrete", [False, True])
def test_time_zero_is_the_prior(discrete: bool) -> None:
    """t = 0: mean exactly 0 and covariance exactly K(x, x) (docs/theory.md §5)."""
    model = LinearModel(5)
    mean, cov = model.predict(model.y, 0.5, [0], discrete)
    np.testing.assert_array_equal(mean[0], np.zeros(N_TEST))
    np.testing.assert_array_equal(cov[0], model.nngp_test_test)


def test_discrete_time_at_half_eta_max() -> None:
    """eta = eta_max/2 puts the top mode's rate eta lambda_max / B at exactly 1 (one step
    removes it). Every time, t = 0 included, must be finite and exact, with no warning.

    (Regression: ``1 - exp(t log|1 - rate|)`` was nan at t = 0 for rate = 1.) The train
    kernel is diagonal with exactly representable eigenvalues (squares of the scales) and
    lambda_max = 4, so the rate is exactly 1 whatever the rounding of eta_max.
    """
    model = LinearModel(6, train_scales=np.array([0.5, 2.0, 1.5, 1.0, 0.75, 1.25]))
    eta = 0.5 * max_learning_rate(model.ntk_train_train)
    assert eta * train_spectrum(model.ntk_train_train).largest / N_TRAIN == 1.0  # premise
    times = [0, 1, 2, 10]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mean, cov = model.predict(model.y, eta, times, discrete=True)
    np.testing.assert_array_equal(mean[0], np.zeros(N_TEST))
    np.testing.assert_array_equal(cov[0], model.nngp_test_test)
    for i, t in enumerate(times[1:], start=1):
        ref_mean, ref_cov = _reference(model, model.y, eta, t, discrete=True)
        assert _max_rel(mean[i], ref_mean) < RTOL and _max_rel(cov[i], ref_cov) < RTOL


@pytest.mark.parametrize("discrete", [False, True])
def test_infinite_time_interpolates_the_train_set(discrete: bool) -> None:
    """t = inf on the train points: mean = y and covariance ~ 0 (train loss -> 0, §5);
    the 1-d ``nngp_test_test`` gives the diagonal of the full covariance."""
    model = LinearModel(7)
    theta, k = model.ntk_train_train, model.nngp_train_train
    eta = 0.9 * max_learning_rate(theta)
    mean, cov = predict_gd(theta, theta, k, k, k, model.y, eta, [math.inf], discrete=discrete)
    assert cov is not None
    assert _max_rel(mean[0], model.y) < RTOL
    assert float(np.max(np.abs(cov[0]))) < RTOL * float(np.max(np.abs(k)))
    # test points: variances only
    kernels = model.kernels()
    _, full = predict_gd(*kernels, model.y, eta, [3, math.inf], discrete=discrete)
    _, diag = predict_gd(*kernels[:4], np.diag(kernels[4]), model.y, eta, [3, math.inf], discrete)
    assert full is not None and diag is not None
    assert diag.shape == (2, N_TEST)
    assert _max_rel(diag, np.diagonal(full, axis1=1, axis2=2)) < 1e-14
    # discrete t = inf (any stable eta) is continuous t = inf
    other, _ = predict_gd(*kernels, model.y, 0.4 * eta, [math.inf], discrete=not discrete)
    assert _max_rel(other[0], predict_gd(*kernels, model.y, eta, [math.inf], discrete)[0][0]) < RTOL


# ---------------------------------------------------------------------------------------
# rank deficiency, learning rates, validation
# ---------------------------------------------------------------------------------------


def _relu_kernels(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, ...]:
    """Infinite-width ReLU NTK / NNGP blocks (docs/theory.md §4) on spin inputs."""
    net = nw.mlp(1, 8, "relu", sw=1.0, sb=1.0)

    def blocks(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = gram(lambda kk: (net.kernel(kk).ntk, net.kernel(kk).nngp), a, b)
        return np.asarray(k[0]), np.asarray(k[1])

    ntk_tt, nngp_tt = blocks(x_train, x_train)
    ntk_xt, nngp_xt = blocks(x_test, x_train)
    _, nngp_xx = blocks(x_test, x_test)
    return ntk_tt, ntk_xt, nngp_tt, nngp_xt, nngp_xx


def test_duplicate_train_points_warn_and_predict_on_the_range() -> None:
    """Duplicate train points make Theta(X, X) singular: a RuntimeWarning names the
    smallest eigenvalue (and the rank); predictions stay finite, and at t = inf equal
    those of the de-duplicated train set (consistent targets) (docs/theory.md §5)."""
    codes = np.random.default_rng(8).choice(128, 18, replace=False)
    spins = 1.0 - 2.0 * ((codes[:, None] >> np.arange(6, -1, -1)) & 1)
    unique, x_test = spins[:8], spins[8:]
    x_train = np.vstack([unique, unique[[2, 5]]])
    y_unique = np.random.default_rng(9).normal(size=8)
    y = np.concatenate([y_unique, y_unique[[2, 5]]])
    kernels = _relu_kernels(x_train, x_test)
    largest = float(np.linalg.eigvalsh(kernels[0])[-1])
    eta = 0.5 * 2 * len(y) / largest
    times = [0.0, 5.0, math.inf]
    for discrete in (False, True):
        with pytest.warns(RuntimeWarning, match="smallest eigenvalue") as record:
            mean, cov = predict_gd(*kernels, y, eta, times, discrete=discrete)
        message = str(record[0].message)
        smallest = float(re.search(r"smallest eigenvalue (\S+),", message).group(1))
        assert abs(smallest) <= 1e-12 * largest
        assert "rank 8 of 10" in message
        assert cov is not None and np.all(np.isfinite(mean)) and np.all(np.isfinite(cov))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the de-duplicated kernel is positive definite
            ref_mean, ref_cov = predict_gd(
                *_relu_kernels(unique, x_test), y_unique, eta, [math.inf], discrete=discrete
            )
        assert ref_cov is not None
        assert _max_rel(mean[-1], ref_mean[0]) < 1e-9
        assert _max_rel(cov[-1], ref_cov[0]) < 1e-9


def test_train_spectrum_reports_rank_deficiency() -> None:
    """train_spectrum marks the null space; a PD kernel passes without warning."""
    model = LinearModel(10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spectrum = train_spectrum(model.ntk_train_train)
    assert spectrum.positive_definite and spectrum.rank == N_TRAIN
    low_rank = model.phi_train[:, :3] @ model.phi_train[:, :3].T
    with pytest.warns(RuntimeWarning, match="smallest eigenvalue"):
        spectrum = train_spectrum(low_rank)
    assert spectrum.rank == 3 and not spectrum.positive_definite


def test_max_learning_rate_and_discrete_divergence() -> None:
    """``eta_max = 2B / lambda_max(Theta(X, X))``; discrete GD at t = inf with eta above it
    raises ValueError naming the learning rate, below it converges (docs/theory.md §5)."""
    model = LinearModel(11)
    theta = model.ntk_train_train
    eta_max = max_learning_rate(theta)
    assert eta_max == pytest.approx(2 * N_TRAIN / np.linalg.eigvalsh(theta)[-1], rel=1e-14)
    kernels = model.kernels()
    with pytest.raises(ValueError, match=r"^learning_rate.*eta_max"):
        predict_gd(*kernels, model.y, 1.01 * eta_max, [math.inf], discrete=True)
    mean, _ = predict_gd(*kernels, model.y, 0.99 * eta_max, [math.inf], discrete=True)
    assert np.all(np.isfinite(mean))
    # the same eta is fine in continuous time and at finite discrete times
    predict_gd(*kernels, model.y, 1.01 * eta_max, [math.inf, 3], discrete=False)
    predict_gd(*kernels, model.y, 1.01 * eta_max, [3], discrete=True)


@pytest.mark.parametrize(
    ("change", "name"),
    [
        ({"times": [-1.0]}, "times"),
        ({"times": [float("nan")]}, "times"),
        ({"times": [1.5], "discrete": True}, "times"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"y_train": np.ones(N_TRAIN + 1)}, "y_train"),
        ({"ntk_train_train": np.ones((N_TRAIN, N_TRAIN + 1))}, "ntk_train_train"),
        ({"ntk_test_train": np.ones((N_TEST, N_TRAIN + 1))}, "kernel shapes"),
    ],
)
def test_predict_gd_rejects_bad_arguments(change: dict[str, object], name: str) -> None:
    """Bad arguments raise ValueError naming the argument."""
    model = LinearModel(12)
    names = ("ntk_train_train", "ntk_test_train", "nngp_train_train", "nngp_test_train")
    kwargs: dict[str, object] = dict(zip(names, model.kernels()[:4], strict=True))
    kwargs.update(
        nngp_test_test=model.nngp_test_test, y_train=model.y, learning_rate=0.1, times=[1.0]
    )
    kwargs.update(change)
    with pytest.raises(ValueError, match=rf"^{name}"):
        predict_gd(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("discrete", [False, True])
def test_set_loss_sums_equal_sums_of_the_per_point_prediction(discrete: bool) -> None:
    """set_loss_sums (one pass over the rows, in blocks) gives the sums over the set of the
    squared error of predict_gd's mean and of its variance, at every time."""
    model = LinearModel(4)
    eta = 0.8 * max_learning_rate(model.ntk_train_train)
    times = [0, 1, 4, 37, math.inf] if discrete else [0.0, 0.3, 2.0, 25.0, math.inf]
    mean, cov = model.predict(model.y, eta, times, discrete)
    target = np.random.default_rng(5).normal(size=N_TEST)
    spectrum = train_spectrum(model.ntk_train_train)
    rows = [
        RowBlock(
            model.ntk_test_train[rows],
            model.nngp_test_train[rows],
            np.diag(model.nngp_test_test)[rows],
            target[rows],
        )
        for rows in (slice(0, 2), slice(2, 4), slice(4, None))
    ]
    filters = gd_filters(spectrum, eta, times, discrete)
    error, variance = set_loss_sums(spectrum, model.nngp_train_train, model.y, rows, filters)
    np.testing.assert_allclose(error, np.sum((mean - target) ** 2, axis=1), rtol=1e-12)
    expected = np.trace(cov, axis1=1, axis2=2)
    np.testing.assert_allclose(variance, expected, rtol=0, atol=1e-12 * expected[0])
    with pytest.raises(ValueError, match="filters"):
        set_loss_sums(spectrum, model.nngp_train_train, model.y, rows, filters[1:])
