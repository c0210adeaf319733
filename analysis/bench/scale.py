"""Figures of merit at scale: large ensembles, a full-basis Gram matrix, time-to-solution.

Three measurements of ``nnqs bench`` (declared in :data:`analysis.bench.cases.CASES`) sized
for a GPU node and runnable on any machine, and the peak rates they are judged against:

* :func:`measure_training_scale` - member-steps/s of :func:`suite.training.train_ensemble`
  at ``M >= 4096`` members (decoupled one-hidden-layer ReLU NNQS, TFIM 3x3, B = 256) in
  float32 and float64, with achieved FLOP/s and its fraction of the device's peak for
  that precision (docs/theory.md §5 for the update; FLOPs as in :mod:`analysis.bench.training`);
* :func:`measure_gram_full_basis` - entries/s and written GB/s of the infinite-width NTK
  Gram matrix over a whole spin basis (``2**n_sites`` squared, float64, in row tiles
  into a reused device buffer), checked against the closed form summed over Hamming
  distances (docs/theory.md §4);
* :func:`measure_time_to_solution` - seconds of a named sweep spec from an empty store to
  its aggregated results, in this process, with a deadline after which the remaining time
  is projected from the tasks done (and said to be a projection).

**Peaks** (:func:`device_peak`): on a GPU of :data:`DATASHEET_PEAKS` the vendor's
published figures (the source is recorded beside each fraction); anywhere else the rates
*measured in the same run* (the best square ``jnp.dot`` per precision, and a streaming
``y = 2 x`` for memory bandwidth), so a CPU's "fraction of peak" is a fraction of what
its BLAS reaches. Training runs its float32 matmuls at full precision (never TF32), so
float32 is judged against the FP32 peak; what JAX's *default* float32 matmul does on
the device is measured and noted (:func:`float32_matmul_precision`: the relative error
of a float32 product against float64; TF32 keeps 10 mantissa bits).
"""

from __future__ import annotations

import functools
import math
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import TYPE_CHECKING, Any

import numpy as np

from analysis.bench.cases import DTYPE_TAGS
from analysis.bench.measures import Measured

if TYPE_CHECKING:
    import jax


#: float32 relative matmul error above which the product was computed in TF32 (float32
#: rounding gives ~1e-7, TF32's 10-bit mantissa ~1e-3 on unit-normal inputs)
TF32_ERROR = 1e-4


@dataclass(frozen=True)
class Peak:
    """Peak rates of a device: FLOP/s per precision, memory bytes/s, and their source."""

    flop_per_s: Mapping[str, float]
    memory_bytes_per_s: float
    source: str


#: published peaks of GPUs (dense, no sparsity), matched on ``device_kind``
DATASHEET_PEAKS: dict[str, Peak] = {
    "H200": Peak(
        {"float64": 67e12, "float32": 67e12, "tf32": 495e12},
        4.8e12,
        "NVIDIA H200 SXM datasheet: FP64 tensor core 67 TFLOP/s, FP32 67, "
        "TF32 tensor core 495 dense; HBM3e 4.8 TB/s",
    ),
    "H100": Peak(
        {"float64": 67e12, "float32": 67e12, "tf32": 495e12},
        3.35e12,
        "NVIDIA H100 SXM datasheet: FP64 tensor core 67 TFLOP/s, FP32 67, "
        "TF32 tensor core 495 dense; HBM3 3.35 TB/s",
    ),
    "A100": Peak(
        {"float64": 19.5e12, "float32": 19.5e12, "tf32": 156e12},
        2.04e12,
        "NVIDIA A100 SXM 80GB datasheet: FP64 tensor core 19.5 TFLOP/s, FP32 19.5, "
        "TF32 tensor core 156 dense; HBM2e 2.04 TB/s",
    ),
}


def _best_seconds(call: Callable[[], Any], repeats: int) -> float:
    import jax

    jax.block_until_ready(call())  # warm-up (compilation)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(call())
        best = min(best, time.perf_counter() - start)
    return best


