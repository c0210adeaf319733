"""The machine a ``nnqs bench`` record was made on (its ``system``): CPU model, cores,
memory, JAX devices and accelerators, provenance, SLURM allocation, and the default
system name that picks its reference file."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from collections.abc import Mapping
from typing import Any


def cpu_model() -> str:
    """The CPU model from ``/proc/cpuinfo`` (``model name``), else what ``platform`` says."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "cpu model") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def _slug(text: str) -> str:
    text = re.sub(r"\((r|tm)\)|@.*|\b(cpu|processor)\b", " ", text.lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-") or "unknown"


def default_system_name(cpu: str, cores: int, devices: Mapping[str, Any]) -> str:
    """``<cpu model>-<cores>core``, slugified, plus ``-<gpu model>x<count>`` with GPUs."""
    name = f"{_slug(cpu)}-{cores}core"
    if devices["platform"] != "cpu":
        name += f"-{_slug(devices['kind'])}x{devices['count']}"
    return name


#: SLURM variables of the allocation, recorded besides those of suite.store.process_info
_SLURM_JOB = (
    "SLURM_JOB_PARTITION",
    "SLURM_JOB_NODELIST",
    "SLURM_CPUS_PER_TASK",
    "SLURM_MEM_PER_NODE",
)


def accelerator_info(device: Any) -> dict[str, Any]:
    """Memory (bytes JAX may use), the runtime's version string and, on NVIDIA GPUs,
    the driver and board from ``nvidia-smi``, of a JAX device; what is not known is left
    out."""
    info: dict[str, Any] = {}
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "bytes_limit" in stats:
        info["memory_bytes"] = int(stats["bytes_limit"])
    platform_version = getattr(getattr(device, "client", None), "platform_version", None)
    if platform_version:
        info["platform_version"] = str(platform_version)
    if device.platform == "gpu":
        query = "--query-gpu=name,memory.total,driver_version"
        try:
            smi = subprocess.run(
                ["nvidia-smi", query, "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            )
            info["nvidia_smi"] = smi.stdout.strip().splitlines()
        except (OSError, subprocess.SubprocessError):
            info["nvidia_smi"] = None
    return info


def system_info(name: str | None = None) -> dict[str, Any]:
    """This machine: ``name`` (default :func:`default_system_name`), CPU model, cores (of
    the machine, and usable by this process), memory, JAX devices (with
    :func:`accelerator_info`), and the provenance of
    :func:`suite.store.provenance` (git commit, package versions, python, host, pid and,
    under SLURM, the job, array and step ids)."""
    import jax

    from suite.store import provenance

    cpu, cores = cpu_model(), os.cpu_count() or 1
    found = jax.devices()
    devices = {"platform": found[0].platform, "kind": found[0].device_kind, "count": len(found)}
    devices |= accelerator_info(found[0])
    info = {
        "name": name or default_system_name(cpu, cores, devices),
        "cpu_model": cpu,
        "cpu_count": cores,
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores,
        "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        "devices": devices,
        **provenance(),
    }
    if "slurm" in info:  # the allocation too
        info["slurm"].update(
            {
                key.removeprefix("SLURM_").lower(): os.environ[key]
                for key in _SLURM_JOB
                if key in os.environ
            }
        )
    return info
