"""What every ``nnqs bench`` measurement returns (:data:`Measured`), how it says it cannot
run here (:class:`CaseSkipped`), and the measurements of the kernel, training, Renyi-2
and Zarr cases (those of the scaling cases are in :mod:`analysis.bench.parallel`, those
at scale in :mod:`analysis.bench.scale`)."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

Measured = tuple[dict[str, float], list[str]]
"""What a ``measure_*`` function returns: metric values and notes (one line each)."""


class CaseSkipped(Exception):
    """A case that cannot run on this machine (a service or a device it needs is not
    there): recorded as a note, not as an error, so ``--fail-on-regression`` passes."""


def measure_kernel_gram(params: Mapping[str, Any]) -> Measured:
    """Entries/s of ``gram`` (NTK of ``Dense(512)-Relu-Dense(1)``, float64) between all
    ``2**n_sites`` spin configurations and ``n_columns`` of them, a fresh result and into
    a reused buffer, each the best of ``repeats`` after a warm-up
    (:func:`analysis.bench.kernels.time_ours`); with ``neural_tangents`` and its python
    present, neural-tangents' ``jit(kernel_fn)`` on the same problem and our buffered
    route's speed-up over it (:func:`analysis.bench.kernels.run_neural_tangents`)."""
    import numpy as np

    from analysis.bench import kernels as bk

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
    each the best of ``repeats`` (:func:`analysis.bench.training.per_step`), FLOPs by
    :func:`suite.training.engines.flops_per_member_step`."""
    import jax

    from analysis.bench import training as bt
    from suite import networks as nw
    from suite.training.engines import flops_per_member_step

    x, phi, train = bt.problem()
    nnqs = nw.decoupled(nw.mlp(1, params["width"]))
    run = bt.ours(nnqs, x, phi, train, params["members"])
    seconds = bt.per_step(run, params["steps"], params["repeats"], params["idle_timeout"])
    if seconds <= 0:
        raise ValueError(f"per-step time {seconds:.3g} s <= 0: raise the training steps")
    rate = params["members"] / seconds
    flops = flops_per_member_step(bt.N_TRAIN, params["width"], x.shape[1])
    devices = jax.devices()
    notes = [f"{len(devices)} {devices[0].platform} device(s)"]
    return {"member_steps_per_s": rate, "gflop_per_s": rate * flops / 1e9}, notes


def measure_loss_training(params: Mapping[str, Any]) -> Measured:
    """Member-steps/s of :func:`suite.training.train_on_loss` on the energy of the TFIM
    3x3 (periodic, h = 3) against :func:`suite.training.train_ensemble` on the MSE over
    the same ``D = 512`` points, in the same run: decoupled one-hidden-layer ReLU NNQS of
    ``width``, ``members`` members, float32, all visible devices, the fast update in both;
    per-step times as in :func:`measure_training`. The energy step evaluates every member
    on the whole basis, applies ``H`` and pulls the gradient back (one more GEMM than the
    supervised step, docs/theory.md §7)."""
    import jax
    import numpy as np

    from analysis.bench import training as bt
    from suite import networks as nw
    from suite.hilbert import SpinBasis
    from suite.lattice import Lattice
    from suite.losses import Energy, SparseRows
    from suite.operators import tfim_hamiltonian
    from suite.training import fast_template, train_ensemble, train_on_loss

    hamiltonian = tfim_hamiltonian(Lattice(3, 3, periodic=True), J=1.0, h=3.0)
    energy = Energy(SparseRows.from_csr(hamiltonian))
    x = SpinBasis(9).inputs()
    phi = np.linalg.eigh(hamiltonian.toarray())[1][:, 0] * np.sqrt(x.shape[0])
    every_point = np.arange(x.shape[0])
    nnqs = nw.decoupled(nw.mlp(1, params["width"]))
    if fast_template(nnqs, x.shape[1]) is None:  # pragma: no cover - the template is known
        raise ValueError("the benchmark network must take the fast update")
    common = dict(seed=bt.SEED, members=range(params["members"]), dtype="float32")

    def supervised(steps: int) -> Any:
        return train_ensemble(nnqs, x, phi, every_point, learning_rate=bt.LEARNING_RATE,
                              log_steps=[steps], **common)  # fmt: skip

    def on_energy(steps: int) -> Any:
        return train_on_loss(nnqs, x, energy, learning_rate=params["energy_learning_rate"],
                             log_steps=[steps], **common)  # fmt: skip

    timing = (params["steps"], params["repeats"], params["idle_timeout"])
    seconds = {"supervised": bt.per_step(supervised, *timing),
               "energy": bt.per_step(on_energy, *timing)}  # fmt: skip
    for name, value in seconds.items():
        if value <= 0:
            raise ValueError(f"{name} per-step time {value:.3g} s <= 0: raise the steps")
    rates = {name: params["members"] / value for name, value in seconds.items()}
    devices = jax.devices()
    final = on_energy(params["steps"]).values["loss"][-1]
    notes = [
        f"{len(devices)} {devices[0].platform} device(s); D = {x.shape[0]} points in both runs",
        f"mean energy after {params['steps']} steps: {np.mean(final):.6f} "
        f"(ground {np.linalg.eigvalsh(hamiltonian.toarray())[0]:.6f})",
    ]
    return {
        "energy_member_steps_per_s": rates["energy"],
        "supervised_member_steps_per_s": rates["supervised"],
        "energy_over_supervised": rates["energy"] / rates["supervised"],
    }, notes


def measure_renyi2_chunked(params: Mapping[str, Any]) -> Measured:
    """Entries/s of route (b) of :mod:`suite.replica` (:func:`~suite.replica.chunked_traces`
    of the ReLU NNGP on ``n_sites`` spins: the ``4**n_sites``-entry Gram matrix written to
    a Zarr store in ``block``-row tiles with Dask, then the traces of every cut), one run
    in a temporary directory (:func:`analysis.bench.entanglement.chunked_child`); the
    traces must match the closed form (route (c)) to ``1e-8``."""
    from analysis.bench.entanglement import chunked_child

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