def measured_matmul_rate(dtype: str, n: int = 2048, repeats: int = 3) -> float:
    """FLOP/s of the best of ``repeats`` square ``n x n`` ``jnp.dot`` in ``dtype``."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(1), (n, n), dtype)
    b = jax.random.normal(jax.random.key(2), (n, n), dtype)
    dot = jax.jit(jnp.dot)
    return 2 * n**3 / _best_seconds(lambda: dot(a, b), repeats)


def measured_bandwidth(n_bytes: int = 1 << 28, repeats: int = 3) -> float:
    """Memory bytes/s of ``y = 2 x`` over ``n_bytes`` of float64 (read + write)."""
    import jax
    import jax.numpy as jnp

    x = jnp.ones(n_bytes // 8, jnp.float64)
    double = jax.jit(lambda v: 2.0 * v)
    return 2 * n_bytes / _best_seconds(lambda: double(x), repeats)


def float32_matmul_precision() -> str:
    """``"tf32"`` when a default-precision float32 matmul rounds like TF32, else ``"float32"``."""
    import jax.numpy as jnp

    a = np.random.default_rng(0).standard_normal((256, 256))
    b = np.random.default_rng(1).standard_normal((256, 256))
    exact = a @ b
    got = np.asarray(jnp.dot(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)))
    error = np.max(np.abs(got - exact)) / np.max(np.abs(exact))
    return "tf32" if error > TF32_ERROR else "float32"


@functools.cache
def device_peak(precisions: tuple[str, ...] = ("float32", "float64")) -> Peak:
    """The peak of JAX's default device: its datasheet (GPUs of :data:`DATASHEET_PEAKS`),
    else measured here, once per process (``precisions`` matmuls, none for ``()``, and
    the streaming bandwidth). Measured peaks are only as good as the machine is quiet."""
    import jax

    kind = jax.devices()[0].device_kind
    for name, peak in DATASHEET_PEAKS.items():
        if name.lower() in kind.lower():
            return peak
    rates = {p: measured_matmul_rate(p, 2048) for p in precisions}
    return Peak(
        rates,
        measured_bandwidth(),
        f"measured in this run on {kind}: best square jnp.dot (n = 2048) per precision "
        "and streaming y = 2x over 256 MiB (no datasheet entry)",
    )


def _peak_note(peak: Peak, precision: str) -> str:
    flops = ", ".join(f"{p} {v / 1e12:.3g} TFLOP/s" for p, v in peak.flop_per_s.items())
    return (
        f"peaks: {flops}, memory {peak.memory_bytes_per_s / 1e9:.4g} GB/s ({peak.source}); "
        f"training matmuls at full precision; JAX's default float32 matmul here: {precision}"
    )


# -- training at scale ---------------------------------------------------------------


def measure_training_scale(params: Mapping[str, Any]) -> Measured:
    """Member-steps/s, GFLOP/s and the fraction of the device's peak FLOP/s of
    :func:`suite.training.train_ensemble` for each width of ``widths`` and dtype of
    ``dtypes`` (``members`` members, TFIM 3x3, B = 256, all visible devices): per step
    ``(t(steps) - t(1)) / (steps - 1)`` of whole calls, each the best of ``repeats``
    (:func:`analysis.bench.training.per_step`)."""
    import jax

    from analysis.bench import training as bt
    from suite import networks as nw
    from suite.training import train_ensemble
    from suite.training.engines import flops_per_member_step

    x, phi, train = bt.problem()
    precision = float32_matmul_precision()
    peak = device_peak(tuple(params["dtypes"]))
    values: dict[str, float] = {}
    for width in params["widths"]:
        nnqs = nw.decoupled(nw.mlp(1, width))
        flops = flops_per_member_step(bt.N_TRAIN, width, x.shape[1])
        for dtype in params["dtypes"]:

            def run(steps: int, nnqs: nw.NNQS = nnqs, dtype: str = dtype) -> Any:
                return train_ensemble(
                    nnqs,
                    x,
                    phi,
                    train,
                    seed=bt.SEED,
                    members=range(params["members"]),
                    learning_rate=bt.LEARNING_RATE,
                    log_steps=[steps],
                    dtype=dtype,
                )

            seconds = bt.per_step(run, params["steps"], params["repeats"], idle_timeout=0.0)
            if seconds <= 0:
                raise ValueError(f"per-step time {seconds:.3g} s <= 0: raise the training steps")
            tag = f"w{width}_{DTYPE_TAGS[dtype]}"
            rate = params["members"] / seconds
            achieved = rate * flops
            peak_flops = peak.flop_per_s[dtype]  # training runs full float32, never TF32
            values[f"member_steps_per_s_{tag}"] = rate
            values[f"gflop_per_s_{tag}"] = achieved / 1e9
            values[f"peak_fraction_{tag}"] = achieved / peak_flops
    devices = jax.devices()
    notes = [
        f"{len(devices)} {devices[0].platform} device(s) ({devices[0].device_kind}), "
        f"{params['members']} members",
        _peak_note(peak, precision),
    ]
    return values, notes


# -- the Gram matrix of a whole basis ------------------------------------------------


def hamming_sum(fn: Callable[[Any], jax.Array], n_sites: int) -> float:
    """Sum of ``fn``'s Gram matrix over all pairs of ``n_sites`` spins by the closed form:
    ``2^N sum_h C(N, h) K(h)``, ``K(h)`` at one pair per Hamming distance ``h``."""
    from suite.hilbert import SpinBasis
    from suite.kernels.gram import gram

    first = SpinBasis(n_sites).inputs()[:1]
    flipped = np.repeat(first, n_sites + 1, axis=0)
    for h in range(n_sites + 1):
        flipped[h, :h] *= -1
    by_distance = np.asarray(gram(fn, first, flipped, method="direct"))[0]
    weights = np.array([math.comb(n_sites, h) for h in range(n_sites + 1)], np.float64)
    return float(2**n_sites * weights @ by_distance)


def measure_gram_full_basis(params: Mapping[str, Any]) -> Measured:
    """Entries/s, written GB/s (float64 results) and the fraction of the device's peak
    memory bandwidth of the NTK Gram matrix (``Dense(width)-Relu-Dense(1)``, NTK
    parameterisation, ``sb = 1``) over all ``2**n_sites`` spin configurations, both
    sides: ``tile``-row blocks written into one reused device buffer (the fast path of
    :func:`suite.kernels.gram.gram`), one warm-up tile, then every tile timed; each
    tile is summed on device and the total must match :func:`hamming_sum` to 1e-10."""
    import jax
    import jax.numpy as jnp

    from suite.hilbert import SpinBasis
    from suite.kernels.gram import gram
    from suite.networks import mlp

    net = mlp(1, params["width"], "relu", 1.0, 1.0)

    def ntk(kernel: Any) -> jax.Array:
        return net.kernel(kernel).ntk

    basis = SpinBasis(params["n_sites"]).inputs()
    dim, tile = len(basis), min(params["tile"], len(basis))
    if dim % tile:
        raise ValueError(f"tile must divide 2**n_sites = {dim}, got {tile}")
    buffer = jnp.zeros((tile, dim), jnp.float64)
    buffer = gram(ntk, basis[:tile], basis, out=buffer)  # warm-up: compilation
    total = 0.0
    jax.block_until_ready(buffer)
    start = time.perf_counter()
    for row in range(0, dim, tile):
        buffer = gram(ntk, basis[row : row + tile], basis, out=buffer)
        total += float(jnp.sum(buffer))  # forces the tile; the sum is part of the time
    seconds = time.perf_counter() - start
    expected = hamming_sum(ntk, params["n_sites"])
    deviation = abs(total - expected) / abs(expected)
    if not deviation <= 1e-10:
        raise ValueError(f"the tiled Gram sums to {total!r}, the closed form {expected!r}")
    entries = float(dim) * dim
    peak = device_peak(())
    values = {
        "entries_per_s": entries / seconds,
        "write_gb_per_s": 8 * entries / seconds / 1e9,
        "bandwidth_fraction": 8 * entries / seconds / peak.memory_bytes_per_s,
    }
    notes = [
        f"{dim} x {dim} float64 in {dim // tile} tiles of {tile} rows, {seconds:.2f} s; "
        f"sum within {deviation:.1e} of the closed form",
        f"peak memory bandwidth {peak.memory_bytes_per_s / 1e9:.4g} GB/s ({peak.source}); "
        "each entry is written once and read once by the tile sum",
    ]
    return values, notes


# -- time to solution ----------------------------------------------------------------


def _override(data: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` with ``{"section.key": value}`` replaced (the section must exist)."""
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        if section not in data or not key:
            raise ValueError(f"overrides: {dotted!r} is not section.key of the spec")
        data[section][key] = value
    return data


