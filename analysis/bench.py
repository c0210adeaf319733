"""``nnqs bench``: the performance suite that scores a machine, and its regression check.

The benchmarks are declared in :data:`CASES` (a name, what it measures, its metrics with
unit and direction, and the parameters of its sizes: ``quick`` for tests, ``full`` for
real runs here, ``gpu`` for one modern GPU); each runs one of the ``measure_*`` functions
here, which reuse the timing code of ``analysis/bench_kernels.py``, ``bench_training.py``
and ``bench_entanglement.py``, or of ``analysis/bench_scale.py`` and
``analysis/bench_parallel.py``:

* ``kernel_gram``: entries/s of the infinite-width NTK Gram matrix (ours, fresh and into
  a reused buffer), and of neural-tangents' ``jit(kernel_fn)`` when its environment
  (``.venv-nt``) exists;
* ``training``: member-steps/s and GFLOP/s of :func:`suite.training.train_ensemble`;
* ``renyi2_chunked``: entries/s of the route (b) Renyi-2 traces (:mod:`suite.replica`);
* ``zarr_io``: write and read bandwidth (GB/s) of a chunked float64 Zarr array;
* ``device_scaling``, ``process_scaling``, ``slurm_scaling``: strong scaling of training
  over 1, 2, 4 devices (fake CPU devices, or the real GPUs) and of a small sweep over 1
  and 2 local processes or concurrent SLURM array tasks; ``weak_scaling``: training with
  the members proportional to the devices. Each reports its throughput per worker count,
  the speed-up and the parallel efficiency (speed-up / workers);
* ``training_scale``: member-steps/s, GFLOP/s and fraction of peak FLOP/s at M >= 4096
  members, float32 and float64;
* ``gram_full_basis``: the NTK Gram over a whole spin basis (65,536^2 at full size) in
  tiles: entries/s, GB/s and fraction of peak memory bandwidth;
* ``time_to_solution``: a named spec (``paper-tfim`` at full size) from nothing to
  aggregated results, seconds (projected past a deadline).

A run gives a *record* (JSON): ``schema``, ``size``, ``system`` (host, CPU model, cores,
memory, accelerators, package versions and git commit, SLURM job), ``cases`` (the
parameters, seconds and metric declarations of each case run), ``results``
(``{case: {metric: value}}``), ``notes``, ``errors`` (a case that raised, as one line),
``load_average`` and ``seconds``. :func:`compare` scores it ReFrame-style against the
references of its system (``analysis/references/<system>.json``: per ``case.metric`` a
value, a tolerance ``[lower, upper]`` as fractions of it, ``null`` for unbounded, and a
unit) and against the most recent earlier record of the same system and size (in
``runs/bench/``): per metric ``ok``, ``regression``, ``improvement`` or ``no-reference``,
printed as a table (:func:`analysis.bench_report.metrics_table`). Records of any two
systems compare metric by metric (:func:`analysis.bench_report.compare_records`), and
the scaling cases of a record make efficiency tables and a figure
(:func:`analysis.bench_report.write_scaling_report`).

    nnqs bench                          # all cases, full size: runs/bench/<system>-<n>.json
    nnqs bench --quick --cases zarr_io training --format table
    nnqs bench --executor slurm --profile local   # as one SLURM job (submitit)
    nnqs bench compare A.json B.json [--json]     # B against A, per metric
    nnqs bench report RECORD.json [--out DIR]     # scaling tables (Markdown) and figure
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from analysis import bench_parallel, bench_report, bench_scale
from analysis.bench_case import CaseSkipped, Measured
from jobs.progress import ProgressBar

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DIR = ROOT / "analysis" / "references"
RECORDS_DIR = Path("runs") / "bench"
#: 2: zarr_io in GB/s (was MB/s), scaling cases with efficiencies (:func:`load_record`
#: reads schema 1 records as 2)
SCHEMA = 2
#: ``quick``: seconds, for tests; ``full``: a real run here; ``gpu``: one modern GPU
SIZES = ("quick", "full", "gpu")
#: tolerance of a comparison with an earlier record, or with a reference saved by
#: ``--save-reference``: a drop to half is a regression, no rise is flagged
DEFAULT_TOLERANCE: tuple[float | None, float | None] = (-0.5, None)
_SYSTEM_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


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
    neural-tangents figures without its environment); ``quick``, ``full`` and ``gpu``
    are the parameters ``run`` is called with at each size (``gpu`` defaults to
    ``full``); ``scaling`` says how a scaling case scales.
    """

    name: str
    measures: str
    metrics: Mapping[str, Metric]
    quick: Mapping[str, Any]
    full: Mapping[str, Any]
    run: Callable[[Mapping[str, Any]], Measured] = field(repr=False)
    gpu: Mapping[str, Any] | None = None
    scaling: Scaling | None = None

    def parameters(self, size: str) -> dict[str, Any]:
        """The parameters of ``size`` (one of :data:`SIZES`)."""
        sizes = {"quick": self.quick, "full": self.full, "gpu": self.gpu or self.full}
        return dict(sizes[size])


