"""A sweep's report: its figures (PNG, PDF) and a Markdown page of tables.

``write_report(store, out)`` reads an aggregated store by dimension and coordinate
names (xarray) and writes, for a dynamics sweep, Figs. 2 and 3, the train-set QS-NTK
spectra and the deviation figure, with tables of the relative deviation of finite
from infinite width per width and logged step (exact discrete steps) and its fitted
exponent against width; for an entanglement sweep, Fig. 1 and the gaps to the Page
value and to the GP estimate (with the largest GP gap in jackknife errors), and for a
scan of CosNet's ``s0`` the crossover figure and table; for a kernels sweep, the
empirical QS-NTK's distance from the infinite-width kernel per width and its exponent;
for a ground_state, fidelity or tomography sweep, per learning rate, the mean error
against the step (finite widths, their linearisations, infinite width), the
infinite-width ensemble's stability, convergence step and final errors, and a table of
the deviation from infinite width, the kernel motion and the kernel fluctuation per width
with their exponents.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from analysis import figures
from analysis.compare import (
    RESOLVED_FRACTION,
    largest_deviations,
    linearisation_comparison,
    open_aggregated,
    relative_deviations,
    resolved_steps,
    search_comparison,
    standard_error,
)
from suite.kernel_flow import contraction, spectrum_rates
from suite.store import SweepStore
from suite.supervised import CURVES, MIN_EXPONENT_WIDTHS, width_exponent


def markdown_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    """A Markdown table: ``header``, then ``rows`` (floats to 4 significant digits)."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "nan" if np.isnan(value) else f"{value:.4g}"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines


def exponent_cell(widths: list[Any], values: Any) -> str:
    """The fitted width exponent ± its standard error (:func:`width_exponent`), or why
    there is none."""
    fit = width_exponent(widths, np.asarray(values).tolist())
    if fit is not None:
        return str(fit)
    if len(widths) < MIN_EXPONENT_WIDTHS:
        return f"n/a (needs >= {MIN_EXPONENT_WIDTHS} widths)"
    return "n/a (a deviation is not positive)"


def _image(paths: list[Path], out: Path, caption: str) -> list[str]:
    png, pdf = (p.relative_to(out) for p in paths)
    return [f"![{caption}]({png})", "", f"{caption} ([PDF]({pdf}))", ""]


def _dynamics(data: xr.Dataset, out: Path) -> list[str]:
    lines: list[str] = []
    widths = data["width"].values.tolist()
    steps = data["step"].values.tolist()
    deviations = relative_deviations(data, "discrete")
    largest_all, errors_all = largest_deviations(data, "discrete")
    linearisations = linearisation_comparison(data) if "linearised_train_loss" in data else None
    for size in data["train_size"].values.tolist():
        for factor in data["lr_factor"].values.tolist():
            point = {"train_size": size, "lr_factor": factor}
            at = deviations.sel(point)
            tag = f"B{size}-lr{factor:g}"
            lines += [f"## Loss curves, B = {size}, eta = {factor:g} eta_max", ""]
            lines += _image(
                figures.save(figures.loss_curves_figure(data, point), out, f"fig2-{tag}"),
                out,
                f"Fig. 2: mean of the losses, finite widths against the NTK (B = {size})",
            )
            for curve in CURVES:
                lines += [f"Relative deviation from the discrete-step NTK: {curve}", ""]
                rows = [
                    [width, *at.sel(width=width, curve=curve).values[1:].tolist()]
                    for width in widths
                ]
                lines += [*markdown_table(["width", *map(str, steps[1:])], rows), ""]
            largest, errors = largest_all.sel(point), errors_all.sel(point)  # (width, curve)
            rows = [[width, *largest.sel(width=width).values.tolist()] for width in widths]
            if len(widths) > 1:
                exponents = (exponent_cell(widths, largest.sel(curve=c).values) for c in CURVES)
                rows.append(["exponent", *exponents])
            lines += [
                "Largest deviation over steps >= 1, and its exponent against width "
                "(± standard error of the fitted slope):",
                "",
            ]
            lines += [*markdown_table(["width", *CURVES], rows), ""]
            rows = [[width, *errors.sel(width=width).values.tolist()] for width in widths]
            lines += [
                "Standard error of the largest deviation (mean of the losses: from the "
                "members' losses; loss of the mean: delete-a-shard jackknife, nan with a "
                "single shard):",
                "",
            ]
            lines += [*markdown_table(["width", *CURVES], rows), ""]
            figure = figures.deviation_figure(largest, errors)
            lines += _image(
                figures.save(figure, out, f"deviation-{tag}"),
                out,
                "Largest relative deviation against width",
            )
            if linearisations is not None:
                lines += _linearisations(linearisations.sel(point), widths)
    if data.sizes["train_size"] > 1:
        factor = data["lr_factor"].values[0]
        losses = figures.total_losses(data.sel(lr_factor=factor))
        lines += ["## Total loss against the train-set size (Fig. 3)", ""]
        rows = [
            [
                size,
                *losses["finite"].sel(train_size=size).values.tolist(),
                float(losses["infinite_last_step"].sel(train_size=size)),
                float(losses["infinite_t_inf"].sel(train_size=size)),
            ]
            for size in data["train_size"].values.tolist()
        ]
        header = ["B", *(f"width {w}" for w in widths), "NTK", "NTK, t = inf"]
        lines += [*markdown_table(header, rows), ""]
        lines += _image(figures.save(figures.final_loss_figure(losses), out, "fig3"), out, "Fig. 3")
    lines += ["## QS-NTK spectra on the train sets", ""]
    lines += _image(figures.save(figures.spectra_figure(data), out, "spectra"), out, "Spectra")
    return lines