def measure_time_to_solution(params: Mapping[str, Any]) -> Measured:
    """Seconds of the sweep spec ``spec`` (a shipped name, with ``overrides`` of
    ``section.key``) from nothing to aggregated results, in this process on the default
    device(s): store preparation (targets, infinite-width predictions), every task in
    turn (:func:`jobs.sweep.execute_task`), Dask aggregation. After ``deadline_s`` no
    further task starts (the first always runs); then ``projected_seconds``
    (preparation + tasks x the mean task time) replaces ``seconds``, and a note says
    how many tasks ran. Tasks run in
    a fixed pseudo-random order (seed 0), so that those done before a deadline are a
    fair sample of the grid (tasks of one grid point are adjacent in the spec's order)."""
    import jax

    from jobs.spec import SPEC_DIR, parse_spec
    from jobs.sweep import execute_task, finalize, open_sweep, task_states
    from suite.store import SweepStore

    source = SPEC_DIR / f"{params['spec']}.toml"
    data = _override(tomllib.loads(source.read_text()), params.get("overrides", {}))
    data["sweep"]["name"] = f"tts-{params['spec']}"
    spec = parse_spec(data, source.name)
    values: dict[str, float] = {}
    with TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{params['spec']}.zarr"
        clock = time.perf_counter()
        store = open_sweep(spec, path)
        prepared = time.perf_counter() - clock
        todo = task_states(store).todo()
        order = np.random.default_rng(0).permutation(len(todo))
        done = 0
        for task in (todo[i] for i in order):
            if done and time.perf_counter() - clock > params["deadline_s"]:
                break  # at least one task runs, so that the rest can be projected
            execute_task(path, task)
            done += 1
        tasks_s = time.perf_counter() - clock - prepared
        if done == len(todo):
            finalize(SweepStore(path), progress=False)
            values["seconds"] = time.perf_counter() - clock
            values["preparation_seconds"] = prepared
            values["tasks_per_s"] = done / tasks_s
            notes = [f"{done} tasks, preparation {prepared:.1f} s, tasks {tasks_s:.1f} s"]
        else:
            values["projected_seconds"] = prepared + tasks_s * len(todo) / done
            values["preparation_seconds"] = prepared
            values["tasks_per_s"] = done / tasks_s
            notes = [
                f"PROJECTED: {done} of {len(todo)} tasks ran before the {params['deadline_s']} s "
                f"deadline (preparation {prepared:.1f} s, tasks {tasks_s:.1f} s); aggregation "
                "not included"
            ]
    devices = jax.devices()
    notes.append(f"{len(devices)} {devices[0].platform} device(s) ({devices[0].device_kind})")
    return values, notes
