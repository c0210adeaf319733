"""Ensemble uncertainty in the figures and reports (analysis/figures.py, analysis/report.py):
the width exponent is fitted with 3 or more widths only and given with the standard error
of its slope; finite-width points carry standard errors (a debiased loss of the mean: the
delete-a-shard jackknife error stored by the aggregation); width axes have plain ticks."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import suite  # noqa: F401  (first: enables JAX float64)

# isort: split

import matplotlib.pyplot as plt
import numpy as np
import pytest
import xarray as xr
from scipy import stats
from stores import tiny_dynamics

from analysis.figures import deviation_figure
from nnqs import cli
from suite.store import SweepStore
from suite.supervised import CURVES, width_exponent
from suite.training import SUMS, EnsembleStats, combine, jackknife_sem, summarize

KERNELS = """
[sweep]
name = "ker"
study = "kernels"
[target]
model = "tfim"
lx = 2
ly = 2
[grid]
widths = {widths}
train_sizes = [4]
[ensemble]
members = 4
shard_size = 4
"""


def test_width_exponent_needs_three_widths_and_gives_the_slope_error() -> None:
    assert width_exponent([64, 256], [0.1, 0.05]) is None
    assert width_exponent([64, 256, 1024], [0.1, 0.0, 0.02]) is None  # no power law
    exact = width_exponent([64, 256, 1024], [8 * w**-0.5 for w in (64, 256, 1024)])
    assert exact is not None
    assert math.isclose(exact.exponent, -0.5, rel_tol=1e-12) and exact.stderr < 1e-12
    widths, deviations = [64, 256, 1024, 4096], [0.014, 0.0076, 0.0023, 0.0015]
    fit = width_exponent(widths, deviations)
    reference = stats.linregress(np.log(widths), np.log(deviations))
    assert fit is not None
    assert math.isclose(fit.exponent, reference.slope, rel_tol=1e-12)
    assert math.isclose(fit.stderr, reference.stderr, rel_tol=1e-12)
    assert str(fit) == f"{reference.slope:.3g} ± {reference.stderr:.2g}"


@pytest.mark.parametrize("widths", [[8, 64], [8, 64, 512]])
def test_kernels_report_exponent_only_with_three_widths(tmp_path: Path, widths: list[int]) -> None:
    spec = tmp_path / "ker.toml"
    spec.write_text(KERNELS.format(widths=widths))
    store = tmp_path / "ker.zarr"
    assert cli.main(["run", str(spec), "--store", str(store)]) == 0
    text = (Path(f"{store}.report") / "report.md").read_text()
    (exponent,) = [line for line in text.splitlines() if line.startswith("| exponent |")]
    if len(widths) < 3:
        assert exponent.count("n/a (needs >= 3 widths)") == 2 and "±" not in exponent
    else:
        members = SweepStore(store).read("mean_empirical_deviation")
        fit = width_exponent(widths, members.tolist())
        assert fit is not None and fit.stderr > 0
        assert exponent.startswith(f"| exponent | {fit} |")
    deviations = SweepStore(store).read("empirical_deviation")  # (width, member)
    sem = deviations.std(axis=1, ddof=1) / math.sqrt(deviations.shape[1])
    assert f"| {widths[-1]} | {deviations[-1].mean():.4g} | {sem[-1]:.4g} |" in text


def test_deviation_figure_has_error_bars_slopes_and_plain_width_ticks() -> None:
    widths = [64, 256, 1024]
    values = np.array([[0.2 * (w / 64) ** -0.5 * (1 + 0.1 * c) for c in range(4)] for w in widths])
    coords = {"width": widths, "curve": list(CURVES)}
    largest = xr.DataArray(values, coords=coords, dims=("width", "curve"))
    errors = xr.DataArray(values * 0.05, coords=coords, dims=("width", "curve"))
    errors = errors.where(errors["curve"].str.contains("mean_of_losses"))  # loss of mean: NaN
    figure = deviation_figure(largest, errors)
    axis = figure.axes[0]
    with_errors = [container.has_yerr for container in axis.containers]
    assert with_errors == ["mean_of_losses" in curve for curve in CURVES]
    labels = [text.get_text() for text in axis.get_legend().get_texts()]
    assert all("slope" in label and "±" in label for label in labels)
    assert sum("no ensemble error stored" in label for label in labels) == 2
    figure.canvas.draw()
    ticks = [label.get_text() for label in axis.xaxis.get_majorticklabels()]
    assert ticks == ["64", "256", "1024"]
    plt.close(figure)


def test_jackknife_of_a_mean_is_its_standard_error() -> None:
    samples = np.random.default_rng(0).normal(size=(9, 3))
    leave_one_out = (samples.sum(axis=0) - samples) / (len(samples) - 1)
    expected = samples.std(axis=0, ddof=1) / math.sqrt(len(samples))
    np.testing.assert_allclose(jackknife_sem(leave_one_out), expected, rtol=1e-12)
    assert np.isnan(jackknife_sem(leave_one_out[:1])).all()


def test_loss_of_mean_errors_are_the_delete_a_shard_jackknife(tmp_path: Path) -> None:
    """The stored ``*_loss_of_mean_debiased_sem`` equal the jackknife over the summaries of
    the other shards, combined afresh from the store (4 shards of 2 members)."""
    spec = tmp_path / "tiny.toml"
    spec.write_text(tiny_dynamics("tiny", seed=2, widths=[8], max_steps=4))
    path = tmp_path / "tiny.zarr"
    assert cli.main(["run", str(spec), "--store", str(path)]) == 0
    store = SweepStore(path)
    steps, phi = store.read("step"), store.read("phi")
    train = np.flatnonzero(store.read("train_mask")[0])
    losses = {name: store.read(f"member_{name}")[0, 0, 0].T for name in ("train_loss", "test_loss")}
    shards = [
        EnsembleStats(
            np.arange(2 * s, 2 * s + 2),
            steps,
            **{name: values[:, 2 * s : 2 * s + 2] for name, values in losses.items()},
            **{name: store.read(name)[0, 0, 0, s] for name in SUMS},
        )
        for s in range(4)
    ]
    for name in ("train_loss_of_mean_debiased", "test_loss_of_mean_debiased"):
        rest = [
            getattr(summarize(combine(shards[:s] + shards[s + 1 :]), phi, train), name)
            for s in range(4)
        ]
        spread = np.asarray(rest) - np.mean(rest, axis=0)
        expected = np.sqrt(3 / 4 * np.sum(spread**2, axis=0))
        stored = store.read(f"{name}_sem")[0, 0, 0]
        assert np.all(stored > 0)
        np.testing.assert_allclose(stored, expected, rtol=1e-9)
    text = (Path(f"{path}.report") / "report.md").read_text()
    assert "no ensemble error stored" not in text


def test_a_store_made_before_the_jackknife_errors_aggregates_and_reports(
    tmp_path: Path,
) -> None:
    """A dynamics store without the ``*_sem`` arrays (as created before them) aggregates,
    and its report draws the loss of the mean without error bars."""
    spec = tmp_path / "old.toml"
    spec.write_text(tiny_dynamics("old", seed=2, widths=[8], max_steps=4))
    path = tmp_path / "old.zarr"
    assert cli.main(["run", str(spec), "--store", str(path), "--no-aggregate"]) == 0
    for name in ("train_loss_of_mean_debiased_sem", "test_loss_of_mean_debiased_sem"):
        shutil.rmtree(path / name)
    assert cli.main(["aggregate", str(path)]) == 0
    assert cli.main(["report", str(path)]) == 0
    assert np.isfinite(SweepStore(path).read("train_loss_of_mean_debiased")).all()
    text = (Path(f"{path}.report") / "report.md").read_text()
    (row,) = [line for line in text.splitlines() if line.startswith("| 8 | nan |")]
    assert row.count("nan") == 2  # the two losses of the mean: no error stored
