"""Rectangular lattices with row-major site numbering (docs/theory.md §1-§2).

Sites of an ``lx x ly`` lattice are numbered row-major, ``site = y * lx + x``
with ``0 <= x < lx`` and ``0 <= y < ly``. The nearest-neighbour bonds ``<ij>``
of the Hamiltonians in docs/theory.md §2 are listed once each, as pairs ``i < j``:
a periodic side of length 2 contributes its bond once (not twice) and a side of
length 1 contributes no bond.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass


def check_int(name: str, value: object, minimum: int = 1) -> int:
    """Return ``value`` as an ``int`` if it is an integer ``>= minimum``.

    Booleans are rejected. Raises ``ValueError`` naming the parameter ``name``,
    e.g. ``"lx must be a positive integer, got 0"``.
    """
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum:
        return int(value)
    if minimum == 1:
        requirement = "a positive integer"
    elif minimum == 0:
        requirement = "a non-negative integer"
    else:
        requirement = f"an integer >= {minimum}"
    raise ValueError(f"{name} must be {requirement}, got {value!r}")


@dataclass(frozen=True)
class Lattice:
    """An ``lx x ly`` rectangular lattice (docs/theory.md §2).

    Attributes:
        lx: number of sites along x (positive integer).
        ly: number of sites along y (positive integer).
        periodic: periodic boundary conditions in both directions if True,
            open boundaries otherwise.

    Sites are numbered row-major, ``site = y * lx + x``.
    """

    lx: int
    ly: int
    periodic: bool = False

    def __post_init__(self) -> None:
        check_int("lx", self.lx)
        check_int("ly", self.ly)
        if not isinstance(self.periodic, bool):
            raise ValueError(f"periodic must be a bool, got {self.periodic!r}")

    @property
    def n_sites(self) -> int:
        """Number of sites ``lx * ly``."""
        return self.lx * self.ly

    @property
    def bonds(self) -> tuple[tuple[int, int], ...]:
        """Nearest-neighbour bonds ``(i, j)``, ``i < j``, each exactly once, sorted."""
        bonds: set[tuple[int, int]] = set()
        for y in range(self.ly):
            for x in range(self.lx):
                site = y * self.lx + x
                for nx, ny in ((x + 1, y), (x, y + 1)):
                    if self.periodic or (nx < self.lx and ny < self.ly):
                        neighbour = (ny % self.ly) * self.lx + nx % self.lx
                        if neighbour != site:
                            bonds.add((min(site, neighbour), max(site, neighbour)))
        return tuple(sorted(bonds))
