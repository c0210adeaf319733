"""The checks of a compute node (a GPU node, or this machine with ``--small``).

``python -m analysis.node_check --out DIR [--small] [--budget-s S]`` (what
``gpu/node-check.sh`` runs after installing the offline wheels) writes two JSON files:

* ``checks.json`` - correctness on the node's default device, float64 where theory is
  compared (``passed`` is true only when every check passed; the exit status is 1
  otherwise):

  - ``kernels_fast_path``: the discrete fast path of :func:`suite.kernels.gram.gram`
    against the closed form on every pair (docs/theory.md §4), on a spin basis (popcount
    route) and on a Hubbard basis (integer-matmul route), every QS-NTK block;
  - ``training_fast_vs_autodiff``: :func:`suite.training.train_ensemble` with the
    hand-derived one-hidden-layer update against ``vmap(grad)`` (docs/theory.md §5);
  - ``sharding_invariance``: the same ensemble on one device and on all devices, and as
    two shards combined against one run (members depend only on ``(seed, i)``);
  - ``sweep_determinism``: a small dynamics sweep run twice into two stores (prepared,
    trained, aggregated): every array compared bitwise; where XLA's reductions are not
    deterministic on the device the check fails and records the largest spread.

* ``bench.json`` - an ``nnqs bench`` record (:func:`analysis.bench.run.run_bench`) of every
  declared case but ``slurm_scaling`` at size ``gpu`` (``quick`` with ``--small``),
  with the system: device kind, count and memory, driver, jax and package versions, git commit. The
  ``time_to_solution`` case gets what is left of ``--budget-s`` (default 420 s, so that
  the whole run stays under 8 minutes on one GPU) and projects past it.

Compare the bench record with a CPU record of the same size made by the same command
with ``nnqs bench compare``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np

#: relative agreement required of float64 routes that compute the same numbers
RTOL64 = 1e-10
#: ... and of float32 runs of the same ensemble that differ only in grouping
RTOL32 = 1e-5
#: seconds kept back for aggregation and writing when the time-to-solution deadline is set
RESERVE_S = 60.0
#: bench cases not run on a node: jobs submitted from inside a job may wait in the queue
LEFT_OUT = ("slurm_scaling",)
#: the bench case run last, with the time left of the budget as its deadline
LAST_CASE = "time_to_solution"
#: the dynamics sweep of ``sweep_determinism``: the quickstart spec made small (``--small``)
#: or GPU-sized (widths to 1024, 128 members in two shards per point)
DETERMINISM_OVERRIDES = {
    True: {
        "target": {"lx": 2, "ly": 3},
        "grid": {"widths": [32], "train_sizes": [16]},
        "ensemble": {"members": 8, "shard_size": 4},
        "training": {"max_steps": 20, "log_points": 4},
    },
    False: {
        "grid": {"widths": [64, 1024], "train_sizes": [32, 128]},
        "ensemble": {"members": 128, "shard_size": 64},
        "training": {"max_steps": 200, "log_points": 8},
    },
}


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    scale = max(float(np.max(np.abs(b))), 1e-300) if b.size else 1.0
    return float(np.max(np.abs(a - b))) / scale if a.size else 0.0


def _spin_inputs(n_sites: int) -> np.ndarray:
    from suite.hilbert import SpinBasis

    return SpinBasis(n_sites).inputs()


def check_kernels_fast_path(small: bool) -> dict[str, Any]:
    """Fast path against the closed form: every block of ``(NNGP, NTK)`` of a depth-2
    decoupled ReLU NNQS, all pairs of a spin basis and of the Hubbard 2x3 basis."""
    import jax

    from suite import networks as nw
    from suite.kernels.gram import gram
    from suite.targets import HubbardQuench, build_target

    nnqs = nw.decoupled(nw.mlp(2, 512))
    spins = _spin_inputs(8 if small else 12)
    hubbard = np.asarray(build_target(HubbardQuench()).inputs)
    deviations = {}
    for name, x in (("spin", spins), ("hubbard", hubbard)):
        table = jax.tree.leaves(gram(nnqs.infinite, x, x, method="table"))
        direct = jax.tree.leaves(gram(nnqs.infinite, x, x, method="direct"))
        deviations[name] = max(
            _relative(np.asarray(a), np.asarray(b)) for a, b in zip(table, direct, strict=True)
        )
    return {
        "passed": all(d <= RTOL64 for d in deviations.values()),
        "max_relative_deviation": deviations,
        "sizes": {"spin": len(spins), "hubbard": len(hubbard)},
        "tolerance": RTOL64,
    }


def _training_problem(n_sites: int, n_train: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A spin basis, a random normalised complex target and a train set (seed 0)."""
    x = _spin_inputs(n_sites)
    rng = np.random.default_rng(0)
    phi = rng.normal(size=len(x)) + 1j * rng.normal(size=len(x))
    phi *= np.sqrt(len(x)) / np.linalg.norm(phi)
    return x, phi, np.sort(rng.choice(len(x), n_train, replace=False))