def _linearisations(comparison: xr.Dataset, widths: list[Any]) -> list[str]:
    """Kernel motion and fluctuation at one grid point of a dynamics sweep: the train
    losses at the last logged step, the test losses at the step of their largest
    deviation (docs/theory.md §7.3)."""
    last = comparison.sel(part="train").isel(step=-1)
    test = comparison.sel(part="test")
    names = ("deviation", "motion", "fluctuation")
    rows = []
    for width in widths:
        one = test.sel(width=width).isel(step=slice(1, None))
        if one["deviation"].isnull().any():  # a member diverged: no step to read it at
            at = one.isel(step=-1) * np.nan
        else:
            at = one.isel(step=int(one["deviation"].argmax("step")))
        rows.append(
            [
                width,
                *(float(last[name].sel(width=width)) for name in names),
                *(float(at[name]) for name in names),
            ]
        )
    if len(widths) > 1:
        columns = list(zip(*rows, strict=True))[1:]
        rows.append(["exponent", *(exponent_cell(widths, column) for column in columns)])
    header = ["width", *(f"train {n}, last step" for n in names)]
    header += [f"test {n}, at its largest deviation" for n in names]
    return [
        "Finite members against their own linearisations (each evolved under its empirical "
        "QS-NTK at initialisation), the mean of the losses relative to the discrete-step "
        "NTK: deviation of the members' mean, kernel motion (mean |member - its "
        "linearisation|) and kernel fluctuation (the linearisations' mean against the NTK; "
        "docs/theory.md §7.3):",
        "",
        *markdown_table(header, rows),
        "",
    ]


def _entanglement(data: xr.Dataset, out: Path) -> list[str]:
    """Fig. 1 and, per (architecture, s0), the gaps to Page and to the GP estimate per cut
    and the largest GP gap in jackknife standard errors; for a scan of CosNet's ``s0``, the
    crossover figure and table at the half cut (with standard errors)."""
    lines = ["## Entanglement against subsystem size (Fig. 1)", ""]
    lines += _image(figures.save(figures.entanglement_figure(data), out, "fig1"), out, "Fig. 1")
    cuts = data["cut"].values.tolist()
    header = ["width", *(f"S_vN/Page-1, N_A={c}" for c in cuts)]
    header += [*(f"S_2-GP, N_A={c}" for c in cuts), "max abs(S_2-GP)/sem"]
    for panel in figures.entanglement_panels(data):
        at = data.sel(panel)
        page_gap = at["mean_von_neumann"] / data["page"] - 1
        gp_gap = at["ratio_renyi2"] - at["gp_renyi2"]
        gp_z = abs(gp_gap / at["sem_ratio_renyi2"]).max("cut")
        rows = [
            [
                width,
                *page_gap.sel(width=width).values.tolist(),
                *gp_gap.sel(width=width).values.tolist(),
                float(gp_z.sel(width=width)),
            ]
            for width in data["width"].values.tolist()
        ]
        lines += [f"### {figures.panel_title(panel)}", "", *markdown_table(header, rows), ""]
    if data.sizes["cosnet_s0"] > 1:
        lines += _crossover(data, out)
    return lines


