"""The node checks (analysis.node_check) and the scale figures (analysis.bench.scale).

The whole ``--small`` run is exercised end to end by ``tests/test_offline_kit.py``
(offline install, then ``gpu/node-check.sh --small``); here, that each piece can fail.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import zarr

import suite  # noqa: F401  (float64)
from analysis import node_check
from analysis.bench import scale
from suite.hilbert import SpinBasis
from suite.kernels.gram import gram
from suite.networks import mlp


def _store(path: Path, values: np.ndarray) -> Path:
    group = zarr.open_group(path, mode="w")
    group.create_array("values", shape=values.shape, dtype=values.dtype, fill_value=np.nan)
    group["values"][...] = values
    manifest = group.create_array("manifest", shape=(1,), dtype="i8")
    manifest[...] = len(str(path))  # differs between stores of other names, ignored
    return path


def test_compare_stores_finds_one_changed_value(tmp_path: Path) -> None:
    values = np.linspace(1.0, 2.0, 12).reshape(3, 4)
    values[0, 0] = np.nan  # an unused entry: NaN in both counts as equal
    first = _store(tmp_path / "a.zarr", values)
    same = node_check.compare_stores(first, _store(tmp_path / "b.zarr", values.copy()))
    assert same == {"arrays_compared": 1, "differing_arrays": {}, "max_relative_spread": 0.0}
    changed = values.copy()
    changed[2, 3] = np.nextafter(changed[2, 3], 3.0)  # one ulp
    other = node_check.compare_stores(first, _store(tmp_path / "c.zarr", changed))
    assert list(other["differing_arrays"]) == ["values"]
    assert 0 < other["max_relative_spread"] < 1e-15


def test_a_failing_check_fails_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def wrong(small: bool) -> dict[str, object]:
        raise RuntimeError("the device returned NaN\nsecond line")

    monkeypatch.setitem(node_check.CHECKS, "wrong", wrong)
    argv = ["--out", str(tmp_path), "--skip-bench", "--checks", "wrong", "kernels_fast_path"]
    assert node_check.main([*argv, "--small"]) == 1
    written = json.loads((tmp_path / "checks.json").read_text())
    assert written["passed"] is False
    assert written["checks"]["wrong"] == {
        "passed": False,
        "error": "RuntimeError: the device returned NaN",
        "seconds": written["checks"]["wrong"]["seconds"],
    }
    assert written["checks"]["kernels_fast_path"]["passed"] is True
    assert written["system"]["devices"]["platform"] == "cpu"


def test_unknown_check_and_small_budget_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as unknown:
        node_check.main(["--out", str(tmp_path), "--checks", "nope"])
    with pytest.raises(SystemExit) as budget:
        node_check.main(["--out", str(tmp_path), "--budget-s", "10"])
    assert unknown.value.code == budget.value.code == 2
    assert not (tmp_path / "checks.json").exists()


def test_hamming_sum_is_the_sum_of_the_gram_matrix() -> None:
    net = mlp(1, 512, "relu", 1.0, 1.0)

    def ntk(kernel: object) -> object:
        return net.kernel(kernel).ntk

    x = SpinBasis(6).inputs()
    dense = float(np.sum(np.asarray(gram(ntk, x, x, method="direct"))))
    assert math.isclose(scale.hamming_sum(ntk, 6), dense, rel_tol=1e-13)


def test_gram_full_basis_refuses_a_tile_that_does_not_divide() -> None:
    with pytest.raises(ValueError, match="tile must divide 2\\*\\*n_sites = 64"):
        scale.measure_gram_full_basis({"n_sites": 6, "tile": 48, "width": 8})


def test_float32_matmuls_on_cpu_are_not_tf32() -> None:
    assert scale.float32_matmul_precision() == "float32"
    peak = scale.device_peak(())  # no datasheet for a CPU: measured
    assert peak.source.startswith("measured in this run") and not peak.flop_per_s
    assert peak.memory_bytes_per_s > 1e8


@pytest.mark.slow
def test_time_to_solution_projects_past_its_deadline() -> None:
    from analysis.bench.cases import CASES

    params = CASES["time_to_solution"].parameters("quick") | {"deadline_s": 0.0}
    values, notes = scale.measure_time_to_solution(params)
    assert "seconds" not in values and values["projected_seconds"] > values["preparation_seconds"]
    assert notes[0].startswith("PROJECTED: 1 of 2 tasks ran")