#: the per-member losses and the shard sums of an :class:`~suite.training.EnsembleStats`
STATS_FIELDS = ("train_loss", "test_loss", "sum_u", "sum_v", "sum_uu", "sum_vv", "sum_uv")


def _stats_deviation(a: Any, b: Any) -> float:
    """Largest relative difference of losses and sums of two :class:`EnsembleStats`."""
    return max(_relative(getattr(a, n), getattr(b, n)) for n in STATS_FIELDS)


def _stats_equal(a: Any, b: Any) -> bool:
    return all(np.array_equal(getattr(a, n), getattr(b, n)) for n in STATS_FIELDS)


def check_training_fast_vs_autodiff(small: bool) -> dict[str, Any]:
    """The fast one-hidden-layer update against ``vmap(grad)``: 8 members, 20 steps, float64."""
    from suite import networks as nw
    from suite.training import train_ensemble

    x, phi, train = _training_problem(6 if small else 9, 16 if small else 64)
    nnqs = nw.decoupled(nw.mlp(1, 64 if small else 512))
    kwargs = dict(seed=3, members=range(8), learning_rate=0.5, log_steps=[0, 5, 20])
    fast = train_ensemble(nnqs, x, phi, train, method="fast", **kwargs)
    autodiff = train_ensemble(nnqs, x, phi, train, method="autodiff", **kwargs)
    deviation = _stats_deviation(fast, autodiff)
    return {"passed": deviation <= RTOL64, "max_relative_deviation": deviation, "tolerance": RTOL64}


def check_sharding_invariance(small: bool) -> dict[str, Any]:
    """One device against all devices, and two shards combined against one run, in
    float64 and float32 (12 members, 10 steps)."""
    import jax

    from suite import networks as nw
    from suite.training import combine, train_ensemble

    x, phi, train = _training_problem(6 if small else 9, 16 if small else 64)
    nnqs = nw.decoupled(nw.mlp(1, 64 if small else 1024))
    n_devices = len(jax.local_devices())
    result: dict[str, Any] = {"devices": n_devices, "runs": {}}
    for dtype, tolerance in (("float64", RTOL64), ("float32", RTOL32)):

        def run(members: Sequence[int], devices: int, dtype: str = dtype) -> Any:
            return train_ensemble(
                nnqs, x, phi, train, seed=5, members=members, learning_rate=0.5,
                log_steps=[0, 4, 10], dtype=dtype, devices=devices,
            )  # fmt: skip

        whole = run(range(12), n_devices)
        pairs = {"two_shards_combined": combine([run(range(5), 1), run(range(5, 12), 1)])}
        if n_devices > 1:
            pairs["one_device"] = run(range(12), 1)
        for name, other in pairs.items():
            deviation = _stats_deviation(other, whole)
            result["runs"][f"{dtype}/{name}"] = {
                "max_relative_deviation": deviation,
                "bitwise_equal": _stats_equal(other, whole),
                "passed": deviation <= tolerance,
            }
    if n_devices == 1:
        result["note"] = "one device: only shard grouping can be compared"
    result["passed"] = all(run["passed"] for run in result["runs"].values())
    return result


def _array_values(path: Path) -> dict[str, np.ndarray]:
    """Every array of a sweep store but the manifest (times, hosts and pids differ)."""
    import zarr

    group = zarr.open_group(path, mode="r")
    return {
        name: np.asarray(array[...])
        for name, array in group.arrays()
        if name != "manifest" and array.size
    }


def _spread(a: np.ndarray, b: np.ndarray) -> float:
    """Largest relative difference of two arrays, NaN-aware (fill values of unused
    entries); 0 for non-numeric arrays that are equal."""
    if a.dtype.kind not in "fc":
        return 0.0 if np.array_equal(a, b) else float("inf")
    both = ~(np.isnan(a) & np.isnan(b))
    return _relative(a[both], b[both])


def check_sweep_determinism(small: bool) -> dict[str, Any]:
    """The same small dynamics sweep twice (store preparation, tasks in this process,
    Dask aggregation): every array of the two stores bitwise equal."""
    from jobs.executors import run_local
    from jobs.spec import SPEC_DIR, parse_spec
    from jobs.sweep import finalize, open_sweep, task_states

    data = tomllib.loads((SPEC_DIR / "quickstart.toml").read_text())
    for section, values in DETERMINISM_OVERRIDES[small].items():
        data[section].update(values)
    data["sweep"]["name"] = "node-check-determinism"
    spec = parse_spec(data, "quickstart.toml (made small)")
    with TemporaryDirectory() as tmp:
        stores = [Path(tmp) / f"run{i}.zarr" for i in (1, 2)]
        for path in stores:
            store = open_sweep(spec, path)
            report = run_local(path, task_states(store).todo(), progress=False)
            if report.failed:
                task, error = next(iter(report.failed.items()))
                raise RuntimeError(f"sweep task {task} failed: {error}")
            finalize(store, progress=False)
        comparison = compare_stores(*stores)
    return {"passed": not comparison["differing_arrays"], **comparison}


