"""The studies the suite knows, by name: a :class:`Study` holds everything about one.

A study is one module (``jobs/studies/dynamics.py`` is the model) with one class that
derives from :class:`Study`, and one registration line, ``register(MyStudy())``. The
spec, the sweep engine, the executors, the aggregation and ``nnqs validate`` all reach
a study through :func:`study` and nothing else, so adding one changes no other file.

The built-in studies are imported on first lookup (:data:`BUILT_IN`); another module
registers its own with :func:`register` when it is imported (a test does so).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from suite.store import ArraySpec, Region, SweepStore

if TYPE_CHECKING:  # types only: the spec imports this module
    from jobs.spec import SpecChecker, SweepSpec

#: the modules of the built-in studies, imported (and so registered) on first lookup
BUILT_IN = (
    "jobs.studies.dynamics",
    "jobs.studies.entanglement",
    "jobs.studies.kernels",
    "jobs.studies.loss_search",
)


@dataclass(frozen=True)
class Task:
    """One unit of work: members ``[start, stop)`` of the ensemble at one grid point."""

    id: int
    point: tuple[int, ...]
    shard: int
    start: int
    stop: int

    @property
    def members(self) -> np.ndarray:
        return np.arange(self.start, self.stop)


@dataclass(frozen=True)
class Layout:
    """What a study's store holds: arrays, values written at creation, attributes."""

    arrays: list[ArraySpec]
    initial: dict[str, np.ndarray]
    attrs: dict[str, Any]
    #: Gram matrices to write in Dask tiles after the arrays exist: (array, prefix, fn, rows, cols)
    grams: list[tuple[str, tuple[int, ...], Callable[[Any], Any], np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class TaskCost:
    """The dominant arithmetic of one task, counted analytically (a rough estimate).

    ``flop`` is the whole task, or ``None`` when its number of steps is only known once
    the store is prepared (dynamics with ``training.max_steps = 0``: the steps come from
    the infinite-width convergence); ``flop_per_step`` is one training step of all the
    task's members (studies that train; None otherwise).
    """

    flop: float | None
    flop_per_step: float | None = None


class Study(ABC):
    """One study: its spec, its grid, its store, its tasks, its aggregation, its costs.

    Class attributes: ``name`` (the spec's ``sweep.study``), ``sections`` (the spec
    sections it takes besides ``[sweep]`` and ``[executor]``), ``grid_keys`` (the keys
    of its ``[grid]``; :meth:`axes` orders the axes) and ``lowered_by`` (per memory phase,
    the spec field that lowers it, for the refusal message).
    """

    name: ClassVar[str]
    sections: ClassVar[tuple[str, ...]]
    grid_keys: ClassVar[tuple[str, ...]]
    lowered_by: ClassVar[dict[str, str]]

    def check(self, spec: SweepSpec, check: SpecChecker) -> None:  # noqa: B027 (optional)
        """Cross-field rules beyond each field's own (raise ``check.error(...)``)."""

    @abstractmethod
    def axes(self, spec: SweepSpec) -> dict[str, tuple[Any, ...]]:
        """The grid's axes by name, in the order of the store's leading dimensions."""

    @abstractmethod
    def memory(self, spec: SweepSpec) -> dict[str, int]:
        """Rough peak bytes of each phase: ``preparation``, ``shard`` and ``aggregation``."""

    @abstractmethod
    def layout(self, spec: SweepSpec) -> Layout:
        """The store: its arrays, what is prepared when it is created, its attributes."""

    @abstractmethod
    def run(self, spec: SweepSpec, store: SweepStore, task: Task) -> list[tuple[str, Region]]:
        """Compute one task, write it into its own chunks, and return the regions written."""

    @abstractmethod
    def aggregate(self, store: SweepStore, point: tuple[int, ...]) -> None:
        """Combine the tasks of one grid point into the point's chunks of the aggregates."""

    @abstractmethod
    def cost(self, spec: SweepSpec, task: Task) -> TaskCost:
        """The task's dominant arithmetic, counted analytically (``nnqs validate``)."""

    def checkpoint_bytes(self, spec: SweepSpec) -> int:
        """Disk the checkpoints of its largest task take (``jobs.checkpoints``); 0 for a
        study whose tasks do not checkpoint."""
        return 0


_STUDIES: dict[str, Study] = {}


def register(study: Study) -> Study:
    """Make ``study`` known by its name (a second study of the same name is refused)."""
    held = _STUDIES.get(study.name)
    if held is not None and type(held) is not type(study):
        raise ValueError(f"a study named {study.name!r} is already registered ({held!r})")
    _STUDIES[study.name] = study
    return study


def names() -> tuple[str, ...]:
    """The names of every registered study (the built-in ones first)."""
    _load_built_in()
    return tuple(_STUDIES)


def study(name: str) -> Study:
    """The registered study ``name``; ``KeyError`` naming the known ones if there is none."""
    _load_built_in()
    if name not in _STUDIES:
        raise KeyError(f"no study named {name!r} (known: {', '.join(_STUDIES)})")
    return _STUDIES[name]


def _load_built_in() -> None:
    for module in BUILT_IN:
        importlib.import_module(module)
