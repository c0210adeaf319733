"""Computational bases for spin-1/2 and fixed-filling Fermi-Hubbard systems (docs/theory.md §1).

Conventions (docs/theory.md §1):

* ``SpinBasis``: basis index ``k`` of ``N`` spins has site ``i`` up (``s_i = +1``)
  iff bit ``N - 1 - i`` of ``k`` is 0. Index 0 is all-up and the first sites are
  the most significant binary digits, so reshaping a state vector to
  ``(2**N_A, 2**N_B)`` bipartitions it into the first ``N_A`` sites and the rest.
* ``HubbardBasis``: fermionic modes ``mode = 2 * site + spin`` (up = 0,
  down = 1). A basis state is the normal-ordered product of creation operators
  in increasing mode order acting on the vacuum (Jordan-Wigner). Its occupation
  integer has bit ``2N - 1 - mode`` set iff the mode is occupied (mode 0 is the
  most significant bit); equivalently its base-4 digits are the site states
  ``2 n_up + n_down`` (empty 0, down 1, up 2, double 3) with site 0 the most
  significant digit, so the occupation integer is also the index of the state
  in the full ``4**N`` Fock space. States are enumerated in increasing order of
  this integer. Amplitude signs depend on this ordering, physical observables
  do not.

Every basis checks its dimension against a memory budget before enumerating
anything (``check_dimension``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from suite.lattice import check_int

DEFAULT_MAX_DIMENSION = 2**22
"""Default budget on the number of basis states of any Hilbert space built here."""

MAX_HUBBARD_SITES = 31
"""Largest Hubbard system whose ``2N`` mode bits fit in an int64 occupation integer."""

DEFAULT_ENCODING = (0.0, 1.0, 2.0, 3.0)
"""Network input for a site that is empty, down, up, double (docs/theory.md §1)."""

SplitIndices = tuple[np.ndarray, np.ndarray, int, int]
"""``(index_a, index_b, dim_a, dim_b)`` returned by ``split``."""


def check_dimension(
    dimension: int,
    max_dimension: int = DEFAULT_MAX_DIMENSION,
    *,
    description: str = "Hilbert space",
) -> int:
    """Return ``dimension`` if it fits the budget, else raise ``ValueError``.

    Call this with a dimension computed combinatorially, before anything of
    that size is allocated. The error names ``max_dimension``.
    """
    max_dimension = check_int("max_dimension", max_dimension)
    if dimension > max_dimension:
        raise ValueError(
            f"{description} has dimension {dimension}, which exceeds "
            f"max_dimension={max_dimension}; use a smaller system or raise max_dimension"
        )
    return dimension


def _check_subsystem(n_a: object, n_sites: int) -> int:
    """Validate the number ``n_a`` of sites in subsystem A (``0 <= n_a <= n_sites``)."""
    n_a = check_int("n_a", n_a, minimum=0)
    if n_a > n_sites:
        raise ValueError(f"n_a must be at most n_sites={n_sites}, got {n_a}")
    return n_a


def _fixed_weight_patterns(n_bits: int, weight: int) -> np.ndarray:
    """All ``n_bits``-bit integers with ``weight`` set bits, in increasing order.

    Uses the recursion ``P(m, j) = P(m-1, j) ++ (2**(m-1) | P(m-1, j-1))``,
    whose two halves are already sorted.
    """
    rows = [np.zeros(1, dtype=np.int64)] + [np.zeros(0, dtype=np.int64)] * weight
    for m in range(1, n_bits + 1):
        top = np.int64(1) << (m - 1)
        rows = [rows[0]] + [
            np.concatenate((rows[j], top | rows[j - 1])) for j in range(1, weight + 1)
        ]
    return rows[weight]


def _spread_bits(patterns: np.ndarray, n_bits: int) -> np.ndarray:
    """Move bit ``b`` of each pattern to bit ``2 b`` (bit interleaving)."""
    spread = np.zeros_like(patterns)
    for b in range(n_bits):
        spread |= ((patterns >> b) & 1) << (2 * b)
    return spread


@dataclass(frozen=True)
class SpinBasis:
    """Basis of ``n_sites`` spin-1/2 sites (docs/theory.md §1), ``2**n_sites`` states.

    Site ``i`` of basis state ``k`` is up (``+1``) iff bit ``n_sites - 1 - i``
    of ``k`` is 0: index 0 is all-up, site 0 is the most significant digit.

    Attributes:
        n_sites: number of spins.
        max_dimension: memory budget on the dimension, checked on construction.
    """

    local_dimension: ClassVar[int] = 2

    n_sites: int
    max_dimension: int = field(default=DEFAULT_MAX_DIMENSION, compare=False)

    def __post_init__(self) -> None:
        n_sites = check_int("n_sites", self.n_sites)
        check_dimension(
            2**n_sites, self.max_dimension, description=f"spin basis with n_sites={n_sites}"
        )

    @property
    def dimension(self) -> int:
        """Number of basis states ``2**n_sites``."""
        return 2**self.n_sites

    def inputs(self) -> np.ndarray:
        """Network inputs ``x = s``, shape ``(dimension, n_sites)``, float64 of ``+-1``."""
        states = np.arange(self.dimension, dtype=np.int64)
        shifts = self.n_sites - 1 - np.arange(self.n_sites)
        bits = (states[:, None] >> shifts) & 1
        return (1 - 2 * bits).astype(np.float64)

    def split(self, n_a: int) -> SplitIndices:
        """Bipartite indices of every basis state: first ``n_a`` sites (A) and the rest (B).

        Returns ``(index_a, index_b, 2**n_a, 2**(n_sites - n_a))`` such that
        ``Psi[index_a, index_b] = psi`` is the coefficient matrix of docs/theory.md §6;
        A and B use this same basis convention on their own sites.
        """
        n_b = self.n_sites - _check_subsystem(n_a, self.n_sites)
        states = np.arange(self.dimension, dtype=np.int64)
        return (
            states >> n_b,
            states & ((1 << n_b) - 1),
            self.local_dimension**n_a,
            self.local_dimension**n_b,
        )


@dataclass(frozen=True)
class HubbardBasis:
    """Fixed-filling Fermi-Hubbard basis (docs/theory.md §1).

    Modes are ``2 * site + spin`` (up = 0, down = 1); a basis state is
    ``prod_{modes in increasing order} c^dagger_mode |0>`` (Jordan-Wigner).
    ``occupations[k]`` is an int64 with bit ``2 n_sites - 1 - mode`` set iff the
    mode is occupied; its base-4 digits are the site states ``2 n_up + n_down``
    (empty 0, down 1, up 2, double 3), site 0 most significant, so it is also
    the index of state ``k`` in the full ``4**n_sites`` Fock space. States are
    sorted by increasing ``occupations``.

    Attributes:
        n_sites: number of lattice sites (at most ``MAX_HUBBARD_SITES``).
        n_up: number of spin-up fermions, ``0 <= n_up <= n_sites``.
        n_down: number of spin-down fermions, ``0 <= n_down <= n_sites``.
        encoding: network input of a site that is empty, down, up, double.
        max_dimension: memory budget on the dimension, checked before enumeration.
        occupations: sorted occupation integers, shape ``(dimension,)``.
    """

    local_dimension: ClassVar[int] = 4

    n_sites: int
    n_up: int
    n_down: int
    encoding: Sequence[float] = DEFAULT_ENCODING
    max_dimension: int = field(default=DEFAULT_MAX_DIMENSION, compare=False)
    occupations: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n_sites = check_int("n_sites", self.n_sites)
        if n_sites > MAX_HUBBARD_SITES:
            raise ValueError(f"n_sites must be at most {MAX_HUBBARD_SITES}, got {n_sites}")
        n_up = check_int("n_up", self.n_up, minimum=0)
        n_down = check_int("n_down", self.n_down, minimum=0)
        for name, count in (("n_up", n_up), ("n_down", n_down)):
            if count > n_sites:
                raise ValueError(f"{name} must be at most n_sites={n_sites}, got {count}")
        encoding = tuple(float(value) for value in self.encoding)
        if len(encoding) != 4 or not np.all(np.isfinite(encoding)):
            raise ValueError(
                "encoding must be 4 finite numbers (empty, down, up, double), "
                f"got {self.encoding!r}"
            )
        object.__setattr__(self, "encoding", encoding)
        check_dimension(
            math.comb(n_sites, n_up) * math.comb(n_sites, n_down),
            self.max_dimension,
            description=f"Hubbard basis with n_sites={n_sites}, n_up={n_up}, n_down={n_down}",
        )
        up = _spread_bits(_fixed_weight_patterns(n_sites, n_up), n_sites) << 1
        down = _spread_bits(_fixed_weight_patterns(n_sites, n_down), n_sites)
        object.__setattr__(self, "occupations", np.sort((up[:, None] | down[None, :]).ravel()))

    @property
    def dimension(self) -> int:
        """Number of basis states ``C(n_sites, n_up) * C(n_sites, n_down)``."""
        return int(self.occupations.size)

    def site_states(self) -> np.ndarray:
        """Site states ``2 n_up + n_down`` in {0, 1, 2, 3}, shape ``(dimension, n_sites)``."""
        shifts = 2 * (self.n_sites - 1 - np.arange(self.n_sites))
        return (self.occupations[:, None] >> shifts) & 3

    def inputs(self) -> np.ndarray:
        """Network inputs ``encoding[site_state]``, shape ``(dimension, n_sites)``, float64."""
        return np.asarray(self.encoding, dtype=np.float64)[self.site_states()]

    def index_of(self, occupations: np.ndarray) -> np.ndarray:
        """Basis indices of occupation integers (binary search); ``ValueError`` if absent."""
        occupations = np.asarray(occupations, dtype=np.int64)
        index = np.searchsorted(self.occupations, occupations)
        found = index < self.dimension
        found[found] = self.occupations[index[found]] == occupations[found]
        if not np.all(found):
            raise ValueError("occupations contains states outside this basis")
        return index

    def split(self, n_a: int) -> SplitIndices:
        """Bipartite indices of every basis state: first ``n_a`` sites (A) and the rest (B).

        Returns ``(index_a, index_b, 4**n_a, 4**(n_sites - n_a))``, indices into
        the full Fock spaces of A and B (same digit convention), such that
        ``Psi[index_a, index_b] = psi`` is the coefficient matrix of docs/theory.md §6.
        All modes of A precede those of B in the normal order, so
        ``|a b> = (prod_A c^dagger)(prod_B c^dagger)|0>`` factorises without any
        fermionic sign.
        """
        n_b = self.n_sites - _check_subsystem(n_a, self.n_sites)
        return (
            self.occupations >> (2 * n_b),
            self.occupations & ((1 << (2 * n_b)) - 1),
            self.local_dimension**n_a,
            self.local_dimension**n_b,
        )


Basis = SpinBasis | HubbardBasis
"""Any basis of this module: both provide ``dimension``, ``inputs()`` and ``split(n_a)``."""
