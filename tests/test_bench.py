"""The benchmark harness (``analysis/bench.py``): the record, its comparison with references
and earlier records, the ``bench`` command and its SLURM path."""

from __future__ import annotations

import argparse
import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest

from analysis import bench


def parse(argv: list[str]) -> argparse.Namespace:
    """``argv`` parsed by a parser holding only the ``bench`` subcommand."""
    parser = argparse.ArgumentParser(prog="nnqs")
    bench.add_bench_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def scaled_reference(record: dict[str, Any], factor: float, drop: str | None = None) -> dict:
    """A reference of every metric of ``record`` at ``factor`` times its value, +-50%."""
    reference = bench.reference_from_record(record, {"command": "test", "date": "today"})
    for entry in reference["references"].values():
        entry["value"] *= factor
        entry["tolerance"] = [-0.5, 0.5]
    reference["references"].pop(drop, None)
    return reference


def check_record(record: dict[str, Any], cases: list[str]) -> None:
    """``record`` is a quick record of ``cases``: every declared figure positive, the system."""
    assert record["schema"] == 1 and record["size"] == "quick"
    assert record["errors"] == {}
    assert list(record["results"]) == cases
    for name, values in record["results"].items():
        case = record["cases"][name]
        assert case["parameters"] == dict(bench.CASES[name].quick)
        assert set(values) == set(case["metrics"]) <= set(bench.CASES[name].metrics)
        assert all(math.isfinite(v) and v > 0 for v in values.values()), name
    system = record["system"]
    for key in ("name", "cpu_model", "cpu_count", "memory_bytes", "git_commit", "host"):
        assert system[key], key
    assert system["devices"]["count"] >= 1 and system["packages"]["jax"]
    assert system["name"] == bench.default_system_name(
        system["cpu_model"], system["cpu_count"], system["devices"]
    )
    assert record["seconds"] > 0


@pytest.fixture(scope="module")
def quick_record() -> dict[str, Any]:
    """A quick record of the two cheap cases (a few seconds)."""
    return bench.run_bench(["kernel_gram", "zarr_io"], "quick", progress=False)


def test_quick_record_holds_the_system(quick_record: dict[str, Any]) -> None:
    check_record(quick_record, ["kernel_gram", "zarr_io"])
    assert set(quick_record["results"]["kernel_gram"]) == {
        "entries_per_s",
        "entries_per_s_into_buffer",
    }
    assert "neural-tangents not run" in quick_record["notes"]["kernel_gram"][0]


@pytest.mark.slow
def test_quick_record_has_every_case() -> None:
    """All six cases: four worker processes (device and process scaling), ~1 minute here."""
    record = bench.run_bench(list(bench.CASES), "quick", progress=False)
    check_record(record, list(bench.CASES))
    results = record["results"]
    assert set(results["training"]) == {"member_steps_per_s", "gflop_per_s"}
    assert set(results["renyi2_chunked"]) == {"entries_per_s"}
    assert set(results["zarr_io"]) == {"write_mb_per_s", "read_mb_per_s"}
    assert set(results["device_scaling"]) == {
        "member_steps_per_s_1",
        "member_steps_per_s_2",
        "speedup_2",
    }
    assert set(results["process_scaling"]) == {"tasks_per_s_1", "tasks_per_s_2", "speedup_2"}


