"""Kernel throughput benchmark: our Gram path against neural-tangents (docs/theory.md §4).

``python -m analysis.bench.kernels`` (or ``make bench-kernels``) times the infinite-width
NTK of ``Dense(512) -> Relu -> Dense(1)`` (NTK parameterisation, ``sw=1``, ``sb=0``,
float64) between all 65,536 spin configurations of 16 sites and 1,024 of them (the
problem of ``tests/parity/nt_benchmark.py``, which documents the row choice):

* ours (fresh): ``gram(fn, x1, x2)``, a new 512 MB result per call;
* ours (into buffer): ``gram(fn, x1, x2, out=buffer)``, the result written into a
  donated buffer of the previous call;
* neural-tangents: ``jax.jit(kernel_fn)`` in the pinned reference environment, run as a
  subprocess (``--nt-python``, else ``$NNQS_NT_PYTHON``, else ``.venv-nt/bin/python``).

Each timing is one warm-up call, then the best of ``--repeats`` calls. Agreement is
checked on 4,096 fixed entries and on the sum of all entries (relative ``1e-12``).
Then the empirical (finite-width, autodiff) NTK of the same architecture at width
4,096 (:func:`suite.kernels.empirical.empirical_ntk`) on a 2,048 x 256 block, with
its distance to the infinite-width kernel. Figures only: this is not a test.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from suite.hilbert import SpinBasis
from suite.kernels.empirical import empirical_ntk
from suite.kernels.gram import gram
from suite.layers import Kernel
from suite.networks import mlp

ROOT = Path(__file__).resolve().parents[2]
NT_SCRIPT = ROOT / "tests" / "parity" / "nt_benchmark.py"
#: the problem of tests/parity/nt_benchmark.py (checked against its output)
N_SITES, N_COLUMNS, ROW_SEED = 16, 1024, 0
WIDTH, SW, SB = 512, 1.0, 0.0
AGREEMENT_RTOL = 1e-12
#: empirical NTK block: first rows of the basis, first columns of the 1,024
EMPIRICAL_SHAPE = (2048, 256)


def default_nt_python() -> Path:
    """The neural-tangents environment's python: ``$NNQS_NT_PYTHON``, else ``.venv-nt``."""
    return Path(os.environ.get("NNQS_NT_PYTHON", ROOT / ".venv-nt" / "bin" / "python"))


