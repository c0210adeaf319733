"""GP Renyi-2 benchmark: the chunked Dask/Zarr route against the Hamming closed form.

``python -m analysis.bench.entanglement`` prints (and with ``--out`` writes as JSON):

* route (c), :func:`suite.replica.hamming_renyi2`: seconds for every cut of 16 spins,
  and for 1000 spins (one cut, then all cuts ``N_A = 1 .. 500``), for every kernel
  family of the suite;
* route (b), :func:`suite.replica.chunked_traces`: the NNGP of the paper's ReLU part
  (``Dense(512)-Relu-Dense(1)``, ``sw = sb = 1``; the decoupled NNQS covariance is twice
  it, with the same estimate) between all ``2**N`` configurations, tiles of
  ``--block`` rows, into a Zarr store under ``--store``, traces for ``N_A = 1 .. N/2``:
  seconds for each stage, peak resident memory (the whole process), bytes on disk and
  the largest relative deviation of the traces from route (c). Each ``N`` runs in its
  own process (clean peak-memory figure), from 16 up, as long as the next one is
  predicted (4x the last: the Gram matrix has 4x the entries) to finish within
  ``--budget`` seconds; a run is stopped at the budget.

The load average is reported: this machine kind is shared, and the figures are
wall-clock. Figures only: this is not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import suite  # noqa: F401  (first: enables JAX float64)

# isort: split

from suite import networks
from suite.replica import (
    DEFAULT_BLOCK,
    ReplicaTraces,
    chunked_traces,
    hamming_renyi2,
    hamming_traces,
)

WIDTH = 512
#: route (b) must hold this much memory at most (the issue's limit)
MEMORY_LIMIT_BYTES = 4 * 2**30


def relu_nngp() -> Callable[[Any], Any]:
    """NNGP of ``Dense(512)-Relu-Dense(1)`` (NTK parameterisation, ``sw = sb = 1``)."""
    net = networks.mlp(1, WIDTH, "relu")
    return lambda k: net.kernel(k).nngp


def kernel_families() -> dict[str, Callable[[Any], Any]]:
    """One covariance map per kernel family of the suite (docs/theory.md §4)."""
    relu, erf = networks.mlp(2, WIDTH, "relu"), networks.mlp(1, WIDTH, "erf")
    cos, gauss = networks.cosnet(WIDTH, s0=2.0), networks.gaussnet(WIDTH, s0=1.0)
    nnqs = networks.decoupled(networks.mlp(1, WIDTH))
    return {
        "relu-nngp": lambda k: relu.kernel(k).nngp,
        "relu-ntk": lambda k: relu.kernel(k).ntk,
        "erf-nngp": lambda k: erf.kernel(k).nngp,
        "cosnet-nngp": lambda k: cos.kernel(k).nngp,
        "gaussnet-nngp": lambda k: gauss.kernel(k).nngp,
        "nnqs-hermitian": lambda k: nnqs.infinite(k)[0].hermitian(),
    }


def closed_form_timings() -> dict[str, Any]:
    """Seconds of route (c) per kernel family: 16 spins (all cuts), 1000 spins."""
    timings = {}
    for name, fn in kernel_families().items():
        row = {}
        for label, n_sites, cuts in (
            ("n16_all_cuts", 16, range(1, 9)),
            ("n1000_one_cut", 1000, [500]),
            ("n1000_all_cuts", 1000, range(1, 501)),
        ):
            start = time.perf_counter()
            values = hamming_renyi2(fn, n_sites, cuts)
            row[label] = {"seconds": time.perf_counter() - start, "s2_half": values[-1]}
        timings[name] = row
        print(
            f"closed form {name}: N=16 all cuts {row['n16_all_cuts']['seconds'] * 1e3:.1f} ms, "
            f"N=1000 one cut {row['n1000_one_cut']['seconds'] * 1e3:.1f} ms, "
            f"all 500 cuts {row['n1000_all_cuts']['seconds']:.2f} s"
        )
    return timings


def _max_deviation(traces: list[ReplicaTraces], exact: list[ReplicaTraces]) -> float:
    worst = 0.0
    for ours, reference in zip(traces, exact, strict=True):
        scale = max(abs(v) for v in reference)
        for x, y in zip(ours, reference, strict=True):
            worst = max(worst, abs(x - y) / max(abs(y), 1e-6 * scale))
    return worst


def chunked_child(n_sites: int, block: int, store: Path, workers: int | None) -> dict[str, Any]:
    """One route (b) run in this process (the ``--child`` mode); its figures."""
    fn = relu_nngp()
    cuts = list(range(1, n_sites // 2 + 1))
    start = time.perf_counter()
    traces = chunked_traces(fn, n_sites, cuts, store, block=block, workers=workers)
    seconds = time.perf_counter() - start
    exact = hamming_traces(fn, n_sites, cuts)
    return {
        "n_sites": n_sites,
        "block": block,
        "gram_entries": 4**n_sites,
        "float64_bytes": 8 * 4**n_sites,
        "seconds": seconds,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "store_bytes": sum(f.stat().st_size for f in store.rglob("*") if f.is_file()),
        "max_relative_deviation": _max_deviation(traces, exact),
        "renyi2": [t.renyi2() for t in traces],
    }


def run_child(
    n_sites: int, block: int, root: Path, workers: int | None, timeout: float
) -> dict[str, Any] | None:
    """Route (b) for ``n_sites`` in a fresh process; ``None`` if it ran past ``timeout``."""
    store = root / f"gram-{n_sites}"
    command = [sys.executable, "-m", "analysis.bench.entanglement", "--child", str(n_sites)]
    command += ["--block", str(block), "--store", str(store)]
    if workers is not None:
        command += ["--workers", str(workers)]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        return None
    finally:
        shutil.rmtree(store, ignore_errors=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def chunked_scan(block: int, root: Path, workers: int | None, budget: float, max_n: int) -> list:
    """Route (b) from 16 spins up while the next size is predicted to fit the budget."""
    runs: list[dict[str, Any]] = []
    n_sites, predicted = 16, 0.0
    while n_sites <= max_n:
        print(f"chunked N={n_sites}: running (budget {budget:.0f} s) ...", flush=True)
        result = run_child(n_sites, block, root, workers, budget)
        if result is None:
            runs.append({"n_sites": n_sites, "finished": False, "timeout": budget})
            print(f"chunked N={n_sites}: not finished within {budget:.0f} s")
            break
        result["finished"] = True
        result["within_memory_limit"] = result["peak_rss_bytes"] <= MEMORY_LIMIT_BYTES
        runs.append(result)
        print(
            f"chunked N={n_sites}: {result['seconds']:.1f} s, peak RSS "
            f"{result['peak_rss_bytes'] / 2**30:.2f} GiB, Gram "
            f"{result['float64_bytes'] / 1e9:.1f} GB in float64, "
            f"{result['store_bytes'] / 1e6:.0f} MB on disk, max deviation from closed form "
            f"{result['max_relative_deviation']:.1e}"
        )
        predicted = 4 * result["seconds"]
        if predicted > budget:
            runs.append({"n_sites": n_sites + 1, "finished": False, "predicted_seconds": predicted})
            print(f"chunked N={n_sites + 1}: predicted {predicted:.0f} s > budget, not run")
            break
        n_sites += 1
    return runs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--block", type=int, default=DEFAULT_BLOCK, help="Gram tile rows (2**k)")
    parser.add_argument("--store", type=Path, default=None, help="directory for Zarr stores")
    parser.add_argument("--workers", type=int, default=None, help="Dask threads (all cores)")
    parser.add_argument("--budget", type=float, default=600.0, help="seconds per route-(b) run")
    parser.add_argument("--max-n", type=int, default=18, help="largest N to try for route (b)")
    parser.add_argument("--skip-chunked", action="store_true", help="route (c) only")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(chunked_child(args.child, args.block, args.store, args.workers)))
        return
    figures: dict[str, Any] = {"load_average_start": os.getloadavg()}
    figures["closed_form"] = closed_form_timings()
    if not args.skip_chunked:
        root = Path(tempfile.mkdtemp(dir=args.store))
        try:
            figures["chunked"] = chunked_scan(
                args.block, root, args.workers, args.budget, args.max_n
            )
        finally:
            shutil.rmtree(root, ignore_errors=True)
    figures["load_average_end"] = os.getloadavg()
    print(f"load average: start {figures['load_average_start']}, end {figures['load_average_end']}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