def compare_stores(first_path: Path, second_path: Path) -> dict[str, Any]:
    """Every array (but the manifest) of two stores: how many were compared, and the
    relative spread of each that is not bitwise equal (NaN fill values count as equal)."""
    first, second = _array_values(first_path), _array_values(second_path)
    if first.keys() != second.keys():
        raise RuntimeError(f"the stores hold other arrays: {sorted(first.keys() ^ second.keys())}")
    differing = {
        name: _spread(first[name], second[name])
        for name in first
        if not np.array_equal(first[name], second[name], equal_nan=first[name].dtype.kind in "fc")
    }
    return {
        "arrays_compared": len(first),
        "differing_arrays": differing,
        "max_relative_spread": max(differing.values(), default=0.0),
    }


CHECKS: dict[str, Callable[[bool], dict[str, Any]]] = {
    "kernels_fast_path": check_kernels_fast_path,
    "training_fast_vs_autodiff": check_training_fast_vs_autodiff,
    "sharding_invariance": check_sharding_invariance,
    "sweep_determinism": check_sweep_determinism,
}


def run_checks(small: bool, names: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the checks ``names`` (default all of :data:`CHECKS`); a check that raises is
    failed with its error (one line)."""
    results: dict[str, Any] = {}
    for name in names or list(CHECKS):
        clock = time.perf_counter()
        try:
            result = CHECKS[name](small)
        except Exception as error:  # recorded: the other checks still run
            lines = str(error).strip().splitlines() or [type(error).__name__]
            result = {"passed": False, "error": f"{type(error).__name__}: {lines[0]}"}
        result["seconds"] = round(time.perf_counter() - clock, 2)
        print(f"node-check: {name}: {'ok' if result['passed'] else 'FAILED'}", file=sys.stderr)
        results[name] = result
    return {"passed": all(r["passed"] for r in results.values()), "checks": results}


def _write(path: Path, data: Mapping[str, Any]) -> None:
    from analysis.bench.records import write_json

    write_json(path, data)
    print(f"node-check: wrote {path}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the checks, then the bench cases; write ``checks.json`` and ``bench.json``."""
    parser = argparse.ArgumentParser(
        prog="python -m analysis.node_check", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", required=True, help="folder for checks.json and bench.json")
    parser.add_argument("--small", action="store_true", help="CPU-sized checks, quick bench")
    parser.add_argument(
        "--budget-s", type=float, default=420.0, help="seconds for the whole run (default 420)"
    )
    parser.add_argument("--skip-bench", action="store_true", help="the checks only")
    parser.add_argument(
        "--checks", nargs="+", metavar="NAME", help=f"default all: {', '.join(CHECKS)}"
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.checks or ()) - set(CHECKS))
    if unknown:
        parser.error(f"--checks: unknown check {unknown[0]!r} (checks: {', '.join(CHECKS)})")
    if args.budget_s <= RESERVE_S:
        parser.error(f"--budget-s must exceed {RESERVE_S:.0f} s, got {args.budget_s}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clock = time.perf_counter()
    # grow GPU memory as needed: the bench's worker processes share the device
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

    import suite  # noqa: F401  (enables float64 in JAX)
    from analysis.bench.cases import CASES
    from analysis.bench.run import run_bench
    from analysis.bench.system import system_info

    checks = {"system": system_info(), **run_checks(args.small, args.checks)}
    _write(out / "checks.json", checks)
    if not args.skip_bench:
        size = "quick" if args.small else "gpu"
        record = run_bench([name for name in CASES if name not in (LAST_CASE, *LEFT_OUT)], size)
        # the time-to-solution run gets what is left of the budget
        left = args.budget_s - (time.perf_counter() - clock) - RESERVE_S
        deadline = min(left, CASES[LAST_CASE].parameters(size)["deadline_s"])
        last = run_bench(
            [LAST_CASE], size, overrides={LAST_CASE: {"deadline_s": max(30.0, deadline)}}
        )
        for key in ("cases", "results", "notes", "errors"):
            record[key].update(last[key])
        record["seconds"] = round(record["seconds"] + last["seconds"], 2)
        _write(out / "bench.json", record)
    print(
        f"node-check: {'all checks passed' if checks['passed'] else 'CHECKS FAILED'} "
        f"({time.perf_counter() - clock:.0f} s)",
        file=sys.stderr,
    )
    return 0 if checks["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