def _crossover(data: xr.Dataset, out: Path) -> list[str]:
    """The CosNet crossover at the half cut: per s0 and width, mean ``S_vN`` and the replica
    ratio with their standard errors, and the GP estimate."""
    half = data.sel(architecture="cosnet", cut=data["cut"].values.max())
    widths = data["width"].values.tolist()
    lines = [f"## CosNet crossover at N_A = {int(half['cut'])}", ""]
    lines += _image(
        figures.save(figures.crossover_figure(data), out, "crossover"), out, "Crossover"
    )

    def with_error(name: str, sem: str, width: int, s0: float) -> str:
        point = half.sel(width=width, cosnet_s0=s0)
        return f"{float(point[name]):.4g} ± {float(point[sem]):.2g}"

    rows = [
        [
            s0,
            *(with_error("mean_von_neumann", "sem_von_neumann", w, s0) for w in widths),
            *(with_error("ratio_renyi2", "sem_ratio_renyi2", w, s0) for w in widths),
            float(half["gp_renyi2"].sel(cosnet_s0=s0)),
        ]
        for s0 in data["cosnet_s0"].values.tolist()
    ]
    header = ["s0", *(f"S_vN, width {w}" for w in widths)]
    header += [*(f"S_2 ratio, width {w}" for w in widths), "S_2 GP"]
    lines += markdown_table(header, rows)
    page, haar = float(half["page"]), float(half["haar_renyi2"])
    return [*lines, "", f"Page {page:.4f}, Haar S_2 {haar:.4f}.", ""]


def _kernels(data: xr.Dataset, out: Path) -> list[str]:
    widths = data["width"].values.tolist()
    members = data["mean_empirical_deviation"].values.tolist()
    sems = standard_error(data["empirical_deviation"]).values.tolist()
    mean = data["deviation_of_mean_kernel"].values.tolist()
    rows = [[w, m, e, k] for w, m, e, k in zip(widths, members, sems, mean, strict=True)]
    if len(widths) > 1:
        rows.append(["exponent", exponent_cell(widths, members), "", exponent_cell(widths, mean)])
    lines = ["## Empirical QS-NTK against the infinite-width kernel", ""]
    header = ["width", "mean member distance", "standard error", "distance of the mean kernel"]
    lines += markdown_table(header, rows)
    lines += ["", "## QS-NTK spectra on the train sets", ""]
    lines += _image(figures.save(figures.spectra_figure(data), out, "spectra"), out, "Spectra")
    return lines


def _any_study(data: xr.Dataset, out: Path) -> list[str]:
    """A study without a section of its own: each aggregate along one coordinate as a
    table, and every other array's dimensions."""
    lines = ["## Results", ""]
    others = []
    for name, values in sorted(data.data_vars.items()):
        (dim, *more) = values.dims or ("",)
        if not more and dim in data.coords and values.dtype.kind in "fiu":
            rows = [
                [coordinate, float(values.sel({dim: coordinate}))]
                for coordinate in data[dim].values.tolist()
            ]
            lines += [*markdown_table([dim, name], rows), ""]
        else:
            others.append([name, " x ".join(values.dims), " x ".join(map(str, values.shape))])
    lines += ["## Arrays", "", *markdown_table(["array", "dimensions", "shape"], others), ""]
    return lines


def _loss_search(data: xr.Dataset, out: Path) -> list[str]:
    """A ground_state, fidelity or tomography sweep (docs/theory.md §7.3)."""
    comparison = search_comparison(data)
    widths = data["width"].values.tolist()
    floor = float(data["loss_floor"])
    known = f"{floor:.12g}" if np.isfinite(floor) else "unknown (shot frequencies)"
    search = data.attrs["spec"]["search"]  # stores made before search.paired lack it
    linearised, paired = search["linearised"], search.get("paired", False)
    lines = [
        f"Loss: {data.attrs['loss']}; its floor {known}; learning-rate bound "
        f"eta_max = {float(data['eta_max']):.4g} (docs/theory.md §7.1).",
        "",
    ]
    for factor in data["lr_factor"].values.tolist():
        at = comparison.sel(lr_factor=factor)
        lines += [f"## eta = {factor:g} eta_max", ""]
        lines += _image(
            figures.save(figures.search_figure(comparison, factor), out, f"search-lr{factor:g}"),
            out,
            "Mean error against the step: finite widths"
            + (", their linearisations" if linearised else "")
            + ", infinite width (and its continuous-time flow with search.continuous)",
        )
        lines += _infinite_ensemble(data.sel(lr_factor=factor), at, floor)
        if data.attrs["study"] != "fidelity" and "infidelity" in data["value"].values:
            lines += _infidelities(data.sel(lr_factor=factor, value="infidelity"))
        lines += _width_table(at, widths, linearised, paired)
    return lines


