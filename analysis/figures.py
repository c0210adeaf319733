"""The paper's figures from a sweep's store (matplotlib, PNG and PDF).

* Fig. 1 (:func:`entanglement_figure`): mean ``S_vN`` of finite-width ensembles
  against subsystem size, with the GP Renyi-2 estimate, the Page value and the
  Haar Renyi-2 value (docs/theory.md §6), and :func:`crossover_figure`: the same at
  the half cut against CosNet's ``s0``;
* Fig. 2 (:func:`loss_curves_figure`): train and test mean-of-losses of finite
  ensembles at the logged steps against the infinite-width prediction in exact
  discrete steps and in continuous time (docs/theory.md §5);
* Fig. 3 (:func:`final_loss_figure`): total loss at the last logged step against
  the train-set size, per width and for the NTK limit (at that step and t = inf);
* :func:`spectra_figure`: QS-NTK eigenvalues on each train set (they set the
  convergence rates ``1 - eta lambda / B``);
* :func:`deviation_figure`: the largest deviation from infinite width against
  width, log-log, with the fitted exponent.
* :func:`scaling_figure`: speed-up and parallel efficiency against workers of the
  scaling cases of an ``nnqs bench`` record, with the ideal lines;
* :func:`search_figure`: a loss study's mean error against the step, finite widths and
  their linearisations against the infinite-width ensemble (docs/theory.md §7.3).

Every finite-width point carries its ensemble's standard error as an error bar (the
members' spread over ``sqrt(M)``; a loss of the mean's delete-a-shard jackknife error;
:mod:`analysis.compare`); where none is stored (a single shard) the point has an open
marker and no bar. The replica ratio's is its jackknife error. Width exponents are
fitted with 3 or more widths and shown with their standard errors
(:func:`suite.supervised.width_exponent`). Log axes of widths, train sizes and ``s0``
have a tick at each value, labelled plainly; other log axes have plain-number labels.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.axis import Axis
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, LogFormatter, NullLocator

from analysis.compare import MEMBER_LOSSES, standard_error
from suite.supervised import CURVES, width_exponent

#: the loss-curve panels of Fig. 2: (curve, title)
PANELS = (("train_mean_of_losses", "train"), ("test_mean_of_losses", "test"))


def save(figure: Figure, out: str | os.PathLike[str], name: str) -> list[Path]:
    """Write ``figure`` as ``out/name.png`` and ``out/name.pdf``; return the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    for path in paths:
        figure.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(figure)
    return paths