# -- measurements ------------------------------------------------------------------


def measure_kernel_gram(params: Mapping[str, Any]) -> Measured:
    """Entries/s of ``gram`` (NTK of ``Dense(512)-Relu-Dense(1)``, float64) between all
    ``2**n_sites`` spin configurations and ``n_columns`` of them, a fresh result and into
    a reused buffer, each the best of ``repeats`` after a warm-up
    (:func:`analysis.bench_kernels.time_ours`); with ``neural_tangents`` and its python
    present, neural-tangents' ``jit(kernel_fn)`` on the same problem and our buffered
    route's speed-up over it (:func:`analysis.bench_kernels.run_neural_tangents`)."""
    import numpy as np

    from analysis import bench_kernels as bk

    x1, x2, columns = bk.problem(params["n_sites"], params["n_columns"])
    fresh_s, buffer_s, fresh, same = bk.time_ours(x1, x2, params["repeats"])
    del fresh
    if not same:
        raise ValueError("gram into a buffer differs from a fresh gram")
    entries = len(x1) * len(x2)
    values = {"entries_per_s": entries / fresh_s, "entries_per_s_into_buffer": entries / buffer_s}
    notes: list[str] = []
    python = bk.default_nt_python()
    if not params["neural_tangents"]:
        notes.append("neural-tangents not run at this size (its script has a fixed problem)")
    elif not python.is_file():
        notes.append(f"neural-tangents not run: no {python} (make .venv-nt/.installed)")
    else:
        if (params["n_sites"], params["n_columns"]) != (bk.N_SITES, bk.N_COLUMNS):
            raise ValueError(
                f"neural-tangents runs only {bk.N_SITES} sites x {bk.N_COLUMNS} columns"
            )
        try:
            with tempfile.TemporaryDirectory() as tmp:
                nt = bk.run_neural_tangents(python, params["repeats"], Path(tmp))
        except RuntimeError as error:  # ours still counts; the script's last words
            lines = str(error).strip().splitlines()
            notes.append(f"neural-tangents failed: {' '.join([lines[0], *lines[1:][-1:]])}")
            return values, notes
        if not np.array_equal(nt["arrays"]["columns"], columns):
            raise ValueError("nt_benchmark.py chose other columns: the two problems differ")
        values["nt_entries_per_s"] = entries / nt["seconds"]
        values["speedup_vs_nt"] = nt["seconds"] / buffer_s
        notes.append(f"neural-tangents with jax {nt['jax']}")
    return values, notes


def measure_training(params: Mapping[str, Any]) -> Measured:
    """Member-steps/s and GFLOP/s of :func:`suite.training.train_ensemble` (decoupled
    one-hidden-layer ReLU NNQS of ``width``, ``members`` members, TFIM 3x3, B = 256,
    float32, all visible devices): ``(t(steps) - t(1)) / (steps - 1)`` of whole calls,
    each the best of ``repeats`` (:func:`analysis.bench_training.per_step`), FLOPs by
    :func:`analysis.bench_training.flops_per_member_step`."""
    import jax

    from analysis import bench_training as bt
    from suite import networks as nw

    x, phi, train = bt.problem()
    nnqs = nw.decoupled(nw.mlp(1, params["width"]))
    run = bt.ours(nnqs, x, phi, train, params["members"])
    seconds = bt.per_step(run, params["steps"], params["repeats"], params["idle_timeout"])
    if seconds <= 0:
        raise ValueError(f"per-step time {seconds:.3g} s <= 0: raise the training steps")
    rate = params["members"] / seconds
    flops = bt.flops_per_member_step(bt.N_TRAIN, params["width"], x.shape[1])
    devices = jax.devices()
    notes = [f"{len(devices)} {devices[0].platform} device(s)"]
    return {"member_steps_per_s": rate, "gflop_per_s": rate * flops / 1e9}, notes


def measure_renyi2_chunked(params: Mapping[str, Any]) -> Measured:
    """Entries/s of route (b) of :mod:`suite.replica` (:func:`~suite.replica.chunked_traces`
    of the ReLU NNGP on ``n_sites`` spins: the ``4**n_sites``-entry Gram matrix written to
    a Zarr store in ``block``-row tiles with Dask, then the traces of every cut), one run
    in a temporary directory (:func:`analysis.bench_entanglement.chunked_child`); the
    traces must match the closed form (route (c)) to ``1e-8``."""
    from analysis.bench_entanglement import chunked_child

    with tempfile.TemporaryDirectory() as tmp:
        run = chunked_child(params["n_sites"], params["block"], Path(tmp) / "gram", None)
    if not run["max_relative_deviation"] <= 1e-8:
        raise ValueError(
            f"route (b) deviates from the closed form by {run['max_relative_deviation']:.1e}"
        )
    return {"entries_per_s": run["gram_entries"] / run["seconds"]}, []


