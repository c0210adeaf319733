"""Parallel scaling in ``nnqs bench``: strong scaling over devices, local processes and SLURM
array tasks, and weak scaling over devices (declared in :data:`analysis.bench.cases.CASES`).

Each case measures a throughput at every worker count ``n`` of its parameters and reports
it with the speed-up over one worker and the parallel efficiency (:func:`scaling_figures`):

    speedup_n = rate_n / rate_1        efficiency_n = speedup_n / n        (1 is ideal)

Under strong scaling the problem is fixed, so ``efficiency_n = t(1) / (n t(n))``; under
weak scaling it grows with the workers (``n M`` members on ``n`` devices), the rate counts
the grown problem, and the same formula gives ``t(1 worker, M) / t(n workers, n M)``
(``speedup_n`` is then the scaled speed-up).

* :func:`measure_device_scaling` - training member-steps/s of a fixed ensemble on 1, 2, 4
  devices (fake CPU devices sharing this machine's cores, or the real GPUs), each count in
  a fresh worker process;
* :func:`measure_weak_scaling` - the same with ``members`` members *per device*;
* :func:`measure_process_scaling` - tasks/s of a small dynamics sweep (:data:`SWEEP_SPEC`)
  run by the local executor with 1 and 2 processes;
* :func:`measure_slurm_scaling` - tasks/s of the same sweep submitted to SLURM as a job
  array (:func:`jobs.executors.submit_slurm`) of ``n`` elements running at once.

``python -m analysis.bench.parallel PARAMS_JSON`` is the device worker: one
:func:`analysis.bench.measures.measure_training` on all visible devices, printed as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analysis.bench.measures import CaseSkipped, Measured, measure_training

if TYPE_CHECKING:
    from jobs.executors import RunReport
    from jobs.spec import SweepSpec

ROOT = Path(__file__).resolve().parents[2]
#: how to get the test cluster of ``slurm/`` (in the error when SLURM does not answer)
SLURM_HINT = 'start one: bash slurm/cluster.sh start; eval "$(bash slurm/cluster.sh env)"'

#: the sweep of the process and SLURM scaling cases, formatted with ``params["spec"]``
SWEEP_SPEC = """\
[sweep]
name = "bench-scaling"
study = "dynamics"
seed = 0
dtype = "float32"

[target]
model = "tfim"
lx = {lx}
ly = {ly}

[network]
kind = "decoupled"
activation = "relu"
depth = 1

[grid]
widths = [{width}]
train_sizes = [{train_size}]
lr_factors = [0.5]

[ensemble]
members = {members}
shard_size = {shard_size}

