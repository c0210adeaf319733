"""The ``nnqs`` command line.

    nnqs target tfim --lattice 3x3 --boundary periodic --J 1 --h 1 --time 1
    nnqs target hubbard --lattice 2x3 --filling 2,2 --u-initial 0 --u-final 4 --time 0.5 1
    nnqs demo
    nnqs run quickstart                    # a sweep spec (jobs/specs/ or a path) -> Zarr store
    nnqs run paper-tfim --executor slurm --store /scratch/paper-tfim.zarr
    nnqs validate paper-tfim                # grid, tasks, memory, time per task; runs nothing
    nnqs status runs/quickstart.zarr [--verify]
    nnqs resubmit runs/quickstart.zarr     # local unless --executor says otherwise
    nnqs repair runs/quickstart.zarr [--spec quickstart]
    nnqs aggregate runs/quickstart.zarr [--cluster slurm]
    nnqs report runs/quickstart.zarr --out runs/quickstart.report
    nnqs export runs/quickstart.zarr --to netcdf  # or --to csv; --out PATH, --force

Exit status (``nnqs --help`` and the README list it): 0 done (or submitted); 1 some
tasks failed or are corrupt (``run``, ``resubmit``, ``status``); 2 bad input, named in
one line on stderr before anything runs (``--debug`` shows the traceback); 130
interrupted (Ctrl-C). So ``sbatch --dependency=afterok`` chains and CI see failures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from analysis.bench.cli import add_bench_parser
from suite.entanglement import entanglement_profile
from suite.targets import TARGETS, build_target, make_spec, target_summary


def _lattice(text: str) -> tuple[int, int]:
    try:
        lx, ly = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LXxLY such as 3x3, got {text!r}") from None
    return lx, ly


def _filling(text: str) -> tuple[int, int]:
    try:
        n_up, n_down = (int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected N_UP,N_DOWN such as 2,2, got {text!r}"
        ) from None
    return n_up, n_down


def _target_params(args: argparse.Namespace) -> dict[str, Any]:
    """Spec fields given on the command line (the rest keep the spec's defaults)."""
    params: dict[str, Any] = {}
    if args.lattice is not None:
        params["lx"], params["ly"] = args.lattice
    if args.boundary is not None:
        params["periodic"] = args.boundary == "periodic"
    if args.model == "tfim":
        if args.filling is not None or args.hopping is not None or args.u_initial is not None:
            raise ValueError("--filling, --hopping, --u-initial and --u-final are Hubbard options")
        for name in ("J", "h"):
            if getattr(args, name) is not None:
                params[name] = getattr(args, name)
    else:
        if args.J is not None or args.h is not None:
            raise ValueError("--J and --h are TFIM options")
        if args.filling is not None:
            params["n_up"], params["n_down"] = args.filling
        for name in ("hopping", "u_initial", "u_final"):
            if getattr(args, name) is not None:
                params[name] = getattr(args, name)
    return params


def _cmd_target(args: argparse.Namespace) -> Any:
    params = _target_params(args)
    times = args.time if args.time is not None else [None]
    specs = [make_spec(args.model, **params, **({} if t is None else {"time": t})) for t in times]
    summaries = []
    for spec in specs:
        target = build_target(spec)
        summary = target_summary(target)
        if args.entanglement:
            summary["entanglement_profile"] = entanglement_profile(target.basis, target.psi)
        summaries.append(summary)
    return summaries[0] if len(summaries) == 1 else summaries


def _cmd_demo(args: argparse.Namespace) -> Any:
    from jobs.demo import run_demo

    return run_demo(train_size=args.train_size, width=args.width, depth=args.depth)


#: exit status: some tasks failed or are corrupt; bad input; interrupted
EXIT_TASKS_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 1, 2, 130
EPILOG = (
    "exit status: 0 done; 1 some tasks failed or are corrupt (run, resubmit, status); "
    "2 bad input (one line on stderr, before anything runs); 130 interrupted"
)


def positive_int(text: str) -> int:
    """An option's value: an integer >= 1 (argparse names the option in its error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def _run_executor(
    spec: Any, path: Any, todo: list[int], args: argparse.Namespace
) -> dict[str, Any]:
    """Run ``todo`` of the store at ``path`` with the spec's (or the command's) executor."""
    from jobs import executors

    kind = spec.executor.kind
    if kind == "slurm":
        report = executors.submit_slurm(
            path, spec, todo, tasks_per_job=args.tasks_per_job, wait=not args.no_wait
        )
    else:
        rank, size = executors.mpi_world()
        report = executors.run_local(
            path,
            todo[rank::size],
            spec.executor.processes if size == 1 else 1,
            progress=rank == 0,
        )
        executors.mpi_barrier()
    return {
        "executor": kind,
        "tasks_run": len(report.done),
        "failed": {str(k): v for k, v in report.failed.items()},
        **({"left_to_other_runners": report.elsewhere} if report.elsewhere else {}),
        "seconds": round(report.seconds, 2),
        **({"slurm_jobs": report.jobs} if report.jobs else {}),
    }


def _finish(store: Any, args: argparse.Namespace, summary: dict[str, Any]) -> dict[str, Any] | None:
    """Aggregate (rank 0, all tasks done) and report the store's state.

    Concurrent runners of one store aggregate once: the aggregation is claimed like a
    task, and a runner that finds it claimed by a live one leaves it to that one.
    """
    from jobs import executors
    from jobs.claims import claim_task
    from jobs.sweep import finalize, task_states

    if executors.mpi_world()[0] != 0:
        return None  # rank 0 reports
    status = task_states(store)
    aggregated, report, note = False, None, {}
    if status.complete and not args.no_aggregate:
        with claim_task(store.path, "aggregation") as claim:
            if claim.held:
                from analysis.report import write_report

                finalize(store)
                report = write_report(store.path, report_folder(store.path))
                aggregated = True
            else:
                note = {"aggregation": f"left to another runner: {claim.describe()}"}
    return {
        "store": str(store.path),
        **summary,
        "tasks": status.counts(),
        "aggregated": aggregated,
        **note,
        **({"report": str(report)} if report else {}),
        "next": (
            f"xarray.open_zarr({str(store.path)!r})"
            if status.complete
            else f"nnqs status {store.path}; nnqs resubmit {store.path}"
        ),
    }


def report_folder(store: Any) -> Any:
    """Where a store's report goes by default: ``<store>.report/``."""
    from pathlib import Path

    return Path(f"{store}.report")


