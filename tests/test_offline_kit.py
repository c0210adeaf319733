"""The offline kit for GPU nodes (``gpu/``): the wheelhouse, the installer and the node check.

The fast tests use real wheel files made here and a real ``pip install --target``; the slow
test does what a node does: an "image-like" venv (the image's packages, not zarr, dask, ...),
a wheelhouse built for this Python by ``gpu.wheelhouse``, and ``gpu/node-check.sh --small``
with pip kept off the network.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata as metadata
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

from analysis.node_check import CHECKS

REPO = Path(__file__).resolve().parents[1]
NODE_CHECK = REPO / "gpu" / "node-check.sh"
HERE = f"{sys.version_info.major}.{sys.version_info.minor}"
NEEDED = ("zarr", "numcodecs", "donfig", "google-crc32c", "dask", "distributed")
NEEDED += ("dask-jobqueue", "submitit", "msgspec", "tornado", "partd", "locket", "tblib", "zict")


@pytest.fixture
def kit(monkeypatch: pytest.MonkeyPatch) -> dict[str, ModuleType]:
    """``gpu.wheels``, ``gpu.install`` and ``gpu.wheelhouse`` (``gpu`` is not installed)."""
    monkeypatch.syspath_prepend(str(REPO))
    import importlib

    names = ("wheels", "install", "wheelhouse")
    return {name: importlib.import_module(f"gpu.{name}") for name in names}


def make_wheel(folder: Path, name: str, version: str, module: str | None = None) -> Path:
    """A real ``py3-none-any`` wheel of distribution ``name`` (with ``module.py`` if given)."""
    stem = f"{name.replace('-', '_')}-{version}"
    info = f"{stem}.dist-info"
    files = {
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    if module:
        files[f"{module}.py"] = f"NAME = {name!r}\n"
    record = [f"{path},sha256={digest(text)},{len(text.encode())}" for path, text in files.items()]
    files[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    path = folder / f"{stem}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, text in files.items():
            archive.writestr(member, text)
    return path


def digest(text: str) -> str:
    """The urlsafe-base64 sha256 of a RECORD line."""
    raw = hashlib.sha256(text.encode()).digest()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def write_manifest(wheels_module: ModuleType, folder: Path, python: str = HERE) -> None:
    """A manifest listing every wheel of ``folder`` (as ``make wheelhouse`` writes it)."""
    files = [
        {"file": p.name, "sha256": wheels_module.sha256(p)} for p in sorted(folder.glob("*.whl"))
    ]
    manifest = {"python": python, "files": files}
    (folder / wheels_module.MANIFEST).write_text(json.dumps(manifest))


def add_to_manifest(wheels_module: ModuleType, folder: Path, extra: list[Path]) -> None:
    """List ``extra`` wheels (already in ``folder``) in its existing manifest."""
    path = folder / wheels_module.MANIFEST
    manifest = json.loads(path.read_text())
    manifest["files"] += [{"file": p.name, "sha256": wheels_module.sha256(p)} for p in extra]
    path.write_text(json.dumps(manifest))


def installed_here(wheels_module: ModuleType) -> dict[str, str]:
    """Canonical name -> version of every distribution of this environment."""
    return {
        wheels_module.canonical_name(d.metadata["Name"]): d.version
        for d in metadata.distributions()
        if d.metadata["Name"]
    }


# ------------------------------------------------------------------ selection (fast)


def test_wheel_names_and_the_jax_stack(kit: dict[str, ModuleType]) -> None:
    wheels = kit["wheels"]
    name = "google_crc32c-1.9.0-cp312-cp312-manylinux2014_x86_64.manylinux_2_17_x86_64.whl"
    wheel = wheels.Wheel.from_path(Path(name))
    assert (wheel.distribution, wheel.version) == ("google-crc32c", "1.9.0")
    assert wheels.Wheel.from_path(Path("Jinja2-3.1.6-1-py3-none-any.whl")).distribution == "jinja2"
    for stack in ("jax", "jaxlib", "numpy", "scipy", "ml_dtypes", "ML-Dtypes", "jax_cuda13_plugin"):
        assert wheels.never_installed(stack), stack
    for other in ("zarr", "jaxtyping", "numcodecs", "scipy-stubs"):
        assert not wheels.never_installed(other), other
    with pytest.raises(ValueError, match="not a wheel file name"):
        wheels.Wheel.from_path(Path("zarr-3.1.6.tar.gz"))


def test_select_skips_the_jax_stack_and_what_is_installed(kit: dict[str, ModuleType]) -> None:
    wheels = kit["wheels"]
    files = ["numpy-2.4.6-cp312-cp312-manylinux_2_28_x86_64.whl", "jax-0.10.2-py3-none-any.whl"]
    files += ["packaging-26.4-py3-none-any.whl", "zarr-3.1.6-py3-none-any.whl"]
    found = [wheels.Wheel.from_path(Path(f)) for f in files]
    selection = wheels.select(found, {"packaging": "24.1", "scipy": "1.17.1"})
    assert [w.distribution for w in selection.install] == ["zarr"]
    reasons = {s.wheel.distribution: s.reason for s in selection.skipped}
    assert reasons["jax"].startswith("never installed") and reasons["numpy"].startswith("never")
    assert reasons["packaging"] == "already installed: packaging 24.1"


def test_install_real_wheels_into_a_target(kit: dict[str, ModuleType], tmp_path: Path) -> None:
    """Real wheels, a real ``pip install --target``: only the absent, non-JAX one lands."""
    wheels, install = kit["wheels"], kit["install"]
    house = tmp_path / "wheelhouse"
    house.mkdir()
    make_wheel(house, "numpy", "99.0", module="numpy")
    make_wheel(house, "jax-cuda13-plugin", "99.0", module="jax_cuda13_plugin")
    make_wheel(house, "packaging", "0.1", module="packaging")
    make_wheel(house, "nnqs-offline-probe", "1.0", module="nnqs_offline_probe")
    write_manifest(wheels, house)
    found = wheels.verified_wheels(house, wheels.read_manifest(house))
    selection = wheels.select(found, installed_here(wheels))
    assert [w.distribution for w in selection.install] == ["nnqs-offline-probe"]
    target = tmp_path / "site"
    install.pip_install(selection, target)
    assert (target / "nnqs_offline_probe.py").is_file()
    assert (target / "nnqs_offline_probe-1.0.dist-info" / "METADATA").is_file()
    for absent in ("numpy.py", "jax_cuda13_plugin.py", "packaging.py"):
        assert not (target / absent).exists(), absent


def test_a_stray_numpy_would_be_caught(kit: dict[str, ModuleType], tmp_path: Path) -> None:
    """What the JAX-stack rule prevents: a numpy wheel on PYTHONPATH shadows the real one."""
    wheels, install = kit["wheels"], kit["install"]
    stray = wheels.Wheel.from_path(make_wheel(tmp_path, "numpy", "99.0", module="numpy"))
    shadow = tmp_path / "shadow"
    install.pip_install(wheels.Selection((stray,), ()), shadow)
    before, after = install.probe(None, ["numpy"]), install.probe(str(shadow), ["numpy"])
    assert before["modules"]["numpy"]["version"] == metadata.version("numpy")
    assert after["modules"]["numpy"]["path"] == str(shadow.resolve())
    assert [line.split(":")[0] for line in install.jax_stack_changes(before, after)] == [
        "numpy changed"
    ]
    assert install.jax_stack_changes(before, before) == []


def test_the_wheelhouse_is_checked_before_use(kit: dict[str, ModuleType], tmp_path: Path) -> None:
    wheels, install = kit["wheels"], kit["install"]
    with pytest.raises(FileNotFoundError, match="run `make wheelhouse` on a machine with network"):
        wheels.read_manifest(tmp_path)
    probe = make_wheel(tmp_path, "nnqs-offline-probe", "1.0", module="nnqs_offline_probe")
    write_manifest(wheels, tmp_path)
    extra = make_wheel(tmp_path, "other", "1.0")
    with pytest.raises(ValueError, match=r"other-1\.0-py3-none-any\.whl is not in MANIFEST\.json"):
        wheels.verified_wheels(tmp_path, wheels.read_manifest(tmp_path))
    extra.unlink()
    probe.write_bytes(probe.read_bytes() + b"\0")
    with pytest.raises(ValueError, match="fails its sha256"):
        wheels.verified_wheels(tmp_path, wheels.read_manifest(tmp_path))
    with pytest.raises(install.KitError, match="make wheelhouse NODE_PYTHON="):
        install.check_python({"python": "3.9"})


def test_wheelhouse_set_and_pins(kit: dict[str, ModuleType]) -> None:
    """The set: the roots and their dependencies for the node's Python, never the JAX stack."""
    wheelhouse = kit["wheelhouse"]
    for python in ("3.11", "3.12"):
        names = wheelhouse.closure(wheelhouse.ROOTS, python)
        assert set(NEEDED) <= set(names)
        assert {"click", "jinja2", "markupsafe", "packaging", "typing-extensions"} <= set(names)
        assert not {"jax", "jaxlib", "numpy", "scipy", "ml-dtypes"} & set(names)
        wheelhouse.check_suite_covered(names, python)
        assert wheelhouse.pins(names)["zarr"] == metadata.version("zarr")
    assert "importlib-metadata" in wheelhouse.closure(["dask"], "3.11")
    assert "importlib-metadata" not in wheelhouse.closure(["dask"], "3.12")


