"""Pausing and resuming a training run between slices (:mod:`suite.training`, "Slices
and checkpoints"; docs/theory.md §5 for the run itself).

A run of ``log_steps`` is cut at the steps of :func:`slice_bounds`: every logged step,
and every multiple of a stride of at most ``MAX_SLICE_STEPS`` steps. The cuts depend on
the logged steps only, so a run that pauses at a cut and resumes from a
:class:`Snapshot` makes exactly the calls of a run that never paused, and ends with the
same bits. Between two slices the run hands a :class:`Checkpoints` a way to take a
snapshot; the checkpoints decide whether to save it, and may raise to stop the run (a
signal, a time limit).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

#: the results a snapshot holds besides the state, as :class:`Snapshot` names them
LOG_FIELDS = ("values", "sums")
#: a run of S steps pauses every ``min(ceil(S / SLICES), MAX_SLICE_STEPS)`` steps and at
#: each logged step: at least ``SLICES`` synchronisations per run, each a few
#: microseconds of an idle device
SLICES = 256
#: the most steps between two pauses, so that a slice ends soon after a stop signal (a
#: slice of a paper-tfim width-4096 task, 32 members, takes ~11 s on 2 CPU cores)
MAX_SLICE_STEPS = 100


def slice_bounds(log_steps: np.ndarray) -> np.ndarray:
    """The steps between which a run of ``log_steps`` is cut, from 0 to the last logged
    step: every logged step and every multiple of ``min(ceil(last / SLICES),
    MAX_SLICE_STEPS)``."""
    last = int(log_steps[-1])
    stride = max(1, min(-(-last // SLICES), MAX_SLICE_STEPS))
    return np.union1d(np.asarray(log_steps, np.int64), np.arange(0, last + 1, stride))


@dataclass(frozen=True)
class Snapshot:
    """A run paused after ``step`` gradient-descent steps (a bound of :func:`slice_bounds`).

    ``state``: the update's state (:mod:`suite.training.engines`), one array per leaf
    with the run's members on axis 0 (padding dropped), in the compute dtype;
    ``engine``: which update the state belongs to (``"fast"`` or ``"autodiff"``; for a
    run on a loss followed by ``" on "`` and what it logs, with fingerprints of the
    losses);
    ``values`` ``(k, V, m)`` and ``sums`` ``(k, 5, D)``: the results at the ``k`` logged
    steps ``<= step``: the ``V`` per-member values of the run (train and test loss of a
    supervised run, :class:`~suite.training.EnsembleStats`; the loss and observables of a
    run on any loss, :class:`~suite.training.LossEnsembleStats`) and the shard sums.
    """

    step: int
    engine: str
    state: tuple[np.ndarray, ...]
    values: np.ndarray
    sums: np.ndarray

    @property
    def logged(self) -> int:
        """Logged steps the snapshot holds results of."""
        return int(self.values.shape[0])


class Checkpoints(Protocol):
    """Where a run's snapshots go (``jobs.checkpoints`` keeps them in a sweep's store)."""

    def restore(self, accept: Callable[[Snapshot], str | None]) -> Snapshot | None:
        """The newest intact snapshot that ``accept`` takes (it returns why not, or
        None), or None to start from step 0."""

    def reached(self, step: int, logged: int, snapshot: Callable[[], Snapshot]) -> None:
        """Called after each slice (``step`` steps done, results at ``logged`` logged
        steps): save ``snapshot()`` if due; raise to stop the run."""


def check_snapshot(
    snapshot: Snapshot, engine: str, like: Sequence[Any], bounds: np.ndarray,
    log_steps: np.ndarray, n_values: int, dimension: int,
) -> str | None:  # fmt: skip
    """Why ``snapshot`` cannot resume a run (its update ``engine``, state leaves shaped and
    typed as ``like``, cut at ``bounds``, logging ``n_values`` per-member values at
    ``log_steps`` on a basis of ``dimension``), or None when it can."""
    if snapshot.engine != engine:
        return f"it holds the state of the {snapshot.engine!r} update, not {engine!r}"
    shapes = [(a.shape, a.dtype) for a in snapshot.state]
    if shapes != [(a.shape, a.dtype) for a in like]:
        return "its parameters do not have this run's shapes and dtype"
    if snapshot.step not in bounds[1:]:
        return f"step {snapshot.step} is not a slice bound of this run"
    logged = int(np.sum(log_steps <= snapshot.step))
    members = like[0].shape[0]
    expected = ((logged, n_values, members), (logged, 5, dimension))
    for name, shape in zip(LOG_FIELDS, expected, strict=True):
        if getattr(snapshot, name).shape != shape:
            return f"its {name} has shape {getattr(snapshot, name).shape}, not {shape}"
    return None
