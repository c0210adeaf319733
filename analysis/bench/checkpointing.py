"""What mid-task checkpoints cost a training task (README "Checkpoints"; the
``checkpoint_overhead`` case of ``nnqs bench``).

One task of the shapes of ``paper-tfim``'s widest (TFIM 3x3, B = 256, float32, a
decoupled one-hidden-layer ReLU NNQS; ``members`` of ``width``), ``steps`` steps logged
at ``log_points`` steps, timed four ways in one process, interleaved (so that a load
that drifts hits each alike), each the best of ``repeats`` after a compiling warm-up:

* ``unsliced``: one program call per logged step, the fewest a run can make
  (``suite.training.checkpoint.SLICES`` set to 1 for this run only);
* ``sliced``: the engine as it runs, cut into slices, with no checkpoints;
* ``default``: with a task's checkpoints at the default cadence
  (:class:`jobs.spec.Checkpoint`: every 600 s; a task shorter than that saves nothing),
  in a temporary folder;
* ``every_log``: saving at every logged step (each save timed).

The figures are ratios to ``unsliced`` (1 is no overhead); at the default cadence the
ratio adds one save per ``every_seconds`` of training to ``default / unsliced``.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any

from analysis.bench.measures import Measured


def measure_checkpoint_overhead(params: Mapping[str, Any]) -> Measured:
    """Seconds of one task four ways (module docstring) and the derived overheads."""
    import numpy as np

    from analysis.bench import training as bt
    from jobs.checkpoints import TaskCheckpoints, task_folder
    from jobs.spec import Checkpoint
    from suite import networks as nw
    from suite.supervised import log_steps
    from suite.training import checkpoint, train_ensemble

    x, phi, train = bt.problem()
    train = train[: params["train_size"]]
    nnqs = nw.decoupled(nw.mlp(1, params["width"]))
    steps = log_steps(params["steps"], params["log_points"])

    def run(checkpoints: Any = None) -> None:
        train_ensemble(
            nnqs, x, phi, train, seed=bt.SEED, members=range(params["members"]),
            learning_rate=bt.LEARNING_RATE, log_steps=steps, dtype="float32",
            checkpoints=checkpoints,
        )  # fmt: skip

    class Timed(TaskCheckpoints):
        """A task's checkpoints that time each save."""

        def save(self, snapshot: checkpoint.Snapshot) -> None:
            clock = time.perf_counter()
            super().save(snapshot)
            save_times.append(time.perf_counter() - clock)

    def unsliced() -> None:
        slices = checkpoint.SLICES
        try:
            checkpoint.SLICES = 1
            run()
        finally:
            checkpoint.SLICES = slices

    policy = Checkpoint()
    sizes: list[int] = []
    save_times: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:

        def checkpointed(policy: Checkpoint) -> Callable[[], None]:
            def call() -> None:
                folder = task_folder(tmp, 0)
                with Timed(tmp, 0, policy, int(steps[-1]), log=lambda _: None) as checkpoints:
                    run(checkpoints)
                sizes.append(sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()))
                shutil.rmtree(folder, ignore_errors=True)

            return call

        ways = {
            "unsliced": unsliced,
            "sliced": run,
            "default": checkpointed(policy),
            "every_log": checkpointed(Checkpoint(every_seconds=0, every_logs=1)),
        }
        run()  # compile
        seconds: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(params["repeats"]):  # interleaved: a load that drifts hits each way
            for name, call in ways.items():
                clock = time.perf_counter()
                call()
                seconds[name].append(time.perf_counter() - clock)
    best = {name: min(values) for name, values in seconds.items()}
    save_seconds = float(np.median(save_times))
    per_save = save_seconds / policy.every_seconds
    values = {
        "task_seconds": best["sliced"],
        "sliced_vs_unsliced": best["sliced"] / best["unsliced"],
        "default_vs_unsliced": best["default"] / best["unsliced"] + per_save,
        "save_seconds": save_seconds,
        "every_log_vs_unsliced": best["every_log"] / best["unsliced"],
        "checkpoint_mb": max(sizes) / 1e6,
    }
    notes = [
        f"{len(steps)} logged steps, {checkpoint.slice_bounds(steps).size - 1} slices; "
        f"default cadence: a save every {policy.every_seconds:.0f} s of training"
    ]
    return values, notes
