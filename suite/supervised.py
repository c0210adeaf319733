"""Quantum-state supervised learning set-ups and their infinite-width loss curves
(docs/theory.md §5).

The pieces a dynamics study is made of, each a pure function of its arguments:
the train/test split of a basis, the target's scale, the logged steps, and the
infinite-width losses (train and test; loss of the mean, paper Eq. 16, and mean
of the losses, Eq. 17/18) of an NNQS trained by full-batch gradient descent.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np

from suite.dynamics import (
    NNQSPrediction,
    RowBlock,
    TrainSpectrum,
    gd_filters,
    max_learning_rate,
    predict_nnqs,
    set_loss_sums,
    train_spectrum,
)
from suite.kernels.gram import diagonal, gram
from suite.networks import NNQS
from suite.qsntk import PairKernel

TargetScale = Literal["unit-norm", "unit-rms"]
#: elements of one block of stacked kernel rows (``2 x points x 2B``) in the set losses:
#: 16 MB of float64, so a set of any size costs a few such blocks of memory
ROW_BLOCK_ELEMENTS = 1 << 21


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


def _stacked(blocks: PairKernel) -> np.ndarray:
    """``[[uu, uv], [vu, vv]]``: the real kernel of the stacked outputs ``(u, v)``."""
    return np.block([[blocks.uu, blocks.uv], [blocks.vu, blocks.vv]])


@dataclass(frozen=True)
class Problem:
    """A supervised-learning problem: inputs, target, split, and its infinite-width kernels.

    ``spectrum`` is the eigendecomposition of :attr:`train_ntk_block`.
    """

    inputs: np.ndarray
    phi: np.ndarray
    train: np.ndarray
    test: np.ndarray
    nngp: PairKernel  # K(basis, train) blocks, (D, B)
    ntk: PairKernel  # Theta(basis, train) blocks, (D, B)
    nngp_diagonal: PairKernel  # K(x, x) blocks, (D,)
    spectrum: TrainSpectrum

    @property
    def train_ntk_block(self) -> np.ndarray:
        """The ``2B x 2B`` block QS-NTK of ``(u, v)`` on the train set (docs/theory.md §4)."""
        return _stacked(_rows(self.ntk, self.train))

    @property
    def eta_max(self) -> float:
        """``2B / lambda_max`` of :attr:`train_ntk_block` (docs/theory.md §5)."""
        # 2B rows, loss normalised by B
        return max_learning_rate(self.spectrum) / 2

    def _row_blocks(self, points: np.ndarray) -> Iterator[RowBlock]:
        """The stacked real rows (u rows, then v rows) of ``points``, a few at a time."""
        size = max(1, ROW_BLOCK_ELEMENTS // (4 * self.train.size))
        for start in range(0, points.size, size):
            chunk = points[start : start + size]
            ntk, nngp = _rows(self.ntk, chunk), _rows(self.nngp, chunk)
            diagonal = _rows(self.nngp_diagonal, chunk)
            phi = self.phi[chunk]
            yield RowBlock(
                _stacked(ntk),
                _stacked(nngp),
                np.concatenate([diagonal.uu, diagonal.vv]),
                np.concatenate([phi.real, phi.imag]),
            )

    def filters(self, learning_rate: float, steps: np.ndarray, discrete: bool) -> np.ndarray:
        """``(2B, T)`` GD filters of the train QS-NTK at ``steps`` (:func:`gd_filters`)."""
        return gd_filters(self.spectrum, learning_rate, steps, discrete, int(self.train.size))

    def losses(self, filters: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Infinite-width loss of the mean (Eq. 16) and mean of the losses (Eq. 17/18) on
        ``points`` for each column of ``filters`` (:meth:`filters`), ``(T,)`` each
        (docs/theory.md §5; :func:`suite.dynamics.set_loss_sums`: one pass over the points)."""
        if points.size == 0:
            return np.full(filters.shape[1], np.nan), np.full(filters.shape[1], np.nan)
        error, variance = set_loss_sums(
            self.spectrum,
            _stacked(_rows(self.nngp, self.train)),
            np.concatenate([self.phi[self.train].real, self.phi[self.train].imag]),
            self._row_blocks(points),
            filters,
        )
        loss_of_mean = error / points.size
        return loss_of_mean, loss_of_mean + variance / points.size

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
    nnqs: NNQS,
    inputs: np.ndarray,
    phi: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    spectrum: TrainSpectrum | None = None,
) -> Problem:
    """The infinite-width kernels of ``nnqs`` between the basis and the train set.

    ``spectrum``: that of the train-set QS-NTK when already known (e.g. from an earlier
    :class:`Problem` of the same split), else computed.
    """
    nngp, ntk = (
        PairKernel(*(np.asarray(b) for b in k)) for k in gram(nnqs.infinite, inputs, inputs[train])
    )
    nngp_diagonal = PairKernel(*(np.asarray(b) for b in diagonal(nnqs.infinite, inputs)[0]))
    if spectrum is None:
        spectrum = train_spectrum(_stacked(_rows(ntk, train)))
    return Problem(inputs, phi, train, test, nngp, ntk, nngp_diagonal, spectrum)