def measure_zarr_io(params: Mapping[str, Any]) -> Measured:
    """Write and read bandwidth (GB/s, 1e9 bytes of float64 values) of a Zarr v3 array of
    ``shape`` in ``chunks`` with the suite's store settings (zarr's default codecs) in a
    temporary directory (``$TMPDIR``): random values written whole, then read whole, each
    the best of ``repeats``. Reads may come from the page cache (it is not dropped)."""
    import numpy as np
    import zarr

    values = np.random.default_rng(0).standard_normal(params["shape"])
    write, read = [], []
    with tempfile.TemporaryDirectory() as tmp:
        array = zarr.create_array(
            Path(tmp) / "bench.zarr", shape=values.shape, chunks=params["chunks"], dtype="f8"
        )
        for _ in range(params["repeats"]):
            start = time.perf_counter()
            array[...] = values
            write.append(time.perf_counter() - start)
            start = time.perf_counter()
            back = array[...]
            read.append(time.perf_counter() - start)
        if not np.array_equal(back, values):
            raise ValueError("zarr read back other values than it wrote")
    gigabytes = values.nbytes / 1e9
    return {"write_gb_per_s": gigabytes / min(write), "read_gb_per_s": gigabytes / min(read)}, []


# -- the registry ------------------------------------------------------------------

_TRAINING_FULL = {"width": 1024, "members": 256, "steps": 6, "repeats": 3, "idle_timeout": 2.0}
_TRAINING_QUICK = {"width": 128, "members": 32, "steps": 100, "repeats": 1, "idle_timeout": 0.0}
#: the sweep of process_scaling and slurm_scaling (bench_parallel.SWEEP_SPEC)
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
            run=measure_kernel_gram,
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
            run=measure_training,
        ),
        Case(
            name="renyi2_chunked",
            measures="route (b) GP Renyi-2: chunked Gram to Zarr and traces, entries/s",
            metrics={"entries_per_s": Metric("entries/s")},
            quick={"n_sites": 8, "block": 64},
            full={"n_sites": 14, "block": 1024},
            run=measure_renyi2_chunked,
        ),
        Case(
            name="zarr_io",
            measures="Zarr v3 write and read bandwidth of a chunked float64 array",
            metrics={"write_gb_per_s": Metric("GB/s"), "read_gb_per_s": Metric("GB/s")},
            quick={"shape": [1024, 1024], "chunks": [256, 256], "repeats": 1},
            full={"shape": [8192, 8192], "chunks": [1024, 1024], "repeats": 3},
            run=measure_zarr_io,
        ),
        Case(
            name="device_scaling",
            measures="strong scaling over devices: training member-steps/s of a fixed "
            "ensemble, speed-up and efficiency",
            metrics=_DEVICES.metrics("member-steps/s", (1, 2, 4, 8)),
            quick={"devices": [1, 2], **_TRAINING_QUICK},
            full={"devices": [1, 2, 4], **_TRAINING_FULL},
            gpu={"devices": [1, 2, 4, 8], **_TRAINING_FULL},
            run=bench_parallel.measure_device_scaling,
            scaling=_DEVICES,
        ),
        Case(
            name="process_scaling",
            measures="strong scaling over local processes: nnqs run tasks/s of a small "
            "sweep, speed-up and efficiency",
            metrics=_PROCESSES.metrics("tasks/s", (1, 2, 4)),
            quick={"processes": [1, 2], "spec": _SWEEP_QUICK},
            full={"processes": [1, 2], "spec": _SWEEP_FULL},
            run=bench_parallel.measure_process_scaling,
            scaling=_PROCESSES,
        ),
        Case(
            name="slurm_scaling",
            measures="strong scaling over SLURM array tasks running at once: tasks/s of the "
            "process_scaling sweep submitted as a job array, speed-up and efficiency",
            metrics=_ARRAY_TASKS.metrics("tasks/s", (1, 2, 4)),
            quick={"array_tasks": [1, 2], "spec": _SWEEP_QUICK, **_SLURM},
            full={"array_tasks": [1, 2], "spec": _SWEEP_FULL, **_SLURM},
            run=bench_parallel.measure_slurm_scaling,
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
            run=bench_parallel.measure_weak_scaling,
            scaling=_WEAK,
        ),
        Case(
            name="training_scale",
            measures="ensemble GD at M >= 4096 members, float32 and float64: member-steps/s, "
            "GFLOP/s and the fraction of the device's peak FLOP/s",
            metrics={
                f"{metric}_w{width}_{tag}": Metric(unit)
                for width in (64, 256, 1024, 4096)
                for tag in bench_scale.DTYPE_TAGS.values()
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
            run=bench_scale.measure_training_scale,
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
            run=bench_scale.measure_gram_full_basis,
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
            run=bench_scale.measure_time_to_solution,
        ),
    )
}


