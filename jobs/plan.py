"""What a sweep will do, without doing any of it (``nnqs validate``).

From a validated spec alone: the expanded grid (axis values, points, shards, tasks),
the memory estimate of each phase against what this host has
(:func:`jobs.studies.memory_estimates`), the disk a task's checkpoints take (and all
tasks', when kept or all interrupted), and per grid point the analytic FLOP count of
a task (:meth:`jobs.registry.Study.cost`) with, given a training throughput in GFLOP/s, the
time it takes. Nothing is built: no target, no kernel, no store.
"""

from __future__ import annotations

from typing import Any

from jobs.registry import study
from jobs.spec import SweepSpec, available_memory_bytes
from jobs.studies import expand, grid_axes, grid_value, memory_estimates

GIB = float(1 << 30)
NOTE = (
    "compute_seconds: the task's arithmetic at the given throughput, a lower bound; each "
    "task also starts a process or compiles its programs (seconds to tens of seconds), which "
    "dominates small tasks"
)


def significant(value: float) -> float:
    """``value`` to 4 significant digits (an estimate carries no more)."""
    return float(f"{value:.4g}")


def sweep_plan(spec: SweepSpec, gflop_per_s: float | None = None) -> dict[str, Any]:
    """The plan of ``spec``: grid, task count, memory per phase and cost per task.

    ``gflop_per_s`` converts FLOPs to compute seconds (``None``: FLOPs only). A task's
    seconds are ``None`` when its step count is set at preparation
    (``training.max_steps = 0``); ``compute_seconds_per_1000_steps`` is given as well.
    """
    if gflop_per_s is not None and not gflop_per_s > 0:
        raise ValueError(f"gflop_per_s must be a positive number, got {gflop_per_s!r}")
    tasks = expand(spec)
    estimates = memory_estimates(spec)
    available = available_memory_bytes()
    cost_of = study(spec.sweep.study).cost

    def seconds(flop: float | None) -> float | None:
        if flop is None or gflop_per_s is None:
            return None
        return significant(flop / (gflop_per_s * 1e9))

    points = []
    for task in tasks:
        if task.shard != 0:
            continue  # the shards of a point cost alike (the last may have fewer members)
        cost = cost_of(spec, task)
        point: dict[str, Any] = {
            "point": grid_value(spec, task),
            "members_per_task": task.stop - task.start,
            "gflop": None if cost.flop is None else significant(cost.flop / 1e9),
            "compute_seconds": seconds(cost.flop),
        }
        if cost.flop_per_step is not None:
            point["compute_seconds_per_1000_steps"] = seconds(1000 * cost.flop_per_step)
        points.append(point)
    total = [p["compute_seconds"] for p in points]
    shards = spec.ensemble.shards
    checkpoint = study(spec.sweep.study).checkpoint_bytes(spec)
    return {
        "spec": spec.source,
        "sweep": spec.sweep.name,
        "study": spec.sweep.study,
        "fingerprint": spec.fingerprint(),
        "grid": {name: list(values) for name, values in grid_axes(spec).items()},
        "points": len(points),
        "shards_per_point": shards,
        "tasks": len(tasks),
        "memory_gib": {name: round(value / GIB, 3) for name, value in estimates.items()},
        "available_gib": round(available / GIB, 3),
        "fits": max(estimates.values()) <= available,
        "checkpoint_disk_gib": {
            "per_task": significant(checkpoint / GIB),
            "all_tasks": significant(checkpoint * len(tasks) / GIB),
        },
        "gflop_per_s": gflop_per_s,
        "per_task": points,
        "total_compute_seconds": None if None in total else significant(shards * sum(total)),
        "note": NOTE,
    }
