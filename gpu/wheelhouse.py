"""``make wheelhouse``: the wheels a stock CUDA + JAX image lacks, for a node without internet.

    python -m gpu.wheelhouse [--python-version 3.12] [--out wheelhouse] [--max-mib 60]

Run with the project's ``.venv`` on a machine with network. The set is :data:`ROOTS` (what
the suite needs beyond the image) and all of their runtime dependencies for the node's
Python on Linux x86-64, except the JAX stack (:data:`gpu.wheels.NEVER_INSTALL`), which the
image must provide. Each is pinned to the version installed in the running environment, so
the node runs what CI tested, and downloaded with ``pip download --no-deps
--only-binary=:all:`` for CPython manylinux x86-64 (or ``py3-none-any``). The result
replaces the wheels of ``--out`` together with a manifest (:data:`gpu.wheels.MANIFEST`):
Python version, platforms, pins, and every file's size and sha256. The installer on the
node (``gpu/node-check.sh``) skips what the image already has.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement

from gpu.wheels import (
    MANIFEST,
    NEVER_INSTALL,
    NEVER_INSTALL_PREFIXES,
    Wheel,
    canonical_name,
    never_installed,
    sha256,
)

ROOTS = (
    "zarr",
    "numcodecs",
    "donfig",
    "google-crc32c",
    "dask",
    "distributed",
    "dask-jobqueue",
    "submitit",
    "msgspec",
    "tornado",
    "partd",
    "locket",
    "tblib",
    "zict",
    "cryptography",
)
"""What the suite needs and a stock CUDA + JAX image lacks (zarr's crc32c is google-crc32c;
cryptography makes the TLS credentials of ``nnqs aggregate --cluster slurm``)."""

IMAGE = (
    "jax",
    "jaxlib",
    "numpy",
    "scipy",
    "ml-dtypes",
    "matplotlib",
    "xarray",
    "pandas",
    "mpi4py",
    "tqdm",
    "rich",
    "pytest",
    "psutil",
    "pyyaml",
    "cloudpickle",
    "toolz",
    "msgpack",
    "fsspec",
    "sortedcontainers",
)
"""What the image provides: every dependency of the suite must be here or in the wheelhouse."""

PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "any")
SUITE = "nnqs-suite"
MIB = 1 << 20


class WheelhouseError(RuntimeError):
    """A wheelhouse that cannot be built: one line saying why and what to do."""


def marker_environment(python_version: str) -> dict[str, str]:
    """PEP 508 marker values of CPython ``python_version`` on Linux x86-64."""
    return {
        "python_version": python_version,
        "python_full_version": f"{python_version}.0",
        "implementation_name": "cpython",
        "implementation_version": f"{python_version}.0",
        "platform_python_implementation": "CPython",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "sys_platform": "linux",
        "os_name": "posix",
        "extra": "",
    }


def runtime_requirements(distribution: str, python_version: str) -> list[Requirement]:
    """The requirements of installed ``distribution`` that apply on the node (no extras)."""
    environment = marker_environment(python_version)
    requirements = [Requirement(text) for text in metadata.requires(distribution) or []]
    return [r for r in requirements if r.marker is None or r.marker.evaluate(environment)]


def closure(roots: Iterable[str], python_version: str) -> list[str]:
    """``roots`` and their runtime dependencies (canonical names), less the JAX stack."""
    seen: set[str] = set()
    todo = [canonical_name(root) for root in roots]
    while todo:
        name = todo.pop()
        if name in seen or never_installed(name):
            continue
        seen.add(name)
        try:
            requirements = runtime_requirements(name, python_version)
        except metadata.PackageNotFoundError:
            raise WheelhouseError(
                f"{name} (needed on Python {python_version}) is not installed in "
                f"{sys.prefix}, so it has no tested version to pin; run `make setup`"
            ) from None
        todo.extend(canonical_name(r.name) for r in requirements)
    return sorted(seen)


def check_suite_covered(wanted: Iterable[str], python_version: str) -> None:
    """Every dependency of the suite is in the image (:data:`IMAGE`) or in ``wanted``."""
    covered = set(wanted) | {canonical_name(name) for name in IMAGE}
    for requirement in runtime_requirements(SUITE, python_version):
        if canonical_name(requirement.name) not in covered:
            raise WheelhouseError(
                f"the suite's dependency {requirement.name} is neither in the image nor in "
                "the wheelhouse: add it to ROOTS or IMAGE in gpu/wheelhouse.py"
            )


def pins(names: Iterable[str]) -> dict[str, str]:
    """``{name: version}`` as installed in the running environment."""
    return {name: metadata.version(name) for name in names}


def pip_download(pinned: dict[str, str], python_version: str, into: Path) -> None:
    """``pip download`` the pinned wheels for CPython ``python_version`` on Linux x86-64."""
    abi = "cp" + python_version.replace(".", "")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += ["--python-version", python_version, "--implementation", "cp", "--abi", abi]
    command += [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    command += ["--dest", str(into), "--quiet", "--disable-pip-version-check"]
    command += [f"{name}=={version}" for name, version in pinned.items()]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise WheelhouseError(f"pip download failed (network? a pin without a wheel?):\n{tail}")


def check_downloaded(pinned: dict[str, str], wheels: Sequence[Wheel]) -> None:
    """Exactly one wheel per pin, of the pinned version."""
    got = {wheel.distribution: wheel.version for wheel in wheels}
    if len(got) != len(wheels) or got != pinned:
        raise WheelhouseError(f"pip download gave {sorted(got.items())}, not {pinned}")


def manifest(python_version: str, pinned: dict[str, str], wheels: Sequence[Wheel]) -> dict:
    """The manifest: what was built, for which Python, with every file's size and sha256."""
    files = [
        {
            "file": wheel.path.name,
            "distribution": wheel.distribution,
            "version": wheel.version,
            "bytes": wheel.path.stat().st_size,
            "sha256": sha256(wheel.path),
        }
        for wheel in wheels
    ]
    return {
        "schema": 1,
        "python": python_version,
        "implementation": "cp",
        "platforms": list(PLATFORMS),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "pinned_from": sys.prefix,
        "pins": pinned,
        "never_install": [*sorted(NEVER_INSTALL), *(f"{p}*" for p in NEVER_INSTALL_PREFIXES)],
        "total_bytes": sum(entry["bytes"] for entry in files),
        "files": files,
    }