# -- the record --------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU model from ``/proc/cpuinfo`` (``model name``), else what ``platform`` says."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "cpu model") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def _slug(text: str) -> str:
    text = re.sub(r"\((r|tm)\)|@.*|\b(cpu|processor)\b", " ", text.lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-") or "unknown"


def default_system_name(cpu: str, cores: int, devices: Mapping[str, Any]) -> str:
    """``<cpu model>-<cores>core``, slugified, plus ``-<gpu model>x<count>`` with GPUs."""
    name = f"{_slug(cpu)}-{cores}core"
    if devices["platform"] != "cpu":
        name += f"-{_slug(devices['kind'])}x{devices['count']}"
    return name


#: SLURM variables of the allocation, recorded besides those of suite.store.process_info
_SLURM_JOB = (
    "SLURM_JOB_PARTITION",
    "SLURM_JOB_NODELIST",
    "SLURM_CPUS_PER_TASK",
    "SLURM_MEM_PER_NODE",
)


def accelerator_info(device: Any) -> dict[str, Any]:
    """Memory (bytes JAX may use), the runtime's version string and, on NVIDIA GPUs,
    the driver and board from ``nvidia-smi``, of a JAX device; what is not known is left
    out."""
    info: dict[str, Any] = {}
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "bytes_limit" in stats:
        info["memory_bytes"] = int(stats["bytes_limit"])
    platform_version = getattr(getattr(device, "client", None), "platform_version", None)
    if platform_version:
        info["platform_version"] = str(platform_version)
    if device.platform == "gpu":
        query = "--query-gpu=name,memory.total,driver_version"
        try:
            smi = subprocess.run(
                ["nvidia-smi", query, "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            )
            info["nvidia_smi"] = smi.stdout.strip().splitlines()
        except (OSError, subprocess.SubprocessError):
            info["nvidia_smi"] = None
    return info


def system_info(name: str | None = None) -> dict[str, Any]:
    """This machine: ``name`` (default :func:`default_system_name`), CPU model, cores (of
    the machine, and usable by this process), memory, JAX devices (with
    :func:`accelerator_info`), and the provenance of
    :func:`suite.store.provenance` (git commit, package versions, python, host, pid and,
    under SLURM, the job, array and step ids)."""
    import jax

    from suite.store import provenance

    cpu, cores = cpu_model(), os.cpu_count() or 1
    found = jax.devices()
    devices = {"platform": found[0].platform, "kind": found[0].device_kind, "count": len(found)}
    devices |= accelerator_info(found[0])
    info = {
        "name": name or default_system_name(cpu, cores, devices),
        "cpu_model": cpu,
        "cpu_count": cores,
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores,
        "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        "devices": devices,
        **provenance(),
    }
    if "slurm" in info:  # the allocation too
        info["slurm"].update(
            {
                key.removeprefix("SLURM_").lower(): os.environ[key]
                for key in _SLURM_JOB
                if key in os.environ
            }
        )
    return info


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _last_line(error: BaseException) -> str:
    """The last line of an error message (submitit's: sbatch's or the job's traceback)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def run_bench(
    names: Sequence[str],
    size: str,
    system: str | None = None,
    progress: bool = True,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Run the cases ``names`` at ``size`` (one of :data:`SIZES`) here: the record.

    ``overrides`` replaces parameters of a case (``{case: {parameter: value}}``; the
    record holds the parameters used). A case that raises is recorded in ``errors``
    (one line) and the others still run; values are rounded to 4 significant digits.
    Progress goes to stderr.
    """
    clock, load_start = time.perf_counter(), os.getloadavg()
    record: dict[str, Any] = {
        "schema": SCHEMA,
        "size": size,
        "system": system_info(system),
        "cases": {},
        "results": {},
        "notes": {},
        "errors": {},
    }
    bar = ProgressBar(len(names), "bench", enabled=progress)
    for name in names:
        case = CASES[name]
        params = case.parameters(size) | dict((overrides or {}).get(name, {}))
        bar.advance(0, f"{name} ...")
        start = time.perf_counter()
        try:
            values, notes = case.run(params)
        except CaseSkipped as skip:  # noted, not an error
            values, notes = {}, [f"skipped: {_first_line(skip)}"]
        except Exception as error:  # recorded; the other cases still run
            record["errors"][name] = f"{type(error).__name__}: {_first_line(error)}"
            values, notes = {}, []
        seconds = time.perf_counter() - start
        record["cases"][name] = {
            "measures": case.measures,
            "parameters": params,
            "seconds": round(seconds, 2),
            "metrics": {m: dataclasses.asdict(case.metrics[m]) for m in values},
        }
        if case.scaling is not None:
            record["cases"][name]["scaling"] = dataclasses.asdict(case.scaling)
        if values:
            record["results"][name] = {m: float(f"{v:.4g}") for m, v in values.items()}
        if notes:
            record["notes"][name] = notes
        bar.advance(
            note=f"{name} {seconds:.1f} s" + (" FAILED" if name in record["errors"] else "")
        )
    bar.close()
    record["load_average"] = {"start": load_start, "end": os.getloadavg()}
    record["seconds"] = round(time.perf_counter() - clock, 2)
    return record


def next_record_path(records: Path, system: str) -> Path:
    """``<records>/<system>-<n>.json`` with ``n`` the next free integer (from 1)."""
    pattern = re.compile(rf"{re.escape(system)}-(\d+)\.json")
    taken = [int(m.group(1)) for p in records.glob("*.json") if (m := pattern.fullmatch(p.name))]
    return records / f"{system}-{max(taken, default=0) + 1}.json"


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` to ``path`` whole (a temporary file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(data, indent=1) + "\n")
    partial.replace(path)


#: metrics renamed since schema 1: ``case.old -> (new, factor to the new unit, new unit)``
_RENAMED_V1 = {
    "zarr_io.write_mb_per_s": ("write_gb_per_s", 1e-3, "GB/s"),
    "zarr_io.read_mb_per_s": ("read_gb_per_s", 1e-3, "GB/s"),
}


def _upgrade_v1(record: dict[str, Any]) -> None:
    """A schema 1 record as schema 2, in place: MB/s metrics renamed to GB/s, and the
    scaling cases' declarations and efficiencies (``speedup_n / n``) added."""
    for key, (new, factor, unit) in _RENAMED_V1.items():
        case, _, old = key.partition(".")
        if old in record["results"].get(case, {}):
            record["results"][case][new] = record["results"][case].pop(old) * factor
            record["cases"][case]["metrics"].pop(old, None)
            record["cases"][case]["metrics"][new] = {"unit": unit, "better": "higher"}
    for name, values in record["results"].items():
        scaling = CASES[name].scaling if name in CASES else None
        if scaling is None:
            continue
        record["cases"][name]["scaling"] = dataclasses.asdict(scaling)
        for metric in [m for m in values if m.startswith("speedup_")]:
            n = int(metric.removeprefix("speedup_"))
            values[f"efficiency_{n}"] = float(f"{values[metric] / n:.4g}")
            record["cases"][name]["metrics"][f"efficiency_{n}"] = {
                "unit": "fraction",
                "better": "higher",
            }
    record["schema"] = 2


def load_record(path: Path) -> dict[str, Any]:
    """Read a record written by :func:`run_bench` (a schema 1 record is upgraded to the
    current schema); ``ValueError`` naming the file when it is not one."""
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"record {path}: not valid JSON: {error}") from None
    keys = ("schema", "size", "system", "cases", "results")
    if not isinstance(record, dict) or not all(key in record for key in keys):
        raise ValueError(f"record {path}: not an nnqs bench record (needs {', '.join(keys)})")
    if record["schema"] not in (1, SCHEMA):
        raise ValueError(f"record {path}: schema {record['schema']!r}, this nnqs reads 1-{SCHEMA}")
    if record["schema"] == 1:
        _upgrade_v1(record)
    return record


def previous_record(
    records: Path, record: Mapping[str, Any], exclude: Path | None = None
) -> tuple[Path, dict[str, Any]] | None:
    """The most recent record in ``records`` made before ``record`` on the same system
    (name) at the same size, and its path; files that are not records are passed over."""
    found: tuple[float, Path, dict[str, Any]] | None = None
    created = record["system"]["created_unix"]
    for path in sorted(records.glob("*.json")):
        if exclude is not None and path.resolve() == exclude.resolve():
            continue
        try:
            other = load_record(path)
            same = (other["system"]["name"], other["size"]) == (
                record["system"]["name"],
                record["size"],
            )
            when = float(other["system"]["created_unix"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if same and when < created and (found is None or when > found[0]):
            found = (when, path, other)
    return None if found is None else (found[1], found[2])


# -- references and comparison -----------------------------------------------------


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_tolerance(value: Any, where: str) -> None:
    """``[lower, upper]``: fractions of the reference, ``lower <= 0``, ``upper >= 0``,
    either ``None`` (unbounded)."""
    if not (
        isinstance(value, list)
        and len(value) == 2
        and (value[0] is None or (_number(value[0]) and value[0] <= 0))
        and (value[1] is None or (_number(value[1]) and value[1] >= 0))
    ):
        raise ValueError(
            f"{where}.tolerance must be [lower <= 0 or null, upper >= 0 or null] "
            f"(fractions of the value), got {value!r}"
        )


def load_reference(path: Path) -> dict[str, Any]:
    """Read and check a reference file: ``system``, ``size``, ``measured`` (how and when)
    and ``references``: ``{"case.metric": {"value": v > 0, "tolerance": [lower, upper],
    "unit": u}}`` for declared metrics with their declared unit. ``ValueError`` (one line,
    naming the file and the key) otherwise."""
    where = f"reference {path}"
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{where}: not valid JSON: {error}") from None
    if not isinstance(data, dict) or data.get("size") not in SIZES:
        raise ValueError(f"{where}: size must be one of {', '.join(SIZES)}")
    if not isinstance(data.get("references"), dict):
        raise ValueError(f"{where}: references must be an object of case.metric entries")
    for key, entry in data["references"].items():
        case, _, metric = key.partition(".")
        if case not in CASES or metric not in CASES[case].metrics:
            raise ValueError(f"{where}: unknown metric {key!r} (cases: {', '.join(CASES)})")
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: references.{key} must be an object")
        value, unit = entry.get("value"), CASES[case].metrics[metric].unit
        if not (_number(value) and value > 0):
            raise ValueError(f"{where}: references.{key}.value must be a number > 0, got {value!r}")
        if entry.get("unit") != unit:
            raise ValueError(f"{where}: references.{key}.unit must be {unit!r}")
        _check_tolerance(entry.get("tolerance"), f"{where}: references.{key}")
    return data


def reference_from_record(record: Mapping[str, Any], measured: Mapping[str, Any]) -> dict[str, Any]:
    """A reference file holding every value of ``record`` with :data:`DEFAULT_TOLERANCE`."""
    return {
        "system": record["system"]["name"],
        "size": record["size"],
        "measured": dict(measured),
        "references": {
            f"{case}.{metric}": {
                "value": value,
                "tolerance": list(DEFAULT_TOLERANCE),
                "unit": record["cases"][case]["metrics"][metric]["unit"],
            }
            for case, values in record["results"].items()
            for metric, value in values.items()
        },
    }


def judge(
    value: float,
    baseline: float,
    tolerance: tuple[float | None, float | None],
    better: str,
) -> dict[str, Any]:
    """ReFrame's check: ``value`` within ``baseline x [1 + lower, 1 + upper]`` is ``ok``;
    outside on the worse side (below for ``better == "higher"``) a ``regression``, on the
    better side an ``improvement``."""
    ratio = value / baseline
    lower, upper = tolerance
    below = lower is not None and ratio < 1 + lower
    above = upper is not None and ratio > 1 + upper
    worse, finer = (below, above) if better == "higher" else (above, below)
    status = "regression" if worse else "improvement" if finer else "ok"
    return {
        "value": baseline,
        "ratio": float(f"{ratio:.4g}"),
        "tolerance": [lower, upper],
        "status": status,
    }


def compare(
    record: Mapping[str, Any],
    reference: Mapping[str, Any] | None = None,
    previous: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Score every metric of ``record`` against ``reference`` (a :func:`load_reference`
    file of the same size) and against ``previous`` (an earlier record; the tolerance of
    the metric's reference, else :data:`DEFAULT_TOLERANCE`).

    Returns ``metrics``: per ``case.metric`` its ``value``, ``unit``, ``better`` and, under
    ``reference`` and ``previous``, the baseline ``value``, ``ratio``, ``tolerance`` and
    ``status`` (``ok``, ``regression``, ``improvement``; ``no-reference`` without a
    baseline); and the ``regressions`` and ``improvements`` as lists.
    """
    if reference is not None and reference["size"] != record["size"]:
        raise ValueError(
            f"the reference holds {reference['size']} figures, the record is {record['size']}"
        )
    references = reference["references"] if reference is not None else {}
    result: dict[str, Any] = {"metrics": {}, "regressions": [], "improvements": []}
    for case, values in record["results"].items():
        declared = record["cases"][case]["metrics"]
        for metric, value in values.items():
            key, better = f"{case}.{metric}", declared[metric]["better"]
            entry: dict[str, Any] = {"value": value, "unit": declared[metric]["unit"]}
            entry["better"] = better
            ref = references.get(key)
            tolerance = tuple(ref["tolerance"]) if ref else DEFAULT_TOLERANCE
            old = (previous or {}).get("results", {}).get(case, {}).get(metric)
            baselines = {"reference": ref["value"] if ref else None, "previous": old}
            for against, baseline in baselines.items():
                if baseline is None or not baseline > 0:
                    entry[against] = {"status": "no-reference"}
                    continue
                entry[against] = judge(value, baseline, tolerance, better)
                status = entry[against]["status"]
                if status != "ok":
                    result["regressions" if status == "regression" else "improvements"].append(
                        {"metric": key, "against": against, "value": value, "baseline": baseline}
                        | {"ratio": entry[against]["ratio"]}
                    )
            result["metrics"][key] = entry
    return result


# -- SLURM ---------------------------------------------------------------------------

#: seconds between polls of a submitted job's state
POLL_S = 2.0


def submit_slurm(
    names: Sequence[str], size: str, system: str | None, profile: str, folder: Path
) -> dict[str, Any]:
    """Run :func:`run_bench` as one SLURM job (submitit, the cluster ``profile`` of
    ``slurm/profiles``), logs in ``folder/<job id>/``; wait for it and return its record
    (made on the compute node: its system, its SLURM job ids)."""
    import submitit

    from jobs.profiles import load_profile, submitit_parameters

    cluster = load_profile(profile)
    try:
        executor = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm")
        executor.update_parameters(name="nnqs-bench", **submitit_parameters(cluster))
        job = executor.submit(run_bench, list(names), size, system)
    except Exception as error:  # no sbatch, sbatch refused: submitit's own errors
        raise ValueError(
            f"--executor slurm: submission failed ({_last_line(error)}); check the profile "
            f"{cluster.source} and that SLURM answers (sinfo)"
        ) from None
    bar = ProgressBar(1, f"bench: SLURM job {job.job_id}")
    state = ""
    while not job.done():
        if job.state != state:
            state = job.state
            bar.advance(0, state.lower())
        time.sleep(POLL_S)
    try:
        record = job.result()
    except Exception as error:  # submitit's FailedJobError / UncompletedJobError
        raise ValueError(
            f"SLURM job {job.job_id} failed: {_last_line(error)} (log: {job.paths.stderr})"
        ) from None
    bar.advance(note="done")
    bar.close()
    return record


# -- command line ------------------------------------------------------------------


def _check_cases(cases: Sequence[str] | None) -> list[str]:
    names = list(dict.fromkeys(cases or CASES))
    unknown = [name for name in names if name not in CASES]
    if unknown:
        raise ValueError(f"--cases: unknown case {unknown[0]!r} (cases: {', '.join(CASES)})")
    return names


def _save_reference(path: Path, record: Mapping[str, Any], out: Path) -> None:
    """``--save-reference``: ``record`` (written to ``out``) as a reference file."""
    measured = {
        "command": " ".join(["nnqs", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d", time.gmtime(record["system"]["created_unix"])),
        "record": str(out),
        "git_commit": record["system"]["git_commit"],
        "load_average": record["load_average"],
    }
    write_json(path, reference_from_record(record, measured))


def _emit(args: argparse.Namespace, summary: dict[str, Any], failed: bool) -> dict[str, Any] | None:
    """The human-readable table of ``summary``: on stdout with ``--format table`` (then no
    JSON), else on stderr and the summary as JSON on stdout; exit 1 when ``failed``."""
    title = (
        f"nnqs bench: {summary['system']}, {summary['size']}, record {summary['record']}; "
        f"reference {summary['reference']}; previous {summary['previous']}"
    )
    table = bench_report.metrics_table(summary["comparison"], summary["errors"], title)
    if args.format == "table":
        print(table)
    else:
        print(table, file=sys.stderr)
    if failed:
        if args.format != "table":
            json.dump(summary, sys.stdout, indent=2)
            sys.stdout.write("\n")
        raise SystemExit(1)
    return None if args.format == "table" else summary


def _cmd_bench(args: argparse.Namespace) -> dict[str, Any] | None:
    """``nnqs bench``: run, write the record, compare; the summary (a table on stderr, and
    JSON on stdout; or the table alone on stdout)."""
    names = _check_cases(args.cases)
    if args.quick and args.size not in (None, "quick"):
        raise ValueError(f"--quick and --size {args.size} contradict each other")
    size = "quick" if args.quick else args.size or "full"
    if args.system is not None and not _SYSTEM_NAME.match(args.system):
        raise ValueError(f"--system: {args.system!r} must be lower-case letters, digits, . _ -")
    reference_path = Path(args.reference) if args.reference else None
    reference = None
    if reference_path is not None:
        if not reference_path.is_file():
            raise ValueError(f"--reference: no file {reference_path}")
        reference = load_reference(reference_path)
        if reference["size"] != size:
            raise ValueError(
                f"--reference: {reference_path} holds {reference['size']} figures, "
                f"this is a {size} run"
            )
    records = Path(args.records)
    if args.executor == "slurm":
        record = submit_slurm(names, size, args.system, args.profile, records / "slurm")
    else:
        record = run_bench(names, size, args.system)
    system = record["system"]["name"]
    note = None
    if reference_path is None and (REFERENCE_DIR / f"{system}.json").is_file():
        candidate = load_reference(REFERENCE_DIR / f"{system}.json")
        if candidate["size"] == size:
            reference_path, reference = REFERENCE_DIR / f"{system}.json", candidate
        else:
            note = f"{REFERENCE_DIR / system}.json holds {candidate['size']} figures only"
    out = Path(args.out) if args.out else next_record_path(records, system)
    previous = previous_record(records, record, exclude=out)
    write_json(out, record)
    comparison = compare(record, reference, previous[1] if previous else None)
    summary: dict[str, Any] = {
        "record": str(out),
        "system": system,
        "size": size,
        "executor": args.executor,
        "slurm": record["system"].get("slurm"),
        "seconds": record["seconds"],
        "results": record["results"],
        "errors": record["errors"],
        "reference": str(reference_path) if reference is not None else None,
        **({"reference_note": note} if note else {}),
        "previous": str(previous[0]) if previous else None,
        "regressions": comparison["regressions"],
        "improvements": comparison["improvements"],
        "comparison": comparison["metrics"],
    }
    if args.save_reference:
        _save_reference(Path(args.save_reference), record, out)
        summary["reference_saved"] = args.save_reference
    failed = args.fail_on_regression and bool(comparison["regressions"] or record["errors"])
    return _emit(args, summary, failed)


def _load_records(*paths: str) -> list[dict[str, Any]]:
    """The records at ``paths`` (:func:`load_record`), each path's file checked first."""
    for path in paths:
        if not Path(path).is_file():
            raise ValueError(f"no record file {path}")
    return [load_record(Path(path)) for path in paths]


def _cmd_compare(args: argparse.Namespace) -> dict[str, Any] | None:
    """``nnqs bench compare A B``: B against A per metric; a table, or JSON (``--json``)."""
    a, b = _load_records(args.a, args.b)
    comparison = bench_report.compare_records(a, b, names=(args.a, args.b))
    if args.json:
        return comparison
    print(bench_report.compare_table(comparison))
    return None


def _cmd_report(args: argparse.Namespace) -> dict[str, Any]:
    """``nnqs bench report RECORD``: scaling tables (Markdown) and figure in ``--out``."""
    (record,) = _load_records(args.record)
    out = Path(args.out) if args.out else Path(args.record).with_suffix(".report")
    return bench_report.write_scaling_report(record, out, source=args.record)


def add_bench_parser(commands: Any) -> argparse.ArgumentParser:
    """Register ``bench`` on the ``nnqs`` subcommands (``parser.add_subparsers()``)."""
    bench = commands.add_parser(
        "bench",
        help="performance suite: a JSON record, compared with references and earlier records",
    )
    bench.add_argument("--quick", action="store_true", help="the small sizes (--size quick)")
    bench.add_argument(
        "--size",
        choices=SIZES,
        help="quick: seconds (tests); full: a real run here (default); gpu: one modern GPU",
    )
    bench.add_argument(
        "--cases", nargs="+", metavar="NAME", help=f"cases to run (default all: {', '.join(CASES)})"
    )
    bench.add_argument("--out", help="record path (default <records>/<system>-<n>.json)")
    bench.add_argument("--system", help="system name (default: from the CPU model, cores and GPUs)")
    bench.add_argument(
        "--reference", help="reference file (default analysis/references/<system>.json)"
    )
    bench.add_argument(
        "--records", default=str(RECORDS_DIR), help="records directory (default runs/bench)"
    )
    bench.add_argument(
        "--executor",
        choices=("local", "slurm"),
        default="local",
        help="local: in this process; slurm: as one SLURM job on --profile (waits for it)",
    )
    bench.add_argument("--profile", default="local", help="slurm: cluster profile name or path")
    bench.add_argument(
        "--fail-on-regression",
        action="store_true",
        help="exit with status 1 on a regression or a failed case",
    )
    bench.add_argument(
        "--save-reference",
        metavar="PATH",
        help="also write this run's figures as a reference file (tolerance -50%%, no upper)",
    )
    bench.add_argument(
        "--format",
        choices=("json", "table"),
        default="json",
        help="json: the summary as JSON on stdout, the table on stderr (default); "
        "table: the table alone on stdout",
    )
    bench.set_defaults(run=_cmd_bench)
    _add_record_commands(bench)
    return bench


def _add_record_commands(bench: argparse.ArgumentParser) -> None:
    """``nnqs bench compare A B`` and ``nnqs bench report RECORD`` (records already made;
    the options of ``nnqs bench`` itself apply to a run only)."""
    commands = bench.add_subparsers(
        dest="bench_command", metavar="{compare,report}", title="on records already made"
    )
    compare_parser = commands.add_parser(
        "compare", help="two records (any systems) metric by metric: B / A, better or worse"
    )
    compare_parser.add_argument("a", metavar="A.json", help="the record compared against")
    compare_parser.add_argument("b", metavar="B.json", help="the record compared")
    compare_parser.add_argument("--json", action="store_true", help="JSON instead of a table")
    compare_parser.set_defaults(run=_cmd_compare)
    report = commands.add_parser(
        "report", help="scaling cases of a record: efficiency tables (Markdown) and a figure"
    )
    report.add_argument("record", metavar="RECORD.json")
    report.add_argument("--out", help="output folder (default RECORD.report next to it)")
    report.set_defaults(run=_cmd_report)