def split_problem(
    nnqs: NNQS,
    inputs: np.ndarray,
    phi: np.ndarray,
    train_size: int,
    seed: int,
    spectrum: TrainSpectrum | None = None,
) -> Problem:
    """:func:`make_problem` on ``train_size`` random train points (:func:`split_basis`)."""
    train, test = split_basis(np.size(phi), train_size, seed)
    return make_problem(nnqs, inputs, phi, train, test, spectrum)


#: an array type with arithmetic (np.ndarray, xarray.DataArray)
ArrayT = TypeVar("ArrayT", bound=Any)

#: the four loss curves of a supervised run (docs/theory.md §5)
CURVES = ("train_loss_of_mean", "train_mean_of_losses", "test_loss_of_mean", "test_mean_of_losses")


@dataclass(frozen=True)
class LossCurves:
    """Losses at ``steps`` (docs/theory.md §5): loss of the mean, mean of the losses;
    train, test."""

    steps: np.ndarray
    train_loss_of_mean: np.ndarray
    train_mean_of_losses: np.ndarray
    test_loss_of_mean: np.ndarray
    test_mean_of_losses: np.ndarray


def relative_deviation(finite: ArrayT, infinite: ArrayT) -> ArrayT:
    """``|finite - infinite| / infinite`` elementwise (NumPy or xarray, broadcast by the
    caller's rules): how far a finite-width loss is from its infinite-width prediction."""
    return abs(finite - infinite) / infinite


#: the fewest widths a width exponent is fitted to (two points leave no residual)
MIN_EXPONENT_WIDTHS = 3


@dataclass(frozen=True)
class WidthExponent:
    """A fitted power law ``deviation ~ width^exponent`` and the standard error of the
    exponent."""

    exponent: float
    stderr: float

    def __str__(self) -> str:
        return f"{self.exponent:.3g} ± {self.stderr:.2g}"


def width_exponent(widths: Sequence[int], deviations: Sequence[float]) -> WidthExponent | None:
    """Slope ``b`` of the least-squares line ``log(deviation) = a + b log(width)`` and its
    standard error ``sqrt(sum(r^2) / (n - 2) / sum((x - mean x)^2))`` (``r`` the residuals,
    ``x = log(width)``, ``n`` widths; finite-width kernels approach their limit as
    ``width^(-1/2)``, docs/theory.md §4).

    ``None`` with fewer than :data:`MIN_EXPONENT_WIDTHS` widths or a deviation that is not
    finite and positive (no power law to fit).
    """
    x, y = np.log(np.asarray(widths, float)), np.asarray(deviations, float)
    if x.size < MIN_EXPONENT_WIDTHS or not np.all(np.isfinite(y) & (y > 0)):
        return None
    slope, intercept = np.polyfit(x, np.log(y), 1)
    residuals = np.log(y) - (intercept + slope * x)
    variance = residuals @ residuals / (x.size - 2) / np.sum((x - x.mean()) ** 2)
    return WidthExponent(float(slope), float(np.sqrt(variance)))


def infinite_width_curves(
    problem: Problem, learning_rate: float, steps: np.ndarray, discrete: bool
) -> LossCurves:
    """Infinite-width loss curves; ``steps`` may include ``inf`` (the t -> infinity limit)."""
    return infinite_width_curve_sets(problem, [(learning_rate, steps, discrete)])[0]


def infinite_width_curve_sets(
    problem: Problem, schedules: Sequence[tuple[float, np.ndarray, bool]]
) -> list[LossCurves]:
    """:func:`infinite_width_curves` of each ``(learning_rate, steps, discrete)`` schedule,
    all from one pass over the train set and one over the test set."""
    filters = [problem.filters(rate, steps, discrete) for rate, steps, discrete in schedules]
    stacked = np.concatenate(filters, axis=1)
    bounds = np.cumsum([f.shape[1] for f in filters])[:-1]
    losses = [*problem.losses(stacked, problem.train), *problem.losses(stacked, problem.test)]
    parts = [np.split(values, bounds) for values in losses]
    return [
        LossCurves(np.asarray(steps, dtype=float), *(part[i] for part in parts))
        for i, (_, steps, _) in enumerate(schedules)
    ]


def convergence_step(
    problem: Problem, learning_rate: float, tolerance: float = 1e-3, limit: int = 10**7
) -> int:
    """First step at which the infinite-width train mean-of-losses is below ``tolerance`` x start.

    Read off one prediction on a geometric grid of 2% spacing (the curve is
    non-increasing), so the answer is within 2% of the exact crossing, rounded up.
    """
    grid = np.unique(np.ceil(np.geomspace(1, limit, int(np.log(limit) / np.log(1.02)) + 1)))
    times = np.concatenate([[0.0], grid])
    _, mean_of_losses = problem.losses(problem.filters(learning_rate, times, False), problem.train)
    ratio = mean_of_losses[1:] / mean_of_losses[0]
    below = np.flatnonzero(ratio < tolerance)
    if below.size == 0:
        raise ValueError(
            f"the train loss does not fall below {tolerance} of its start within {limit} steps "
            "(learning_rate too small or Theta(X, X) ill-conditioned)"
        )
    return int(grid[below[0]])