def replace_contents(out: Path, staging: Path) -> None:
    """Move ``staging``'s wheels and manifest into ``out``, dropping ``out``'s old ones."""
    for old in [*out.glob("*.whl"), out / MANIFEST]:
        old.unlink(missing_ok=True)
    for new in staging.iterdir():
        shutil.move(str(new), out / new.name)


def build(python_version: str, out: Path, max_mib: float) -> dict[str, Any]:
    """Download the wheelhouse into ``out`` and return its manifest."""
    wanted = closure(ROOTS, python_version)
    check_suite_covered(wanted, python_version)
    pinned = pins(wanted)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".partial-", dir=out) as tmp:
        staging = Path(tmp)
        pip_download(pinned, python_version, staging)
        wheels = sorted((Wheel.from_path(p) for p in staging.glob("*.whl")), key=lambda w: w.path)
        check_downloaded(pinned, wheels)
        record = manifest(python_version, pinned, wheels)
        if record["total_bytes"] >= max_mib * MIB:
            raise WheelhouseError(
                f"the wheelhouse would be {record['total_bytes'] / MIB:.1f} MiB, at or over "
                f"the {max_mib:g} MiB limit (--max-mib); nothing was written to {out}"
            )
        (staging / MANIFEST).write_text(json.dumps(record, indent=2) + "\n")
        replace_contents(out, staging)
    return record


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line: ``--python-version``, ``--out``, ``--max-mib``."""
    parser = argparse.ArgumentParser(prog="python -m gpu.wheelhouse", description=__doc__)
    parser.add_argument("--python-version", default="3.12", help="the node's Python (3.12)")
    parser.add_argument("--out", type=Path, default=Path("wheelhouse"), help="the folder")
    parser.add_argument("--max-mib", type=float, default=60.0, help="size limit (60 MiB)")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"3\.\d{1,2}", args.python_version):
        parser.error(f"--python-version {args.python_version!r}: expected like 3.12")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Build the wheelhouse, print its file count and size; 1 with one line on failure."""
    args = parse_args(argv)
    try:
        record = build(args.python_version, args.out, args.max_mib)
    except WheelhouseError as error:
        print(f"wheelhouse: {error}", file=sys.stderr)
        return 1
    size = record["total_bytes"] / MIB
    print(
        f"{args.out}: {len(record['files'])} wheels, {size:.1f} MiB, for CPython "
        f"{args.python_version} manylinux x86-64 (pins from {sys.prefix}); {MANIFEST} written"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