def value_ticks(axis: Axis, values: Any) -> None:
    """A log ``axis`` with a major tick at each of ``values``, labelled plainly (``64``,
    ``0.5``), and no minor ticks."""
    axis.set_major_locator(FixedLocator(np.asarray(values, float)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_locator(NullLocator())


class PlainLogFormatter(LogFormatter):
    """Matplotlib's choice of which log ticks to label, labelled as plain numbers (``0.06``,
    ``40``; not ``6e-02`` or ``4 x 10^1``)."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        return f"{x:g}" if super().__call__(x, pos) else ""


def plain_log_labels(axis: Axis) -> None:
    """A log ``axis`` labelled with plain numbers, minor ticks too where the axis spans
    few decades."""
    axis.set_major_formatter(PlainLogFormatter())
    axis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def loss_curves_figure(data: xr.Dataset, point: Mapping[str, Any]) -> Figure:
    """Fig. 2 at one (train size, learning-rate factor) ``point`` (coordinate values); the
    finite widths with their standard errors."""
    at = data.sel(point)
    shifted = data["step"].values.astype(float) + 1  # log axis: step 0 at 1
    widths = data["width"].values.tolist()
    figure, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    colours = plt.cm.viridis(np.linspace(0.1, 0.85, len(widths)))
    for axis, (name, title) in zip(axes, PANELS, strict=True):
        errors = standard_error(at[MEMBER_LOSSES[name]])
        for colour, width in zip(colours, widths, strict=True):
            axis.errorbar(
                shifted,
                at[name].sel(width=width).values,
                yerr=errors.sel(width=width).values,
                fmt="o",
                ms=4,
                capsize=2,
                color=colour,
                label=f"width {width} (± standard error)",
            )
        for time, style, label in (
            ("discrete", "k-", "NTK, discrete steps"),
            ("continuous", "k--", "NTK, gradient flow"),
        ):
            infinite = at[f"infinite_{time}"].sel(curve=name).values
            axis.plot(shifted, infinite, style, lw=1.5 if time == "discrete" else 1, label=label)
        axis.set_xscale("log")
        axis.set_yscale("log")
        plain_log_labels(axis.xaxis)
        plain_log_labels(axis.yaxis)
        axis.set_xlabel("step + 1")
        axis.set_ylabel(f"{title} loss (mean of the losses)")
        axis.set_title(f"{title}, B = {point['train_size']}")
    axes[0].legend(fontsize=8)
    return figure


def total_losses(data: xr.Dataset) -> dict[str, xr.DataArray]:
    """Total (whole-basis) mean of the losses of a dynamics store at one learning rate:
    ``finite`` (train size, width) at the last logged step and its standard error
    ``finite_sem`` (over the members' total losses), and the NTK's at that step
    (``infinite_last_step``) and at t = inf (``infinite_t_inf``), per train size."""
    weight = data["train_size"] / data.sizes["basis"]
    last = data.isel(step=-1)

    def total(train: xr.DataArray, test: xr.DataArray) -> xr.DataArray:
        return weight * train + (1 - weight) * test

    def ntk(values: xr.DataArray) -> xr.DataArray:
        return total(
            values.sel(curve="train_mean_of_losses", drop=True),
            values.sel(curve="test_mean_of_losses", drop=True),
        )

    return {
        "finite": total(last["train_mean_of_losses"], last["test_mean_of_losses"]),
        "finite_sem": standard_error(total(last["member_train_loss"], last["member_test_loss"])),
        "infinite_last_step": ntk(last["infinite_discrete"]),
        "infinite_t_inf": ntk(data["infinite_t_inf"]),
    }


def final_loss_figure(losses: Mapping[str, xr.DataArray]) -> Figure:
    """Fig. 3: total loss at the last logged step against the train-set size, finite widths
    with their standard errors (:func:`total_losses`)."""
    sizes = losses["finite"]["train_size"].values
    figure, axis = plt.subplots(figsize=(5.5, 4), layout="constrained")
    for width in losses["finite"]["width"].values.tolist():
        axis.errorbar(
            sizes,
            losses["finite"].sel(width=width).values,
            yerr=losses["finite_sem"].sel(width=width).values,
            fmt="o-",
            ms=4,
            capsize=2,
            label=f"width {width} (± standard error)",
        )
    axis.plot(sizes, losses["infinite_last_step"].values, "k-", label="NTK, last step")
    axis.plot(sizes, losses["infinite_t_inf"].values, "k:", label="NTK, t = inf")
    axis.set_xscale("log")
    value_ticks(axis.xaxis, sizes)
    axis.set_xlabel("train-set size B")
    axis.set_ylabel("total loss (whole basis)")
    axis.legend(fontsize=8)
    return figure


def spectra_figure(data: xr.Dataset) -> Figure:
    """QS-NTK eigenvalues on each train set, in decreasing order."""
    figure, axis = plt.subplots(figsize=(5.5, 4), layout="constrained")
    for size in data["train_size"].values.tolist():
        values = data["ntk_spectrum"].sel(train_size=size).values
        ordered = np.sort(values[np.isfinite(values)])[::-1]
        axis.plot(np.arange(1, ordered.size + 1), ordered, label=f"B = {size}")
    axis.set_yscale("log")
    plain_log_labels(axis.yaxis)
    axis.set_xlabel("index")
    axis.set_ylabel("eigenvalue of the 2B x 2B QS-NTK")
    axis.legend(fontsize=8)
    return figure


def deviation_figure(largest: xr.DataArray, errors: xr.DataArray) -> Figure:
    """Largest relative deviation from the discrete-step prediction against width, with
    its standard error and, with 3 or more widths, the fitted exponent ± its error.

    ``largest``, ``errors``: ``(width, curve)`` at one grid point, from
    :func:`analysis.compare.largest_deviations` (a curve whose errors are NaN is drawn
    with open markers and no error bar).
    """
    widths = largest["width"].values.tolist()
    figure, axis = plt.subplots(figsize=(5.5, 4), layout="constrained")
    for name in CURVES:
        values = largest.sel(curve=name).values
        error = errors.sel(curve=name).values
        known = bool(np.isfinite(error).all())
        label = name.replace("_", " ") + ("" if known else " (no ensemble error stored)")
        fit = width_exponent(widths, values.tolist())
        if fit is not None:
            label += f", slope {fit}"
        axis.errorbar(
            widths,
            values,
            yerr=error if known else None,
            fmt="o-",
            capsize=2,
            mfc=None if known else "none",
            label=label,
        )
    axis.set_xscale("log")
    axis.set_yscale("log")
    value_ticks(axis.xaxis, widths)
    plain_log_labels(axis.yaxis)
    axis.set_xlabel("width")
    axis.set_ylabel("max |finite / NTK - 1| over steps >= 1")
    axis.legend(fontsize=8)
    return figure


def entanglement_panels(data: xr.Dataset) -> list[dict[str, Any]]:
    """The (architecture, cosnet_s0) points of an entanglement store, by coordinate: one per
    architecture, and one per ``s0`` for CosNet (the other networks do not depend on it)."""
    return [
        {"architecture": name, "cosnet_s0": s0}
        for name in data["architecture"].values.tolist()
        for s0 in (
            data["cosnet_s0"].values.tolist() if name == "cosnet" else [data["cosnet_s0"][0].item()]
        )
    ]


def panel_title(panel: Mapping[str, Any]) -> str:
    name = panel["architecture"]
    return f"{name} (s0 = {panel['cosnet_s0']:g})" if name == "cosnet" else name


def entanglement_figure(data: xr.Dataset) -> Figure:
    """Fig. 1: entanglement against subsystem size, per architecture (and CosNet ``s0``).

    Per width: the mean per-member ``S_vN`` (dots, standard errors) and the replica
    ratio ``-ln(mean Tr rho~_A^2 / mean (Tr rho~)^2)`` (crosses), the finite-width
    quantity the GP estimate (squares) predicts.
    """
    panels = entanglement_panels(data)
    cuts = data["cut"].values
    figure, axes = plt.subplots(
        1, len(panels), figsize=(4.5 * len(panels), 4), squeeze=False, layout="constrained"
    )
    for axis, panel in zip(axes[0], panels, strict=True):
        at = data.sel(panel)
        for width in data["width"].values.tolist():
            _finite_entropies(axis, cuts, at.sel(width=width), width, "o")
        axis.plot(cuts, at["gp_renyi2"].values, "s--", label="S_2, GP estimate")
        axis.plot(cuts, data["page"].values, "k-", label="Page")
        axis.plot(cuts, data["haar_renyi2"].values, "k:", label="Haar S_2")
        axis.set_xlabel("subsystem size N_A")
        axis.set_ylabel("entropy (nats)")
        axis.set_title(panel_title(panel))
    axes[0, 0].legend(fontsize=8)
    return figure


def _finite_entropies(axis: Any, x: np.ndarray, point: xr.Dataset, width: int, fmt: str) -> None:
    """A finite-width ensemble's mean ``S_vN`` with its standard errors and, in the same
    colour, its replica ratio with its jackknife errors, against ``x``."""
    axis.errorbar(
        x,
        point["mean_von_neumann"].values,
        yerr=point["sem_von_neumann"].values,
        fmt=fmt,
        ms=4,
        capsize=2,
        label=f"S_vN, width {width}",
    )
    axis.errorbar(
        x,
        point["ratio_renyi2"].values,
        yerr=point["sem_ratio_renyi2"].values,
        fmt="x",
        capsize=2,
        color=axis.lines[-1].get_color(),
        label=f"S_2 replica ratio, width {width} (± jackknife error)",
    )


def crossover_figure(data: xr.Dataset) -> Figure:
    """The CosNet crossover: entropies at the half cut against ``s0`` (log axis), per
    width, with the GP estimate and the Page and Haar Renyi-2 values (docs/theory.md §6)."""
    half = data.sel(architecture="cosnet", cut=data["cut"].values.max())
    s0 = data["cosnet_s0"].values
    figure, axis = plt.subplots(figsize=(6, 4), layout="constrained")
    for width in data["width"].values.tolist():
        _finite_entropies(axis, s0, half.sel(width=width), width, "o-")
    axis.plot(s0, half["gp_renyi2"].values, "s--", label="S_2, GP estimate")
    axis.axhline(float(half["page"]), color="k", label="Page")
    axis.axhline(float(half["haar_renyi2"]), color="k", ls=":", label="Haar S_2")
    axis.set_xscale("log")
    value_ticks(axis.xaxis, s0)
    axis.set_xlabel("CosNet s0")
    axis.set_ylabel(f"entropy at N_A = {int(half['cut'])} (nats)")
    axis.legend(fontsize=8)
    return figure


def scaling_figure(tables: Mapping[str, Mapping[str, Any]]) -> Figure:
    """Speed-up and parallel efficiency against workers, one line per scaling case of an
    ``nnqs bench`` record (:func:`analysis.bench.report.scaling_tables`), with the ideal
    (speed-up = workers, efficiency = 1) dashed; weak scaling shows the scaled speed-up."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    most = max(row["workers"] for table in tables.values() for row in table["rows"])
    ideal = np.arange(1, most + 1)
    left.plot(ideal, ideal, "k--", lw=1, label="ideal")
    right.plot(ideal, np.ones_like(ideal), "k--", lw=1, label="ideal")
    for case, table in tables.items():
        rows = [r for r in table["rows"] if r["speedup"] is not None]
        workers = [r["workers"] for r in rows]
        label = f"{case} ({table['kind']}, {table['workers']})"
        left.plot(workers, [r["speedup"] for r in rows], "o-", label=label)
        right.plot(workers, [r["efficiency"] for r in rows], "o-", label=label)
    left.set_ylabel("speed-up (weak: scaled speed-up)")
    right.set_ylabel("parallel efficiency = speed-up / workers")
    right.set_ylim(bottom=0)
    for axis in (left, right):
        axis.set_xlabel("workers (devices, processes or array tasks)")
        axis.set_xticks(ideal)
    left.legend(fontsize=8)
    return figure


def search_figure(comparison: xr.Dataset, factor: float) -> Figure:
    """A loss study at learning-rate factor ``factor``: the mean error against the step,
    finite widths (± standard error) and their linearisations against the infinite-width
    ensemble, in continuous time too where the store has it
    (:func:`analysis.compare.search_comparison`)."""
    at = comparison.sel(lr_factor=factor)
    shifted = at["step"].values.astype(float) + 1  # log axis: step 0 at 1
    widths = at["width"].values.tolist()
    figure, axis = plt.subplots(figsize=(6, 4), layout="constrained")
    colours = plt.cm.viridis(np.linspace(0.1, 0.85, len(widths)))
    for colour, width in zip(colours, widths, strict=True):
        one = at.sel(width=width)
        axis.errorbar(
            shifted, one["finite"].values, yerr=one["finite_sem"].values, fmt="o", ms=4,
            capsize=2, color=colour, label=f"width {width} (± standard error)",
        )  # fmt: skip
        if np.isfinite(one["linearised"].values).any():
            axis.plot(
                shifted, one["linearised"].values, ":", color=colour,
                label=f"width {width}, linearised",
            )  # fmt: skip
    axis.plot(shifted, at["infinite"].values, "k-", lw=1.5, label="infinite width")
    if "infinite_continuous" in at:
        axis.plot(
            shifted, at["infinite_continuous"].values, "k--", lw=1,
            label="infinite width, continuous time",
        )  # fmt: skip
    axis.set_xscale("log")
    axis.set_yscale("log")
    plain_log_labels(axis.xaxis)
    plain_log_labels(axis.yaxis)
    axis.set_xlabel("step + 1")
    axis.set_ylabel("mean error (loss - its floor)")
    axis.set_title(f"eta = {factor:g} eta_max")
    axis.legend(fontsize=8)
    return figure
