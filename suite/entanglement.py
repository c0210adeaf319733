"""Bipartite entanglement of exact state vectors and of NNQS ensembles (docs/theory.md §6).

The state is normalised over the full basis and its sites are split into A
(by default the first ``n_a`` sites) and B (the rest). The squared singular values
``p_k`` of the coefficient matrix ``Psi[a, b]`` give ``S_vN = -sum p ln p`` and
``S_n = ln(sum p^n) / (1 - n)``. All entropies use the natural logarithm.

Besides single states of any basis, this module provides

* per-sample entanglement of spin states for any bipartition given as a list of
  sites, batched over a leading (ensemble) axis: :func:`spin_bipartite_matrices`,
  :func:`schmidt_spectra` (batched SVD), :func:`entropy`;
* :func:`entanglement_profile`: the entropies of one state (e.g. a quench target)
  for several subsystems, as plain floats;
* the random-state references :func:`page_entropy` and :func:`haar_purity`;
* :func:`ensemble_entanglement`: per-member entropies of an ensemble of finite-width
  NNQS, member ``i`` depending only on ``(seed, i)`` however the ensemble is chunked.

The Gaussian-process (replica-trick) Renyi-2 estimate lives in :mod:`suite.replica`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.special import xlogy

from suite.hilbert import Basis, SpinBasis
from suite.lattice import check_int
from suite.networks import NNQS, init_ensemble
from suite.training.statistics import jackknife_sem

Subsystem = int | Sequence[int]
"""Sites of subsystem A: an int ``n_a`` means the first ``n_a`` sites, else a list of sites."""

#: below this larger dimension the Page value sums its harmonic numbers term by term
PAGE_EXACT_BELOW = 1000


def bipartite_matrix(
    basis: Basis, psi: np.ndarray, n_a: int, *, compact: bool = True
) -> np.ndarray:
    """Coefficient matrix ``Psi[a, b]`` of ``psi`` for the cut after ``n_a`` sites
    (docs/theory.md §6).

    Built from ``basis.split(n_a)``. With ``compact=False`` the rows and columns
    run over the full local spaces of A and B (``dim_a x dim_b``); with
    ``compact=True`` only the A and B configurations that occur in ``basis`` are
    kept (e.g. fixed particle numbers), which drops identically zero rows and
    columns and leaves the Schmidt spectrum unchanged.
    """
    psi = np.asarray(psi)
    index_a, index_b, dim_a, dim_b = basis.split(n_a)
    if psi.shape != index_a.shape:
        raise ValueError(f"psi must have shape ({index_a.size},), got {psi.shape}")
    if compact:
        rows_a, index_a = np.unique(index_a, return_inverse=True)
        rows_b, index_b = np.unique(index_b, return_inverse=True)
        dim_a, dim_b = rows_a.size, rows_b.size
    matrix = np.zeros((dim_a, dim_b), dtype=np.result_type(psi.dtype, np.complex128))
    matrix[index_a, index_b] = psi
    return matrix


def schmidt_probabilities(psi_matrix: np.ndarray) -> np.ndarray:
    """Squared singular values of the normalised coefficient matrix (docs/theory.md §6).

    The result is sorted in decreasing order and sums to one.
    """
    psi_matrix = np.asarray(psi_matrix)
    norm = np.linalg.norm(psi_matrix)
    if norm == 0.0:
        raise ValueError("psi_matrix must not be identically zero")
    singular_values = np.linalg.svd(psi_matrix / norm, compute_uv=False)
    return singular_values**2


def schmidt_probabilities_blockwise(basis: Basis, psi: np.ndarray, n_a: int) -> np.ndarray:
    """Schmidt probabilities of ``psi`` for the cut after ``n_a`` sites, block by block.

    Same result as ``schmidt_probabilities(bipartite_matrix(basis, psi, n_a))``
    (docs/theory.md §6), but the coefficient matrix is first split into the
    connected components of the bipartite graph "A configuration -- B
    configuration" spanned by the basis states. The matrix is block diagonal
    in these components (for fixed particle numbers they are the sectors of
    definite ``(N_up, N_down)`` in A), so only the blocks are decomposed.
    Sorted in decreasing order, sums to one.
    """
    psi = np.asarray(psi)
    index_a, index_b, _, _ = basis.split(n_a)
    if psi.shape != index_a.shape:
        raise ValueError(f"psi must have shape ({index_a.size},), got {psi.shape}")
    norm = np.linalg.norm(psi)
    if norm == 0.0:
        raise ValueError("psi must not be identically zero")
    rows_a, index_a = np.unique(index_a, return_inverse=True)
    rows_b, index_b = np.unique(index_b, return_inverse=True)
    n_nodes = rows_a.size + rows_b.size
    edges = sp.coo_matrix(
        (np.ones(psi.size), (index_a, rows_a.size + index_b)), shape=(n_nodes, n_nodes)
    )
    _, labels = connected_components(edges, directed=False)
    block_of_state = labels[index_a]
    probabilities = []
    for block in np.unique(block_of_state):
        states = block_of_state == block
        block_a, local_a = np.unique(index_a[states], return_inverse=True)
        block_b, local_b = np.unique(index_b[states], return_inverse=True)
        matrix = np.zeros((block_a.size, block_b.size), dtype=np.complex128)
        matrix[local_a, local_b] = psi[states] / norm
        probabilities.append(np.linalg.svd(matrix, compute_uv=False) ** 2)
    return np.sort(np.concatenate(probabilities))[::-1]


def entropy(p: np.ndarray, n: float = 1) -> np.ndarray:
    """Renyi entropy ``ln(sum_k p_k^n) / (1 - n)`` along the last axis of ``p`` (docs/theory.md §6).

    Natural log. ``n = 1`` is the von Neumann entropy ``-sum_k p_k ln p_k`` (the
    ``n -> 1`` limit), ``n = inf`` the min-entropy ``-ln max_k p_k``; ``n`` must be
    positive. Zero probabilities contribute nothing. Batched: the result has the
    shape of ``p`` without its last axis.
    """
    check_order(n)
    p = np.asarray(p, dtype=np.float64)
    positive = np.where(p > 0.0, p, 0.0)
    if n == 1:
        return -np.sum(xlogy(positive, positive), axis=-1)
    if np.isinf(n):
        return -np.log(np.max(positive, axis=-1))
    return np.log(np.sum(positive**n, axis=-1)) / (1.0 - n)


def check_order(n: float) -> None:
    """Raise ``ValueError`` naming ``n`` unless the Renyi order ``n`` is positive."""
    if not (isinstance(n, int | float | np.number) and n > 0):
        raise ValueError(f"n must be positive, got {n!r}")


def von_neumann_entropy(p: np.ndarray) -> float:
    """Von Neumann entropy ``-sum_k p_k ln p_k`` (natural log), zeros ignored
    (docs/theory.md §6)."""
    return float(entropy(p, 1))


def renyi_entropy(p: np.ndarray, n: float) -> float:
    """Renyi entropy ``ln(sum_k p_k^n) / (1 - n)`` (natural log, docs/theory.md §6).

    ``n = 1`` gives the von Neumann limit and ``n = inf`` the min-entropy
    ``-ln max_k p_k``; ``n`` must be positive.
    """
    return float(entropy(p, n))


def check_sites(sites: Subsystem, n_sites: int) -> tuple[int, ...]:
    """Sites of subsystem A as a sorted tuple; ``ValueError`` naming ``sites`` if invalid.

    An int ``n_a`` (``0 <= n_a <= n_sites``) means the first ``n_a`` sites; a list
    must hold distinct sites in ``[0, n_sites)`` (it may be empty or complete).
    """
    if isinstance(sites, int | np.integer) and not isinstance(sites, bool):
        if not 0 <= sites <= n_sites:
            raise ValueError(f"sites must be in [0, {n_sites}] as a count, got {sites}")
        return tuple(range(int(sites)))
    try:
        chosen = tuple(check_int("sites", site, minimum=0) for site in sites)
    except TypeError:
        raise ValueError(f"sites must be an int or a list of sites, got {sites!r}") from None
    if len(set(chosen)) != len(chosen) or any(site >= n_sites for site in chosen):
        raise ValueError(f"sites must be distinct sites in [0, {n_sites}), got {list(sites)}")
    return tuple(sorted(chosen))


def _spin_sites(psi: np.ndarray) -> int:
    """Number of spins ``N`` of amplitudes over ``2**N`` configurations (last axis)."""
    dimension = psi.shape[-1] if psi.ndim else 0
    if dimension < 1 or dimension & (dimension - 1):
        raise ValueError(f"psi must have 2**N amplitudes on its last axis, got shape {psi.shape}")
    return dimension.bit_length() - 1


def spin_bipartite_matrices(psi: np.ndarray, sites: Subsystem) -> np.ndarray:
    """Coefficient matrices ``Psi[..., a, b]`` of spin states for A = ``sites`` (docs/theory.md §6).

    ``psi`` has shape ``(..., 2**N)`` in the :class:`~suite.hilbert.SpinBasis` order
    (site 0 most significant); the result has shape ``(..., 2**|A|, 2**|B|)`` with
    ``a`` (``b``) the configuration of A's (B's) sites in increasing site order, the
    same convention on each side. For A = the first ``n_a`` sites this is a reshape.
    """
    psi = np.asarray(psi)
    n_sites = _spin_sites(psi)
    chosen = check_sites(sites, n_sites)
    rest = tuple(site for site in range(n_sites) if site not in chosen)
    batch = psi.shape[:-1]
    tensor = psi.reshape(*batch, *(2,) * n_sites)
    order = (*range(len(batch)), *(len(batch) + site for site in chosen + rest))
    return np.transpose(tensor, order).reshape(*batch, 2 ** len(chosen), 2 ** len(rest))


def schmidt_spectra(psi: np.ndarray, sites: Subsystem) -> np.ndarray:
    """Schmidt probabilities of each normalised spin state for A = ``sites`` (docs/theory.md §6).

    Batched over the leading axes of ``psi`` (shape ``(..., 2**N)``): squared singular
    values of :func:`spin_bipartite_matrices` divided by each state's squared norm,
    shape ``(..., min(2**|A|, 2**|B|))``, decreasing, each row summing to one.
    """
    psi = np.asarray(psi)
    matrices = spin_bipartite_matrices(psi, sites)
    norm_sq = np.sum(np.abs(psi) ** 2, axis=-1)
    if np.any(norm_sq == 0.0):
        raise ValueError("psi must not contain identically zero states")
    singular_values = np.linalg.svd(matrices, compute_uv=False)
    return singular_values**2 / norm_sq[..., None]


def entanglement_profile(
    basis: Basis,
    psi: np.ndarray,
    subsystems: Sequence[Subsystem] | None = None,
    orders: Sequence[float] = (1, 2),
) -> list[dict[str, object]]:
    """Entropies of one state for several subsystems, as plain floats (docs/theory.md §6).

    ``subsystems`` defaults to the first ``n_a`` sites for ``n_a = 1 .. N // 2``. A
    :class:`~suite.hilbert.SpinBasis` accepts any list of sites; other bases (fermions,
    whose sign convention orders the modes site by site) only cuts after the first
    ``n_a`` sites, given as ints. Each entry is ``{"sites": [...], "entropies": {name:
    value}}`` with names ``von_neumann`` (``n = 1``) and ``renyi_<n>``.
    """
    n_sites = basis.n_sites
    subsystems = range(1, n_sites // 2 + 1) if subsystems is None else subsystems
    chosen = [check_sites(sites, n_sites) for sites in subsystems]
    for n in orders:
        check_order(n)
    if not isinstance(basis, SpinBasis):
        for sites in chosen:
            if sites != tuple(range(len(sites))):
                raise ValueError(
                    f"subsystems of a {type(basis).__name__} must be the first n_a sites "
                    f"(give ints), got sites {list(sites)}"
                )
    profile = []
    for sites in chosen:
        if isinstance(basis, SpinBasis):
            p = schmidt_spectra(np.asarray(psi), sites)
        else:
            p = schmidt_probabilities_blockwise(basis, psi, len(sites))
        entropies = {_entropy_name(n): float(entropy(p, n)) for n in orders}
        profile.append({"sites": list(sites), "entropies": entropies})
    return profile


def _entropy_name(n: float) -> str:
    return "von_neumann" if n == 1 else f"renyi_{n:g}"


def _harmonic_difference(upper: int, lower: int) -> float:
    """``H_upper - H_lower = sum_{k = lower+1}^{upper} 1/k`` for ``upper >= lower >= 1``.

    Term by term (pairwise summation) while ``lower < PAGE_EXACT_BELOW`` (then at most
    ``PAGE_EXACT_BELOW**2`` terms), else ``ln(upper/lower)`` plus the Euler-Maclaurin
    tails ``c(x) = 1/(2x) - 1/(12x^2) + 1/(120x^4) - 1/(252x^6)``, whose first omitted
    term ``1/(240 x^8)`` is below 1e-26 there. Exact integer ratios keep huge
    dimensions (``2**1000``) finite.
    """
    if lower < PAGE_EXACT_BELOW:
        return float(np.sum(1.0 / np.arange(lower + 1, upper + 1, dtype=np.float64)))

    def tail(x: int) -> float:
        inverse = 1 / x
        return inverse / 2 - inverse**2 / 12 + inverse**4 / 120 - inverse**6 / 252

    return math.log(upper) - math.log(lower) + tail(upper) - tail(lower)


def _check_dims(dim_a: object, dim_b: object) -> tuple[int, int]:
    """``(m, n)``: the two dimensions, validated, smaller first."""
    m, n = check_int("dim_a", dim_a), check_int("dim_b", dim_b)
    return (m, n) if m <= n else (n, m)


def page_entropy(dim_a: int, dim_b: int) -> float:
    """Page value: the Haar-mean von Neumann entropy of A (docs/theory.md §6, natural log).

    With ``m = min(dim_a, dim_b)`` and ``n = max``:
    ``S_Page = sum_{k=n+1}^{mn} 1/k - (m - 1)/(2n)``. Dimensions are ints of any
    size (e.g. ``2**500``).
    """
    m, n = _check_dims(dim_a, dim_b)
    return _harmonic_difference(m * n, n) - (m - 1) / (2 * n)


def haar_purity(dim_a: int, dim_b: int, field: Literal["complex", "real"] = "complex") -> float:
    """Haar-mean purity ``E[Tr rho_A^2]`` of random pure states (docs/theory.md §6).

    ``(m + n)/(mn + 1)`` for complex states (unitarily invariant), and
    ``(m + n + 1)/(mn + 2)`` for real states (orthogonally invariant: the third Wick
    pairing of a real Gaussian vector, see :mod:`suite.replica`).
    """
    m, n = _check_dims(dim_a, dim_b)
    if field == "complex":
        return (m + n) / (m * n + 1)
    if field == "real":
        return (m + n + 1) / (m * n + 2)
    raise ValueError(f"field must be 'complex' or 'real', got {field!r}")


class EnsembleEntanglement(NamedTuple):
    """Per-member entanglement of (a shard of) an ensemble of states (docs/theory.md §6).

    ``members`` are the member indices ``(M,)``; ``von_neumann`` and ``purity``
    (``Tr rho_A^2`` of the normalised state) have shape ``(M, len(subsystems))``;
    ``norm_sq`` is ``<psi|psi>`` of each unnormalised member, shape ``(M,)``.
    """

    subsystems: tuple[tuple[int, ...], ...]
    members: np.ndarray
    von_neumann: np.ndarray
    purity: np.ndarray
    norm_sq: np.ndarray

    @property
    def renyi2(self) -> np.ndarray:
        """Per-member Renyi-2 entropy ``-ln Tr rho_A^2``."""
        return -np.log(self.purity)

    def ratio_renyi2(self) -> np.ndarray:
        """The replica estimate ``-ln(mean Tr rho~_A^2 / mean (Tr rho~)^2)`` of the ensemble.

        ``rho~ = |psi><psi|`` unnormalised: ``Tr rho~_A^2 = <psi|psi>^2 Tr rho_A^2`` and
        ``(Tr rho~)^2 = <psi|psi>^2``. This ratio of ensemble means is what the GP
        estimate of :mod:`suite.replica` predicts (docs/theory.md §6); shape ``(len(subsystems),)``.
        """
        weights = self.norm_sq**2
        return -np.log(np.mean(weights[:, None] * self.purity, axis=0) / np.mean(weights))

    def ratio_renyi2_sem(self) -> np.ndarray:
        """Jackknife standard error of :meth:`ratio_renyi2` (it is a ratio of means).

        ``sqrt((M - 1)/M sum_i (R_(i) - mean R_(.))^2)`` over the leave-one-out estimates
        ``R_(i)``; the weights ``<psi|psi>^2`` are heavy-tailed for some architectures, so
        this error, not the spread of the per-member entropies, bounds the comparison.
        """
        weights = self.norm_sq**2
        weighted = weights[:, None] * self.purity
        leave_one_out = -np.log(
            (weighted.sum(axis=0) - weighted) / (weights.sum() - weights)[:, None]
        )
        return jackknife_sem(leave_one_out)


def ensemble_amplitudes(
    nnqs: NNQS, n_sites: int, seed: int, members: Sequence[int] | np.ndarray
) -> np.ndarray:
    """Amplitudes ``psi_i(s)`` of ensemble members on every spin configuration, ``(M, 2**N)``.

    Member ``i`` has the parameters of ``init_ensemble(nnqs, seed, [i], N)``, so a
    member's amplitudes do not depend on which other members are computed with it.
    """
    inputs = jnp.asarray(SpinBasis(n_sites).inputs())
    params = init_ensemble(nnqs, seed, np.asarray(members), n_sites)
    return np.asarray(_apply_members(nnqs, params, inputs))


@partial(jax.jit, static_argnames="nnqs")
def _apply_members(nnqs: NNQS, params: object, inputs: jax.Array) -> jax.Array:
    return jax.vmap(nnqs.apply, in_axes=(0, None))(params, inputs)


def ensemble_entanglement(
    nnqs: NNQS,
    n_sites: int,
    subsystems: Sequence[Subsystem],
    seed: int,
    members: Sequence[int] | np.ndarray,
    member_chunk: int = 4,
) -> EnsembleEntanglement:
    """Entanglement of each member of an NNQS ensemble on ``n_sites`` spins (docs/theory.md §6).

    Members are evaluated ``member_chunk`` at a time (memory grows like
    ``member_chunk * 2**N * width``); each member's amplitudes over all ``2**N``
    configurations are normalised and decomposed (batched SVD) for every subsystem.
    """
    n_sites = check_int("n_sites", n_sites)
    member_chunk = check_int("member_chunk", member_chunk)
    members = np.asarray(members)
    if members.ndim != 1 or members.size == 0 or not np.issubdtype(members.dtype, np.integer):
        raise ValueError(f"members must be a non-empty list of member indices, got {members!r}")
    chosen = tuple(check_sites(sites, n_sites) for sites in subsystems)
    von_neumann = np.empty((members.size, len(chosen)))
    purity = np.empty((members.size, len(chosen)))
    norm_sq = np.empty(members.size)
    for start in range(0, members.size, member_chunk):
        rows = slice(start, start + member_chunk)
        psi = ensemble_amplitudes(nnqs, n_sites, seed, members[rows])
        norm_sq[rows] = np.sum(np.abs(psi) ** 2, axis=-1)
        for column, sites in enumerate(chosen):
            p = schmidt_spectra(psi, sites)
            von_neumann[rows, column] = entropy(p, 1)
            purity[rows, column] = np.sum(p**2, axis=-1)
    return EnsembleEntanglement(chosen, members, von_neumann, purity, norm_sq)


def combine_ensembles(shards: Sequence[EnsembleEntanglement]) -> EnsembleEntanglement:
    """Merge shards of one ensemble (same subsystems, disjoint members), members concatenated."""
    shards = list(shards)
    if not shards:
        raise ValueError("shards must contain at least one EnsembleEntanglement")
    if any(shard.subsystems != shards[0].subsystems for shard in shards):
        raise ValueError("shards must have the same subsystems")
    members = np.concatenate([shard.members for shard in shards])
    if np.unique(members).size != members.size:
        raise ValueError("shards must have disjoint members")
    return EnsembleEntanglement(
        shards[0].subsystems,
        members,
        *(
            np.concatenate([getattr(s, name) for s in shards])
            for name in EnsembleEntanglement._fields[2:]
        ),
    )


def ensemble_summary(result: EnsembleEntanglement) -> dict[str, list[float]]:
    """Means and standard errors of ``S_vN``, ``S_2``; the replica ratio, its jackknife error."""
    members = result.von_neumann.shape[0]

    def sem(values: np.ndarray) -> list[float]:
        return (values.std(axis=0, ddof=1) / math.sqrt(members)).tolist()

    return {
        "mean_von_neumann": result.von_neumann.mean(axis=0).tolist(),
        "sem_von_neumann": sem(result.von_neumann),
        "mean_renyi2": result.renyi2.mean(axis=0).tolist(),
        "sem_renyi2": sem(result.renyi2),
        "ratio_renyi2": result.ratio_renyi2().tolist(),
        "sem_ratio_renyi2": result.ratio_renyi2_sem().tolist(),
    }
