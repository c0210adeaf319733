"""Quantum-state supervised learning set-ups and their infinite-width loss curves (theory.md §5).

The pieces a dynamics study is made of, each a pure function of its arguments:
the train/test split of a basis, the target's scale, the logged steps, and the
infinite-width losses (train and test; loss of the mean, paper Eq. 16, and mean
of the losses, Eq. 17/18) of an NNQS trained by full-batch gradient descent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from suite.dynamics import (
    NNQSPrediction,
    max_learning_rate,
    predict_nnqs,
    predicted_losses,
    train_spectrum,
)
from suite.kernels.gram import diagonal, gram
from suite.kernels.qsntk import PairKernel
from suite.networks import NNQS

TargetScale = Literal["unit-norm", "unit-rms"]


def split_basis(dimension: int, train_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train indices drawn uniformly without replacement, and the test complement.

    Deterministic in ``(dimension, train_size, seed)`` (NumPy's PCG64).
    """
    if not (isinstance(train_size, int) and 0 < train_size <= dimension):
        raise ValueError(f"train_size must be an integer in [1, {dimension}], got {train_size!r}")
    rng = np.random.default_rng([seed, dimension, train_size])
    train = np.sort(rng.choice(dimension, size=train_size, replace=False))
    return train, np.setdiff1d(np.arange(dimension), train)


def scale_target(psi: np.ndarray, scale: TargetScale) -> np.ndarray:
    """The target ``phi``: the normalised state (``unit-norm``) or ``sqrt(D) psi`` (``unit-rms``).

    ``unit-rms`` gives amplitudes of mean square 1, the scale of a network's prior
    (``K(x, x)`` of order 1), so target and ensemble variance weigh alike in the losses.
    """
    if scale == "unit-norm":
        return np.asarray(psi)
    if scale == "unit-rms":
        return np.sqrt(np.size(psi)) * np.asarray(psi)
    raise ValueError(f"target_scale must be 'unit-norm' or 'unit-rms', got {scale!r}")


def log_steps(max_step: int, count: int) -> np.ndarray:
    """Step 0 and about ``count`` log-spaced integer steps up to ``max_step``, unique, ascending."""
    if not (isinstance(max_step, int) and max_step >= 1):
        raise ValueError(f"max_step must be a positive integer, got {max_step!r}")
    if not (isinstance(count, int) and count >= 2):
        raise ValueError(f"count must be an integer >= 2, got {count!r}")
    grid = np.unique(np.rint(np.geomspace(1, max_step, count - 1)).astype(np.int64))
    return np.concatenate([[0], grid])


def _rows(blocks: PairKernel, rows: np.ndarray) -> PairKernel:
    return PairKernel(*(np.asarray(block)[rows] for block in blocks))


@dataclass(frozen=True)
class Problem:
    """A supervised-learning problem: inputs, target, split, and its infinite-width kernels."""

    inputs: np.ndarray
    phi: np.ndarray
    train: np.ndarray
    test: np.ndarray
    nngp: PairKernel  # K(basis, train) blocks, (D, B)
    ntk: PairKernel  # Theta(basis, train) blocks, (D, B)
    nngp_diagonal: PairKernel  # K(x, x) blocks, (D,)

    @property
    def train_ntk_block(self) -> np.ndarray:
        """The ``2B x 2B`` block QS-NTK of ``(u, v)`` on the train set (theory.md §4)."""
        ntk = _rows(self.ntk, self.train)
        return np.block([[ntk.uu, ntk.uv], [ntk.vu, ntk.vv]])

    @property
    def eta_max(self) -> float:
        """``2B / lambda_max`` of :attr:`train_ntk_block` (theory.md §5)."""
        # 2B rows, loss normalised by B
        return max_learning_rate(train_spectrum(self.train_ntk_block)) / 2

    def predict(
        self, learning_rate: float, steps: np.ndarray, discrete: bool, test: bool = True
    ) -> tuple[NNQSPrediction, NNQSPrediction | None]:
        """Infinite-width ensembles on the train set and (unless not ``test``) the test set."""
        train_ntk, train_nngp = _rows(self.ntk, self.train), _rows(self.nngp, self.train)

        def on(rows: np.ndarray) -> NNQSPrediction:
            return predict_nnqs(
                train_ntk,
                _rows(self.ntk, rows),
                train_nngp,
                _rows(self.nngp, rows),
                _rows(self.nngp_diagonal, rows),
                self.phi[self.train],
                learning_rate,
                steps,
                discrete=discrete,
            )

        return on(self.train), (on(self.test) if test else None)


