"""Wheel names, the wheelhouse manifest and the choice of wheels to install on a node.

Standard library only: this module runs in the node image's Python, before anything of the
wheelhouse is installed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST = "MANIFEST.json"
"""The wheelhouse's manifest: Python version, platforms, pins and every file's sha256."""

NEVER_INSTALL = frozenset({"jax", "jaxlib", "numpy", "scipy", "ml-dtypes"})
"""The image's JAX stack (canonical names): never installed from a wheelhouse, because a
``PYTHONPATH`` entry shadows site-packages and would replace the image's CUDA build."""

NEVER_INSTALL_PREFIXES = ("jax-",)
"""Prefixes of more of that stack: ``jax-cuda13-plugin``, ``jax-cuda13-pjrt``, ..."""

WHEEL_NAME = re.compile(
    r"^(?P<name>[A-Za-z0-9_.]+)-(?P<version>[^-]+)(-(?P<build>\d[^-]*))?"
    r"-(?P<python>[^-]+)-(?P<abi>[^-]+)-(?P<platform>[^-]+)\.whl$"
)


def canonical_name(name: str) -> str:
    """The PEP 503 normal form of a distribution name (``Jinja2``, ``ml_dtypes`` -> ...)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def never_installed(distribution: str) -> bool:
    """Whether ``distribution`` belongs to the image's JAX stack (see :data:`NEVER_INSTALL`)."""
    name = canonical_name(distribution)
    return name in NEVER_INSTALL or name.startswith(NEVER_INSTALL_PREFIXES)


@dataclass(frozen=True)
class Wheel:
    """A wheel file and the distribution and version its name declares."""

    path: Path
    distribution: str
    version: str

    @classmethod
    def from_path(cls, path: Path) -> Wheel:
        """Parse ``path``'s file name (``name-version[-build]-python-abi-platform.whl``)."""
        match = WHEEL_NAME.match(path.name)
        if match is None:
            raise ValueError(f"{path}: not a wheel file name (name-version-py-abi-plat.whl)")
        return cls(path, canonical_name(match["name"]), match["version"])


@dataclass(frozen=True)
class Skip:
    """A wheel left out, and why."""

    wheel: Wheel
    reason: str


@dataclass(frozen=True)
class Selection:
    """The wheels to install and the ones skipped."""

    install: tuple[Wheel, ...]
    skipped: tuple[Skip, ...]


def select(wheels: Iterable[Wheel], installed: Mapping[str, str]) -> Selection:
    """Split ``wheels`` into those to install and those to skip.

    ``installed`` maps canonical distribution names to the versions the interpreter already
    has. A wheel is skipped when it is part of the JAX stack (:func:`never_installed`,
    whether or not the image has it) or when its distribution is installed, whatever the
    version: the image's copy stays in charge.
    """
    install: list[Wheel] = []
    skipped: list[Skip] = []
    for wheel in sorted(wheels, key=lambda w: w.path.name):
        if never_installed(wheel.distribution):
            skipped.append(Skip(wheel, "never installed: the image's JAX stack stays untouched"))
        elif wheel.distribution in installed:
            have = installed[wheel.distribution]
            skipped.append(Skip(wheel, f"already installed: {wheel.distribution} {have}"))
        else:
            install.append(wheel)
    return Selection(tuple(install), tuple(skipped))


def sha256(path: Path) -> str:
    """The hex sha256 of the file at ``path``."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(wheelhouse: Path) -> dict[str, Any]:
    """The manifest of ``wheelhouse``; ``FileNotFoundError`` with the fix when it is missing."""
    path = wheelhouse / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"--wheelhouse {wheelhouse}: no {MANIFEST} there; run `make wheelhouse` on a "
            "machine with network and copy wheelhouse/ along"
        )
    return json.loads(path.read_text())


def verified_wheels(wheelhouse: Path, manifest: Mapping[str, Any]) -> list[Wheel]:
    """The wheels of ``wheelhouse``, each checked against the manifest's sha256.

    Raises ``ValueError`` naming the first file that is missing, altered or not listed.
    """
    listed = {entry["file"]: entry["sha256"] for entry in manifest["files"]}
    present = {path.name: path for path in wheelhouse.glob("*.whl")}
    rebuild = "rebuild it with `make wheelhouse`"
    unlisted = sorted(set(present) - set(listed))
    if unlisted:
        raise ValueError(
            f"--wheelhouse {wheelhouse}: {unlisted[0]} is not in {MANIFEST}; {rebuild}"
        )
    for name, digest in sorted(listed.items()):
        if name not in present:
            raise ValueError(f"--wheelhouse {wheelhouse}: {name} is missing; {rebuild}")
        if sha256(present[name]) != digest:
            raise ValueError(f"--wheelhouse {wheelhouse}: {name} fails its sha256; {rebuild}")
    return [Wheel.from_path(present[name]) for name in sorted(present)]
