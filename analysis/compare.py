"""Finite against infinite width, read from an aggregated store: a dynamics sweep
(docs/theory.md §5; below; with its linearisations :func:`linearisation_comparison`) or
a loss study (:func:`search_comparison`, §7.3).

For every grid point (train size, learning rate, width) and logged step ``t >= 1``
(step 0 measures only the prior's sampling noise), the relative deviation
``|L_finite(t) - L_inf(t)| / L_inf(t)`` of each loss curve from the infinite-width
prediction, in exact discrete steps and in continuous time; the finite loss of the
mean is the debiased estimate. Its maximum over steps, per width, and the exponent
of its fall with width (least squares in log-log) summarise the comparison.

Ensemble uncertainty: a mean of the losses is an average over the members, whose losses
the store keeps (``member_train_loss``, ``member_test_loss``), so its standard error is
the members' sample standard deviation over ``sqrt(M)``; a debiased loss of the mean has
the delete-a-shard jackknife error the aggregation stores (``<curve>_sem``; NaN with a
single shard, or in a store aggregated before it was added). A relative deviation's
error is the curve's over ``L_inf``.
"""

from __future__ import annotations

import os

import numpy as np
import xarray as xr

from suite.store import SweepStore
from suite.supervised import CURVES, relative_deviation

#: the aggregated (finite-width) estimate of each infinite-width curve
FINITE_ESTIMATE = {
    "train_loss_of_mean": "train_loss_of_mean_debiased",
    "train_mean_of_losses": "train_mean_of_losses",
    "test_loss_of_mean": "test_loss_of_mean_debiased",
    "test_mean_of_losses": "test_mean_of_losses",
}

#: the per-member losses averaged by each mean-of-losses curve
MEMBER_LOSSES = {
    "train_mean_of_losses": "member_train_loss",
    "test_mean_of_losses": "member_test_loss",
}


def open_aggregated(path: str | os.PathLike[str], study: str | None = None) -> xr.Dataset:
    """The aggregated store at ``path`` (of a ``study`` sweep, if given), by dimension name."""
    store = SweepStore(path)
    if study is not None and store.attrs.get("study") != study:
        raise ValueError(f"store {path} is not a {study} sweep")
    if not store.aggregated:
        raise ValueError(f"store {path} is not aggregated yet: run `nnqs aggregate {path}`")
    return xr.open_zarr(store.path)


def relative_deviations(data: xr.Dataset, time: str = "discrete") -> xr.DataArray:
    """Relative deviations ``(train_size, lr_factor, width, curve, step)``, NaN at step 0
    (the grid axes that ``data`` has: a selected point drops its own).

    ``time``: ``"discrete"`` (exact steps) or ``"continuous"`` (gradient flow).
    """
    if time not in ("discrete", "continuous"):
        raise ValueError(f"time must be 'discrete' or 'continuous', got {time!r}")
    infinite = data[f"infinite_{time}"]  # (train_size, lr_factor, curve, step)
    finite = xr.concat([data[FINITE_ESTIMATE[c]] for c in CURVES], dim=data["curve"])
    deviation = relative_deviation(finite, infinite)
    return deviation.where(deviation["step"] != data["step"][0]).transpose(
        ..., "width", "curve", "step"
    )


def standard_error(members: xr.DataArray) -> xr.DataArray:
    """Standard error of the mean over ``member``: the sample standard deviation (ddof 1)
    over the square root of the number of finite members."""
    return members.std("member", ddof=1) / np.sqrt(members.count("member"))


def curve_errors(data: xr.Dataset) -> xr.DataArray:
    """Standard errors of the finite-width estimate of each curve, ``(train_size,
    lr_factor, width, curve, step)`` like :func:`relative_deviations`: the mean of the
    losses' from its members, the loss of the mean's jackknife error as stored, else NaN
    (see the module docstring)."""

    def error(curve: str) -> xr.DataArray:
        if curve in MEMBER_LOSSES:
            return standard_error(data[MEMBER_LOSSES[curve]])
        stored = f"{FINITE_ESTIMATE[curve]}_sem"
        return (
            data[stored] if stored in data else xr.full_like(data[FINITE_ESTIMATE[curve]], np.nan)
        )

    parts = [error(c) for c in CURVES]
    return xr.concat(parts, dim=data["curve"]).transpose(..., "width", "curve", "step")


def largest_deviations(
    data: xr.Dataset, time: str = "discrete"
) -> tuple[xr.DataArray, xr.DataArray]:
    """The largest relative deviation over steps >= 1 (:func:`relative_deviations`) and its
    standard error, ``sem(L_finite) / L_inf`` at that step (:func:`curve_errors`)."""
    deviations = relative_deviations(data, time)
    errors = curve_errors(data) / data[f"infinite_{time}"]
    at = deviations.fillna(-np.inf).argmax("step").compute()  # an index: not lazy
    return deviations.max("step"), errors.isel(step=at)