def test_comparison_with_references(quick_record: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "ref.json"
    path.write_text(json.dumps(scaled_reference(quick_record, 100.0)))
    far_above = bench.compare(quick_record, bench.load_reference(path))
    statuses = {m["reference"]["status"] for m in far_above["metrics"].values()}
    assert statuses == {"regression"}
    assert len(far_above["regressions"]) == len(far_above["metrics"])
    entry = far_above["metrics"]["zarr_io.read_mb_per_s"]
    assert entry["reference"]["ratio"] == pytest.approx(0.01, rel=1e-3)
    assert entry["previous"] == {"status": "no-reference"}

    far_below = bench.compare(quick_record, scaled_reference(quick_record, 0.01))
    assert {m["reference"]["status"] for m in far_below["metrics"].values()} == {"improvement"}
    assert far_below["regressions"] == []

    same = bench.compare(
        quick_record, scaled_reference(quick_record, 1.0, drop="zarr_io.write_mb_per_s")
    )
    assert same["metrics"]["zarr_io.write_mb_per_s"]["reference"] == {"status": "no-reference"}
    others = {k: m for k, m in same["metrics"].items() if k != "zarr_io.write_mb_per_s"}
    assert {m["reference"]["status"] for m in others.values()} == {"ok"}


def test_direction_is_per_metric() -> None:
    """A lower-is-better metric regresses when it rises past the upper tolerance."""
    record = {
        "size": "quick",
        "results": {"zarr_io": {"write_mb_per_s": 10.0, "read_mb_per_s": 10.0}},
        "cases": {
            "zarr_io": {
                "metrics": {
                    "write_mb_per_s": {"unit": "MB/s", "better": "lower"},
                    "read_mb_per_s": {"unit": "MB/s", "better": "higher"},
                }
            }
        },
    }
    entries = {"value": 1.0, "tolerance": [-0.5, 0.5], "unit": "MB/s"}
    reference = {
        "size": "quick",
        "references": {"zarr_io.write_mb_per_s": entries, "zarr_io.read_mb_per_s": entries},
    }
    metrics = bench.compare(record, reference)["metrics"]
    assert metrics["zarr_io.write_mb_per_s"]["reference"]["status"] == "regression"
    assert metrics["zarr_io.read_mb_per_s"]["reference"]["status"] == "improvement"
    with pytest.raises(ValueError, match="full figures"):
        bench.compare(record, {**reference, "size": "full"})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"size": "medium"}, "size must be one of quick, full"),
        ({"references": {"zarr_io.speed": {}}}, "unknown metric 'zarr_io.speed'"),
        (
            {"references": {"zarr_io.read_mb_per_s": {"value": 0, "tolerance": [-0.5, None]}}},
            r"references.zarr_io.read_mb_per_s.value must be a number > 0",
        ),
        (
            {
                "references": {
                    "zarr_io.read_mb_per_s": {"value": 1, "tolerance": [0.5], "unit": "MB/s"}
                }
            },
            r"references.zarr_io.read_mb_per_s.tolerance must be",
        ),
    ],
)
def test_bad_reference_is_one_line(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"system": "x", "size": "quick", "references": {}} | change))
    with pytest.raises(ValueError, match=message) as info:
        bench.load_reference(path)
    assert str(info.value).startswith(f"reference {path}: ") and "\n" not in str(info.value)


def test_bad_case_name_is_a_one_line_error(tmp_path: Path) -> None:
    args = parse(["bench", "--quick", "--cases", "zarr_io", "nope", "--records", str(tmp_path)])
    with pytest.raises(ValueError, match=r"^--cases: unknown case 'nope' \(cases: kernel_gram"):
        args.run(args)
    assert list(tmp_path.iterdir()) == []


def test_command_compares_with_the_earlier_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records, saved = tmp_path / "records", tmp_path / "ref.json"
    argv = ["bench", "--quick", "--cases", "zarr_io", "--system", "test-box"]
    argv += ["--records", str(records)]
    first = parse([*argv, "--save-reference", str(saved)])
    summary = first.run(first)
    assert summary["record"] == str(records / "test-box-1.json")
    assert summary["previous"] is None and summary["reference"] is None
    assert set(summary["comparison"]) == {"zarr_io.write_mb_per_s", "zarr_io.read_mb_per_s"}
    reference = bench.load_reference(saved)
    assert reference["measured"]["record"] == summary["record"]
    earlier = json.loads((records / "test-box-1.json").read_text())
    assert {
        m["reference"]["status"] for m in bench.compare(earlier, reference)["metrics"].values()
    } == {"ok"}

    # the earlier record made 100x faster: the next run regresses against it
    faster = copy.deepcopy(earlier)
    faster["results"]["zarr_io"] = {k: v * 100 for k, v in earlier["results"]["zarr_io"].items()}
    (records / "test-box-1.json").write_text(json.dumps(faster))
    (records / "notes.json").write_text("[]")  # not a record: passed over
    second = parse([*argv, "--reference", str(saved), "--fail-on-regression"])
    with pytest.raises(SystemExit) as exit_info:
        second.run(second)
    assert exit_info.value.code == 1
    summary = json.loads(capsys.readouterr().out)
    assert summary["record"] == str(records / "test-box-2.json")
    assert summary["previous"] == str(records / "test-box-1.json")
    assert summary["reference"] == str(saved)
    against_previous = [r for r in summary["regressions"] if r["against"] == "previous"]
    assert {r["metric"] for r in against_previous} == set(summary["comparison"])
    for entry in summary["comparison"].values():
        assert entry["previous"]["status"] == "regression"
        assert entry["previous"]["ratio"] == pytest.approx(
            entry["value"] / entry["previous"]["value"], rel=1e-3
        )


@pytest.mark.slow
@pytest.mark.slurm
def test_bench_runs_as_a_slurm_job(slurm_cluster: Path, tmp_path: Path) -> None:
    args = parse(
        [
            *("bench", "--quick", "--cases", "zarr_io", "--executor", "slurm"),
            *("--profile", "local", "--records", str(tmp_path), "--system", "slurm-test"),
        ]
    )
    summary = args.run(args)
    record = json.loads(Path(summary["record"]).read_text())
    job_id = record["system"]["slurm"]["job_id"]
    assert job_id and summary["slurm"]["job_id"] == job_id
    assert summary["executor"] == "slurm" and record["errors"] == {}
    assert set(record["results"]) == {"zarr_io"}
    assert (tmp_path / "slurm" / job_id).is_dir()  # submitit's logs