def _width_table(at: xr.Dataset, widths: list[int], linearised: bool, paired: bool) -> list[str]:
    """Per width, the largest of each comparison over the resolved steps, with fitted
    width exponents: the deviation (its standard error, its value at the last resolved
    step), with ``search.linearised`` the kernel motion and fluctuation, with
    ``search.paired`` the paired departure and with both the paired fluctuation
    (docs/theory.md §7.3)."""
    largest = {
        "largest kernel motion": "motion" if linearised else None,
        "largest kernel fluctuation": "fluctuation" if linearised else None,
        "largest paired departure": "departure" if paired else None,
        "largest paired fluctuation": "paired_fluctuation" if paired and linearised else None,
    }
    columns = {title: name for title, name in largest.items() if name}
    rows = []
    for width in widths:
        one = at.sel(width=width).where(at["resolved"], drop=True)  # a diverged member: NaN
        deviation = one["deviation"]
        top = int(deviation.fillna(np.inf).argmax("step")) if one.sizes["step"] else 0
        rows.append(
            [
                width,
                float(deviation.max(skipna=False)),
                float(one["deviation_sem"][top]) if one.sizes["step"] else np.nan,
                float(deviation[-1]) if one.sizes["step"] else np.nan,
                *(float(one[name].max(skipna=False)) for name in columns.values()),
            ]
        )
    if len(widths) > 1:
        fitted = list(zip(*rows, strict=True))
        rows.append(
            [
                "exponent",
                exponent_cell(widths, fitted[1]),
                "",
                *(exponent_cell(widths, column) for column in fitted[3:]),
            ]
        )
    header = ["width", "largest deviation", "its standard error", "at the last resolved step"]
    return [
        "Finite against infinite width, relative to the infinite-width mean error, over "
        f"the resolved steps (step >= 1, that error above {RESOLVED_FRACTION:g} of its "
        "start):",
        "",
        *markdown_table([*header, *columns], rows),
        "",
    ]


def _infidelities(point: xr.Dataset) -> list[str]:
    """The mean infidelity to the target state (the exact ground state of a ground_state
    sweep) against the logged step: infinite width, each width and its linearisations."""
    steps = point["step"].values.tolist()
    infinite = point["infinite_values"].mean("member", skipna=False)  # a diverged one shows
    rows = [["infinite width", *infinite.values.tolist()]]
    for width in point["width"].values.tolist():
        one = point.sel(width=width)
        rows.append([f"width {width}", *one["mean_values"].values.tolist()])
        linearised = one["linearised_mean_values"].values
        if np.isfinite(linearised).any():
            rows.append([f"width {width}, linearised", *linearised.tolist()])
    return [
        "Mean infidelity to the target state against the step:",
        "",
        *markdown_table(["step", *map(str, steps)], rows),
        "",
    ]


def _infinite_ensemble(point: xr.Dataset, at: xr.Dataset, floor: float) -> list[str]:
    """The infinite-width ensemble at one learning rate: stability, its mean error from
    start to end, the convergence step, and each member's final error."""
    stable, members = int(point["infinite_stable"].sum()), point.sizes["member"]
    infinite = at["infinite"].values
    steps = point["step"].values
    below = np.flatnonzero(infinite <= RESOLVED_FRACTION * infinite[0])
    converged = f"step {steps[below[0]]}" if below.size else f"not within {steps[-1]} steps"
    paragraphs = [
        f"Infinite width: {stable}/{members} members stable; mean error {infinite[0]:.4g} at "
        f"step 0, {infinite[-1]:.4g} at step {steps[-1]}; below {RESOLVED_FRACTION:g} of its "
        f"start: {converged}.",
    ]
    if "infinite_continuous" in at:
        continuous = at["infinite_continuous"].values
        resolved = resolved_steps(at["infinite_continuous"]).values
        gap = np.abs(infinite - continuous)[resolved] / continuous[resolved]
        if not np.isfinite(infinite).all():
            largest = "an undefined amount (a discrete member is not finite)"
        else:
            largest = f"at most {gap.max():.3g}" if gap.size else "nothing (no step resolved)"
        paragraphs.append(
            f"In continuous time (gradient flow, t counting steps) the mean error is "
            f"{continuous[-1]:.4g} at step {steps[-1]}; relative to it, the discrete steps' "
            f"mean error differs by {largest} over the steps where it is above "
            f"{RESOLVED_FRACTION:g} of its start."
        )
    if np.isfinite(floor) and floor != 0:
        final = np.abs(point["infinite_values"].sel(value="loss").values[:, -1] - floor)
        relative = final / abs(floor)
        paragraphs.append(
            f"Final relative error per member (E_t - E_0) / |E_0|: max {relative.max():.3g}, "
            f"median {np.median(relative):.3g}; within 1e-8: {int(np.sum(relative < 1e-8))}"
            f"/{members}."
        )
    if "floor_spectrum" in point:
        paragraphs.append(
            _floor_rates(point["floor_spectrum"].values, float(point["learning_rate"]))
        )
    if "infidelity" in point["value"].values:
        infidelity = point["infinite_values"].sel(value="infidelity").values
        paragraphs.append(
            f"Infidelity to the target state: {infidelity[:, 0].min():.3g}.."
            f"{infidelity[:, 0].max():.3g} at step 0, {infidelity[:, -1].min():.3g}.."
            f"{infidelity[:, -1].max():.3g} at the last step."
        )
    return [line for paragraph in paragraphs for line in (paragraph, "")]


