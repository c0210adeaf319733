"""Running a script on fake CPU devices: JAX fixes its device count when it starts, so
the script runs in a fresh process with ``XLA_FLAGS`` set and prints its results as JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def run_on_devices(script: str, devices: int = 4, stdin: str | None = None) -> Any:
    """The JSON that ``script`` prints when run with ``devices`` CPU devices (the script
    must succeed within 300 s)."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-c", script],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)
