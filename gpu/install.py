"""Install a wheelhouse next to a node image's JAX, offline, and check the result.

    python -m gpu.install --wheelhouse DIR --target SCRATCH --pythonpath PATH --out FILE

Run by ``gpu/node-check.sh`` in the image's Python, from the repository root, before
anything of the wheelhouse is importable (standard library only). Steps:

1. read the wheelhouse's manifest, check that it was built for this Python and that every
   wheel matches its sha256;
2. in a fresh interpreter with the image's environment: import jax (it must import) and
   record the version and folder of the JAX stack and every installed distribution;
3. ``pip install --no-index --no-deps --target SCRATCH`` the wheels whose distribution the
   image lacks, never those of the JAX stack (:func:`gpu.wheels.select`);
4. in a fresh interpreter with ``PYTHONPATH=PATH`` (SCRATCH, the repository, ...): import
   the suite and its libraries and check that the JAX stack is still the image's.

It writes ``FILE`` (``install.json``: Python, the JAX stack before and after, wheels
installed and skipped with the reason, module folders, seconds, errors) and exits 0 when
all is well, 1 when a check failed, 2 when the kit or the image cannot be used.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gpu.wheels import Selection, read_manifest, select, verified_wheels

JAX_STACK = ("jax", "jaxlib", "numpy", "scipy", "ml_dtypes")
"""Modules whose version and folder must be the same before and after the install."""

SUITE_MODULES = (
    "suite",
    "jobs",
    "analysis",
    "zarr",
    "numcodecs",
    "dask",
    "distributed",
    "dask_jobqueue",
    "submitit",
    "msgspec",
)
"""Modules that must import once the wheelhouse is on ``PYTHONPATH``."""

PROBE = r"""
import importlib, importlib.metadata as md, json, os, re, sys
found = {"executable": sys.executable, "version": sys.version.split()[0],
         "distributions": {}, "modules": {}}
for dist in md.distributions():
    name = dist.metadata["Name"]
    if name:
        found["distributions"].setdefault(re.sub(r"[-_.]+", "-", name).lower(), dist.version)
for module in sys.argv[2:]:
    try:
        imported = importlib.import_module(module)
        folder = os.path.dirname(os.path.realpath(imported.__file__))
        found["modules"][module] = {"version": getattr(imported, "__version__", None),
                                    "path": folder}
    except Exception as error:
        found["modules"][module] = {"error": f"{type(error).__name__}: {error}"}
with open(sys.argv[1], "w") as stream:
    json.dump(found, stream)
"""


class KitError(RuntimeError):
    """The wheelhouse or the image cannot be used: one line saying why and what to do."""


def probe(pythonpath: str | None, modules: Sequence[str]) -> dict[str, Any]:
    """Import ``modules`` in a fresh interpreter with ``PYTHONPATH=pythonpath`` (None: unset).

    Returns the interpreter, its installed distributions (canonical name -> version) and per
    module its ``__version__`` and folder, or the import error.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    with tempfile.TemporaryDirectory(prefix="nnqs-probe-") as tmp:
        result = Path(tmp) / "probe.json"
        command = [sys.executable, "-c", PROBE, str(result), *modules]
        done = subprocess.run(command, env=env, cwd=tmp, capture_output=True, text=True)
        if done.returncode != 0 or not result.is_file():
            raise KitError(f"{sys.executable} could not run the import probe:\n{done.stderr}")
        return json.loads(result.read_text())


def check_python(manifest: dict[str, Any]) -> None:
    """The wheelhouse was built for this interpreter's ``major.minor``."""
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if manifest["python"] != here:
        raise KitError(
            f"the wheelhouse was built for Python {manifest['python']} but PYTHON "
            f"({sys.executable}) is {here}: run `make wheelhouse NODE_PYTHON={here}` on a "
            "machine with network"
        )