def test_make_wheelhouse_target() -> None:
    done = subprocess.run(
        ["make", "-n", "wheelhouse", "NODE_PYTHON=3.11", "WHEELHOUSE=/tmp/wh"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "-m gpu.wheelhouse --python-version 3.11 --out /tmp/wh" in done.stdout


def test_node_check_refuses_bad_options(tmp_path: Path) -> None:
    def node_check(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(NODE_CHECK), *args], capture_output=True, text=True)

    done = node_check("--wheelhouse", str(tmp_path), "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert f"--wheelhouse {tmp_path}: no wheelhouse there; run `make wheelhouse`" in done.stderr
    assert node_check("--frobnicate").returncode == 2
    assert "--out needs a folder" in node_check("--out").stderr


# ------------------------------------------------------------------ a node, for real (slow)


def uv() -> str:
    """The uv that ``make setup`` put into this environment."""
    found = Path(sys.executable).parent / "uv"
    return str(found) if found.is_file() else shutil.which("uv") or pytest.fail("no uv")


def image_like_venv(root: Path, image: tuple[str, ...]) -> Path:
    """A venv with the stock image's packages at this environment's versions, nothing else.

    ``uv`` with every version pinned to this environment's takes its wheels from its cache.
    """
    constraints = root / "constraints.txt"
    constraints.write_text(
        "".join(
            f"{d.metadata['Name']}=={d.version}\n"
            for d in metadata.distributions()
            if d.metadata["Name"] not in (None, "nnqs-suite")
        )
    )
    venv = root / "image"
    run([uv(), "venv", "--quiet", "--seed", "--python", sys.executable, str(venv)])
    python = venv / "bin" / "python"
    install = [uv(), "pip", "install", "--quiet", "--python", str(python), "-c", str(constraints)]

    # the image's packages (gpu.wheelhouse.IMAGE) that this environment has (not rich, say)
    def normal(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    pinned = {normal(line.split("==")[0]) for line in constraints.read_text().splitlines()}
    run([*install, *(name for name in image if normal(name) in pinned)])
    return python


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in the repository; fail with its output unless it succeeds."""
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.mark.slow
def test_node_check_on_an_image_like_venv(kit: dict[str, ModuleType], tmp_path: Path) -> None:
    wheels = kit["wheels"]
    python = image_like_venv(tmp_path, kit["wheelhouse"].IMAGE)
    assert subprocess.run([str(python), "-c", "import zarr"], capture_output=True).returncode
    house = tmp_path / "wheelhouse"
    run([sys.executable, "-m", "gpu.wheelhouse", "--python-version", HERE, "--out", str(house)])
    stray = [make_wheel(house, "numpy", "99.0", "numpy"), make_wheel(house, "jax", "99.0", "jax")]
    add_to_manifest(wheels, house, stray)
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_", "VIRTUAL"))}
    env.update(PYTHON=str(python), PIP_NO_INDEX="1")
    env.pop("PYTHONPATH", None)
    command = ["bash", str(NODE_CHECK), "--small", "--out", str(out), "--wheelhouse", str(house)]
    # Every check (the sweep writes Zarr stores and aggregates them with Dask, both imported
    # from the scratch folder); the bench cases' quick sizes are run by tests/test_bench.py.
    command += ["--scratch", str(scratch), "--", "--skip-bench"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr

    report = json.loads((out / "install.json").read_text())
    assert report["ok"] and report["errors"] == []
    assert set(NEEDED) <= {w["distribution"] for w in report["installed"]}
    skipped = {w["distribution"]: w["reason"] for w in report["skipped"]}
    assert skipped["numpy"].startswith("never installed")
    assert skipped["jax"].startswith("never installed")
    assert skipped["pyyaml"].startswith("already installed")
    assert report["before"] == report["after"]
    assert report["after"]["jax"]["path"].startswith(str(python.parent.parent.resolve()))
    assert report["imports"]["zarr"]["path"] == str(scratch.resolve() / "zarr")
    assert report["imports"]["suite"]["path"] == str(REPO / "suite")
    assert not (scratch / "numpy").exists() and not (scratch / "jax").exists()
    assert subprocess.run([str(python), "-c", "import zarr"], capture_output=True).returncode
    checks = json.loads((out / "checks.json").read_text())
    assert checks["passed"] is True and list(checks["checks"]) == list(CHECKS)
    sharding = checks["checks"]["sharding_invariance"]
    assert sharding["devices"] == 2 and "float64/one_device" in sharding["runs"]
