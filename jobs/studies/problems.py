"""The supervised problems of a spec, shared by the dynamics and kernels studies: the
target on its basis, the train sets and their infinite-width QS-NTK, the Gram arrays of
the infinite-width kernels, and what preparing them costs (docs/theory.md §4-§5)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from jobs.spec import (
    BASELINE_BYTES,
    SpecChecker,
    SweepSpec,
    target_basis,
    target_dimension,
    usable_cores,
)
from jobs.studies.base import NAN, NAN_PADDED, About, array_spec
from suite import networks
from suite.dynamics import TrainSpectrum
from suite.store import ArraySpec
from suite.supervised import ROW_BLOCK_ELEMENTS, Problem, scale_target, split_problem
from suite.targets import build_target, make_spec

#: QS-NTK blocks, in the order of the ``block`` axis
BLOCKS = ("uu", "uv", "vu", "vv")

#: the basis inputs of the dynamics and kernels stores
INPUTS = About(
    "network input",
    "1",
    "each basis state as the networks see it: spins as +-1, Hubbard sites as 0, 1, 2, 3 "
    "(empty, down, up, double; docs/theory.md §1)",
)


def dynamics_nnqs(spec: SweepSpec, width: int) -> networks.NNQS:
    """The NNQS of ``[network]`` at ``width`` (decoupled, shared trunk or complex output)."""
    net = spec.network
    return networks.mlp_nnqs(net.kind, net.activation, net.depth, width)


def basis_and_target(spec: SweepSpec) -> tuple[np.ndarray, np.ndarray]:
    """The basis inputs and the scaled target ``phi``."""
    target = build_target(make_spec(**spec.target))
    return target.inputs, scale_target(target.psi, spec.training.target_scale)


def supervised_problem(
    spec: SweepSpec,
    inputs: np.ndarray,
    phi: np.ndarray,
    t: int,
    spectrum: TrainSpectrum | None = None,
) -> Problem:
    """The supervised problem of train size ``t`` (``spectrum``: its train-set spectrum
    when known from an earlier pass).

    A problem holds ``O(D B)`` infinite-width kernels: the layouts build one at a time
    and let it go (``del``) before building the next, so that only the largest is ever
    held, not all of them.
    """
    nnqs = dynamics_nnqs(spec, spec.grid.widths[0])  # infinite-width maps ignore the width
    size = spec.grid.train_sizes[t]
    return split_problem(nnqs, inputs, phi, size, spec.sweep.seed, spectrum)


def train_set_arrays(
    spec: SweepSpec, inputs: np.ndarray, trains: list[np.ndarray], blocks: list[np.ndarray]
) -> tuple[list[ArraySpec], dict[str, np.ndarray], list[Any]]:
    """Per train size (its points and ``2B x 2B`` QS-NTK block): its mask, its QS-NTK
    spectrum and ``Theta(basis, train)`` (Dask tiles)."""
    dimension = inputs.shape[0]
    n_t, b_max = len(trains), max(spec.grid.train_sizes)
    spectra = np.full((n_t, 2 * b_max), NAN)
    masks = np.zeros((n_t, dimension), dtype=bool)
    for t, (train, block) in enumerate(zip(trains, blocks, strict=True)):
        spectra[t, : 2 * train.size] = np.linalg.eigvalsh(block)
        masks[t, train] = True
    arrays = [
        array_spec(
            "train_mask",
            {"train_size": n_t, "basis": dimension},
            (n_t, dimension),
            "|b1",
            about=About(
                "train-set membership", "1", "true where a basis state is in the train set"
            ),
        ),
        array_spec(
            "ntk_spectrum",
            {"train_size": n_t, "eigen": 2 * b_max},
            (n_t, 2 * b_max),
            about=About(
                "QS-NTK eigenvalues on the train set",
                "1",
                "eigenvalues of the 2B x 2B infinite-width QS-NTK block matrix, ascending "
                "(docs/theory.md §4-§5)" + NAN_PADDED,
            ),
        ),
        array_spec(
            "ntk_basis_train",
            {"train_size": n_t, "block": len(BLOCKS), "basis": dimension, "train_point": b_max},
            (1, 1, min(dimension, spec.kernels.block), b_max),
            about=About(
                "infinite-width NTK between basis and train set",
                "1",
                "Theta(basis, train) per QS-NTK block (docs/theory.md §4)" + NAN_PADDED,
            ),
        ),
    ]
    nnqs = dynamics_nnqs(spec, spec.grid.widths[0])
    grams = [
        ("ntk_basis_train", (t, b), kernel_block(nnqs, 1, block), inputs, inputs[train])
        for t, train in enumerate(trains)
        for b, block in enumerate(BLOCKS)
    ]
    return arrays, {"train_mask": masks, "ntk_spectrum": spectra}, grams


def full_gram_arrays(spec: SweepSpec, inputs: np.ndarray) -> tuple[list[ArraySpec], list[Any]]:
    """With ``kernels.full``: the ``D x D`` NNGP and NTK blocks, in Dask tiles."""
    if not spec.kernels.full:
        return [], []
    dimension = inputs.shape[0]
    tile = min(dimension, spec.kernels.block)
    nnqs = dynamics_nnqs(spec, spec.grid.widths[0])
    arrays, grams = [], []
    for name, index, long_name in (("nngp", 0, "NNGP"), ("ntk", 1, "NTK")):
        dims = {"block": len(BLOCKS), "basis": dimension, "basis_column": dimension}
        about = About(
            f"infinite-width {long_name} on the basis",
            "1",
            f"the D x D {long_name} Gram matrix per block (docs/theory.md §4)",
        )
        arrays.append(array_spec(name, dims, (1, tile, tile), about=about))
        grams += [
            (name, (b,), kernel_block(nnqs, index, block), inputs, inputs)
            for b, block in enumerate(BLOCKS)
        ]
    return arrays, grams


def kernel_block(nnqs: networks.NNQS, index: int, block: str) -> Callable[[Any], Any]:
    """The ``block`` (uu, uv, vu, vv) of the NNGP (``index`` 0) or the NTK (1) of ``nnqs``."""

    def fn(kernel: Any) -> Any:
        return getattr(nnqs.infinite(kernel)[index], block)

    return fn


def parameter_count(spec: SweepSpec, width: int) -> int:
    """Parameters of one member (u and v networks) of ``[network]`` at ``width``."""
    in_dim, depth = target_basis(spec).n_sites, spec.network.depth
    return 2 * (width * (in_dim + 2) + (depth - 1) * width * (width + 1))


def check_train_sizes(spec: SweepSpec, check: SpecChecker) -> None:
    """Every train size leaves a test set: less than the basis dimension."""
    dimension = target_dimension(spec)
    for size in spec.grid.train_sizes:
        if size >= dimension:
            raise check.error(
                "grid.train_sizes",
                f"must be less than the basis dimension {dimension} (a test set must remain)",
                size,
            )


def preparation_bytes(spec: SweepSpec) -> int:
    """Rough peak memory (bytes) of creating the store.

    The target (sparse Hamiltonian, Krylov vectors, inputs: about ``24 (n_sites + 8)``
    bytes a state); one supervised problem at a time, the largest: its NNGP and NTK
    blocks between the basis and the train set, ``2 x 4 x D x B`` float64, and the
    Gram's integer index; the train-set QS-NTK's eigendecomposition and the products of
    the set losses, ``(2B)^2`` float64 several times, and their row blocks
    (``suite.supervised.ROW_BLOCK_ELEMENTS``, docs/theory.md §5); the Gram tiles in
    flight (a few per core; ``D x D`` tiles with ``kernels.full``). Plus
    :data:`jobs.spec.BASELINE_BYTES`.
    """
    basis = target_basis(spec)
    dimension, train = basis.dimension, max(spec.grid.train_sizes)
    target = 24 * dimension * (basis.n_sites + 8)
    problem_bytes = 72 * dimension * train
    rows = min(ROW_BLOCK_ELEMENTS, 4 * dimension * train)
    train_algebra = 8 * 8 * ((2 * train) ** 2 + rows)
    tile = min(dimension, spec.kernels.block)
    columns = max(train, tile) if spec.kernels.full else train
    tiles = 4 * 8 * usable_cores() * tile * columns
    return BASELINE_BYTES + target + problem_bytes + train_algebra + tiles
