"""Gaussian-process (replica-trick) estimate of the ensemble Renyi-2 entropy (docs/theory.md §6).

For an ensemble of unnormalised states ``psi`` with ``rho~ = |psi><psi|`` the estimate is

    S2_bar = -ln( E[Tr rho~_A^2] / E[(Tr rho~)^2] )        (natural log)

and for a centred Gaussian ``psi`` both moments follow from Wick's theorem. With the
covariance ``G(x, x') = E[psi(x) conj psi(x')]`` (Hermitian) and the pseudo-covariance
``C(x, x') = E[psi(x) psi(x')]`` (symmetric), ``x = (a, b)`` split into A and B:

    E[Tr rho~_A^2] = Tr[(Tr_B G)^2] + Tr[(Tr_A G)^2] + X,
        X = sum_{a, a', b, b'} C(ab, a'b') conj C(a'b, ab')
    E[(Tr rho~)^2] = (Tr G)^2 + Tr[G^2] + sum_{x, x'} |C(x, x')|^2.

Derivation: ``Tr rho~_A^2 = sum psi(ab) conj psi(a'b) psi(a'b') conj psi(ab')`` and
``(Tr rho~)^2 = sum |psi(x)|^2 |psi(x')|^2`` have three Wick pairings each: the two
covariance pairings of docs/theory.md §6, and the third pairing ``psi psi`` with
``conj psi conj psi``, which gives ``X`` and ``|C|^2``. Three ensembles:

* complex circular (``C = 0``, e.g. a decoupled NNQS with identical parts): docs/theory.md §6;
* real GP (``psi`` real, ``E[psi psi'] = G``, i.e. ``C = G``):
  ``E[Tr rho~_A^2] = Tr[(Tr_B G)^2] + Tr[(Tr_A G)^2] + sum G(ab, a'b') G(a'b, ab')``
  and ``E[(Tr rho~)^2] = (Tr G)^2 + 2 Tr[G^2]``: pass the covariance as its own
  pseudo-covariance (``pseudo=covariance``);
* any complex GP: pass ``C`` (for an NNQS, ``nnqs.infinite(k)[0].symmetric()``).

For an iid kernel ``G(x, x') = [x = x']`` the ratio is exactly the complex Haar purity
``(m + n)/(mn + 1)`` with ``C = 0`` and the real one ``(m + n + 1)/(mn + 2)`` with
``C = G`` (``m, n`` the dimensions of A and B; for iid Gaussian states the norm is
independent of the direction, so the ratio of means is the mean purity). Three routes,
which agree to rounding where they overlap:

(a) :func:`dense_traces`: from full matrices (small systems, any product basis);
(b) :func:`chunked_traces`: spin systems, the Gram matrix over all ``2**N``
    configurations computed block by block with Dask into a Zarr array on disk, the
    traces accumulated block by block (:func:`write_gram_zarr`, :func:`zarr_traces`);
(c) :func:`hamming_traces` / :func:`hamming_renyi2`: the O(N) closed form of
    docs/theory.md §6 for spin inputs, where every kernel of the suite is a function
    ``g(h) = fn(input_kernel(N, N, N - 2h, N))`` of the Hamming distance ``h``;
    :func:`nnqs_renyi2` applies it to an NNQS ensemble's NNGP.

All traces are reported divided by ``D**2`` (``Tr G`` by ``D``), ``D = dim A * dim B``,
so that the closed form stays finite for thousands of spins; for spins ``D`` is a power
of two and the scaling is exact.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import dask
import jax
import jax.numpy as jnp
import numpy as np
import zarr
from scipy.special import gammaln, logsumexp

from suite.hilbert import SpinBasis
from suite.kernels.blocked import store_gram
from suite.kernels.gram import gram
from suite.lattice import check_int
from suite.layers import Kernel, input_kernel
from suite.networks import NNQS

KernelFn = Callable[[Kernel], Any]
"""An elementwise kernel map: the input :class:`~suite.layers.Kernel` to an array."""

#: Zarr array names of the covariance and the pseudo-covariance in a route (b) group
COVARIANCE, PSEUDO = "covariance", "pseudo"
#: default Gram tile rows (= columns): 1024**2 float64 entries are 8 MiB. Measured here
#: (15 spins): as fast as 2048- and 4096-row tiles, at half the peak memory of the latter
DEFAULT_BLOCK = 1024


class ReplicaTraces(NamedTuple):
    """The Wick traces of one bipartition (module docstring), each divided by ``D**2``.

    ``trace = Tr G / D``; ``trace_sq = Tr[G^2]``, ``partial_b = Tr[(Tr_B G)^2]``,
    ``partial_a = Tr[(Tr_A G)^2]``, ``cross = X`` and ``pseudo_sq = sum |C|^2``, each
    divided by ``D**2``. ``cross = pseudo_sq = 0`` for a circular GP.
    """

    trace: float
    trace_sq: float
    partial_b: float
    partial_a: float
    cross: float
    pseudo_sq: float

    def purity_moment(self) -> float:
        """``E[Tr rho~_A^2] / D^2``."""
        return self.partial_b + self.partial_a + self.cross

    def norm_moment(self) -> float:
        """``E[(Tr rho~)^2] / D^2``."""
        return self.trace**2 + self.trace_sq + self.pseudo_sq

    def renyi2(self) -> float:
        """``S2_bar = -ln(E[Tr rho~_A^2] / E[(Tr rho~)^2])`` (natural log)."""
        return float(-np.log(self.purity_moment() / self.norm_moment()))


# --- (a) dense -------------------------------------------------------------------------------


def _square_matrix(name: str, matrix: Any) -> np.ndarray:
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty square matrix, got shape {matrix.shape}")
    return matrix


def dense_traces(covariance: Any, dim_a: int, pseudo: Any | None = None) -> ReplicaTraces:
    """Route (a): the Wick traces from full ``D x D`` matrices (module docstring).

    Rows and columns are indexed ``x = a * dim_b + b`` (for spins: A = the first
    ``n_a`` sites and ``dim_a = 2**n_a``). ``pseudo`` is ``C``: ``None`` for a circular
    GP, the covariance itself for a real GP. Traces of products use
    ``Tr[M^2] = sum_{ij} M_ij M_ji`` (no Hermiticity assumed).
    """
    g = _square_matrix("covariance", covariance)
    size = g.shape[0]
    dim_a = check_int("dim_a", dim_a)
    if size % dim_a:
        raise ValueError(f"dim_a must divide the dimension {size}, got {dim_a}")
    c = None if pseudo is None else _square_matrix("pseudo", pseudo)
    if c is not None and c.shape != g.shape:
        raise ValueError(f"pseudo must have the shape of covariance {g.shape}, got {c.shape}")
    dim_b = size // dim_a
    g4 = g.reshape(dim_a, dim_b, dim_a, dim_b)
    reduced_a = np.einsum("abcb->ac", g4)  # Tr_B G, (dim_a, dim_a)
    reduced_b = np.einsum("abad->bd", g4)  # Tr_A G, (dim_b, dim_b)
    scale = float(size) ** 2
    cross = pseudo_sq = 0.0
    if c is not None:
        c4 = c.reshape(dim_a, dim_b, dim_a, dim_b)
        cross = np.einsum("abcd,cbad->", c4, np.conj(c4)).real / scale
        pseudo_sq = np.sum(np.abs(c) ** 2) / scale
    return ReplicaTraces(
        float(np.trace(g).real / size),
        float(np.einsum("ij,ji->", g, g).real / scale),
        float(np.einsum("ij,ji->", reduced_a, reduced_a).real / scale),
        float(np.einsum("ij,ji->", reduced_b, reduced_b).real / scale),
        float(cross),
        float(pseudo_sq),
    )


# --- (c) Hamming closed form -----------------------------------------------------------------


def hamming_profile(fn: KernelFn, n_sites: int) -> np.ndarray:
    """``g(h) = fn(input_kernel(N, N, N - 2h, N))`` for ``h = 0 .. N`` (docs/theory.md §6).

    On spins ``|x|^2 = N`` and ``x.x' = N - 2h``: this is the kernel between any two
    configurations at Hamming distance ``h``, evaluated by the layer maps themselves
    (the table of the discrete fast path of :func:`suite.kernels.gram.gram`), compiled
    once per ``(fn, n_sites)``: pass the same ``fn`` object to reuse the compiled code.
    """
    return np.asarray(_profile(fn, check_int("n_sites", n_sites)))


@partial(jax.jit, static_argnames=("fn", "n_sites"))
def _profile(fn: KernelFn, n_sites: int) -> jax.Array:
    hamming = jnp.arange(n_sites + 1, dtype=jnp.float64)
    norms = jnp.full_like(hamming, float(n_sites))
    values = fn(input_kernel(norms, norms, norms - 2 * hamming, n_sites))
    return jnp.broadcast_to(values, hamming.shape)


def _log_binomial(n: int) -> np.ndarray:
    h = np.arange(n + 1)
    return gammaln(n + 1) - gammaln(h + 1) - gammaln(n - h + 1)


def _log_hamming_sum(log_sq: np.ndarray, n: int) -> float:
    """``ln(sum_{h <= n} C(n, h) |g(h)|^2 / 2**n)`` from ``log_sq = ln |g|^2``."""
    return float(logsumexp(_log_binomial(n) + log_sq[: n + 1]) - n * np.log(2.0))


def _log_abs_sq(values: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return 2.0 * np.log(np.abs(values))


class _LogTraces(NamedTuple):
    """Natural logs of the :class:`ReplicaTraces` fields (``-inf`` for a zero term)."""

    trace: float
    trace_sq: float
    partial_b: float
    partial_a: float
    cross: float
    pseudo_sq: float


def _check_cuts(n_a: Sequence[int], n_sites: int) -> list[int]:
    """Subsystem sizes ``0 <= N_A <= N`` (A = the first ``N_A`` sites), else ``ValueError``."""
    try:
        cuts = [check_int("n_a", value, minimum=0) for value in n_a]
    except TypeError:
        raise ValueError(f"n_a must be a list of subsystem sizes, got {n_a!r}") from None
    if any(value > n_sites for value in cuts):
        raise ValueError(f"n_a must be at most n_sites={n_sites}, got {list(n_a)}")
    return cuts


def _hamming_log_traces(
    fn: KernelFn, n_sites: int, n_a: Sequence[int], pseudo: KernelFn | None
) -> list[_LogTraces]:
    """Logs of the closed-form traces of docs/theory.md §6 (``m = 2**N_A``, ``n = 2**N_B``).

    ``Tr G / D = g(0)``, ``Tr[G^2] / D^2 = sum_h C(N,h) g(h)^2 / 2^N``,
    ``Tr[(Tr_B G)^2] / D^2 = sum_{h<=N_A} C(N_A,h) g(h)^2 / m``,
    ``Tr[(Tr_A G)^2] / D^2 = sum_{h<=N_B} C(N_B,h) g(h)^2 / n``, and, since ``(ab, a'b')``
    and ``(a'b, ab')`` are at the same Hamming distance, ``X / D^2 = sum |C|^2 / D^2 =
    sum_h C(N,h) |c(h)|^2 / 2^N``. The profiles are evaluated once for all cuts.
    """
    n_sites = check_int("n_sites", n_sites)
    cuts = _check_cuts(n_a, n_sites)
    g = hamming_profile(fn, n_sites)
    if not (np.all(np.isfinite(g)) and np.real(g[0]) > 0):
        raise ValueError("fn must give a finite kernel with a positive variance g(0)")
    log_g_sq = _log_abs_sq(g)
    log_trace, log_trace_sq = float(np.log(np.real(g[0]))), _log_hamming_sum(log_g_sq, n_sites)
    log_pseudo = -np.inf
    if pseudo is not None:
        log_pseudo = _log_hamming_sum(_log_abs_sq(hamming_profile(pseudo, n_sites)), n_sites)
    return [
        _LogTraces(
            log_trace,
            log_trace_sq,
            _log_hamming_sum(log_g_sq, cut),
            _log_hamming_sum(log_g_sq, n_sites - cut),
            log_pseudo,
            log_pseudo,
        )
        for cut in cuts
    ]


def hamming_traces(
    fn: KernelFn, n_sites: int, n_a: Sequence[int], pseudo: KernelFn | None = None
) -> list[ReplicaTraces]:
    """Route (c): the Wick traces on ``n_sites`` spins for A = the first ``N_A`` sites, each cut.

    ``fn`` is the covariance kernel map (e.g. ``lambda k: net.kernel(k).nngp``, or
    ``lambda k: nnqs.infinite(k)[0].hermitian()``), ``pseudo`` the pseudo-covariance
    map (``None``: circular; ``fn`` itself: real GP). O(N) work per cut, in log space;
    the returned (scaled) traces underflow only beyond ~1000 sites on both sides of a
    cut, where :func:`hamming_renyi2` still applies.
    """
    logs = _hamming_log_traces(fn, n_sites, n_a, pseudo)
    return [ReplicaTraces(*(float(np.exp(value)) for value in cut)) for cut in logs]


def hamming_renyi2(
    fn: KernelFn, n_sites: int, n_a: Sequence[int], pseudo: KernelFn | None = None
) -> list[float]:
    """Route (c): ``S2_bar`` on ``n_sites`` spins for each cut ``N_A`` in ``n_a``, in log space.

    Same arguments as :func:`hamming_traces`; valid for any number of sites.
    """
    estimates = []
    for logs in _hamming_log_traces(fn, n_sites, n_a, pseudo):
        log_purity = logsumexp([logs.partial_b, logs.partial_a, logs.cross])
        log_norm = logsumexp([2 * logs.trace, logs.trace_sq, logs.pseudo_sq])
        estimates.append(float(log_norm - log_purity))
    return estimates


def nnqs_renyi2(nnqs: NNQS, n_sites: int, cuts: Sequence[int]) -> list[float]:
    """``S2_bar`` of an NNQS ensemble at infinite width on ``n_sites`` spins, per cut.

    Covariance ``G = nnqs.infinite(k)[0].hermitian()`` and pseudo-covariance
    ``.symmetric()`` of its NNGP (zero for identical decoupled parts: a circular GP),
    through the Hamming closed form (route (c); docs/theory.md §6).
    """

    def covariance(k: Kernel) -> jax.Array:
        return nnqs.infinite(k)[0].hermitian()

    def pseudo(k: Kernel) -> jax.Array:
        return nnqs.infinite(k)[0].symmetric()

    return hamming_renyi2(covariance, n_sites, cuts, pseudo)


# --- (b) chunked: Dask blocks into Zarr, block-wise traces ----------------------------------


def _check_block(block: object, dimension: int) -> int:
    block = check_int("block", block)
    if block & (block - 1):
        raise ValueError(f"block must be a power of two, got {block}")
    return min(block, dimension)


def write_gram_zarr(
    fn: KernelFn,
    n_sites: int,
    store: str | os.PathLike[str],
    name: str = COVARIANCE,
    block: int = DEFAULT_BLOCK,
    workers: int | None = None,
) -> zarr.Array:
    """Route (b), stage 1: ``fn`` between all ``2**N`` spin configurations, into Zarr.

    A Dask array of ``block x block`` tiles, each ``gram(fn, rows, columns)`` on a row
    and a column block of the :class:`~suite.hilbert.SpinBasis` inputs, is stored into
    the array ``name`` of the Zarr (v3) group at ``store``, with chunks equal to the
    tiles (one writer per chunk), using Dask's threaded scheduler with ``workers``
    threads (default: all cores). Memory: a few tiles per thread. Completion is
    recorded in the array's attributes (``complete``) only after every chunk is written.
    """
    n_sites = check_int("n_sites", n_sites)
    dimension = SpinBasis(n_sites).dimension
    block = _check_block(block, dimension)
    workers = os.cpu_count() if workers is None else check_int("workers", workers)
    inputs = SpinBasis(n_sites).inputs()
    dtype = np.asarray(gram(fn, inputs[:1], inputs[:1])).dtype
    group = zarr.open_group(store, mode="a")
    array = group.create_array(
        name, shape=(dimension, dimension), chunks=(block, block), dtype=dtype, overwrite=True
    )
    array.attrs.update({"n_sites": n_sites, "block": block, "complete": False})
    store_gram(fn, inputs, inputs, array, workers=workers)
    array.attrs["complete"] = True
    return array


def _open_complete(store: str | os.PathLike[str], name: str) -> zarr.Array:
    """The Zarr array ``name`` of ``store``; ``ValueError`` unless its writing completed."""
    try:
        array = zarr.open_array(store, path=name, mode="r")
    except FileNotFoundError:
        raise ValueError(f"store has no array {name!r}: {store}") from None
    if not array.attrs.get("complete", False):
        raise ValueError(f"array {name!r} in store {store} is incomplete (not marked complete)")
    return array


def _inner(x: np.ndarray, y: np.ndarray) -> float:
    """``Re sum conj(x) y`` over all entries (einsum: BLAS ``dot`` is slow on this machine kind)."""
    x, y = x.ravel(), y.ravel()
    total = np.einsum("i,i->", x.real, y.real)
    if np.iscomplexobj(x) and np.iscomplexobj(y):
        total += np.einsum("i,i->", x.imag, y.imag)
    return float(total)


def _tile(array: zarr.Array, row: int, column: int, block: int) -> np.ndarray:
    return array[row * block : (row + 1) * block, column * block : (column + 1) * block]


def _tile_stats(
    store: str,
    pseudo_name: str | None,
    row: int,
    column: int,
    block: int,
    n_bs: tuple[int, ...],
) -> dict[str, Any]:
    """Contributions of tile ``(row, column)`` to the traces (see :func:`zarr_traces`)."""
    g_tile = _tile(zarr.open_array(store, path=COVARIANCE, mode="r"), row, column, block)
    stats: dict[str, Any] = {
        "trace": np.trace(g_tile),
        "frobenius": _inner(g_tile, g_tile),
        "partial_b": {},
        "cross": {},
        "pseudo_sq": 0.0,
    }
    for n_b in n_bs:
        if block > n_b:  # whole (a, a') sub-blocks in the tile: Tr_B G entries are local
            s = block // n_b
            reduced = np.einsum("abcb->ac", g_tile.reshape(s, n_b, s, n_b))
            stats["partial_b"][n_b] = _inner(reduced, reduced)
    if pseudo_name is None:
        return stats
    pseudo = zarr.open_array(store, path=pseudo_name, mode="r")
    c_tile = g_tile if pseudo_name == COVARIANCE else _tile(pseudo, row, column, block)
    stats["pseudo_sq"] = _inner(c_tile, c_tile)
    swapped = None  # tile (column, row) of C, shared by every cut with n_b < block
    for n_b in n_bs:
        if block > n_b:  # partner C(a'b, ab') lies in tile (column, row), a and a' swapped
            if swapped is None:
                swapped = _tile(pseudo, column, row, block)
            s = block // n_b
            partner = swapped.reshape(s, n_b, s, n_b)
            product = np.einsum("abcd,cbad->", c_tile.reshape(s, n_b, s, n_b), np.conj(partner))
        else:  # tiles (a r + beta, a' r + beta') and (a' r + beta, a r + beta'), r = n_b / block
            r = n_b // block
            a, beta, a2, beta2 = row // r, row % r, column // r, column % r
            product = _inner(_tile(pseudo, a2 * r + beta, a * r + beta2, block), c_tile)
        stats["cross"][n_b] = float(product.real)
    return stats


def _diagonal_sum(store: str, block: int, tiles: tuple[tuple[int, int], ...]) -> float:
    """``sum |Q|^2`` of one tile ``Q`` of ``Tr_A G`` (``n_b >= block``): the sum of ``tiles``."""
    array = zarr.open_array(store, path=COVARIANCE, mode="r")
    (row, column), *rest = tiles
    total = _tile(array, row, column, block)
    for row, column in rest:
        total += _tile(array, row, column, block)
    return _inner(total, total)


def _diagonal_blocks(store: str, n_b: int, block: int, n_tiles: int) -> float:
    """``sum |Tr_A G|^2`` for ``n_b < block``: diagonal tiles hold every ``(a, a)`` sub-block."""
    array = zarr.open_array(store, path=COVARIANCE, mode="r")
    s = block // n_b
    reduced = np.zeros((n_b, n_b), dtype=array.dtype)
    for index in range(n_tiles):
        reduced += np.einsum("abad->bd", _tile(array, index, index, block).reshape(s, n_b, s, n_b))
    return _inner(reduced, reduced)


def zarr_traces(
    store: str | os.PathLike[str],
    n_a: Sequence[int],
    pseudo: str | None = None,
    workers: int | None = None,
) -> list[ReplicaTraces]:
    """Route (b), stage 2: the Wick traces of every cut in ``n_a``, tile by tile from Zarr.

    Reads the complete array ``covariance`` (and ``pseudo``: ``None`` for a circular
    GP, ``"covariance"`` for a real GP, ``"pseudo"`` for a separate ``C``) of the group
    at ``store``, written by :func:`write_gram_zarr`; never holds more than a few tiles
    per thread. With tiles ``T_IJ`` of size ``t`` and, for a cut, ``n = 2**N_B``,
    ``m = 2**N_A``, ``x = a n + b`` (``G`` Hermitian):

    * ``Tr G = sum_I tr T_II``; ``Tr[G^2] = sum_IJ |T_IJ|^2``;
    * ``t <= n`` (a tile lies in one ``(a, a')`` sub-block, ``r = n/t`` tiles per side):
      ``(Tr_B G)[a, a'] = sum_beta tr T_{a r + beta, a' r + beta}``, assembled from the
      tile traces; the tile ``(beta, beta')`` of ``Tr_A G`` is
      ``sum_a T_{a r + beta, a r + beta'}``, each squared and summed (one task each);
      ``X = sum_IJ <T^C_{a' r + beta, a r + beta'}, T^C_IJ>``;
    * ``t > n`` (a tile holds ``s x s`` sub-blocks, ``s = t/n``): the entries
      ``(Tr_B G)[a, a'] = sum_b T_IJ[a b, a' b]`` lie in one tile and are squared there;
      ``Tr_A G = sum_I sum_a T_II[a b, a b']`` over diagonal tiles;
      ``X = sum_IJ sum T^C_IJ[a b, a' b'] conj T^C_JI[a' b, a b']``.

    ``sum |M|^2 = Tr[M^2]`` for the Hermitian ``Tr_B G`` and ``Tr_A G``. Threaded
    scheduler with ``workers`` threads (default: all cores).
    """
    # over 60 lines: most of them are the docstring, the derivation of the tile sums
    array = _open_complete(store, COVARIANCE)
    if pseudo is not None:
        _open_complete(store, pseudo)
    workers = os.cpu_count() if workers is None else check_int("workers", workers)
    dimension = array.shape[0]
    n_sites = dimension.bit_length() - 1
    cuts = _check_cuts(n_a, n_sites)
    block = array.chunks[0]
    n_tiles = dimension // block
    n_bs = tuple(sorted({2 ** (n_sites - value) for value in cuts}))
    path = str(Path(store))
    tasks = {
        (row, column): dask.delayed(_tile_stats)(path, pseudo, row, column, block, n_bs)
        for row in range(n_tiles)
        for column in range(n_tiles)
    }
    sums = {}
    for n_b in n_bs:
        if n_b >= block:
            r, m = n_b // block, dimension // n_b
            sums[n_b] = [
                dask.delayed(_diagonal_sum)(
                    path, block, tuple((a * r + i, a * r + j) for a in range(m))
                )
                for i in range(r)
                for j in range(r)
            ]
        else:
            sums[n_b] = [dask.delayed(_diagonal_blocks)(path, n_b, block, n_tiles)]
    tile_stats, diagonal = dask.compute(tasks, sums, scheduler="threads", num_workers=workers)
    tile_traces = np.array(
        [[tile_stats[row, column]["trace"] for column in range(n_tiles)] for row in range(n_tiles)]
    )
    scale = float(dimension) ** 2
    trace = float(np.trace(tile_traces).real) / dimension
    trace_sq = sum(stats["frobenius"] for stats in tile_stats.values()) / scale
    pseudo_sq = sum(stats["pseudo_sq"] for stats in tile_stats.values()) / scale
    traces = []
    for value in cuts:
        n_b = 2 ** (n_sites - value)
        if n_b >= block:
            r, m = n_b // block, dimension // n_b
            reduced = np.einsum("abcb->ac", tile_traces.reshape(m, r, m, r))
            partial_b = _inner(reduced, reduced)
        else:
            partial_b = sum(stats["partial_b"][n_b] for stats in tile_stats.values())
        cross = sum(stats["cross"].get(n_b, 0.0) for stats in tile_stats.values())
        traces.append(
            ReplicaTraces(
                trace,
                trace_sq,
                partial_b / scale,
                sum(diagonal[n_b]) / scale,
                cross / scale,
                pseudo_sq,
            )
        )
    return traces


def chunked_traces(
    fn: KernelFn,
    n_sites: int,
    n_a: Sequence[int],
    store: str | os.PathLike[str],
    pseudo: KernelFn | None = None,
    block: int = DEFAULT_BLOCK,
    workers: int | None = None,
) -> list[ReplicaTraces]:
    """Route (b): the Wick traces of every cut in ``n_a`` on ``n_sites`` spins.

    :func:`write_gram_zarr` for ``fn`` (and for ``pseudo`` unless it is ``None``,
    circular, or ``fn`` itself, a real GP: then the covariance array serves as ``C``),
    then :func:`zarr_traces`. ``store`` is the directory of the Zarr group (its arrays
    are overwritten). All arguments are validated before any work.
    """
    n_sites = check_int("n_sites", n_sites)
    cuts = _check_cuts(n_a, n_sites)
    _check_block(block, SpinBasis(n_sites).dimension)
    if workers is not None:
        check_int("workers", workers)
    if not callable(fn):
        raise ValueError(f"fn must be a kernel map (a callable), got {fn!r}")
    if pseudo is not None and not callable(pseudo):
        raise ValueError(f"pseudo must be a kernel map (a callable) or None, got {pseudo!r}")
    write_gram_zarr(fn, n_sites, store, COVARIANCE, block, workers)
    pseudo_name = None
    if pseudo is fn:
        pseudo_name = COVARIANCE
    elif pseudo is not None:
        write_gram_zarr(pseudo, n_sites, store, PSEUDO, block, workers)
        pseudo_name = PSEUDO
    return zarr_traces(store, cuts, pseudo_name, workers)
