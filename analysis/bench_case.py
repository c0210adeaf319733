"""What every ``nnqs bench`` measurement returns, and how it says it cannot run here."""

from __future__ import annotations

Measured = tuple[dict[str, float], list[str]]
"""What a ``measure_*`` function returns: metric values and notes (one line each)."""


class CaseSkipped(Exception):
    """A case that cannot run on this machine (a service or a device it needs is not
    there): recorded as a note, not as an error, so ``--fail-on-regression`` passes."""
