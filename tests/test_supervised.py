"""Supervised-learning set-ups and infinite-width loss curves (docs/theory.md §5)."""

from __future__ import annotations

import suite  # noqa: F401  (enables float64)

# isort: split
import tracemalloc

import numpy as np
import pytest

from suite import networks, supervised
from suite.dynamics import predicted_losses
from suite.supervised import (
    convergence_step,
    infinite_width_curve_sets,
    infinite_width_curves,
    log_steps,
    make_problem,
    scale_target,
    split_basis,
    split_problem,
)
from suite.targets import TFIMQuench, build_target


@pytest.fixture(scope="module")
def problem():
    """TFIM 2x3 open quench, 24 train points, the paper's decoupled ReLU NNQS."""
    target = build_target(TFIMQuench(lx=2, ly=3, periodic=False))
    phi = scale_target(target.psi, "unit-rms")
    train, test = split_basis(phi.size, 24, seed=3)
    nnqs = networks.decoupled(networks.mlp(depth=1, width=8))
    return make_problem(nnqs, target.inputs, phi, train, test)


def test_split_is_deterministic_and_partitions_the_basis() -> None:
    train, test = split_basis(100, 30, seed=7)
    again, _ = split_basis(100, 30, seed=7)
    other, _ = split_basis(100, 30, seed=8)
    np.testing.assert_array_equal(train, again)
    assert not np.array_equal(train, other)
    assert np.all(np.diff(train) > 0)
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(100))
    with pytest.raises(ValueError, match="train_size"):
        split_basis(100, 0, seed=0)
    with pytest.raises(ValueError, match="train_size"):
        split_basis(100, 101, seed=0)


def test_log_steps_start_at_zero_and_reach_the_end() -> None:
    steps = log_steps(1000, 12)
    assert steps[0] == 0 and steps[-1] == 1000
    assert np.all(np.diff(steps) > 0)
    assert len(steps) <= 12
    with pytest.raises(ValueError, match="max_step"):
        log_steps(0, 5)
    with pytest.raises(ValueError, match="count"):
        log_steps(10, 1)


def test_target_scales() -> None:
    psi = np.full(16, 0.25 + 0j)
    assert np.linalg.norm(scale_target(psi, "unit-norm")) == pytest.approx(1.0)
    assert np.mean(np.abs(scale_target(psi, "unit-rms")) ** 2) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="target_scale"):
        scale_target(psi, "unit")  # type: ignore[arg-type]


def test_curves_start_at_the_prior_and_end_at_the_limit(problem) -> None:
    """t = 0: loss of the mean is mean|phi|^2 and the ensemble adds Var psi = 2 K(x, x);
    t = inf: the train losses vanish, the test losses are finite (docs/theory.md §5)."""
    eta = 0.5 * problem.eta_max
    curves = infinite_width_curves(problem, eta, np.asarray([0.0, np.inf]), discrete=False)
    phi_train = problem.phi[problem.train]
    prior = np.mean(
        problem.nngp_diagonal.uu[problem.train] + problem.nngp_diagonal.vv[problem.train]
    )
    assert curves.train_loss_of_mean[0] == pytest.approx(np.mean(np.abs(phi_train) ** 2))
    assert curves.train_mean_of_losses[0] == pytest.approx(
        curves.train_loss_of_mean[0] + prior, rel=1e-12
    )
    assert abs(curves.train_loss_of_mean[1]) < 1e-12
    assert abs(curves.train_mean_of_losses[1]) < 1e-10
    assert curves.test_mean_of_losses[1] > curves.test_loss_of_mean[1] > 0


def test_convergence_step_is_where_the_train_loss_crosses(problem) -> None:
    eta = 0.5 * problem.eta_max
    step = convergence_step(problem, eta, tolerance=1e-3)
    curves = infinite_width_curves(problem, eta, np.asarray([0.0, step, 0.97 * step]), False)
    start, at_step, before = curves.train_mean_of_losses
    assert at_step < 1e-3 * start <= before
    with pytest.raises(ValueError, match="does not fall"):
        convergence_step(problem, eta, tolerance=1e-3, limit=2)


def test_discrete_and_continuous_agree_at_small_learning_rates(problem) -> None:
    """E_t = (1 - eta lambda/B)^t tends to exp(-eta lambda t/B) as eta -> 0 at fixed eta t."""
    eta = 1e-3 * problem.eta_max
    steps = np.asarray([0, 500, 5000], dtype=float)
    continuous = infinite_width_curves(problem, eta, steps, discrete=False)
    discrete = infinite_width_curves(problem, eta, steps, discrete=True)
    np.testing.assert_allclose(
        discrete.test_mean_of_losses, continuous.test_mean_of_losses, rtol=1e-3
    )


@pytest.mark.parametrize("discrete", [False, True])
def test_set_losses_equal_the_per_point_prediction(
    problem, discrete: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The curves come from sums over the set (suite.dynamics.set_loss_sums), read in row
    blocks; they equal the losses of the per-point mean and variance (predict_nnqs) to
    rounding, relative to the start of each curve, whatever the block size."""
    eta = 0.5 * problem.eta_max
    steps = np.asarray([0, 1, 7, 60, 500, 4000, np.inf])
    monkeypatch.setattr(supervised, "ROW_BLOCK_ELEMENTS", 4 * problem.train.size * 5)  # 5 rows
    curves = infinite_width_curves(problem, eta, steps, discrete)
    on_train, on_test = problem.predict(eta, steps, discrete)
    expected = [
        *predicted_losses(on_train, problem.phi[problem.train]),
        *predicted_losses(on_test, problem.phi[problem.test]),
    ]
    names = ("train_loss_of_mean", "train_mean_of_losses", "test_loss_of_mean")
    for name, reference in zip((*names, "test_mean_of_losses"), expected, strict=True):
        np.testing.assert_allclose(
            getattr(curves, name), reference, rtol=0, atol=1e-13 * reference[0]
        )
    # several schedules at once give each its own curves
    many = infinite_width_curve_sets(
        problem, [(eta, steps, discrete), (0.1 * eta, steps[:3], True)]
    )
    np.testing.assert_allclose(many[0].test_mean_of_losses, curves.test_mean_of_losses, rtol=1e-13)
    alone = infinite_width_curves(problem, 0.1 * eta, steps[:3], True)
    np.testing.assert_allclose(many[1].train_loss_of_mean, alone.train_loss_of_mean, rtol=1e-13)


def test_set_losses_hold_one_row_block_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory of the test-set pass (TFIM 3x4, D = 4096, B = 16): a few row blocks, not
    the set's ``(2n, 2B)`` stacked kernels (which the per-point prediction holds several of)."""
    target = build_target(TFIMQuench(lx=3, ly=4, periodic=False))
    phi = scale_target(target.psi, "unit-rms")
    nnqs = networks.decoupled(networks.mlp(depth=1, width=8))
    problem = split_problem(nnqs, target.inputs, phi, 16, seed=0)
    monkeypatch.setattr(supervised, "ROW_BLOCK_ELEMENTS", 4 * 16 * 64)  # 64 points a block
    filters = problem.filters(0.5 * problem.eta_max, np.arange(50), discrete=True)
    stacked = (2 * problem.test.size) * (2 * problem.train.size) * 8  # one (2n, 2B) array
    tracemalloc.start()
    try:
        problem.losses(filters, problem.test)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < stacked / 4
    tracemalloc.start()
    try:
        problem.predict(0.5 * problem.eta_max, np.arange(50), discrete=True)
        assert tracemalloc.get_traced_memory()[1] > stacked  # the premise: it would show
    finally:
        tracemalloc.stop()