def make_problem(
    nnqs: NNQS, inputs: np.ndarray, phi: np.ndarray, train: np.ndarray, test: np.ndarray
) -> Problem:
    """The infinite-width kernels of ``nnqs`` between the basis and the train set."""
    nngp, ntk = gram(nnqs.infinite, inputs, inputs[train])
    nngp_diagonal = diagonal(nnqs.infinite, inputs)[0]
    as_numpy = lambda blocks: PairKernel(*(np.asarray(b) for b in blocks))  # noqa: E731
    return Problem(inputs, phi, train, test, as_numpy(nngp), as_numpy(ntk), as_numpy(nngp_diagonal))


def split_problem(
    nnqs: NNQS, inputs: np.ndarray, phi: np.ndarray, train_size: int, seed: int
) -> Problem:
    """:func:`make_problem` on ``train_size`` random train points (:func:`split_basis`)."""
    train, test = split_basis(np.size(phi), train_size, seed)
    return make_problem(nnqs, inputs, phi, train, test)


@dataclass(frozen=True)
class LossCurves:
    """Losses at ``steps`` (theory.md §5): loss of the mean, mean of the losses; train, test."""

    steps: np.ndarray
    train_loss_of_mean: np.ndarray
    train_mean_of_losses: np.ndarray
    test_loss_of_mean: np.ndarray
    test_mean_of_losses: np.ndarray

    def as_dict(self) -> dict[str, list[float]]:
        return {name: np.asarray(value).tolist() for name, value in vars(self).items()}


def infinite_width_curves(
    problem: Problem, learning_rate: float, steps: np.ndarray, discrete: bool
) -> LossCurves:
    """Infinite-width loss curves; ``steps`` may include ``inf`` (the t -> infinity limit)."""
    on_train, on_test = problem.predict(learning_rate, steps, discrete)
    assert on_test is not None
    train_mean, train_ens = predicted_losses(on_train, problem.phi[problem.train])
    test_mean, test_ens = predicted_losses(on_test, problem.phi[problem.test])
    return LossCurves(np.asarray(steps, dtype=float), train_mean, train_ens, test_mean, test_ens)


def convergence_step(
    problem: Problem, learning_rate: float, tolerance: float = 1e-3, limit: int = 10**7
) -> int:
    """First step at which the infinite-width train mean-of-losses is below ``tolerance`` x start.

    Read off one prediction on a geometric grid of 2% spacing (the curve is
    non-increasing), so the answer is within 2% of the exact crossing, rounded up.
    """
    grid = np.unique(np.ceil(np.geomspace(1, limit, int(np.log(limit) / np.log(1.02)) + 1)))
    times = np.concatenate([[0.0], grid])
    on_train, _ = problem.predict(learning_rate, times, discrete=False, test=False)
    _, mean_of_losses = predicted_losses(on_train, problem.phi[problem.train])
    ratio = mean_of_losses[1:] / mean_of_losses[0]
    below = np.flatnonzero(ratio < tolerance)
    if below.size == 0:
        raise ValueError(
            f"the train loss does not fall below {tolerance} of its start within {limit} steps "
            "(learning_rate too small or Theta(X, X) ill-conditioned)"
        )
    return int(grid[below[0]])