def pip_install(selection: Selection, target: Path) -> None:
    """``pip install --no-index --no-deps --target`` the selected wheels (offline)."""
    if not selection.install:
        return
    env = dict(os.environ, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    command = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--upgrade"]
    command += ["--no-compile", "--no-warn-script-location", "--quiet", "--target", str(target)]
    command += [str(wheel.path) for wheel in selection.install]
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-10:])
        raise KitError(f"pip install --target {target} failed (is pip in the image?):\n{tail}")


def jax_stack_changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """One line per JAX-stack module whose version or folder differs after the install."""
    changes = []
    for module in JAX_STACK:
        old, new = before["modules"].get(module, {}), after["modules"].get(module, {})
        if old and "error" not in old and old != new:
            changes.append(f"{module} changed: {old} -> {new} (a PYTHONPATH entry shadows it)")
    return changes


def import_failures(after: dict[str, Any]) -> list[str]:
    """One line per module of the suite that does not import."""
    return [
        f"import {module} failed: {after['modules'][module]['error']}"
        for module in SUITE_MODULES
        if "error" in after["modules"][module]
    ]


def wheel_entries(selection: Selection) -> dict[str, list[dict[str, str]]]:
    """The installed and skipped wheels, as JSON lists."""
    installed = [
        {"file": w.path.name, "distribution": w.distribution, "version": w.version}
        for w in selection.install
    ]
    skipped = [
        {
            "file": s.wheel.path.name,
            "distribution": s.wheel.distribution,
            "version": s.wheel.version,
            "reason": s.reason,
        }
        for s in selection.skipped
    ]
    return {"installed": installed, "skipped": skipped}


def run(args: argparse.Namespace, report: dict[str, Any]) -> None:
    """The four steps of the module docstring, filling ``report`` as they go."""
    manifest = read_manifest(args.wheelhouse)
    report["wheelhouse"] = {"path": str(args.wheelhouse), "python": manifest["python"]}
    check_python(manifest)
    wheels = verified_wheels(args.wheelhouse, manifest)
    before = probe(os.environ.get("PYTHONPATH"), JAX_STACK)
    report["python"] = {"executable": before["executable"], "version": before["version"]}
    report["before"] = before["modules"]
    if "error" in before["modules"]["jax"]:
        raise KitError(f"jax does not import in {sys.executable}: {before['modules']['jax']}")
    selection = select(wheels, before["distributions"])
    report.update(wheel_entries(selection))
    pip_install(selection, args.target)
    after = probe(args.pythonpath, (*JAX_STACK, *SUITE_MODULES))
    report["after"] = {m: after["modules"][m] for m in JAX_STACK}
    report["imports"] = {m: after["modules"][m] for m in SUITE_MODULES}
    report["errors"] += import_failures(after) + jax_stack_changes(before, after)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (all four options are required)."""
    parser = argparse.ArgumentParser(prog="python -m gpu.install", description=__doc__)
    parser.add_argument("--wheelhouse", type=Path, required=True, help="from make wheelhouse")
    parser.add_argument("--target", type=Path, required=True, help="the scratch site folder")
    parser.add_argument("--pythonpath", required=True, help="PYTHONPATH for the checks")
    parser.add_argument("--out", type=Path, required=True, help="the install.json to write")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Install and check; write the report; 0 ok, 1 a check failed, 2 unusable kit/image."""
    args = parse_args(argv)
    start = time.perf_counter()
    report: dict[str, Any] = {"target": str(args.target), "pythonpath": args.pythonpath}
    report["errors"] = []
    status = 0
    try:
        run(args, report)
    except (KitError, OSError, ValueError) as error:
        report["errors"].append(str(error))
        status = 2
    report["ok"] = not report["errors"]
    report["seconds"] = round(time.perf_counter() - start, 3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for line in report["errors"]:
        print(f"node-check: {line}", file=sys.stderr)
    return status or (0 if report["ok"] else 1)


if __name__ == "__main__":
    sys.exit(main())
