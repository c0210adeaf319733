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

import numpy as np

from suite.store import SweepStore
from suite.supervised import CURVES

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