def _check_executor(spec: Any) -> None:
    """What the executor needs, checked before a store is created: a SLURM run's cluster
    profile loads and its controller answers (``ValueError`` naming what fails)."""
    if spec.executor.kind == "slurm":
        from jobs.executors import check_slurm_controller
        from jobs.profiles import load_profile

        load_profile(spec.executor.profile)
        check_slurm_controller()


def _cmd_report(args: argparse.Namespace) -> Any:
    from analysis.report import write_report

    out = args.out or report_folder(args.store)
    return {"report": str(write_report(args.store, out))}


def _cmd_export(args: argparse.Namespace) -> Any:
    from analysis.export import export_store

    return {"export": str(export_store(args.store, args.to, args.out, args.force))}


def _cmd_run(args: argparse.Namespace) -> Any:
    from pathlib import Path

    from jobs import executors
    from jobs.spec import load_spec
    from jobs.sweep import default_store, open_sweep

    spec = load_spec(args.spec).with_executor(
        kind=args.executor, processes=args.processes, profile=args.profile, ranks=args.ranks
    )
    path = Path(args.store) if args.store else default_store(spec)
    _check_executor(spec)
    rank, size = executors.mpi_world()
    if spec.executor.kind == "mpi" and size == 1 and spec.executor.ranks > 1:
        argv = ["run", args.spec, "--executor", "mpi", "--store", str(path)]
        argv += ["--ranks", str(spec.executor.ranks)] + (["--no-aggregate"] * args.no_aggregate)
        code = executors.relaunch_under_mpi(spec.executor.ranks, argv)
        if code == EXIT_TASKS_FAILED:
            raise SystemExit(code)  # its rank 0 has reported which
        if code != 0:
            raise ValueError(f"the MPI run exited with status {code} (see its output above)")
        return None  # its rank 0 has reported
    if rank == 0:
        store = open_sweep(spec, path)
    executors.mpi_barrier()
    if rank != 0:
        store = open_sweep(spec, path)
    todo = executors.mpi_broadcast(_todo(store) if rank == 0 else None)
    summary = _run_executor(spec, path, todo, args) if todo else {"tasks_run": 0}
    return _finish(store, args, summary)


def _todo(store: Any) -> list[int]:
    """The tasks to (re)compute, every done one verified against its checksum, after the
    prepared arrays are checked (and rebuilt from the spec if damaged); checkpoints that
    a finished task left behind (a run killed in between) are removed, unless kept."""
    from jobs.checkpoints import drop_finished
    from jobs.repair import repair_prepared
    from jobs.spec import store_spec
    from jobs.sweep import task_states

    repair_prepared(store)
    status = task_states(store, verify=True)
    if not store_spec(store).checkpoint.keep:
        drop_finished(store.path, {t for t, state in status.states.items() if state == "done"})
    return status.todo()


def _cmd_validate(args: argparse.Namespace) -> Any:
    from jobs.plan import sweep_plan
    from jobs.spec import load_spec
    from jobs.studies import check_memory

    spec = load_spec(args.spec)
    gflop_per_s, source = args.gflops, "--gflops"
    if gflop_per_s is None:
        gflop_per_s, source = _reference_gflops()
    plan = {**sweep_plan(spec, gflop_per_s), "gflop_per_s_from": source}
    if not plan["fits"]:
        _print_json(plan)
        check_memory(spec)  # raises the SpecError that names the phase and the field
    return plan


