"""Cluster profiles: loading, validation (one-line errors naming the field), and what they give
submitit, dask-jobqueue and the sbatch templates. No SLURM needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import submitit
from dask_jobqueue.slurm import SLURMJob

from jobs.profiles import (
    ClusterProfile,
    available_profiles,
    check_overrides,
    jobqueue_parameters,
    load_profile,
    profile_from_dict,
    render_sbatch,
    sbatch_directives,
    submitit_parameters,
)

SHIPPED = ["example-gpu", "local"]


def test_shipped_profiles_load() -> None:
    assert set(SHIPPED) <= set(available_profiles())
    local = load_profile("local")
    assert local.partition == "debug"
    assert (local.gpus_per_node, local.cpus_per_task) == (0, 1)
    assert local.setup == () and local.modules == ()
    assert local.dask_interface == "lo"
    assert local.signal_delay_s <= 15  # SLURM checks signal times only every 30 s
    gpu = load_profile("example-gpu")
    assert gpu.gpus_per_node >= 1 and gpu.account and gpu.qos and gpu.modules and gpu.setup
    assert gpu.source == "example-gpu.toml"


def test_load_by_path_equals_load_by_name() -> None:
    path = Path(__file__).resolve().parents[1] / "jobs" / "clusters" / "local.toml"
    assert load_profile(path) == load_profile(str(path)) == load_profile("local")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"partiton": "debug"}, "partiton"),  # unknown key
        ({"partition": ""}, "partition"),
        ({"partition": None}, "partition"),
        ({"account": 7}, "account"),
        ({"qos": ""}, "qos"),
        ({"gpus_per_node": -1}, "gpus_per_node"),
        ({"gpus_per_node": "1"}, "gpus_per_node"),
        ({"cpus_per_task": 0}, "cpus_per_task"),
        ({"cpus_per_task": True}, "cpus_per_task"),
        ({"mem_gb": 0}, "mem_gb"),
        ({"mem_gb": "4GB"}, "mem_gb"),
        ({"mem_gb": float("inf")}, "mem_gb"),
        ({"source": "elsewhere"}, "source"),  # not a key of the file: where it came from
        ({"time_min": 0}, "time_min"),
        ({"time_min": 1.5}, "time_min"),
        ({"signal_delay_s": -5}, "signal_delay_s"),
        ({"time_min": 1, "signal_delay_s": 60}, "signal_delay_s"),
        ({"modules": "cuda"}, "modules"),
        ({"setup": ["ok", 3]}, "setup"),
        ({"setup": ["two\nlines"]}, "setup"),
        ({"array_parallelism": 0}, "array_parallelism"),
        ({"extra": {"--constraint": "a100"}}, "extra"),
        ({"extra": {"constraint": 1}}, "extra"),
        ({"extra": ["constraint=a100"]}, "extra"),
        ({"dask_interface": ""}, "dask_interface"),
        ({"dask_cores": 0}, "dask_cores"),
        ({"dask_memory": "lots"}, "dask_memory"),
        ({"dask_memory": 4}, "dask_memory"),
    ],
)
def test_invalid_field_is_a_one_line_error_naming_it(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=rf"^profile test\.toml: .*\b{field}\b") as info:
        profile_from_dict({"partition": "debug", **changes}, source="test.toml")
    assert "\n" not in str(info.value)


def test_missing_partition_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"^profile test\.toml: partition is required$"):
        profile_from_dict({"gpus_per_node": 1}, source="test.toml")


def test_load_profile_validates_before_returning(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('partition = "p"\ngpus_per_node = -1\n')
    with pytest.raises(ValueError) as info:
        load_profile(bad)
    assert str(info.value) == "profile bad.toml: gpus_per_node must be an integer >= 0, got -1"


def test_invalid_toml_and_unknown_names_are_value_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("partition = \n")
    with pytest.raises(ValueError, match=r"^profile broken\.toml: invalid TOML"):
        load_profile(broken)
    with pytest.raises(ValueError, match=r"shipped profiles: .*local"):
        load_profile("no-such-cluster")


def test_with_overrides_revalidates() -> None:
    local = load_profile("local")
    bigger = local.with_overrides(cpus_per_task=2, mem_gb=2)
    assert (bigger.cpus_per_task, bigger.mem_gb, bigger.partition) == (2, 2.0, "debug")
    assert local.cpus_per_task == 1  # frozen: the original is unchanged
    with pytest.raises(ValueError, match=r"^profile local\.toml \(with overrides\): time_min"):
        local.with_overrides(time_min=0)
    with pytest.raises(ValueError, match="unknown key 'gpus'"):
        local.with_overrides(gpus=1)


def test_check_overrides_validates_a_partial_table() -> None:
    check_overrides({"gpus_per_node": 2, "time_min": 1}, source="spec.toml")  # no partition
    check_overrides({"signal_delay_s": 600}, source="spec.toml")  # limit not known here
    with pytest.raises(ValueError, match=r"^profile spec\.toml: mem_gb must be a number"):
        check_overrides({"mem_gb": -1}, source="spec.toml")
    with pytest.raises(ValueError, match="signal_delay_s must be below"):
        check_overrides({"time_min": 1, "signal_delay_s": 60}, source="spec.toml")
    with pytest.raises(ValueError, match="unknown key 'gpu'"):
        check_overrides({"gpu": 1}, source="spec.toml")


def test_direct_construction_is_validated() -> None:
    with pytest.raises(ValueError, match="cpus_per_task"):
        ClusterProfile(partition="p", cpus_per_task=0)


@pytest.mark.parametrize("name", SHIPPED)
def test_submitit_accepts_the_parameters(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile = load_profile(name)
    params = submitit_parameters(profile)
    generic = submitit.AutoExecutor._valid_parameters()
    slurm_only = submitit.SlurmExecutor._valid_parameters()
    for key in params:
        assert key in generic or key.removeprefix("slurm_") in slurm_only, key
    # submitit's own checks (types, sbatch rendering) run in update_parameters. A
    # SlurmExecutor refuses to be built without srun on PATH: pretend it is there.
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 2))
    executor = submitit.AutoExecutor(folder=tmp_path, cluster="slurm")
    executor.update_parameters(**params)
    script = executor._executor._make_submission_file_text("true", "uid")
    assert f"#SBATCH --partition={profile.partition}" in script
    assert f"#SBATCH --signal=USR2@{profile.signal_delay_s}" in script
    assert f"#SBATCH --time={profile.time_min}" in script
    assert ("--gpus-per-node" in script) == (profile.gpus_per_node > 0)
    for module in profile.modules:
        assert f"module load {module}" in script


@pytest.mark.parametrize("name", SHIPPED)
def test_dask_jobqueue_accepts_the_parameters(name: str, tmp_path: Path) -> None:
    profile = load_profile(name)
    params = jobqueue_parameters(profile, tmp_path)
    scheduler_options = params.pop("scheduler_options")  # a cluster option, not a job one
    assert scheduler_options["dashboard_address"] == "127.0.0.1:0"  # plain HTTP: loopback only
    if profile.dask_interface == "lo":
        assert scheduler_options["host"] == "127.0.0.1"
    script = SLURMJob(scheduler="tcp://127.0.0.1:8786", name="w", **params).job_script()
    assert f"#SBATCH -p {profile.partition}" in script
    assert f"--cpus-per-task={profile.dask_cores}" in script
    assert f"--death-timeout {params['death_timeout']}" in script
    for line in params["job_script_prologue"]:
        assert line in script


def test_render_sbatch_has_the_profile_header_and_the_command() -> None:
    profile = load_profile("example-gpu")
    text = render_sbatch(
        "sweep-mpi", profile, spec="specs/my sweep.toml", store="runs/s.zarr", ranks=4
    )
    assert text.startswith("#!/bin/bash\n")
    for line in sbatch_directives(profile):
        assert f"\n{line}\n" in text
    assert "#SBATCH --gpus-per-node=1" in text and "#SBATCH --account=my-project" in text
    assert "\nmodule load cuda/12.4\n" in text
    command = (
        "srun --mpi=pmix -n 4 nnqs run 'specs/my sweep.toml' --executor mpi --store runs/s.zarr"
    )
    assert f"\n{command}\n" in text
    assert "$SLURM_JOB_ID" not in text and "${SLURM_JOB_ID:-?}" in text  # $$ escapes
    # Every #SBATCH line precedes the first command (sbatch stops reading at it).
    body = [ln for ln in text.splitlines()[1:] if ln.strip() and not ln.startswith("#")]
    assert text.rindex("#SBATCH") < text.index(body[0])


def test_render_sbatch_bench() -> None:
    text = render_sbatch("bench", load_profile("local"), out="runs/bench.json")
    assert "#SBATCH --partition=debug" in text and "\nnnqs bench --out runs/bench.json\n" in text
    assert "--gpus-per-node" not in text


@pytest.mark.parametrize(
    ("template", "values", "message"),
    [
        ("bench", {}, "missing value for placeholder out"),
        ("bench", {"out": "x", "outt": "y"}, "unknown placeholder outt"),
        ("bench", {"out": "x", "setup": "y"}, "setup comes from the profile"),
        ("no-such-template", {}, "no file"),
    ],
)
def test_render_sbatch_errors(template: str, values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render_sbatch(template, load_profile("local"), **values)
