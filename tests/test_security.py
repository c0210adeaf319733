"""Security (issue 12): MPI's root consent only for root, spec names that cannot leave the
store folder, and the Dask SLURM cluster of ``nnqs aggregate --cluster slurm`` behind TLS,
failing early when SLURM will not run its worker jobs. Real MPI, SLURM and Dask; no mocks.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jobs.executors import mpi_environment, relaunch_under_mpi
from nnqs.cli import main

ROOT_CONSENT = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}

# ---------------------------------------------------------------------------------------
# MPI: Open MPI's consent to run as root is given for root only
# ---------------------------------------------------------------------------------------


def test_mpi_environment_consents_to_root_for_root_only() -> None:
    base = {"PATH": "/usr/bin", "HOME": "/home/someone"}
    assert mpi_environment(base, euid=0) == {**base, **ROOT_CONSENT}
    assert mpi_environment(base, euid=1000) == base
    assert base == {"PATH": "/usr/bin", "HOME": "/home/someone"}  # the base is not modified


def test_mpi_environment_keeps_what_a_user_set_themselves() -> None:
    own = {"PATH": "/usr/bin", "OMPI_ALLOW_RUN_AS_ROOT": "0"}
    assert mpi_environment(own, euid=1000) == own


@pytest.mark.mpi
def test_relaunch_under_mpi_runs_two_ranks_as_this_user(
    mpirun: object, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """A real ``mpirun -n 2 python -m nnqs --version``, with no consent in the environment:
    as root the relaunch must add it (mpirun refuses root otherwise), as another user it
    needs none."""
    for name in ROOT_CONSENT:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)  # mpirun, not srun
    monkeypatch.setenv("PATH", f"{Path(mpirun.path).parent}:{os.environ['PATH']}")
    assert relaunch_under_mpi(2, ["--version"]) == 0
    from importlib.metadata import version

    assert capfd.readouterr().out.splitlines() == [f"nnqs {version('nnqs-suite')}"] * 2


# ---------------------------------------------------------------------------------------
# spec names: the default store runs/<name>.zarr never leaves the current folder
# ---------------------------------------------------------------------------------------

HOSTILE_NAMES = [
    "../../evil",
    "..",
    ".",
    "a/b",
    "a\\\\b",
    "/tmp/evil",
    "evil\\u0000x",
    "",
    "ok/../..",
]


def _tree(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*")}


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_spec_name_that_is_a_path_is_refused_and_nothing_is_written(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``nnqs run`` of a spec whose ``sweep.name`` is a path (parent, absolute, separators,
    NUL): exit status 2, one line naming ``sweep.name``, and no file appears anywhere: not
    in the current folder, not in its parents, not at the absolute path."""
    work = tmp_path / "outer" / "inner" / "work"
    work.mkdir(parents=True)
    spec = tmp_path / "hostile.toml"
    spec.write_text(f'[sweep]\nname = "{name}"\nstudy = "dynamics"\n[target]\nmodel = "tfim"\n')
    absolute = [Path("/tmp/evil"), Path("/tmp/evil.zarr")]  # Path("runs") / "/tmp/evil.zarr"
    before, absolute_before = _tree(tmp_path), [path.exists() for path in absolute]
    monkeypatch.chdir(work)
    assert main(["run", str(spec)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("nnqs: error: spec hostile.toml: sweep.name")
    assert _tree(tmp_path) == before
    assert [path.exists() for path in absolute] == absolute_before
