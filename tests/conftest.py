"""Shared fixtures: the real single-host SLURM of ``slurm/cluster.sh`` and Open MPI's mpirun.

Both skip when they cannot be had (not root, so nothing can be installed or started), except
under CI (``CI=true``), where a skip would hide untested code: there they fail instead.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

REPO = Path(__file__).resolve().parents[1]
CLUSTER_SH = REPO / "slurm" / "cluster.sh"


def unavailable(reason: str) -> None:
    """Skip the test, or fail it under CI."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: not skipping)", pytrace=False)
    pytest.skip(reason)


def cluster_sh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(CLUSTER_SH), *args], capture_output=True, text=True, timeout=600
    )


def sinfo_answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    done = subprocess.run(["sinfo", "-h"], capture_output=True, timeout=30)
    return done.returncode == 0


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[Path]:
    """Path of the running cluster's slurm.conf, exported as ``SLURM_CONF`` for subprocesses.

    Uses the cluster named by ``SLURM_CONF`` when ``sinfo`` answers; otherwise starts
    ``slurm/cluster.sh``'s (root only) and stops it at the end if it was this fixture's doing.
    """
    if os.environ.get("SLURM_CONF") and sinfo_answers():
        yield Path(os.environ["SLURM_CONF"])
        return
    conf = shlex.split(cluster_sh("env").stdout)[1].removeprefix("SLURM_CONF=")
    started = cluster_sh("status").returncode != 0
    if started:
        if os.geteuid() != 0:
            unavailable("no running SLURM (SLURM_CONF) and starting one needs root")
        done = cluster_sh("start")
        if done.returncode != 0:
            pytest.fail(f"slurm/cluster.sh start failed:\n{done.stderr}", pytrace=False)
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf
    try:
        yield Path(conf)
    finally:
        if previous is None:
            del os.environ["SLURM_CONF"]
        else:
            os.environ["SLURM_CONF"] = previous
        if started:
            cluster_sh("stop")


class MpiRun(NamedTuple):
    """Open MPI's launcher and the environment to run it with (root allowed)."""

    path: str
    env: dict[str, str]


@pytest.fixture(scope="session")
def mpirun() -> MpiRun:
    """``mpirun``, installed with ``slurm/cluster.sh install`` when missing and we are root."""
    if shutil.which("mpirun") is None:
        if os.geteuid() != 0:
            unavailable("Open MPI (mpirun) is not installed and installing it needs root")
        done = cluster_sh("install")
        if done.returncode != 0 or shutil.which("mpirun") is None:
            pytest.fail(f"slurm/cluster.sh install failed:\n{done.stderr}", pytrace=False)
    env = dict(
        os.environ,
        OMPI_ALLOW_RUN_AS_ROOT="1",
        OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
        # More ranks than cores is fine for tests (a 1-core CI machine still runs -n 2).
        OMPI_MCA_rmaps_base_oversubscribe="1",
    )
    return MpiRun(path=str(shutil.which("mpirun")), env=env)
