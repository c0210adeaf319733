"""Cluster profiles: where and how SLURM jobs run (partition, account, GPUs, modules, limits).

A profile is a TOML file in ``jobs/clusters/`` (or anywhere, given by path) whose keys are
the fields of :class:`ProfileFields` (a ``msgspec.Struct``: their types carry the rules, see
:mod:`jobs.typed`). It is validated when loaded: unknown keys, wrong types and out-of-range
values raise ``ValueError`` with a one-line message naming the field. From a profile come
the parameters of the three ways the suite submits work:

- :func:`submitit_parameters` for ``submitit.AutoExecutor(...).update_parameters(**...)``;
- :func:`jobqueue_parameters` for ``dask_jobqueue.SLURMCluster(**...)``;
- :func:`render_sbatch` for the batch scripts in ``jobs/sbatch/``.
"""

from __future__ import annotations

import shlex
import string
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from jobs.typed import Positive, convert, message

#: the cluster profiles shipped with the package (package data)
PROFILE_DIR = Path(__file__).resolve().parent / "clusters"
#: the batch-script templates shipped with the package (package data)
TEMPLATE_DIR = Path(__file__).resolve().parent / "sbatch"

# Seconds a dask worker waits for an unreachable scheduler before it exits.
DASK_DEATH_TIMEOUT_S = 60
# Placeholders that render_sbatch fills from the profile, not from its keyword values.
_PROFILE_PLACEHOLDERS = frozenset({"sbatch_header", "setup"})
_OVERRIDDEN = " (with overrides)"

OneLine = Annotated[
    str, Meta(pattern=r"\A[^\n]*\S[^\n]*\Z", description="a non-empty one-line string")
]
Lines = Annotated[tuple[OneLine, ...], Meta(description="a list of non-empty one-line strings")]
Options = Annotated[
    dict[
        Annotated[str, Meta(pattern=r"\A[A-Za-z][A-Za-z0-9_-]*\Z")],
        Annotated[str, Meta(pattern=r"\A[^\n]*\Z")],
    ],
    Meta(description="a table of sbatch option names to strings"),
]
Memory = Annotated[
    str, Meta(pattern=r"(?i)\A\d+(\.\d+)?\s*[kmgtp]i?b\Z", description="a size such as '1GB'")
]