def _floor_rates(spectrum: np.ndarray, rate: float) -> str:
    """The kernel-preconditioned spectrum at the floor of the infinite-width members
    (docs/theory.md §7.1): their zero modes, slowest and fastest rates, and the steps per
    e-fold of a quadratic loss near the floor (members without a spectrum are counted)."""
    zero_modes, slowest, largest = spectrum_rates(spectrum)
    known = np.isfinite(largest)
    if not known.any():
        return "Kernel-preconditioned spectrum at the floor: no member has one (none is finite)."
    zero_modes, slowest, largest = zero_modes[known], slowest[known], largest[known]
    counts = "; ".join(
        f"{count} ({int(np.sum(zero_modes == count))} members)" for count in np.unique(zero_modes)
    )
    slow, fast = rate * slowest, rate * largest
    factor = contraction(rate, slowest, largest)
    converging = factor < 1
    e_fold = -1.0 / (2.0 * np.log(factor[converging]))
    missing = f" {int(np.sum(~known))} members have none (not finite)." if not known.all() else ""
    settling = (
        f"one e-fold in {np.median(e_fold):.3g} steps (median of the {int(converging.sum())} "
        f"that converge; {e_fold.max():.3g} for the slowest)"
        if converging.any()
        else "no member converges"
    )
    warning = (
        f" At this rate {int(np.sum(~converging))}/{factor.size} members have "
        "max |1 - eta lambda| >= 1 at the floor state nearest their last function (eta "
        "lambda_max >= 2): unless their overlap with it grows (the curvature falls as "
        "1/|c|^2), gradient descent cannot settle there and the modes with eta lambda > 2 "
        "grow from any perturbation, rounding included (docs/theory.md §7.1)."
        if not converging.all()
        else ""
    )
    return (
        f"Kernel-preconditioned spectrum at the floor (each infinite-width member at the floor "
        f"state nearest its last function, docs/theory.md §7.1): zero modes "
        f"{counts} (2 are the norm and the phase; more are directions the kernel "
        f"cannot move); slowest rate eta lambda_min {np.median(slow):.3g} (median; "
        f"{slow.min():.3g}..{slow.max():.3g}), fastest eta lambda_max {np.median(fast):.3g} "
        f"(median; largest {fast.max():.3g}); near the floor the error falls by "
        f"max |1 - eta lambda|^2 a step: {settling}.{missing}{warning}"
    )


#: the report section of each study; any other study gets :func:`_any_study`
SECTIONS = {
    "dynamics": _dynamics,
    "entanglement": _entanglement,
    "kernels": _kernels,
    "ground_state": _loss_search,
    "fidelity": _loss_search,
    "tomography": _loss_search,
}


def write_report(path: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Figures and ``report.md`` of the aggregated sweep at ``path`` into ``out``."""
    store = SweepStore(path)
    data = open_aggregated(path)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    attrs = store.attrs
    spec = attrs["spec"]
    provenance = attrs["provenance"]
    lines = [
        f"# Sweep {spec['sweep']['name']} ({attrs['study']})",
        "",
        f"Store `{store.path}`; spec fingerprint `{attrs['fingerprint'][:12]}`; created on "
        f"{provenance['host']} at commit `{provenance.get('git_commit') or 'unknown'}`"
        f"{' with uncommitted changes' if provenance.get('git_dirty') else ''} "
        f"(jax {provenance['packages'].get('jax')}, zarr {provenance['packages'].get('zarr')}).",
        "",
        f"Grid: {', '.join(f'{k} = {v}' for k, v in spec['grid'].items())}; "
        f"{spec['ensemble']['members']} members in shards of {spec['ensemble']['shard_size']}.",
        "",
        *SECTIONS.get(attrs["study"], _any_study)(data, out),
    ]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report