def _reference_gflops() -> tuple[float | None, str | None]:
    """``training.gflop_per_s`` of this system's bench reference, and the file it is from
    (``(None, None)`` when this system has no reference: ``nnqs bench --save-reference``)."""
    from analysis.bench.records import REFERENCE_DIR, load_reference
    from analysis.bench.system import system_info

    path = REFERENCE_DIR / f"{system_info()['name']}.json"
    if not path.exists():
        return None, None
    entry = load_reference(path)["references"].get("training.gflop_per_s")
    return (float(entry["value"]), str(path)) if entry else (None, None)


def _cmd_status(args: argparse.Namespace) -> Any:
    from jobs.spec import store_spec
    from jobs.sweep import SweepStore, task_states

    store = SweepStore(args.store)
    status = task_states(store, verify=args.verify)
    problems = {
        str(task): status.records[task].get("error", state)
        for task, state in status.states.items()
        if state in ("failed", "corrupt")
    }
    if args.verify:
        problems.update({name: "prepared array damaged" for name in store.damaged_prepared()})
    return {
        "store": str(store.path),
        "sweep": store_spec(store).sweep.name,
        "tasks": status.counts(),
        "checkpointed_step": {str(task): step for task, step in status.checkpointed.items()},
        "verified": args.verify,
        "problems": problems,
        "aggregated": store.aggregated,
    }


def _cmd_resubmit(args: argparse.Namespace) -> Any:
    from jobs.spec import store_spec
    from jobs.sweep import SweepStore

    store = SweepStore(args.store)
    spec = store_spec(store).with_executor(
        kind=args.executor or "local", processes=args.processes, profile=args.profile
    )
    _check_executor(spec)
    todo = _todo(store)
    summary = _run_executor(spec, store.path, todo, args) if todo else {"tasks_run": 0}
    return _finish(store, args, {"resubmitted": todo, **summary})


def _cmd_repair(args: argparse.Namespace) -> Any:
    from jobs.repair import repair

    return repair(args.store, args.spec)


def _cmd_aggregate(args: argparse.Namespace) -> Any:
    from jobs.dask_slurm import slurm_cluster
    from jobs.sweep import SweepStore, finalize

    store = SweepStore(args.store)
    if args.cluster == "slurm":
        with slurm_cluster(args.profile, args.workers, f"{store.path}.dask") as cluster:
            finalize(store, scheduler=cluster)
    else:
        finalize(store, scheduler=args.scheduler)
    return {"store": str(store.path), "cluster": args.cluster, "aggregated": True}