def best_of(call: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Seconds of the fastest of ``repeats`` calls after one warm-up, and the last result."""
    result = jax.block_until_ready(call())
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = jax.block_until_ready(call())
        seconds.append(time.perf_counter() - start)
    return min(seconds), result


def run_neural_tangents(python: Path, repeats: int, out: Path) -> dict[str, Any]:
    """Run ``nt_benchmark.py`` in the reference environment; its JSON plus its saved arrays.

    ``RuntimeError`` when there is no such python or the script fails.
    """
    if not python.is_file():
        raise RuntimeError(
            f"no neural-tangents python at {python}: run `make .venv-nt/.installed` "
            "or pass --nt-python"
        )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [str(python), str(NT_SCRIPT), "--out", str(out), "--repeats", str(repeats)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"nt_benchmark.py failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    with np.load(out / "nt_benchmark.npz") as npz:
        report["arrays"] = {key: npz[key] for key in npz.files}
    return report


def relative_differences(gram_matrix: Any, nt: dict[str, np.ndarray]) -> tuple[float, float]:
    """Max relative difference on the shared entries and relative difference of the sums."""
    rows, cols = nt["sample_rows"], nt["sample_cols"]
    ours = np.asarray(gram_matrix[jnp.asarray(rows), jnp.asarray(cols)])
    reference = nt["sample_values"]
    entries = float(np.max(np.abs(ours - reference)) / np.max(np.abs(reference)))
    total = math.fsum(np.asarray(jnp.sum(gram_matrix, axis=1)))
    return entries, abs(total - float(nt["total"])) / abs(float(nt["total"]))


def problem(
    n_sites: int = N_SITES, n_columns: int = N_COLUMNS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``x1`` (all spin configurations), ``x2`` (``n_columns`` of them) and their indices."""
    x1 = SpinBasis(n_sites).inputs()
    columns = np.sort(np.random.default_rng(ROW_SEED).choice(len(x1), n_columns, replace=False))
    return x1, x1[columns], columns


def time_ours(
    x1: np.ndarray, x2: np.ndarray, repeats: int, width: int = WIDTH
) -> tuple[float, float, jax.Array, bool]:
    """Best seconds of ``gram`` fresh and into a reused buffer (NTK of ``Dense(width)-Relu-
    Dense(1)``), the fresh result, and whether the buffered one is identical to it."""
    net = mlp(1, width, "relu", SW, SB)

    def ntk(k: Kernel) -> jax.Array:
        return net.kernel(k).ntk

    fresh_s, fresh = best_of(lambda: gram(ntk, x1, x2), repeats)
    buffer = [jnp.zeros((len(x1), len(x2)))]

    def into_buffer() -> jax.Array:
        buffer[0] = gram(ntk, x1, x2, out=buffer[0])
        return buffer[0]

    buffer_s, filled = best_of(into_buffer, repeats)
    return fresh_s, buffer_s, fresh, bool(jnp.array_equal(fresh, filled))


def empirical_throughput(x1: np.ndarray, x2: np.ndarray, width: int) -> dict[str, float]:
    """Time the empirical NTK of ``mlp(1, width)`` on ``x1 x x2``; compare with infinite width.

    The first call includes compilation; the second is timed again as it comes (a call
    that recompiles shows up as a second time close to the first).
    """
    net = mlp(1, width, "relu", SW, SB)
    params = net.init(jax.random.key(0), x1.shape[1])[1]
    a, b = jnp.asarray(x1), jnp.asarray(x2)
    times = []
    for _ in range(2):
        start = time.perf_counter()
        theta = jax.block_until_ready(empirical_ntk(net, params, a, b))
        times.append(time.perf_counter() - start)
    infinite = gram(lambda k: net.kernel(k).ntk, x1, x2)
    distance = float(jnp.linalg.norm(theta - infinite) / jnp.linalg.norm(infinite))
    return {
        "first_s": times[0],
        "second_s": times[1],
        "entries_per_s": theta.size / times[1],
        "relative_distance_to_infinite": distance,
    }


# long: one report read top to bottom, each figure printed where it is measured
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--nt-python",
        type=Path,
        default=default_nt_python(),
        help="python of the neural-tangents environment",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed calls after a warm-up")
    parser.add_argument("--empirical-width", type=int, default=4096)
    args = parser.parse_args(argv)

    x1, x2, columns = problem()
    entries = len(x1) * len(x2)
    fresh_s, buffer_s, fresh, same = time_ours(x1, x2, args.repeats)

    with tempfile.TemporaryDirectory() as tmp:
        try:
            nt = run_neural_tangents(args.nt_python, args.repeats, Path(tmp))
        except RuntimeError as error:
            raise SystemExit(str(error)) from None
    if not np.array_equal(nt["arrays"]["columns"], columns):
        raise SystemExit("nt_benchmark.py chose other columns: the two problems differ")
    entry_diff, sum_diff = relative_differences(fresh, nt["arrays"])
    del fresh

    rows = [
        ("ours (fresh)", fresh_s),
        ("ours (into buffer)", buffer_s),
        ("neural-tangents (jit)", nt["seconds"]),
    ]
    print(
        f"NTK Dense({WIDTH})-Relu-Dense(1), float64, {len(x1)} x {len(x2)} spin pairs "
        f"({N_SITES} sites); jax {jax.__version__} (ours), {nt['jax']} (neural-tangents); "
        f"{os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f}; best of {args.repeats}"
    )
    print(f"{'route':<26}{'seconds':>10}{'entries/s':>12}{'speed-up vs nt':>16}")
    for name, seconds in rows:
        print(
            f"{name:<26}{seconds:>10.4f}{entries / seconds:>12.3e}{nt['seconds'] / seconds:>15.1f}x"
        )
    print(f"neural-tangents compile + first call: {nt['compile_and_first_s']:.2f} s")
    print(f"into-buffer result identical to fresh: {same}")
    ok = entry_diff <= AGREEMENT_RTOL and sum_diff <= AGREEMENT_RTOL
    print(
        f"max relative difference vs neural-tangents: {entry_diff:.2e} on "
        f"{len(nt['arrays']['sample_values'])} entries, {sum_diff:.2e} on the sum "
        f"({'OK' if ok else 'FAIL'} at {AGREEMENT_RTOL:g})"
    )

    n1, n2 = EMPIRICAL_SHAPE
    emp = empirical_throughput(x1[:n1], x2[:n2], args.empirical_width)
    print(
        f"empirical NTK width {args.empirical_width}, {n1} x {n2}: first call "
        f"{emp['first_s']:.2f} s, second {emp['second_s']:.2f} s "
        f"({emp['entries_per_s']:.3e} entries/s); relative Frobenius distance to the "
        f"infinite-width NTK {emp['relative_distance_to_infinite']:.3e}"
    )
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
