"""The sweep studies: one module per study, each one :class:`~jobs.registry.Study`.

Each study says which grid axes it has, which arrays its store holds, what is
prepared once when the store is created (targets, infinite-width predictions,
Gram matrices, coordinates), what one task computes (an ensemble shard at one grid
point, written into its own chunks), how a grid point is aggregated, what each phase
needs in memory and what a task costs. A task reads what it needs from the store, so
a worker needs nothing but the store's path and its task number.

* :mod:`~jobs.studies.dynamics` (paper Figs. 2-3): grid ``train_size x lr_factor x width``;
* :mod:`~jobs.studies.entanglement` (Fig. 1, the CosNet crossover): grid
  ``architecture x width x cosnet_s0``;
* :mod:`~jobs.studies.kernels`: grid ``width``;
* :mod:`~jobs.studies.loss_search` (docs/theory.md §7): the ``ground_state``,
  ``fidelity`` and ``tomography`` studies, grid ``lr_factor x width``.

:mod:`~jobs.studies.base` holds what they share (tasks, layouts, the memory check) and
:mod:`~jobs.studies.problems` the supervised problems of the dynamics and kernels studies.
A new study is a module like these plus its line in :data:`jobs.registry.BUILT_IN`.
"""

from jobs.registry import Layout, Task, TaskCost
from jobs.studies import dynamics, entanglement, kernels, loss_search
from jobs.studies.base import (
    check_memory,
    expand,
    grid_axes,
    grid_value,
    memory_estimates,
    write_grams,
)

__all__ = [
    "Layout",
    "Task",
    "TaskCost",
    "check_memory",
    "dynamics",
    "entanglement",
    "expand",
    "grid_axes",
    "grid_value",
    "kernels",
    "loss_search",
    "memory_estimates",
    "write_grams",
]