[training]
log_points = 4
max_steps = {max_steps}
"""

#: runs a sweep's pending tasks on ``n`` workers: ``(spec, store path, tasks, n)``
SweepRunner = Callable[["SweepSpec", Path, list[int], int], "RunReport"]


def scaling_figures(rates: Mapping[int, float], throughput: str) -> dict[str, float]:
    """``{throughput}_{n}`` for every worker count ``n`` of ``rates``, and with one worker
    measured, ``speedup_{n} = rate_n / rate_1`` and ``efficiency_{n} = speedup_n / n`` for
    every ``n > 1``."""
    values = {f"{throughput}_{n}": rate for n, rate in rates.items()}
    for n, rate in rates.items():
        if n > 1 and 1 in rates:
            values[f"speedup_{n}"] = rate / rates[1]
            values[f"efficiency_{n}"] = rate / rates[1] / n
    return values


# -- devices -------------------------------------------------------------------------


def _device_env(count: int, platform_name: str) -> dict[str, str]:
    """The environment of a worker that sees ``count`` devices: fake CPU devices
    (``--xla_force_host_platform_device_count``), or the first ``count`` GPUs."""
    env = dict(os.environ)
    if platform_name == "cpu":
        flags = re.sub(r"--xla_force_host_platform_device_count=\S+", "", env.get("XLA_FLAGS", ""))
        env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}".strip()
    else:
        visible = env.get("CUDA_VISIBLE_DEVICES")
        ids = visible.split(",") if visible else [str(i) for i in range(count)]
        env["CUDA_VISIBLE_DEVICES"] = ",".join(ids[:count])
        env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"  # this process holds memory too
    return env


def _device_worker(params: Mapping[str, Any], count: int, platform_name: str) -> float:
    """Member-steps/s of :func:`analysis.bench.measures.measure_training` with ``params`` in a fresh
    process that sees ``count`` devices (checked)."""
    proc = subprocess.run(
        [sys.executable, "-m", "analysis.bench.parallel", json.dumps(dict(params))],
        capture_output=True,
        text=True,
        env=_device_env(count, platform_name),
        cwd=ROOT,
        check=False,
    )
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        raise ValueError(f"the {count}-device worker failed: {tail[0]}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    if report["devices"] != count:
        raise ValueError(f"the {count}-device worker saw {report['devices']} devices")
    return float(report["member_steps_per_s"])


def _device_rates(params: Mapping[str, Any], per_device: bool) -> tuple[dict[int, float], str]:
    """Member-steps/s at each count of ``params["devices"]`` (on a GPU machine, counts above
    the GPUs present are skipped), with ``params["members"]`` members in all, or per device
    (``per_device``); and a note naming the devices."""
    import jax

    devices = jax.devices()
    platform_name = devices[0].platform
    counts = [n for n in params["devices"] if platform_name == "cpu" or n <= len(devices)]
    training = {k: v for k, v in params.items() if k != "devices"}
    rates = {}
    for count in counts:
        members = training["members"] * (count if per_device else 1)
        rates[count] = _device_worker({**training, "members": members}, count, platform_name)
    kind = "fake CPU" if platform_name == "cpu" else devices[0].device_kind
    return rates, f"{kind} devices {counts}, {os.cpu_count()} cores"


def measure_device_scaling(params: Mapping[str, Any]) -> Measured:
    """Strong scaling over devices: member-steps/s of a ``members``-member ensemble
    (:func:`analysis.bench.measures.measure_training`'s parameters) on each count of ``devices``,
    speed-up and efficiency."""
    rates, note = _device_rates(params, per_device=False)
    return scaling_figures(rates, "member_steps_per_s"), [note]


def measure_weak_scaling(params: Mapping[str, Any]) -> Measured:
    """Weak scaling over devices: ``n x members`` members on ``n`` devices for each ``n`` of
    ``devices``; member-steps/s, scaled speed-up and efficiency
    ``t(1 device, M) / t(n devices, n M)``."""
    rates, note = _device_rates(params, per_device=True)
    return scaling_figures(rates, "member_steps_per_s"), [
        note,
        f"{params['members']} members per device",
    ]


# -- processes and SLURM array tasks -------------------------------------------------


def _sweep_rates(
    params: Mapping[str, Any], counts: Sequence[int], run: SweepRunner, directory: Path | None
) -> tuple[dict[int, float], int]:
    """Tasks/s of :data:`SWEEP_SPEC` (with ``params["spec"]``) run by ``run`` on each of
    ``counts`` workers, a fresh store each time (in a temporary folder under ``directory``,
    default ``$TMPDIR``; store preparation not timed); and the number of tasks."""
    from jobs.spec import load_spec
    from jobs.sweep import open_sweep, task_states

    rates: dict[int, float] = {}
    todo: list[int] = []
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix="bench-scaling-") as tmp:
        spec_path = Path(tmp) / "bench-scaling.toml"
        spec_path.write_text(SWEEP_SPEC.format(**params["spec"]))
        spec = load_spec(spec_path)
        for count in counts:
            path = Path(tmp) / f"w{count}.zarr"
            todo = task_states(open_sweep(spec, path)).todo()
            report = run(spec, path, todo, count)
            if report.failed or len(report.done) != len(todo):
                task, error = next(iter(report.failed.items()), (None, "not run"))
                raise ValueError(f"{count} workers: task {task} failed: {error}")
            rates[count] = len(report.done) / report.seconds
    return rates, len(todo)


def _run_local(spec: SweepSpec, path: Path, todo: list[int], count: int) -> RunReport:
    """The local executor with ``count`` processes, as ``nnqs run --processes N`` runs it."""
    from jobs import executors

    return executors.run_local(path, todo, count, progress=False)


def measure_process_scaling(params: Mapping[str, Any]) -> Measured:
    """Strong scaling over local processes: tasks/s of ``nnqs run`` of a small dynamics
    sweep (:data:`SWEEP_SPEC` with ``params["spec"]``) with the local executor at each of
    ``processes`` (tasks over the executor's seconds, :func:`jobs.executors.run_local`:
    worker start-up and compilation included, store preparation not), speed-up and
    efficiency."""
    rates, tasks = _sweep_rates(params, params["processes"], _run_local, None)
    return scaling_figures(rates, "tasks_per_s"), [f"{tasks} tasks, {os.cpu_count()} cores"]


def check_slurm() -> None:
    """Raise :class:`~analysis.bench.measures.CaseSkipped` (one line) unless ``sbatch`` exists
    and ``sinfo`` answers."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        raise CaseSkipped(f"SLURM is not reachable: no sinfo/sbatch on PATH ({SLURM_HINT})")
    try:
        done = subprocess.run(["sinfo", "-h"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        raise CaseSkipped(
            f"SLURM is not reachable: sinfo gave no answer in 30 s ({SLURM_HINT})"
        ) from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise CaseSkipped(f"SLURM is not reachable: sinfo failed: {last} ({SLURM_HINT})")


def _slurm_runner(profile: str, jobs: list[str]) -> SweepRunner:
    """Run a sweep as ``n`` array elements of ``ceil(tasks / n)`` tasks each, at most ``n``
    at once (the profile's ``array_parallelism`` set to ``n``); array ids go to ``jobs``."""
    from jobs import executors

    def run(spec: SweepSpec, path: Path, todo: list[int], count: int) -> RunReport:
        on_slurm = spec.with_executor(
            kind="slurm", profile=profile, slurm={"array_parallelism": count}
        )
        try:
            report = executors.submit_slurm(
                path, on_slurm, todo, math.ceil(len(todo) / count), wait=True, progress=False
            )
        except Exception as error:  # sbatch refused: submitit's own errors, many lines
            lines = [line for line in str(error).splitlines() if line.strip()] or [repr(error)]
            raise ValueError(f"SLURM submission failed: {lines[-1].strip()}") from None
        array = report.jobs[0].split("_")[0]
        jobs.append(f"{count} at once: {len(report.jobs)} array element(s) (job {array})")
        return report

    return run


def measure_slurm_scaling(params: Mapping[str, Any]) -> Measured:
    """Strong scaling over SLURM array tasks: tasks/s of the sweep of
    :func:`measure_process_scaling` submitted on the cluster ``profile`` as a job array of
    ``n`` elements running at once, for each ``n`` of ``array_tasks`` (submission to the
    last result: queueing, job start-up and compilation included), speed-up and efficiency.
    The stores go under ``directory`` (it must be on a file system the nodes share).
    Skipped (:class:`~analysis.bench.measures.CaseSkipped`) when SLURM does not answer."""
    check_slurm()
    jobs: list[str] = []
    runner = _slurm_runner(params["profile"], jobs)
    rates, tasks = _sweep_rates(params, params["array_tasks"], runner, Path(params["directory"]))
    notes = [f"{tasks} tasks on profile {params['profile']}", "; ".join(jobs)]
    return scaling_figures(rates, "tasks_per_s"), notes


def main(argv: Sequence[str] | None = None) -> None:
    """The device worker: :func:`analysis.bench.measures.measure_training` on all visible
    devices."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("params", help="measure_training's parameters, as JSON")
    args = parser.parse_args(argv)
    import jax

    values, _ = measure_training(json.loads(args.params))
    print(json.dumps({**values, "devices": len(jax.devices())}))


if __name__ == "__main__":
    main()