def _executor_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--executor", choices=("local", "slurm", "mpi"), help="override the spec's executor.kind"
    )
    parser.add_argument("--processes", type=positive_int, help="local: worker processes")
    parser.add_argument("--profile", help="slurm: cluster profile name or path (jobs/clusters)")
    parser.add_argument(
        "--tasks-per-job", type=positive_int, default=1, help="slurm: tasks per array element"
    )
    parser.add_argument(
        "--no-wait", action="store_true", help="slurm: submit and return (then `nnqs status`)"
    )
    parser.add_argument(
        "--no-aggregate", action="store_true", help="do not aggregate when all tasks are done"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnqs",
        description="Infinite neural network quantum states at HPC scale.",
        epilog=EPILOG,
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--version", action="version", version=f"nnqs {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_target_commands(commands)
    _add_sweep_commands(commands)
    add_bench_parser(commands)
    return parser


def _add_target_commands(commands: Any) -> None:
    """``target`` and ``demo``."""
    target = commands.add_parser(
        "target", help="build a quench target and print its summary as JSON"
    )
    target.add_argument("model", choices=sorted(TARGETS), help="physics model")
    target.add_argument("--lattice", type=_lattice, help="LXxLY, e.g. 3x3")
    target.add_argument("--boundary", choices=("open", "periodic"), help="boundary conditions")
    target.add_argument("--J", type=float, help="TFIM Ising coupling")
    target.add_argument("--h", type=float, help="TFIM transverse field")
    target.add_argument("--filling", type=_filling, help="Hubbard N_UP,N_DOWN, e.g. 2,2")
    target.add_argument("--hopping", type=float, help="Hubbard hopping t")
    target.add_argument("--u-initial", type=float, help="Hubbard U0 of the initial ground state")
    target.add_argument("--u-final", type=float, help="Hubbard U1 of the evolution")
    target.add_argument("--time", type=float, nargs="+", help="evolution time(s)")
    target.add_argument(
        "--entanglement",
        action="store_true",
        help="add von Neumann and Renyi-2 entropies of the first N_A sites, N_A = 1..N/2",
    )
    target.set_defaults(run=_cmd_target)

    demo = commands.add_parser("demo", help="small local demo: target, kernels, summary")
    demo.add_argument("--train-size", type=positive_int, default=128)
    demo.add_argument("--width", type=positive_int, default=1024)
    demo.add_argument("--depth", type=positive_int, default=1)
    demo.set_defaults(run=_cmd_demo)


def _add_sweep_commands(commands: Any) -> None:
    """``run``, ``validate``, ``status``, ``resubmit``, ``repair``, ``aggregate``,
    ``report``, ``export``."""
    run = commands.add_parser("run", help="run a sweep spec into its Zarr store (resumes)")
    run.add_argument("spec", help="spec file, or the name of one in jobs/specs (quickstart)")
    run.add_argument("--store", help="store path (default runs/<sweep name>.zarr)")
    run.add_argument("--ranks", type=positive_int, help="mpi: number of ranks to launch")
    _executor_options(run)
    run.set_defaults(run=_cmd_run)

    validate = commands.add_parser(
        "validate",
        help="check a spec and print its grid, task count, memory and time per task (runs nothing)",
    )
    validate.add_argument("spec", help="spec name (jobs/specs) or path to a TOML file")
    validate.add_argument(
        "--gflops",
        type=float,
        help="training throughput for the time estimates (default: training.gflop_per_s of "
        "this system's bench reference, if it has one)",
    )
    validate.set_defaults(run=_cmd_validate)

    status = commands.add_parser("status", help="pending/running/done/failed tasks of a store")
    status.add_argument("store")
    status.add_argument(
        "--verify", action="store_true", help="re-read finished tasks and check their checksums"
    )
    status.set_defaults(run=_cmd_status)

    resubmit = commands.add_parser(
        "resubmit", help="recompute only failed, lost, corrupt or missing tasks of a store"
    )
    resubmit.add_argument("store")
    _executor_options(resubmit)
    resubmit.set_defaults(run=_cmd_resubmit)

    repair = commands.add_parser(
        "repair",
        help="rebuild a damaged store's metadata, manifest and prepared arrays from its spec; "
        "tasks that cannot be verified become pending",
    )
    repair.add_argument("store")
    repair.add_argument(
        "--spec", help="the spec the store was made from (needed when its root metadata is lost)"
    )
    repair.set_defaults(run=_cmd_repair)

    aggregate = commands.add_parser(
        "aggregate", help="ensemble statistics with Dask, written back into the store"
    )
    aggregate.add_argument("store")
    aggregate.add_argument("--cluster", choices=("local", "slurm"), default="local")
    aggregate.add_argument("--scheduler", help="address of a running Dask scheduler")
    aggregate.add_argument("--profile", default="local", help="slurm: cluster profile")
    aggregate.add_argument("--workers", type=positive_int, default=1, help="slurm: Dask workers")
    aggregate.set_defaults(run=_cmd_aggregate)

    report = commands.add_parser(
        "report", help="figures (PNG, PDF) and a Markdown report of an aggregated store"
    )
    report.add_argument("store")
    report.add_argument("--out", help="output folder (default <store>.report)")
    report.set_defaults(run=_cmd_report)

    export = commands.add_parser(
        "export", help="a store as one netCDF file or a folder of tidy CSV files"
    )
    export.add_argument("store")
    export.add_argument("--to", required=True, help="netcdf or csv")
    export.add_argument("--out", help="output path (default <store>.nc or <store>.csv)")
    export.add_argument("--force", action="store_true", help="replace an existing output")
    export.set_defaults(run=_cmd_export)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nnqs-suite")
    except PackageNotFoundError:  # pragma: no cover - run from a checkout not installed
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.run(args)
    except KeyboardInterrupt:
        print("nnqs: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, TypeError, OSError) as error:
        if args.debug:
            raise
        print(f"nnqs: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if result is not None:
        _print_json(result)
    return EXIT_TASKS_FAILED if _tasks_failed(result) else 0


def _tasks_failed(result: Any) -> bool:
    """Whether a command's answer counts failed or corrupt tasks (or names problems)."""
    if not isinstance(result, dict):
        return False
    counts = result.get("tasks")
    failed = isinstance(counts, dict) and counts.get("failed", 0) + counts.get("corrupt", 0) > 0
    return failed or bool(result.get("problems"))


def _print_json(result: Any) -> None:
    """``result`` as JSON on stdout; a reader that went away (``| head``) ends it quietly."""
    try:
        json.dump(result, sys.stdout, indent=2, default=_json_default)
        sys.stdout.write("\n")
        sys.stdout.flush()
    except BrokenPipeError:
        # the reader closed the pipe: send what is left to /dev/null, as Python's docs advise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _json_default(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"not JSON serialisable: {value!r}")
