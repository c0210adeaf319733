"""Running ``nnqs bench`` cases: here (:func:`run_bench`), or as one SLURM job
(:func:`submit_slurm`); either gives a record (:mod:`analysis.bench.records`)."""

from __future__ import annotations

import dataclasses
import importlib
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from analysis.bench.cases import CASES, Case
from analysis.bench.measures import CaseSkipped, Measured
from analysis.bench.records import SCHEMA
from analysis.bench.system import system_info
from jobs.progress import ProgressBar

#: seconds between polls of a submitted job's state
POLL_S = 2.0


def measurement(case: Case) -> Callable[[Mapping[str, Any]], Measured]:
    """The function that measures ``case``: ``case.run`` (``"module:function"``), imported."""
    module, _, function = case.run.partition(":")
    return getattr(importlib.import_module(module), function)


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
    """Run the cases ``names`` at ``size`` (one of :data:`~analysis.bench.cases.SIZES`)
    here: the record.

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
            values, notes = measurement(case)(params)
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
