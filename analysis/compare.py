"""Finite against infinite width, read from an aggregated dynamics store (docs/theory.md §5).

For every grid point (train size, learning rate, width) and logged step ``t >= 1``
(step 0 measures only the prior's sampling noise), the relative deviation
``|L_finite(t) - L_inf(t)| / L_inf(t)`` of each loss curve from the infinite-width
prediction, in exact discrete steps and in continuous time; the finite loss of the
mean is the debiased estimate. Its maximum over steps, per width, and the exponent
of its fall with width (least squares in log-log) summarise the comparison.
"""

from __future__ import annotations

import os

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