def linearisation_comparison(data: xr.Dataset) -> xr.Dataset:
    """A dynamics sweep run with ``training.linearised`` (docs/theory.md §7.3): its finite
    members and their linearisations against the infinite-width mean of the losses in
    exact discrete steps, per grid point, ``part`` (train, test) and logged step (NaN at
    step 0), each relative to that prediction: ``deviation`` ``|finite - infinite|``
    (the finite members' mean, as :func:`relative_deviations`), ``motion`` (the mean over
    the members of ``|member - its linearisation|``: kernel motion) and ``fluctuation``
    ``|linearised - infinite|`` (the linearisations' mean: kernel fluctuation and sampling
    noise). A member that is not finite makes its means NaN (it is not averaged away)."""
    if "linearised_train_loss" not in data:
        raise ValueError("the store has no linearisations: run the sweep with training.linearised")
    deviations = relative_deviations(data, "discrete")
    parts = []
    for part in ("train", "test"):
        curve = f"{part}_mean_of_losses"
        members = data[f"member_{part}_loss"]
        linearised = data[f"linearised_{part}_loss"]
        infinite = data["infinite_discrete"].sel(curve=curve, drop=True)
        reference = infinite.where(data["step"] != data["step"][0])
        motion = abs(members - linearised).mean("member", skipna=False)  # a diverged one shows
        parts.append(
            xr.Dataset(
                {
                    "deviation": deviations.sel(curve=curve, drop=True),
                    "motion": motion / reference,
                    "fluctuation": relative_deviation(
                        linearised.mean("member", skipna=False), reference
                    ),
                }
            )
        )
    part = xr.DataArray(["train", "test"], dims="part", name="part")
    return xr.concat(parts, dim=part).compute()


#: a logged step enters the comparison of a loss study while the infinite-width mean error
#: is above this fraction of its start: a relative deviation divides by that error, and
#: near convergence it would amplify sampling noise and rounding (docs/theory.md §7.3)
RESOLVED_FRACTION = 1e-3


def resolved_steps(error: xr.DataArray) -> xr.DataArray:
    """The logged steps at which a comparison divides by the mean ``error`` (along
    ``step``): after the first, while it is above :data:`RESOLVED_FRACTION` of its start."""
    steps = error["step"]
    return (steps != steps[0]) & (error > RESOLVED_FRACTION * error.isel(step=0))


def search_comparison(data: xr.Dataset) -> xr.Dataset:
    """Finite against infinite width in an aggregated loss study (ground_state, fidelity,
    tomography; docs/theory.md §7.3), per ``lr_factor``, ``width`` and logged step.

    The error of a member is its loss less the loss's floor (``E_0``; 0 for an infidelity
    or exact tomography; with an unknown floor, the loss itself). Variables:
    ``infinite``, ``finite``, ``linearised``: the mean error of the infinite-width
    ensemble, of the finite members and of their linearisations (a member whose loss is
    not finite makes its mean NaN: it is not averaged away); ``finite_sem`` and
    ``infinite_sem``: their standard errors; ``resolved``: the resolved steps (``step >=
    1`` and the infinite error above :data:`RESOLVED_FRACTION` of its start); on them
    (NaN elsewhere), relative
    to the infinite error: ``deviation`` ``|finite - infinite|``, ``deviation_sem``
    (the two standard errors combined), ``fluctuation`` ``|linearised - infinite|``
    (kernel fluctuation and sampling noise) and ``motion`` (the mean of ``|member - its
    linearisation|``: kernel motion); with ``search.continuous``, ``infinite_continuous``:
    the infinite-width mean error in continuous time; with ``search.paired``, relative to
    the infinite error as well, ``departure`` (the mean of ``|member - its infinite-width
    partner|``, the partner its own initial function under the infinite-width QS-NTK) and
    with ``search.linearised`` too ``paired_fluctuation`` (the mean of ``|its
    linearisation - that partner|``): the departure from infinite-width dynamics and the
    kernel fluctuation member by member, with no noise floor from two independent draws.
    """
    floor = float(data["loss_floor"])
    floor = 0.0 if np.isnan(floor) else floor
    loss = data.sel(value="loss")
    infinite_members = loss["infinite_values"] - floor
    infinite = infinite_members.mean("member", skipna=False)  # a diverged member shows
    infinite_sem = standard_error(infinite_members)
    finite = loss["mean_values"] - floor
    finite_sem = standard_error(loss["member_values"])
    linearised = loss["linearised_mean_values"] - floor
    resolved = resolved_steps(infinite)
    reference = infinite.where(resolved)
    optional = {}
    if "infinite_continuous_values" in data:
        continuous = loss["infinite_continuous_values"] - floor
        optional["infinite_continuous"] = continuous.mean("member", skipna=False)
    if "paired_departure" in data:
        optional["departure"] = loss["paired_departure"] / reference
    if "paired_fluctuation" in data:
        optional["paired_fluctuation"] = loss["paired_fluctuation"] / reference
    return xr.Dataset(
        {
            **optional,
            "resolved": resolved,
            "infinite": infinite,
            "infinite_sem": infinite_sem,
            "finite": finite,
            "finite_sem": finite_sem,
            "linearised": linearised,
            "deviation": relative_deviation(finite, reference),
            "deviation_sem": np.sqrt(finite_sem**2 + infinite_sem**2) / reference,
            "fluctuation": relative_deviation(linearised, reference),
            "motion": loss["kernel_motion"] / reference,
        }
    ).compute()
