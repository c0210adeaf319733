"""neural-tangents side of the kernel throughput benchmark (docs/theory.md §4).

Runs ONLY in the pinned reference environment (neural-tangents 0.6.5, jax 0.4.25); it
must not import ``suite``. ``analysis/bench/kernels.py`` launches it. The problem:

* network: ``Dense(512) -> Relu -> Dense(1)``, NTK parameterisation, ``W_std=1``,
  ``b_std=0`` (our ``mlp(1, 512, "relu", 1.0, 0.0)``), float64, ``get='ntk'``;
* ``x1``: all 65,536 spin configurations of 16 sites in the ``SpinBasis`` order (site
  ``i`` of state ``k`` is ``+1`` iff bit ``15 - i`` of ``k`` is 0);
* ``x2``: rows ``sort(default_rng(0).choice(65536, 1024, replace=False))`` of ``x1``.

Timing: ``jax.jit(kernel_fn, static_argnames="get")``, one warm-up call (compilation),
then the best of ``--repeats`` calls, each ended by ``block_until_ready``. The Gram
matrix (512 MB) is not saved: ``--out`` receives ``nt_benchmark.npz`` with the row
choice, the float64 sum of all entries (``math.fsum`` of row sums) and 4,096 entries at
fixed positions (``default_rng(1)``), enough for a relative check at ``1e-12``. The
last line on stdout is a JSON object: ``seconds`` (best), ``entries_per_s``,
``compile_and_first_s``, ``all_seconds`` and the problem description.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from neural_tangents import stax  # noqa: E402

PROBLEM = {
    "n_sites": 16,
    "n_columns": 1024,
    "width": 512,
    "sw": 1.0,
    "sb": 0.0,
    "parameterization": "ntk",
    "row_seed": 0,
    "sample_seed": 1,
    "n_samples": 4096,
}


def spin_configurations(n_sites: int) -> np.ndarray:
    """All ``2**n_sites`` spin rows, site ``i`` up (``+1``) iff bit ``n_sites-1-i`` is 0."""
    states = np.arange(2**n_sites, dtype=np.int64)
    bits = (states[:, None] >> (n_sites - 1 - np.arange(n_sites))) & 1
    return (1 - 2 * bits).astype(np.float64)


def columns(n_sites: int, n_columns: int, seed: int) -> np.ndarray:
    """The sorted basis indices of the ``x2`` rows."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(2**n_sites, n_columns, replace=False))


def sample_positions(shape: tuple[int, int], n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed (row, column) positions of the saved entries."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, shape[0], n), rng.integers(0, shape[1], n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for nt_benchmark.npz")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls after the warm-up")
    args = parser.parse_args()
    p = PROBLEM
    x1 = spin_configurations(p["n_sites"])
    cols = columns(p["n_sites"], p["n_columns"], p["row_seed"])
    x2 = x1[cols]
    dense = {"W_std": p["sw"], "b_std": p["sb"], "parameterization": p["parameterization"]}
    _, _, kernel_fn = stax.serial(
        stax.Dense(p["width"], **dense), stax.Relu(), stax.Dense(1, **dense)
    )
    kernel_fn = jax.jit(kernel_fn, static_argnames="get")
    x1_device, x2_device = jax.device_put(x1), jax.device_put(x2)

    start = time.perf_counter()
    ntk = kernel_fn(x1_device, x2_device, get="ntk").block_until_ready()
    first = time.perf_counter() - start
    seconds = []
    for _ in range(args.repeats):
        del ntk
        start = time.perf_counter()
        ntk = kernel_fn(x1_device, x2_device, get="ntk").block_until_ready()
        seconds.append(time.perf_counter() - start)

    gram = np.asarray(ntk)
    rows, cols_sample = sample_positions(gram.shape, p["n_samples"], p["sample_seed"])
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez(
        args.out / "nt_benchmark.npz",
        columns=cols,
        total=np.float64(math.fsum(gram.sum(axis=1))),
        sample_rows=rows,
        sample_cols=cols_sample,
        sample_values=gram[rows, cols_sample],
    )
    best = min(seconds)
    print(
        json.dumps(
            {
                "seconds": best,
                "entries_per_s": gram.size / best,
                "compile_and_first_s": first,
                "all_seconds": seconds,
                "jax": jax.__version__,
                "problem": p,
            }
        )
    )


if __name__ == "__main__":
    main()
