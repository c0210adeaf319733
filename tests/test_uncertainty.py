"""Ensemble uncertainty in the figures and reports (analysis/figures.py, analysis/report.py):
the width exponent is fitted with 3 or more widths only and given with the standard error
of its slope; finite-width points carry standard errors; width axes have plain ticks."""

from __future__ import annotations

import math
from pathlib import Path

import suite  # noqa: F401  (first: enables JAX float64)

# isort: split

import matplotlib.pyplot as plt
import numpy as np
import pytest
import xarray as xr
from scipy import stats

from analysis.figures import deviation_figure
from nnqs import cli
from suite.store import SweepStore
from suite.supervised import CURVES, width_exponent

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
