"""The ``nnqs bench`` cases (:data:`CASES`): what each measures, its metrics with unit and
direction, the parameters of its sizes (:data:`SIZES`), and the function that measures it.

The function is named ``"module:function"`` and imported only when the case runs
(:func:`analysis.bench.run.measurement`): declaring the cases, for the ``nnqs bench``
parser and its ``--cases``, loads neither JAX nor the suite nor the measurements.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

#: where records go (``nnqs bench --records``), and slurm_scaling's stores with them
RECORDS_DIR = Path("runs") / "bench"
#: ``quick``: seconds, for tests; ``full``: a real run here; ``gpu``: one modern GPU
SIZES = ("quick", "full", "gpu")
#: the dtypes of training_scale, as they end its metric names
DTYPE_TAGS = {"float32": "f32", "float64": "f64"}


@dataclass(frozen=True)
class Metric:
    """A figure of a case: its unit and which way is better."""

    unit: str
    better: Literal["higher", "lower"] = "higher"


@dataclass(frozen=True)
class Scaling:
    """What a scaling case scales: ``kind`` (``strong``: a fixed problem; ``weak``: the
    problem grows with the workers), what a worker is, and the throughput metric (its name
    without the ``_<workers>`` suffix; ``speedup_<n>`` and ``efficiency_<n>`` go with it)."""

    kind: Literal["strong", "weak"]
    workers: str
    throughput: str

    def metrics(self, unit: str, counts: Sequence[int]) -> dict[str, Metric]:
        """The declared metrics at ``counts`` workers: throughput in ``unit``, speed-up
        (``x``) and efficiency (``fraction``, 1 ideal) above one worker."""
        metrics = {f"{self.throughput}_{n}": Metric(unit) for n in counts}
        for n in counts[1:]:
            metrics |= {f"speedup_{n}": Metric("x"), f"efficiency_{n}": Metric("fraction")}
        return metrics


@dataclass(frozen=True)
class Case:
    """A declared benchmark: what it measures, its metrics and its sizes.

    ``metrics`` lists every metric the case can report (a run may report fewer, e.g. no
    neural-tangents figures without its environment); ``run`` names the function that
    measures it, ``"module:function"`` (a :data:`~analysis.bench.measures.Measured`
    from the parameters); ``quick``, ``full`` and ``gpu`` are the parameters ``run`` is
    called with at each size (``gpu`` defaults to ``full``); ``scaling`` says how a
    scaling case scales.
    """

    name: str
    measures: str
    metrics: Mapping[str, Metric]
    quick: Mapping[str, Any]
    full: Mapping[str, Any]
    run: str
    gpu: Mapping[str, Any] | None = None
    scaling: Scaling | None = None

    def parameters(self, size: str) -> dict[str, Any]:
        """The parameters of ``size`` (one of :data:`SIZES`)."""
        sizes = {"quick": self.quick, "full": self.full, "gpu": self.gpu or self.full}
        return dict(sizes[size])


_TRAINING_FULL = {"width": 1024, "members": 256, "steps": 6, "repeats": 3, "idle_timeout": 2.0}
_TRAINING_QUICK = {"width": 128, "members": 32, "steps": 100, "repeats": 1, "idle_timeout": 0.0}
#: the sweep of process_scaling and slurm_scaling (analysis.bench.parallel.SWEEP_SPEC)
_SWEEP_QUICK = {
    "lx": 2,
    "ly": 2,
    "width": 32,
    "train_size": 8,
    "members": 4,
    "shard_size": 2,
    "max_steps": 20,
}
_SWEEP_FULL = {
    "lx": 3,
    "ly": 3,
    "width": 1024,
    "train_size": 128,
    "members": 256,
    "shard_size": 32,
    "max_steps": 200,
}
#: slurm_scaling: the cluster profile, and where the stores go (shared with the nodes)
_SLURM = {"profile": "local", "directory": str(RECORDS_DIR)}
_DEVICES = Scaling("strong", "devices", "member_steps_per_s")
_PROCESSES = Scaling("strong", "processes", "tasks_per_s")
_ARRAY_TASKS = Scaling("strong", "SLURM array tasks", "tasks_per_s")
_WEAK = Scaling("weak", "devices", "member_steps_per_s")

#: exponents are fitted only in the full size: at the quick sizes fixed costs dominate
_KERNEL_FLOW_QUICK = {"sites": [4, 6, 8], "dense_sites": [4, 6], "fit_from": None,
                      "dense_fit_from": None, "members": 2, "steps": 5, "repeats": 1,
                      "h": 3.0}  # fmt: skip
_KERNEL_FLOW_FULL = {"sites": [8, 10, 12, 14, 16, 18, 20], "dense_sites": [8, 10, 12],
                     "fit_from": 14, "dense_fit_from": 8, "members": 4, "steps": 20,
                     "repeats": 2, "h": 3.0}  # fmt: skip
_GROUND_STATE_QUICK = {"lx": 2, "ly": 2, "fields": [3.0], "members": 8, "steps": 2000,
                       "log_points": 8, "lr_factor": 0.5, "chunk": 8, "seed": 0}  # fmt: skip
_GROUND_STATE_FULL = {"lx": 3, "ly": 3, "fields": [3.0, 1.0], "members": 256, "steps": 100000,
                      "log_points": 30, "lr_factor": 0.5, "chunk": 256, "seed": 0}  # fmt: skip


def _kernel_flow_metrics() -> dict[str, Metric]:
    sizes = (_KERNEL_FLOW_QUICK, _KERNEL_FLOW_FULL)
    metrics = {"walsh_exponent": Metric("", "lower"), "dense_exponent": Metric("", "lower")}
    for n in sorted({n for size in sizes for n in size["sites"]}):
        metrics[f"walsh_step_ms_{n}"] = Metric("ms", "lower")
    for n in sorted({n for size in sizes for n in size["dense_sites"]}):
        metrics[f"dense_step_ms_{n}"] = Metric("ms", "lower")
        metrics[f"walsh_speedup_{n}"] = Metric("x")
    return metrics


def _ground_state_metrics() -> dict[str, Metric]:
    per_field = {
        "seconds": Metric("s", "lower"),
        "gap": Metric(""),
        "eta_max": Metric(""),
        "max_final_error": Metric("relative", "lower"),
        "median_final_error": Metric("relative", "lower"),
        "max_final_infidelity": Metric("", "lower"),
        "fraction_within_tolerance": Metric("fraction"),
        "steps_to_tolerance": Metric("steps", "lower"),
    }
    fields = {h for size in (_GROUND_STATE_QUICK, _GROUND_STATE_FULL) for h in size["fields"]}
    return {f"{name}_h{h:g}": metric for h in sorted(fields) for name, metric in per_field.items()}


CASES: dict[str, Case] = {
    case.name: case
    for case in (
        Case(
            name="kernel_gram",
            measures="infinite-width NTK Gram entries/s: ours, and neural-tangents'",
            metrics={
                "entries_per_s": Metric("entries/s"),
                "entries_per_s_into_buffer": Metric("entries/s"),
                "nt_entries_per_s": Metric("entries/s"),
                "speedup_vs_nt": Metric("x"),
            },
            quick={"n_sites": 12, "n_columns": 256, "repeats": 1, "neural_tangents": False},
            full={"n_sites": 16, "n_columns": 1024, "repeats": 3, "neural_tangents": True},
            run="analysis.bench.measures:measure_kernel_gram",
        ),
        Case(
            name="training",
            measures="ensemble gradient-descent member-steps/s and GFLOP/s (train_ensemble)",
            metrics={
                "member_steps_per_s": Metric("member-steps/s"),
                "gflop_per_s": Metric("GFLOP/s"),
            },
            quick=_TRAINING_QUICK,
            full=_TRAINING_FULL,
            run="analysis.bench.measures:measure_training",
        ),
        Case(
            name="loss_training",
            measures="ensemble gradient descent on the TFIM 3x3 energy (train_on_loss) "
            "against the supervised MSE on the same 512 points, member-steps/s",
            metrics={
                "energy_member_steps_per_s": Metric("member-steps/s"),
                "supervised_member_steps_per_s": Metric("member-steps/s"),
                "energy_over_supervised": Metric("x"),
            },
            quick={
                "width": 64,
                "members": 8,
                "steps": 20,
                "repeats": 1,
                "idle_timeout": 0.0,
                "energy_learning_rate": 0.05,
            },
            full={
                "width": 1024,
                "members": 256,
                "steps": 6,
                "repeats": 3,
                "idle_timeout": 2.0,
                "energy_learning_rate": 0.05,
            },
            run="analysis.bench.measures:measure_loss_training",
        ),
        Case(
            name="renyi2_chunked",
            measures="route (b) GP Renyi-2: chunked Gram to Zarr and traces, entries/s",
            metrics={"entries_per_s": Metric("entries/s")},
            quick={"n_sites": 8, "block": 64},
            full={"n_sites": 14, "block": 1024},
            run="analysis.bench.measures:measure_renyi2_chunked",
        ),
        Case(
            name="zarr_io",
            measures="Zarr v3 write and read bandwidth of a chunked float64 array",
            metrics={"write_gb_per_s": Metric("GB/s"), "read_gb_per_s": Metric("GB/s")},
            quick={"shape": [1024, 1024], "chunks": [256, 256], "repeats": 1},
            full={"shape": [8192, 8192], "chunks": [1024, 1024], "repeats": 3},
            run="analysis.bench.measures:measure_zarr_io",
        ),
        Case(
            name="device_scaling",
            measures="strong scaling over devices: training member-steps/s of a fixed "
            "ensemble, speed-up and efficiency",
            metrics=_DEVICES.metrics("member-steps/s", (1, 2, 4, 8)),
            quick={"devices": [1, 2], **_TRAINING_QUICK},
            full={"devices": [1, 2, 4], **_TRAINING_FULL},
            gpu={"devices": [1, 2, 4, 8], **_TRAINING_FULL},
            run="analysis.bench.parallel:measure_device_scaling",
            scaling=_DEVICES,
        ),
        Case(
            name="process_scaling",
            measures="strong scaling over local processes: nnqs run tasks/s of a small "
            "sweep, speed-up and efficiency",
            metrics=_PROCESSES.metrics("tasks/s", (1, 2, 4)),
            quick={"processes": [1, 2], "spec": _SWEEP_QUICK},
            full={"processes": [1, 2], "spec": _SWEEP_FULL},
            run="analysis.bench.parallel:measure_process_scaling",
            scaling=_PROCESSES,
        ),
        Case(
            name="slurm_scaling",
            measures="strong scaling over SLURM array tasks running at once: tasks/s of the "
            "process_scaling sweep submitted as a job array, speed-up and efficiency",
            metrics=_ARRAY_TASKS.metrics("tasks/s", (1, 2, 4)),
            quick={"array_tasks": [1, 2], "spec": _SWEEP_QUICK, **_SLURM},
            full={"array_tasks": [1, 2], "spec": _SWEEP_FULL, **_SLURM},
            run="analysis.bench.parallel:measure_slurm_scaling",
            scaling=_ARRAY_TASKS,
        ),
        Case(
            name="weak_scaling",
            measures="weak scaling over devices: training with `members` members per device, "
            "member-steps/s, scaled speed-up and efficiency t(1, M) / t(n, n M)",
            metrics=_WEAK.metrics("member-steps/s", (1, 2, 4, 8)),
            quick={"devices": [1, 2], **_TRAINING_QUICK},
            full={"devices": [1, 2, 4], **_TRAINING_FULL},
            gpu={"devices": [1, 2, 4, 8], **_TRAINING_FULL},
            run="analysis.bench.parallel:measure_weak_scaling",
            scaling=_WEAK,
        ),
        Case(
            name="training_scale",
            measures="ensemble GD at M >= 4096 members, float32 and float64: member-steps/s, "
            "GFLOP/s and the fraction of the device's peak FLOP/s",
            metrics={
                f"{metric}_w{width}_{tag}": Metric(unit)
                for width in (64, 256, 1024, 4096)
                for tag in DTYPE_TAGS.values()
                for metric, unit in (
                    ("member_steps_per_s", "member-steps/s"),
                    ("gflop_per_s", "GFLOP/s"),
                    ("peak_fraction", "fraction of peak"),
                )
            },
            quick={
                "members": 16,
                "widths": [64, 256],
                "dtypes": ["float32", "float64"],
                "steps": 30,
                "repeats": 1,
            },
            full={
                "members": 4096,
                "widths": [1024, 4096],
                "dtypes": ["float32", "float64"],
                "steps": 3,
                "repeats": 1,
            },
            gpu={
                "members": 4096,
                "widths": [1024, 4096],
                "dtypes": ["float32", "float64"],
                "steps": 20,
                "repeats": 3,
            },
            run="analysis.bench.scale:measure_training_scale",
        ),
        Case(
            name="gram_full_basis",
            measures="NTK Gram over a whole spin basis (2^N x 2^N, float64, in row tiles): "
            "entries/s, written GB/s and the fraction of peak memory bandwidth",
            metrics={
                "entries_per_s": Metric("entries/s"),
                "write_gb_per_s": Metric("GB/s"),
                "bandwidth_fraction": Metric("fraction of peak"),
            },
            quick={"n_sites": 10, "tile": 256, "width": 512},
            full={"n_sites": 16, "tile": 4096, "width": 512},
            gpu={"n_sites": 16, "tile": 16384, "width": 512},
            run="analysis.bench.scale:measure_gram_full_basis",
        ),
        Case(
            name="checkpoint_overhead",
            measures="what mid-task checkpoints cost a paper-tfim-sized training task: "
            "slicing, the default cadence, one save",
            metrics={
                "task_seconds": Metric("s", "lower"),
                "sliced_vs_unsliced": Metric("x", "lower"),
                "default_vs_unsliced": Metric("x", "lower"),
                "save_seconds": Metric("s", "lower"),
                "every_log_vs_unsliced": Metric("x", "lower"),
                "checkpoint_mb": Metric("MB", "lower"),
            },
            quick={
                "width": 64,
                "members": 4,
                "train_size": 32,
                "steps": 40,
                "log_points": 4,
                "repeats": 1,
            },
            full={
                "width": 4096,
                "members": 32,
                "train_size": 256,
                "steps": 600,
                "log_points": 20,
                "repeats": 2,
            },
            run="analysis.bench.checkpointing:measure_checkpoint_overhead",
        ),
        Case(
            name="kernel_flow_scaling",
            measures="infinite-width ensemble on the TFIM energy: seconds per step against "
            "D = 2^N, Walsh-Hadamard kernels against dense ones in the same run",
            metrics=_kernel_flow_metrics(),
            quick=_KERNEL_FLOW_QUICK,
            full=_KERNEL_FLOW_FULL,
            run="analysis.bench.kernel_flow:measure_kernel_flow_scaling",
        ),
        Case(
            name="infinite_ground_state",
            measures="ground-state search at infinite width: every NNGP draw's energy error "
            "against exact diagonalisation (TFIM, decoupled ReLU NNQS)",
            metrics=_ground_state_metrics(),
            quick=_GROUND_STATE_QUICK,
            full=_GROUND_STATE_FULL,
            run="analysis.bench.kernel_flow:measure_infinite_ground_state",
        ),
        Case(
            name="time_to_solution",
            measures="a named sweep spec from an empty store to aggregated results, seconds "
            "(projected past a deadline)",
            metrics={
                "seconds": Metric("s", "lower"),
                "projected_seconds": Metric("s", "lower"),
                "preparation_seconds": Metric("s", "lower"),
                "tasks_per_s": Metric("tasks/s"),
            },
            quick={
                "spec": "quickstart",
                "overrides": {
                    "grid.widths": [32],
                    "grid.train_sizes": [32],
                    "ensemble.members": 8,
                    "ensemble.shard_size": 4,
                    "training.max_steps": 20,
                    "training.log_points": 4,
                },
                "deadline_s": 120,
            },
            full={"spec": "paper-tfim", "overrides": {}, "deadline_s": 300},
            gpu={"spec": "paper-tfim", "overrides": {}, "deadline_s": 240},
            run="analysis.bench.scale:measure_time_to_solution",
        ),
    )
}