class ProfileFields(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The keys of a profile file, with their types and defaults."""

    partition: OneLine
    account: OneLine | None = None
    qos: OneLine | None = None
    gpus_per_node: Annotated[int, Meta(ge=0)] = 0
    cpus_per_task: Annotated[int, Meta(ge=1)] = 1
    mem_gb: Positive = 4.0
    time_min: Annotated[int, Meta(ge=1)] = 60
    signal_delay_s: Annotated[int, Meta(ge=0)] = 90
    modules: Lines = ()
    setup: Lines = ()
    array_parallelism: Annotated[int, Meta(ge=1)] = 64
    extra: Options = {}
    dask_interface: OneLine | None = None
    dask_cores: Annotated[int, Meta(ge=1)] = 1
    dask_memory: Memory = "4GB"


class ClusterProfile(ProfileFields, frozen=True):
    """A SLURM cluster to run on, validated on construction (see ``example-gpu.toml``).

    ``source`` names where the values came from (a file name) and prefixes every error.
    """

    source: str = "<dict>"

    def __post_init__(self) -> None:
        where = f"profile {self.source}"
        for field in msgspec.structs.fields(ProfileFields):  # also when built directly
            convert(getattr(self, field.name), field.type, where, field.name)
        if self.signal_delay_s >= 60 * self.time_min:
            limit = f"the time limit ({60 * self.time_min} s for time_min {self.time_min})"
            problem = message("signal_delay_s", f"must be below {limit}", self.signal_delay_s)
            raise ValueError(f"{where}: {problem}")

    def with_overrides(self, **fields: Any) -> ClusterProfile:
        """A re-validated copy with some fields replaced (a sweep's ``[executor.slurm]`` table)."""
        source = self.source if self.source.endswith(_OVERRIDDEN) else self.source + _OVERRIDDEN
        values = {name: getattr(self, name) for name in ProfileFields.__struct_fields__}
        return profile_from_dict(values | fields, source)


def profile_from_dict(data: Mapping[str, Any], source: str) -> ClusterProfile:
    """A validated profile from a mapping of field values (e.g. parsed TOML).

    ``source`` names the origin in error messages: ``profile <source>: <field> must be ...``.
    """
    fields = convert(data, ProfileFields, f"profile {source}")
    return ClusterProfile(**msgspec.structs.asdict(fields), source=source)


def check_overrides(fields: Mapping[str, Any], source: str) -> None:
    """Validate a partial table of profile fields on its own (a sweep's ``[executor.slurm]``).

    Keys, types and ranges are checked now; the signal delay against the time limit only
    when both are in the table, and again when ``with_overrides`` applies it to a profile.
    """
    neutral = {"partition": "any", "time_min": 10**6, "signal_delay_s": 0}
    profile_from_dict({**neutral, **fields}, source)


def available_profiles() -> list[str]:
    """Names of the profiles shipped in ``jobs/clusters/``."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def load_profile(name_or_path: str | Path) -> ClusterProfile:
    """Load and validate a profile: a bare name (``"local"``) or a path to a TOML file."""
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or "/" in text or text.endswith(".toml"):
        path = Path(name_or_path)
    else:
        path = PROFILE_DIR / f"{text}.toml"
    if not path.is_file():
        raise ValueError(
            f"profile {text}: no file {path} (shipped profiles: {', '.join(available_profiles())})"
        )
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"profile {path.name}: invalid TOML: {exc}") from exc
    return profile_from_dict(data, source=path.name)


def setup_lines(profile: ClusterProfile) -> list[str]:
    """Shell lines run before a job: ``module load`` for each module, then the setup lines."""
    return [f"module load {shlex.quote(m)}" for m in profile.modules] + list(profile.setup)


def _extra_flags(profile: ClusterProfile) -> list[str]:
    return [f"--{k}" if v == "" else f"--{k}={shlex.quote(v)}" for k, v in profile.extra.items()]


def sbatch_directives(profile: ClusterProfile) -> list[str]:
    """The ``#SBATCH`` lines of a batch script for this profile."""
    options = [f"--partition={shlex.quote(profile.partition)}"]
    if profile.account is not None:
        options.append(f"--account={shlex.quote(profile.account)}")
    if profile.qos is not None:
        options.append(f"--qos={shlex.quote(profile.qos)}")
    options += [
        f"--time={profile.time_min}",
        f"--cpus-per-task={profile.cpus_per_task}",
        f"--mem={round(profile.mem_gb * 1024)}M",
    ]
    if profile.gpus_per_node > 0:
        options.append(f"--gpus-per-node={profile.gpus_per_node}")
    # SIGUSR2 to the job's steps signal_delay_s before the limit: the checkpoint signal.
    options.append(f"--signal=USR2@{profile.signal_delay_s}")
    return [f"#SBATCH {option}" for option in options + _extra_flags(profile)]


def submitit_parameters(profile: ClusterProfile) -> dict[str, Any]:
    """Keyword arguments for ``submitit.AutoExecutor(folder=...).update_parameters``.

    Generic submitit names where they exist (``timeout_min``, ``mem_gb``...), ``slurm_``
    prefixed ones otherwise; options a profile leaves unset (account, QOS, zero GPUs) are
    left out, so that SLURM's defaults apply.
    """
    params: dict[str, Any] = {
        "slurm_partition": profile.partition,
        "cpus_per_task": profile.cpus_per_task,
        "mem_gb": profile.mem_gb,
        "timeout_min": profile.time_min,
        "slurm_signal_delay_s": profile.signal_delay_s,
        "slurm_array_parallelism": profile.array_parallelism,
        "slurm_setup": setup_lines(profile),
        # submitit writes a True value as a bare flag (--exclusive).
        "slurm_additional_parameters": {
            k: True if v == "" else v for k, v in profile.extra.items()
        },
    }
    if profile.account is not None:
        params["slurm_account"] = profile.account
    if profile.qos is not None:
        params["slurm_qos"] = profile.qos
    if profile.gpus_per_node > 0:
        params["gpus_per_node"] = profile.gpus_per_node
    return params


def jobqueue_parameters(profile: ClusterProfile, log_directory: str | Path) -> dict[str, Any]:
    """Keyword arguments for ``dask_jobqueue.SLURMCluster``: one worker process per job.

    On the loopback interface the scheduler must listen on 127.0.0.1 explicitly (it would
    advertise a non-loopback address otherwise). The dashboard, plain HTTP without
    authentication, listens on loopback only, on a free port (8787 may be taken): reach it
    through an SSH tunnel. TLS is :mod:`jobs.dask_slurm`'s (``security=``).
    """
    hours, minutes = divmod(profile.time_min, 60)
    scheduler_options = {"dashboard_address": "127.0.0.1:0"}
    if profile.dask_interface == "lo":
        scheduler_options["host"] = "127.0.0.1"
    directives = []
    if profile.qos is not None:
        directives.append(f"--qos={shlex.quote(profile.qos)}")
    if profile.gpus_per_node > 0:
        directives.append(f"--gpus-per-node={profile.gpus_per_node}")
    params: dict[str, Any] = {
        "queue": profile.partition,
        "cores": profile.dask_cores,
        "processes": 1,
        "memory": profile.dask_memory,
        "walltime": f"{hours:02d}:{minutes:02d}:00",
        "scheduler_options": scheduler_options,
        "log_directory": str(log_directory),
        "death_timeout": DASK_DEATH_TIMEOUT_S,
        "job_script_prologue": setup_lines(profile),
        "job_extra_directives": directives + _extra_flags(profile),
    }
    if profile.account is not None:
        params["account"] = profile.account
    if profile.dask_interface is not None:
        params["interface"] = profile.dask_interface
    return params


def render_sbatch(template_name: str, profile: ClusterProfile, **values: Any) -> str:
    """Render ``jobs/sbatch/<template_name>.sbatch`` for a profile.

    ``${sbatch_header}`` becomes the profile's ``#SBATCH`` lines and ``${setup}`` its module
    and setup lines; every other ``${name}`` placeholder takes ``values[name]``, shell-quoted.
    A placeholder without a value, or a value without a placeholder, is a ``ValueError``.
    """
    path = TEMPLATE_DIR / f"{template_name}.sbatch"
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in TEMPLATE_DIR.glob("*.sbatch")))
        raise ValueError(f"sbatch template {template_name!r}: no file {path} (have: {names})")
    template = string.Template(path.read_text())
    if not template.is_valid():
        raise ValueError(f"sbatch template {template_name!r}: invalid $ placeholder syntax")
    wanted = set(template.get_identifiers()) - _PROFILE_PLACEHOLDERS
    reserved = sorted(set(values) & _PROFILE_PLACEHOLDERS)
    missing = sorted(wanted - set(values))
    unknown = sorted(set(values) - wanted - _PROFILE_PLACEHOLDERS)
    where = f"sbatch template {template_name!r}"
    if reserved:
        raise ValueError(f"{where}: {', '.join(reserved)} comes from the profile, not a value")
    if missing:
        raise ValueError(f"{where}: missing value for placeholder {', '.join(missing)}")
    if unknown:
        raise ValueError(f"{where}: unknown placeholder {', '.join(unknown)}")
    return template.substitute(
        {name: shlex.quote(str(value)) for name, value in values.items()},
        sbatch_header="\n".join(sbatch_directives(profile)),
        setup="\n".join(setup_lines(profile)),
    )
