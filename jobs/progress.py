"""Progress lines of long commands: on stderr, so stdout stays the command's JSON."""

from __future__ import annotations

import sys
from collections.abc import Callable


def progress_printer(enabled: bool) -> Callable[[str], None]:
    """A function that writes one progress line to stderr, or does nothing."""

    def say(line: str) -> None:
        if enabled:
            print(line, file=sys.stderr, flush=True)

    return say
