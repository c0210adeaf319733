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
  scaling cases of an ``nnqs bench`` record, with the ideal lines.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from suite.store import SweepStore
from suite.supervised import CURVES, width_exponent

#: the loss-curve panels of Fig. 2: (finite array, index of the infinite curve, title)
PANELS = (("train_mean_of_losses", 1, "train"), ("test_mean_of_losses", 3, "test"))


def save(figure: Figure, out: str | os.PathLike[str], name: str) -> list[Path]:
    """Write ``figure`` as ``out/name.png`` and ``out/name.pdf``; return the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    for path in paths:
        figure.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(figure)
    return paths


def _widths(store: SweepStore) -> list[int]:
    return store.read("width").tolist()


def loss_curves_figure(store: SweepStore, train: int = -1, rate: int = 0) -> Figure:
    """Fig. 2 at train-size index ``train`` and learning-rate index ``rate``."""
    steps = store.read("step").astype(float)
    shifted = steps + 1  # log axis: step 0 at 1
    infinite = {
        time: store.read(f"infinite_{time}")[train, rate] for time in ("discrete", "continuous")
    }
    figure, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    colours = plt.cm.viridis(np.linspace(0.1, 0.85, len(_widths(store))))
    for axis, (name, curve, title) in zip(axes, PANELS, strict=True):
        for w, width in enumerate(_widths(store)):
            axis.plot(
                shifted,
                store.read(name)[train, rate, w],
                "o",
                ms=4,
                color=colours[w],
                label=f"width {width}",
            )
        axis.plot(shifted, infinite["discrete"][curve], "k-", lw=1.5, label="NTK, discrete steps")
        axis.plot(shifted, infinite["continuous"][curve], "k--", lw=1, label="NTK, gradient flow")
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("step + 1")
        axis.set_ylabel(f"{title} loss (mean of the losses)")
        axis.set_title(f"{title}, B = {store.read('train_size')[train]}")
    axes[0].legend(fontsize=8)
    return figure


def total_losses(store: SweepStore, rate: int = 0) -> dict[str, np.ndarray]:
    """Total (whole-basis) mean-of-losses at the last step: finite per width, NTK at that
    step and at t = inf; each ``(train_size, ...)``."""
    sizes = store.read("train_size").astype(float)
    dimension = store.array("phi").shape[0]
    weight = sizes / dimension

    def total(train: np.ndarray, test: np.ndarray) -> np.ndarray:
        shape = (-1,) + (1,) * (train.ndim - 1)
        return weight.reshape(shape) * train + (1 - weight.reshape(shape)) * test

    finite = total(
        store.read("train_mean_of_losses")[:, rate, :, -1],
        store.read("test_mean_of_losses")[:, rate, :, -1],
    )
    last = store.read("infinite_discrete")[:, rate, :, -1]
    limit = store.read("infinite_t_inf")[:, rate]
    return {
        "train_size": sizes,
        "finite": finite,
        "infinite_last_step": total(last[:, 1], last[:, 3]),
        "infinite_t_inf": total(limit[:, 1], limit[:, 3]),
    }


def final_loss_figure(store: SweepStore, rate: int = 0) -> Figure:
    """Fig. 3: total loss at the last logged step against the train-set size."""
    losses = total_losses(store, rate)
    figure, axis = plt.subplots(figsize=(5.5, 4), layout="constrained")
    for w, width in enumerate(_widths(store)):
        axis.plot(losses["train_size"], losses["finite"][:, w], "o-", ms=4, label=f"width {width}")
    axis.plot(losses["train_size"], losses["infinite_last_step"], "k-", label="NTK, last step")
    axis.plot(losses["train_size"], losses["infinite_t_inf"], "k:", label="NTK, t = inf")
    axis.set_xscale("log")
    axis.set_xlabel("train-set size B")
    axis.set_ylabel("total loss (whole basis)")
    axis.legend(fontsize=8)
    return figure


def spectra_figure(store: SweepStore) -> Figure:
    """QS-NTK eigenvalues on each train set, in decreasing order."""
    spectra = store.read("ntk_spectrum")
    figure, axis = plt.subplots(figsize=(5.5, 4), layout="constrained")
    for size, values in zip(store.read("train_size"), spectra, strict=True):
        ordered = np.sort(values[np.isfinite(values)])[::-1]
        axis.plot(np.arange(1, ordered.size + 1), ordered, label=f"B = {size}")
    axis.set_yscale("log")
    axis.set_xlabel("index")
    axis.set_ylabel("eigenvalue of the 2B x 2B QS-NTK")
    axis.legend(fontsize=8)
    return figure


def deviation_figure(widths: list[int], largest: np.ndarray) -> Figure:
    """Largest relative deviation from the discrete-step prediction against width.

    ``largest``: ``(width, curve)``, the maximum over steps >= 1 of
    :func:`analysis.compare.relative_deviations` at one grid point.
    """
    figure, axis = plt.subplots(figsize=(5.5, 4), layout="constrained")
    for name, values in zip(CURVES, largest.T, strict=True):
        label = name.replace("_", " ")
        if len(widths) > 1 and np.all(values > 0):
            label += f" (slope {width_exponent(widths, values.tolist()):.2f})"
        axis.plot(widths, values, "o-", label=label)
    axis.set_xscale("log")
    axis.set_yscale("log")
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
            point = at.sel(width=width)
            axis.errorbar(
                cuts,
                point["mean_von_neumann"].values,
                yerr=point["sem_von_neumann"].values,
                fmt="o",
                ms=4,
                capsize=2,
                label=f"S_vN, width {width}",
            )
            axis.plot(
                cuts,
                point["ratio_renyi2"].values,
                "x",
                color=axis.lines[-1].get_color(),
                label=f"S_2 replica ratio, width {width}",
            )
        axis.plot(cuts, at["gp_renyi2"].values, "s--", label="S_2, GP estimate")
        axis.plot(cuts, data["page"].values, "k-", label="Page")
        axis.plot(cuts, data["haar_renyi2"].values, "k:", label="Haar S_2")
        axis.set_xlabel("subsystem size N_A")
        axis.set_ylabel("entropy (nats)")
        axis.set_title(panel_title(panel))
    axes[0, 0].legend(fontsize=8)
    return figure


def crossover_figure(data: xr.Dataset) -> Figure:
    """The CosNet crossover: entropies at the half cut against ``s0`` (log axis), per
    width, with the GP estimate and the Page and Haar Renyi-2 values (docs/theory.md §6)."""
    half = data.sel(architecture="cosnet", cut=data["cut"].values.max())
    s0 = data["cosnet_s0"].values
    figure, axis = plt.subplots(figsize=(6, 4), layout="constrained")
    for width in data["width"].values.tolist():
        point = half.sel(width=width)
        axis.errorbar(
            s0,
            point["mean_von_neumann"].values,
            yerr=point["sem_von_neumann"].values,
            fmt="o-",
            ms=4,
            capsize=2,
            label=f"S_vN, width {width}",
        )
        axis.plot(
            s0,
            point["ratio_renyi2"].values,
            "x",
            color=axis.lines[-1].get_color(),
            label=f"S_2 replica ratio, width {width}",
        )
    axis.plot(s0, half["gp_renyi2"].values, "s--", label="S_2, GP estimate")
    axis.axhline(float(half["page"]), color="k", label="Page")
    axis.axhline(float(half["haar_renyi2"]), color="k", ls=":", label="Haar S_2")
    axis.set_xscale("log")
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
