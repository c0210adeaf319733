"""Security (issue 12): MPI's root consent only for root, spec names that cannot leave the
store folder, and the Dask SLURM cluster of ``nnqs aggregate --cluster slurm`` behind TLS,
failing early when SLURM will not run its worker jobs. Real MPI, SLURM and Dask; no mocks.
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from stores import run_nnqs, tiny_dynamics

from jobs import dask_slurm
from jobs.dask_slurm import JobState, hopeless
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


# ---------------------------------------------------------------------------------------
# the Dask SLURM cluster: TLS only
# ---------------------------------------------------------------------------------------


def _refused(address: str, security: object = None) -> bool:
    """Whether the scheduler at ``address`` refuses a client with these credentials."""
    from distributed import Client

    try:
        with Client(address, security=security, timeout=5):
            return False
    except OSError:  # connection reset, failed handshake, timeout
        return True


def _refused_without_certificate(address: str, ca_file: str) -> bool:
    """Whether the scheduler refuses a TLS client that trusts it but has no certificate:
    it answers with an alert or closes (TLS 1.3 refuses after the handshake, on reading),
    where it would wait for a Dask message from a client it accepts."""
    host, port = address.removeprefix("tls://").rsplit(":", 1)
    context = ssl.create_default_context(cafile=ca_file)
    context.check_hostname = False  # Dask's temporary certificate names "dask-internal"
    try:
        with (
            socket.create_connection((host, int(port)), timeout=5) as raw,
            context.wrap_socket(raw) as tls,
        ):
            return tls.recv(1) == b""
    except TimeoutError:
        return False  # accepted: the scheduler waits for a message
    except OSError:  # ssl.SSLError (certificate required), connection reset
        return True


@pytest.mark.slurm
@pytest.mark.slow
def test_the_slurm_dask_cluster_speaks_only_mutual_tls(slurm_cluster: Path, tmp_path: Path) -> None:
    """Scheduler, SLURM worker and client talk TLS with this cluster's own credentials, which
    the worker job reads from a private folder; nobody without them gets in: plain TCP, TLS
    that trusts the scheduler but has no certificate, TLS with other credentials."""
    from distributed import Client
    from distributed.security import Security

    logs = tmp_path / "dask"
    with dask_slurm.slurm_cluster("local", 1, logs) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tls://")
        with Client(cluster) as client:  # the client takes the cluster's credentials
            assert client.submit(sum, [1, 2, 3]).result() == 6
            (worker,) = client.scheduler_info()["workers"]
            assert worker.startswith("tls://")
        (folder,) = logs.glob(".tls-*")
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {
            "cert.pem": 0o600,
            "key.pem": 0o600,
        }
        assert f"--tls-key {folder / 'key.pem'}" in cluster.job_script()
        cert = str(folder / "cert.pem")
        assert _refused(address.replace("tls://", "tcp://"))
        assert _refused_without_certificate(address, cert)
        assert _refused(address, Security.temporary())
    assert not list(logs.glob(".tls-*"))  # the credentials are gone with the cluster
    assert list(logs.glob("dask-worker-*.err"))  # the worker ran as a SLURM job


# ---------------------------------------------------------------------------------------
# the Dask SLURM cluster: failing early when SLURM will not run a worker job
# ---------------------------------------------------------------------------------------


def test_pending_reasons_that_no_wait_resolves() -> None:
    def verdict(state: str, reason: str) -> str | None:
        return hopeless(JobState("7", state, reason))

    for reason in ("None", "Priority", "Resources", "Dependency", "BeginTime", "QOSGrpCpuLimit"):
        assert verdict("PENDING", reason) is None, reason
    assert verdict("RUNNING", "None") is None
    for reason in ("PartitionConfig", "JobHeldUser", "ReqNodeNotAvail, UnavailableNodes:vm"):
        assert reason in verdict("PENDING", reason)
    assert "QOSMaxWallDurationPerJobLimit" in verdict("PENDING", "QOSMaxWallDurationPerJobLimit")
    assert "ended FAILED (NonZeroExitCode)" in verdict("FAILED", "NonZeroExitCode")
    assert "ended CANCELLED" in verdict("CANCELLED", "None")


PROFILE = """
gpus_per_node = 0
cpus_per_task = 1
mem_gb = 2
time_min = 5
signal_delay_s = 15
dask_interface = "lo"
dask_cores = 1
"""
#: profiles SLURM will not run, and what the error must say
HOPELESS_PROFILES = {
    "no-partition": ('partition = "nosuch"\ndask_memory = "1GB"', "Invalid partition name"),
    "too-much-memory": (
        'partition = "debug"\ndask_memory = "100000GB"',
        "Requested node configuration is not available",
    ),
    "job-fails": (
        'partition = "debug"\ndask_memory = "1GB"\nsetup = ["exit 3"]',
        "ended FAILED (NonZeroExitCode) before its worker connected",
    ),
    "held": (
        'partition = "debug"\ndask_memory = "1GB"\n[extra]\nhold = ""',
        "pending with reason 'JobHeldUser'",
    ),
}


@pytest.fixture(scope="module")
def unaggregated_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete sweep, not aggregated yet."""
    tmp = tmp_path_factory.mktemp("unaggregated")
    spec = tmp / "spec.toml"
    spec.write_text(tiny_dynamics("tiny-tls", 5, [16], 10))
    store = tmp / "store.zarr"
    run_nnqs("run", str(spec), "--store", str(store), "--no-aggregate")
    return store


def _digest(store: Path) -> dict[str, str]:
    return {
        str(path.relative_to(store)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in store.rglob("*")
        if path.is_file()
    }


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(HOPELESS_PROFILES))
def test_aggregate_fails_early_when_slurm_will_not_run_the_worker(
    case: str, slurm_cluster: Path, tmp_path: Path, unaggregated_store: Path
) -> None:
    """``nnqs aggregate --cluster slurm`` on a profile SLURM refuses (at submission), whose
    job fails before its worker connects, or whose job is held: exit status 2 within a few
    tens of seconds (not the 300 s worker timeout), one line with SLURM's reason, the store
    untouched, no job left waiting."""
    fields, expected = HOPELESS_PROFILES[case]
    profile = tmp_path / f"{case}.toml"
    profile.write_text(PROFILE + fields + "\n")
    before = _digest(unaggregated_store)
    clock = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "nnqs", "aggregate", str(unaggregated_store), "--cluster",
         "slurm", "--profile", str(profile)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    seconds = time.monotonic() - clock
    assert done.returncode == 2, done.stderr[-3000:]
    assert seconds < 60, seconds
    assert done.stderr.startswith("nnqs: error: ") and done.stderr.count("\n") == 1, done.stderr
    assert expected in done.stderr and done.stdout == ""
    assert _digest(unaggregated_store) == before
    job = done.stderr.split("Dask worker job ")[-1].split()[0]
    if job.isdigit():  # submitted: cancelled or ended, not left in the queue
        queued = subprocess.run(
            ["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True, check=False
        )
        assert queued.stdout.strip() in ("", "CANCELLED", "FAILED", "COMPLETING"), queued.stdout
