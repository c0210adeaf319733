"""Infinite-width gradient-descent predictions (docs/theory.md §5).

For the loss ``L = (1/(2B)) sum_b (g(x_b) - y_b)^2`` and full-batch gradient
descent with step ``eta``, a linearised network evolves as

    g_t(x) = g_0(x) + Theta(x, X) Theta(X, X)^-1 (I - E_t) (y - g_0(X)),

``E_t = exp(-eta Theta(X,X) t / B)`` (continuous time) or
``(I - eta Theta(X,X) / B)^t`` (exactly t discrete steps). With ``g_0`` a centred
GP with kernel K and ``T_t(x) = Theta(x, X) Theta(X, X)^-1 (I - E_t)``, the
ensemble mean is ``T_t(x) y`` and the covariance
``K(x, x') + T_t(x) K(X, X) T_t(x')^T - T_t(x) K(X, x') - K(x, X) T_t(x')^T``.

Numerics: float64, an eigendecomposition of ``Theta(X, X)`` and never an
explicit inverse; ``(1 - E_t(lambda)) / lambda`` is evaluated with ``expm1`` /
``log1p`` so small eigenvalues lose no digits, and ``t = inf`` is the limit
``E_t -> 0``. Eigenvalues at or below ``rtol * lambda_max`` span the null space
of ``Theta(X, X)``; for a positive semi-definite kernel ``Theta(x, X)`` vanishes
on it too, so the prediction is taken on the range and the rank deficiency is
reported in :class:`TrainSpectrum`, never silently.

Two routes: :func:`predict_gd` / :func:`predict_nnqs` give the mean and variance at
every point of a set (``O(T n B)`` memory and ``O(T n B^2)`` work); the losses over a
set need only sums over it, and :func:`set_loss_sums` gets them from one pass over the
set's kernel rows in blocks (``O(n B^2 + T B^2)`` work, ``O(B^2)`` memory besides a
block), which is what lets the loss curves of a 2^16-state basis at B = 1024 be
prepared in a minute.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from suite.qsntk import PairKernel

#: eigenvalues of Theta(X, X) at or below this fraction of the largest are null
NULL_RTOL = 1e-12


@dataclass(frozen=True)
class TrainSpectrum:
    """Eigendecomposition ``Theta(X, X) = V diag(lam) V^T`` with its null space marked."""

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    null: np.ndarray

    @property
    def smallest(self) -> float:
        return float(self.eigenvalues[0])

    @property
    def largest(self) -> float:
        return float(self.eigenvalues[-1])

    @property
    def rank(self) -> int:
        return int(np.count_nonzero(~self.null))

    @property
    def positive_definite(self) -> bool:
        return not bool(self.null.any())


def train_spectrum(ntk_train_train: np.ndarray, rtol: float = NULL_RTOL) -> TrainSpectrum:
    """Spectrum of ``Theta(X, X)``; warns (with the smallest eigenvalue) if it is not PD."""
    theta = np.asarray(ntk_train_train, dtype=np.float64)
    if theta.ndim != 2 or theta.shape[0] != theta.shape[1]:
        raise ValueError(f"ntk_train_train must be a square matrix, got shape {theta.shape}")
    if not np.all(np.isfinite(theta)):
        raise ValueError("ntk_train_train has non-finite entries")
    eigenvalues, eigenvectors = np.linalg.eigh((theta + theta.T) / 2)
    null = eigenvalues <= rtol * max(eigenvalues[-1], 0.0)
    spectrum = TrainSpectrum(eigenvalues, eigenvectors, null)
    if not spectrum.positive_definite:
        warnings.warn(
            f"Theta(X, X) is not positive definite: smallest eigenvalue {spectrum.smallest:.3e}, "
            f"rank {spectrum.rank} of {len(eigenvalues)} (duplicate train points?); "
            "predicting on its range",
            RuntimeWarning,
            stacklevel=2,
        )
    return spectrum


def max_learning_rate(ntk_train_train: np.ndarray | TrainSpectrum) -> float:
    """``eta_max = 2B / lambda_max(Theta(X, X))`` (docs/theory.md §5), from a matrix or spectrum."""
    spectrum = (
        ntk_train_train
        if isinstance(ntk_train_train, TrainSpectrum)
        else train_spectrum(ntk_train_train)
    )
    return 2.0 * spectrum.eigenvalues.size / spectrum.largest


def _filter(
    spectrum: TrainSpectrum, learning_rate: float, batch: int, time: float, discrete: bool
) -> np.ndarray:
    """``(1 - E_t(lambda)) / lambda`` on the range of Theta(X, X), 0 on its null space."""
    lam = np.where(spectrum.null, 1.0, spectrum.eigenvalues)
    rate = learning_rate * lam / batch
    if math.isinf(time):
        if discrete and np.any(np.abs(1.0 - rate[~spectrum.null]) >= 1.0):
            raise ValueError(
                f"learning_rate={learning_rate} diverges in discrete time: it must be below "
                f"eta_max = {2.0 * batch / spectrum.largest:.6g}"
            )
        decayed = np.ones_like(lam)
    elif discrete:
        # 1 - (1 - rate)^t without cancellation: -expm1(t log1p(-rate)), sign-aware.
        base = 1.0 - rate
        # |base|**t, not exp(t log|base|): the latter is nan at t = 0 when base = 0
        # (eta = eta_max / 2 puts lambda_max's rate at exactly 1).
        power = np.sign(base) ** time * np.abs(base) ** time
        small = np.abs(rate) < 0.5
        decayed = np.where(
            small, -np.expm1(time * np.log1p(-np.where(small, rate, 0.0))), 1 - power
        )
    else:
        decayed = -np.expm1(-rate * time)
    return np.where(spectrum.null, 0.0, decayed / lam)


def _check_times(times: Sequence[float], discrete: bool) -> list[float]:
    values = [float(t) for t in times]
    for t in values:
        if math.isnan(t) or t < 0:
            raise ValueError(f"times must be non-negative (inf allowed), got {t}")
        if discrete and not math.isinf(t) and t != round(t):
            raise ValueError(f"times must be whole numbers of steps in discrete time, got {t}")
    return values


def predict_gd(
    ntk_train_train: np.ndarray,
    ntk_test_train: np.ndarray,
    nngp_train_train: np.ndarray,
    nngp_test_train: np.ndarray,
    nngp_test_test: np.ndarray | None,
    y_train: np.ndarray,
    learning_rate: float,
    times: Sequence[float],
    discrete: bool = False,
    batch_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Ensemble mean ``(T, n)`` and covariance ``(T, n, n)`` of a GD-trained ensemble.

    ``y_train`` may be real or complex (the prediction is linear in it); the
    covariance is of each real part of the output (docs/theory.md §5). Pass
    ``nngp_test_test=None`` to skip the covariance; pass its diagonal (1-d) to get
    variances ``(T, n)`` only. ``batch_size`` is the B of the loss's ``1/(2B)``
    (default: the number of rows of ``Theta(X, X)``; :func:`predict_nnqs` stacks the
    real and imaginary parts, 2B rows for B points).
    """
    # over 60 lines: the shape checks, then the eigenbasis filter at each time
    spectrum = train_spectrum(ntk_train_train)
    theta_xX = np.asarray(ntk_test_train, dtype=np.float64)
    k_XX = np.asarray(nngp_train_train, dtype=np.float64)
    k_xX = np.asarray(nngp_test_train, dtype=np.float64)
    y = np.asarray(y_train)
    rows = spectrum.eigenvalues.size
    batch = rows if batch_size is None else batch_size
    if theta_xX.shape[1] != rows or k_xX.shape != theta_xX.shape or k_XX.shape != (rows, rows):
        raise ValueError(
            "kernel shapes disagree: ntk_test_train and nngp_test_train must be (n, B) and "
            f"nngp_train_train (B, B) with B={rows}; got {theta_xX.shape}, {k_xX.shape}, "
            f"{k_XX.shape}"
        )
    if y.shape != (rows,):
        raise ValueError(f"y_train must have shape ({rows},), got {y.shape}")
    if not (isinstance(batch, int) and batch > 0):
        raise ValueError(f"batch_size must be a positive integer, got {batch!r}")
    if not (math.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate must be a positive number, got {learning_rate}")
    values = _check_times(times, discrete)

    vectors = spectrum.eigenvectors
    theta_v = theta_xX @ vectors  # (n, B) in the eigenbasis
    y_v = vectors.T @ y
    k_v = vectors.T @ k_XX @ vectors
    kx_v = k_xX @ vectors
    means, covariances = [], []
    for t in values:
        f = _filter(spectrum, learning_rate, batch, t, discrete)
        transfer = theta_v * f  # T_t(x) in the eigenbasis, (n, B)
        means.append(transfer @ y_v)
        if nngp_test_test is None:
            continue
        k_xx = np.asarray(nngp_test_test, dtype=np.float64)
        if k_xx.ndim == 1:
            cross = np.einsum("nb,nb->n", transfer, kx_v)
            quadratic = np.sum((transfer @ k_v) * transfer, axis=1)
            covariances.append(k_xx + quadratic - 2 * cross)
        else:
            cross = transfer @ kx_v.T
            covariances.append(k_xx + transfer @ k_v @ transfer.T - cross - cross.T)
    return np.stack(means), (np.stack(covariances) if covariances else None)


def _stack(blocks: PairKernel) -> np.ndarray:
    """``[[uu, uv], [vu, vv]]`` as one real matrix: the coupled kernel of ``(u, v)``."""
    return np.block(
        [
            [np.asarray(blocks.uu), np.asarray(blocks.uv)],
            [np.asarray(blocks.vu), np.asarray(blocks.vv)],
        ]
    )


@dataclass(frozen=True)
class NNQSPrediction:
    """Infinite-width ensemble of ``psi_t = u_t + i v_t`` at a list of times (docs/theory.md §5).

    ``mean`` is ``(T, n)`` complex; ``variance`` is ``Var u + Var v = E|psi - mean|^2``,
    ``(T, n)``.
    """

    times: np.ndarray
    mean: np.ndarray
    variance: np.ndarray


def predict_nnqs(
    ntk_train_train: PairKernel,
    ntk_test_train: PairKernel,
    nngp_train_train: PairKernel,
    nngp_test_train: PairKernel,
    nngp_test_diagonal: PairKernel,
    y_train: np.ndarray,
    learning_rate: float,
    times: Sequence[float],
    discrete: bool = False,
) -> NNQSPrediction:
    """Mean and variance of a GD-trained NNQS ensemble through its full QS-NTK
    (docs/theory.md §4-§5).

    For the loss ``(1/(2B)) sum_b |psi_b - phi_b|^2`` the real parameters flow as
    ``d/dt [u; v] = -(eta/B) [[Theta_uu, Theta_uv], [Theta_vu, Theta_vv]] [u - Re phi; v - Im phi]``
    on the train set, which is the QS-NTK equation
    ``d/dt [psi; conj psi] = -eta sum_b Omega(x, x_b) [dl/d conj psi_b; dl/d psi_b]``
    written in real coordinates. The coupled (shared-trunk, complex-output) case is
    therefore one real kernel regression on ``2B`` outputs with that block kernel;
    decoupled networks have zero off-diagonal blocks. ``nngp_test_diagonal`` holds
    the covariance blocks at coincident test points (1-d ``uu`` and ``vv``; ``uv``,
    ``vu`` are not needed for ``Var u + Var v``).
    """
    batch = np.shape(ntk_train_train.uu)[0]
    y = np.asarray(y_train)
    if y.shape != (batch,):
        raise ValueError(f"y_train must have shape ({batch},), got {y.shape}")
    diagonal = np.concatenate(
        [np.asarray(nngp_test_diagonal.uu), np.asarray(nngp_test_diagonal.vv)]
    )
    mean, variance = predict_gd(
        _stack(ntk_train_train),
        _stack(ntk_test_train),
        _stack(nngp_train_train),
        _stack(nngp_test_train),
        diagonal,
        np.concatenate([y.real, y.imag]),
        learning_rate,
        times,
        discrete=discrete,
        batch_size=batch,
    )
    assert variance is not None
    n = diagonal.size // 2
    return NNQSPrediction(
        np.asarray([float(t) for t in times]),
        mean[:, :n] + 1j * mean[:, n:],
        variance[:, :n] + variance[:, n:],
    )


def predicted_losses(prediction: NNQSPrediction, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Loss of the mean (paper Eq. 16) and mean of the losses (Eq. 17/18) on a set, ``(T,)`` each.

    ``L_mean = (1/|S|) sum_x |mu_t(x) - phi(x)|^2`` and
    ``L_ens = L_mean + (1/|S|) sum_x Var psi_t(x)`` (docs/theory.md §5).
    """
    phi = np.asarray(phi)
    if phi.shape != prediction.mean.shape[1:]:
        raise ValueError(f"phi must have shape {prediction.mean.shape[1:]}, got {phi.shape}")
    loss_of_mean = np.mean(np.abs(prediction.mean - phi) ** 2, axis=1)
    return loss_of_mean, loss_of_mean + np.mean(prediction.variance, axis=1)


class RowBlock(NamedTuple):
    """Rows of a set in the stacked real form of :func:`predict_gd` (one output per row).

    ``ntk (r, R)`` and ``nngp (r, R)`` against the ``R`` train outputs, ``nngp_diagonal
    (r,)`` the prior variance of each row, ``target (r,)`` its target value.
    """

    ntk: np.ndarray
    nngp: np.ndarray
    nngp_diagonal: np.ndarray
    target: np.ndarray


def gd_filters(
    spectrum: TrainSpectrum,
    learning_rate: float,
    times: Sequence[float],
    discrete: bool = False,
    batch_size: int | None = None,
) -> np.ndarray:
    """``(R, T)``: the filter ``(1 - E_t(lambda)) / lambda`` of each eigenvalue at each time.

    ``T_t(x) = Theta(x, X) V diag(f_t) V^T`` (docs/theory.md §5); 0 on the null space;
    ``batch_size`` as in :func:`predict_gd`.
    """
    batch = spectrum.eigenvalues.size if batch_size is None else batch_size
    if not (isinstance(batch, int) and batch > 0):
        raise ValueError(f"batch_size must be a positive integer, got {batch!r}")
    if not (math.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate must be a positive number, got {learning_rate}")
    values = _check_times(times, discrete)
    columns = [_filter(spectrum, learning_rate, batch, t, discrete) for t in values]
    return np.stack(columns, axis=1) if columns else np.zeros((spectrum.eigenvalues.size, 0))


def set_loss_sums(
    spectrum: TrainSpectrum,
    nngp_train_train: np.ndarray,
    y_train: np.ndarray,
    rows: Iterable[RowBlock],
    filters: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Sums over a set's rows of ``(mu_t - target)^2`` and of ``Var_t``, ``(T,)`` each.

    The set-level quantities of docs/theory.md §5 without the ``(n, n)`` covariance or the
    ``(T, n)`` per-point prediction of :func:`predict_gd` (same kernels, ``spectrum`` of
    ``Theta(X, X)``), for each column ``f_t`` of ``filters`` (:func:`gd_filters`; columns
    of several learning rates and time modes may be stacked): with
    ``T_t(x) = Theta(x, X) V diag(f_t) V^T``, summed over the rows x of the set,

        sum_x Var_t(x) = sum_x K(x, x) + f_t^T [(V^T K(X, X) V) o G] f_t - 2 f_t . c,
        G = sum_x (V^T Theta(X, x)) (Theta(x, X) V),  c = diag sum_x V^T Theta(X, x) K(x, X) V,

    so each column costs ``O(R^2)`` after one pass over the rows (``O(n R^2)``), which
    ``rows`` may deliver in blocks: memory ``O(r R)``, never ``O(n R)``. ``G`` is summed
    from ``Theta(x, X) V`` (not formed as ``V^T (sum Theta^T Theta) V``, which would lose
    ``lambda_max / lambda_min`` more digits in the slow modes), and the squared error of
    the mean from ``mu_t(x)`` row by row (no cancellation when it is small).
    """
    vectors = spectrum.eigenvectors
    size = vectors.shape[0]
    k_train = np.asarray(nngp_train_train, dtype=np.float64)
    y = np.asarray(y_train, dtype=np.float64)
    if k_train.shape != (size, size) or y.shape != (size,) or filters.shape[0] != size:
        raise ValueError(
            f"nngp_train_train must be ({size}, {size}), y_train ({size},) and filters "
            f"({size}, T) for a spectrum of {size} train outputs; got {k_train.shape}, "
            f"{y.shape} and {filters.shape}"
        )
    weights = filters * (vectors.T @ y)[:, None]  # mu_t(x) = Theta(x, X) V weights[:, t]
    gram = np.zeros((size, size))
    cross = np.zeros(size)
    error = np.zeros(filters.shape[1])
    prior = 0.0
    for block in rows:
        theta_v = np.asarray(block.ntk, dtype=np.float64) @ vectors
        kx_v = np.asarray(block.nngp, dtype=np.float64) @ vectors
        mean = theta_v @ weights
        error += np.sum((mean - np.asarray(block.target)[:, None]) ** 2, axis=0)
        gram += theta_v.T @ theta_v
        cross += np.einsum("rb,rb->b", theta_v, kx_v)
        prior += float(np.sum(block.nngp_diagonal))
    quadratic = np.sum(filters * (((vectors.T @ k_train @ vectors) * gram) @ filters), axis=0)
    return error, prior + quadratic - 2 * (cross @ filters)
