"""Bipartite entanglement of exact state vectors (theory.md §6).

The state is normalised over the full basis and its sites are split into A
(the first ``n_a`` sites) and B (the rest). The squared singular values ``p_k``
of the coefficient matrix ``Psi[a, b]`` give ``S_vN = -sum p ln p`` and
``S_n = ln(sum p^n) / (1 - n)``. All entropies use the natural logarithm.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from suite.hilbert import Basis


def bipartite_matrix(
    basis: Basis, psi: np.ndarray, n_a: int, *, compact: bool = True
) -> np.ndarray:
    """Coefficient matrix ``Psi[a, b]`` of ``psi`` for the cut after ``n_a`` sites (theory.md §6).

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
    """Squared singular values of the normalised coefficient matrix (theory.md §6).

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
    (theory.md §6), but the coefficient matrix is first split into the
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


def von_neumann_entropy(p: np.ndarray) -> float:
    """Von Neumann entropy ``-sum_k p_k ln p_k`` (natural log), zeros ignored (theory.md §6)."""
    p = np.asarray(p, dtype=np.float64)
    p = p[p > 0.0]
    return float(-np.sum(p * np.log(p)))


def renyi_entropy(p: np.ndarray, n: float) -> float:
    """Renyi entropy ``ln(sum_k p_k^n) / (1 - n)`` (natural log, theory.md §6).

    ``n = 1`` gives the von Neumann limit and ``n = inf`` the min-entropy
    ``-ln max_k p_k``; ``n`` must be positive.
    """
    if not n > 0:
        raise ValueError(f"n must be positive, got {n!r}")
    p = np.asarray(p, dtype=np.float64)
    if n == 1:
        return von_neumann_entropy(p)
    if np.isinf(n):
        return float(-np.log(np.max(p)))
    return float(np.log(np.sum(p[p > 0.0] ** n)) / (1.0 - n))
