"""Finite against infinite width, read from an aggregated dynamics store (theory.md §5).

For every grid point (train size, learning rate, width) and logged step ``t >= 1``
(step 0 measures only the prior's sampling noise), the relative deviation
``|L_finite(t) - L_inf(t)| / L_inf(t)`` of each loss curve from the infinite-width
prediction, in exact discrete steps and in continuous time; the finite loss of the
mean is the debiased estimate. Its maximum over steps, per width, and the exponent
of its fall with width (least squares in log-log) summarise the comparison.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from jobs.dynamics import width_exponent
from jobs.studies import CURVES
from suite.store import SweepStore

#: the aggregated (finite-width) estimate of each infinite-width curve
FINITE_ESTIMATE = {
    "train_loss_of_mean": "train_loss_of_mean_debiased",
    "train_mean_of_losses": "train_mean_of_losses",
    "test_loss_of_mean": "test_loss_of_mean_debiased",
    "test_mean_of_losses": "test_mean_of_losses",
}


def relative_deviations(path: str | os.PathLike[str], time: str = "discrete") -> np.ndarray:
    """``(train_size, lr_factor, width, curve, step)`` relative deviations (NaN at step 0).

    ``time``: ``"discrete"`` (exact steps) or ``"continuous"`` (gradient flow).
    """
    if time not in ("discrete", "continuous"):
        raise ValueError(f"time must be 'discrete' or 'continuous', got {time!r}")
    store = SweepStore(path)
    if store.attrs.get("study") != "dynamics":
        raise ValueError(f"store {path} is not a dynamics sweep")
    if "finalized_unix" not in store.attrs:
        raise ValueError(f"store {path} is not aggregated yet: run `nnqs aggregate {path}`")
    infinite = store.read(f"infinite_{time}")  # (T, R, curve, step)
    finite = np.stack([store.read(FINITE_ESTIMATE[c]) for c in CURVES], axis=3)  # (T,R,W,c,s)
    reference = infinite[:, :, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        deviation = np.abs(finite - reference) / reference
    deviation[..., 0] = np.nan
    return deviation


def deviation_summary(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Per grid point: the largest deviation over steps >= 1 per curve (discrete and
    continuous time), and per (train size, learning rate) the exponent of the largest
    discrete-time deviation against width."""
    store = SweepStore(path)
    widths = store.read("width").tolist()
    train_sizes = store.read("train_size").tolist()
    factors = store.read("lr_factor").tolist()
    largest = {
        time: np.nanmax(relative_deviations(path, time), axis=-1)
        for time in ("discrete", "continuous")
    }
    points = []
    for t, size in enumerate(train_sizes):
        for r, factor in enumerate(factors):
            worst = largest["discrete"][t, r].max(axis=-1)
            points.append(
                {
                    "train_size": size,
                    "lr_factor": factor,
                    "widths": widths,
                    "max_deviation_discrete": {
                        c: largest["discrete"][t, r, :, i].tolist() for i, c in enumerate(CURVES)
                    },
                    "max_deviation_continuous": {
                        c: largest["continuous"][t, r, :, i].tolist() for i, c in enumerate(CURVES)
                    },
                    "exponent_vs_width": (
                        width_exponent(widths, worst.tolist()) if len(widths) > 1 else None
                    ),
                }
            )
    return {"store": str(path), "points": points}
