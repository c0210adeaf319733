"""Infinite-width gradient-descent predictions (theory.md §5).

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
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

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
    """``eta_max = 2B / lambda_max(Theta(X, X))`` (theory.md §5), from a matrix or spectrum."""
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
        power = np.sign(base) ** time * np.exp(time * np.log(np.abs(base)))
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
) -> tuple[np.ndarray, np.ndarray | None]:
    """Ensemble mean ``(T, n)`` and covariance ``(T, n, n)`` of a GD-trained ensemble.

    ``y_train`` may be real or complex (the prediction is linear in it); the
    covariance is of each real part of the output (theory.md §5). Pass
    ``nngp_test_test=None`` to skip the covariance; pass its diagonal (1-d) to get
    variances ``(T, n)`` only.
    """
    spectrum = train_spectrum(ntk_train_train)
    theta_xX = np.asarray(ntk_test_train, dtype=np.float64)
    k_XX = np.asarray(nngp_train_train, dtype=np.float64)
    k_xX = np.asarray(nngp_test_train, dtype=np.float64)
    y = np.asarray(y_train)
    batch = spectrum.eigenvalues.size
    if theta_xX.shape[1] != batch or k_xX.shape != theta_xX.shape or k_XX.shape != (batch, batch):
        raise ValueError(
            "kernel shapes disagree: ntk_test_train and nngp_test_train must be (n, B) and "
            f"nngp_train_train (B, B) with B={batch}; got {theta_xX.shape}, {k_xX.shape}, "
            f"{k_XX.shape}"
        )
    if y.shape != (batch,):
        raise ValueError(f"y_train must have shape ({batch},), got {y.shape}")
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
            covariances.append(k_xx + np.einsum("nb,bc,nc->n", transfer, k_v, transfer) - 2 * cross)
        else:
            cross = transfer @ kx_v.T
            covariances.append(k_xx + transfer @ k_v @ transfer.T - cross - cross.T)
    return np.stack(means), (np.stack(covariances) if covariances else None)
