"""Sparse Hamiltonians of the quench targets (docs/theory.md §2).

* ``tfim_hamiltonian``: ``H = -J sum_<ij> Z_i Z_j - h sum_i X_i`` in ``SpinBasis`` order.
* ``hubbard_hamiltonian``:
  ``H = -t sum_<ij>,sigma (c+_{i sigma} c_{j sigma} + h.c.) + U sum_i n_{i up} n_{i down}``
  in ``HubbardBasis`` order, with Jordan-Wigner signs for the mode order
  ``2 * site + spin`` (docs/theory.md §1).

Both are built vectorised over basis states (Python loops run over sites and
bonds only) and returned as real ``scipy.sparse.csr_matrix`` in float64.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from suite.hilbert import DEFAULT_MAX_DIMENSION, HubbardBasis, SpinBasis
from suite.lattice import Lattice


def tfim_hamiltonian(
    lattice: Lattice,
    J: float = 1.0,
    h: float = 1.0,
    *,
    max_dimension: int = DEFAULT_MAX_DIMENSION,
) -> sp.csr_matrix:
    """Transverse-field Ising Hamiltonian ``-J sum_<ij> Z_i Z_j - h sum_i X_i`` (docs/theory.md §2).

    Matrix in ``SpinBasis(lattice.n_sites)`` order (index 0 all-up, site 0 the
    most significant bit); ``Z = diag(1, -1)`` on (up, down) and ``X`` flips a
    spin. Every bond of ``lattice.bonds`` is counted once. The dimension is
    checked against ``max_dimension`` before anything is allocated.
    """
    basis = SpinBasis(lattice.n_sites, max_dimension=max_dimension)
    n_sites, dimension = basis.n_sites, basis.dimension
    states = np.arange(dimension, dtype=np.int64)
    flips = np.int64(1) << (n_sites - 1 - np.arange(n_sites, dtype=np.int64))
    columns = np.empty((dimension, n_sites + 1), dtype=np.int64)
    values = np.empty((dimension, n_sites + 1), dtype=np.float64)
    columns[:, 0] = states
    values[:, 0] = 0.0
    for i, j in lattice.bonds:
        antiparallel = ((states >> (n_sites - 1 - i)) ^ (states >> (n_sites - 1 - j))) & 1
        values[:, 0] -= J * (1 - 2 * antiparallel)
    columns[:, 1:] = states[:, None] ^ flips[None, :]
    values[:, 1:] = -h
    indptr = np.arange(0, columns.size + 1, n_sites + 1, dtype=np.int64)
    matrix = sp.csr_matrix((values.ravel(), columns.ravel(), indptr), shape=(dimension, dimension))
    matrix.sort_indices()
    matrix.eliminate_zeros()
    return matrix


def _mode_bit(n_sites: int, mode: int) -> np.int64:
    """Bit of mode ``mode`` in a ``HubbardBasis`` occupation integer (mode 0 is the MSB)."""
    return np.int64(1) << (2 * n_sites - 1 - mode)


def hubbard_hamiltonian(
    lattice: Lattice, basis: HubbardBasis, t: float = 1.0, U: float = 4.0
) -> sp.csr_matrix:
    """Fermi-Hubbard Hamiltonian of docs/theory.md §2 in ``basis`` order.

    ``H = -t sum_<ij>,sigma (c+_{i sigma} c_{j sigma} + h.c.) + U sum_i n_{i up} n_{i down}``
    with every bond of ``lattice.bonds`` counted once. A hop between modes
    ``a < b`` (``mode = 2 * site + spin``) on the normal-ordered basis state
    carries the Jordan-Wigner sign ``(-1)**n``, ``n`` the number of occupied
    modes strictly between ``a`` and ``b``. Example on two sites: hopping the
    up fermion of site 1 onto site 0, which holds a down fermion (mode 1 lies
    between modes 0 and 2),
    ``c+_{0 up} c_{1 up} c+_{0 down} c+_{1 up} |0> = -c+_{0 up} c+_{0 down} |0>``,
    so that matrix element of ``H`` is ``+t``.
    """
    if basis.n_sites != lattice.n_sites:
        raise ValueError(
            f"basis has n_sites={basis.n_sites} but lattice has {lattice.n_sites} sites"
        )
    n_sites, dimension = lattice.n_sites, basis.dimension
    occupations = basis.occupations
    states = np.arange(dimension, dtype=np.int64)
    double = np.zeros(dimension, dtype=np.float64)
    for site in range(n_sites):
        up = (occupations & _mode_bit(n_sites, 2 * site)) != 0
        down = (occupations & _mode_bit(n_sites, 2 * site + 1)) != 0
        double += up & down
    rows, columns, values = [states], [states], [U * double]
    for i, j in lattice.bonds:
        for spin in (0, 1):
            bit_a, bit_b = _mode_bit(n_sites, 2 * i + spin), _mode_bit(n_sites, 2 * j + spin)
            between = (bit_a - 1) & ~(2 * bit_b - 1)
            hopping = ((occupations & bit_a) != 0) != ((occupations & bit_b) != 0)
            source = occupations[hopping]
            parity = np.bitwise_count(source & between).astype(np.int64) & 1
            rows.append(basis.index_of(source ^ (bit_a | bit_b)))
            columns.append(states[hopping])
            values.append(-t * (1.0 - 2.0 * parity))
    matrix = sp.coo_matrix(
        (np.concatenate(values), (np.concatenate(rows), np.concatenate(columns))),
        shape=(dimension, dimension),
    ).tocsr()
    matrix.eliminate_zeros()
    return matrix
