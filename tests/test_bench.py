"""The benchmark harness (``analysis/bench/``): the record, its comparison with references
and earlier records, the ``bench`` command and its SLURM path."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from analysis.bench.cases import CASES
from analysis.bench.cli import add_bench_parser
from analysis.bench.parallel import scaling_figures
from analysis.bench.records import (
    SCHEMA,
    compare,
    load_record,
    load_reference,
    reference_from_record,
    write_json,
)
from analysis.bench.report import compare_records
from analysis.bench.run import measurement, run_bench
from analysis.bench.system import default_system_name


def parse(argv: list[str]) -> argparse.Namespace:
    """``argv`` parsed by a parser holding only the ``bench`` subcommand."""
    parser = argparse.ArgumentParser(prog="nnqs")
    add_bench_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def scaled_reference(record: dict[str, Any], factor: float, drop: str | None = None) -> dict:
    """A reference of every metric of ``record`` at ``factor`` times its value, +-50%."""
    reference = reference_from_record(record, {"command": "test", "date": "today"})
    for entry in reference["references"].values():
        entry["value"] *= factor
        entry["tolerance"] = [-0.5, 0.5]
    reference["references"].pop(drop, None)
    return reference


def check_record(record: dict[str, Any], cases: list[str]) -> None:
    """``record`` is a quick record of ``cases``: every declared figure positive, the system."""
    assert record["schema"] == SCHEMA and record["size"] == "quick"
    assert record["errors"] == {}
    assert list(record["results"]) == cases
    for name, values in record["results"].items():
        case = record["cases"][name]
        assert case["parameters"] == dict(CASES[name].quick)
        assert set(values) == set(case["metrics"]) <= set(CASES[name].metrics)
        assert all(math.isfinite(v) and v > 0 for v in values.values()), name
    system = record["system"]
    for key in ("name", "cpu_model", "cpu_count", "memory_bytes", "git_commit", "host"):
        assert system[key], key
    assert system["devices"]["count"] >= 1 and system["packages"]["jax"]
    assert system["name"] == default_system_name(
        system["cpu_model"], system["cpu_count"], system["devices"]
    )
    assert record["seconds"] > 0


@pytest.fixture(scope="module")
def quick_record() -> dict[str, Any]:
    """A quick record of the two cheap cases (a few seconds)."""
    return run_bench(["kernel_gram", "zarr_io"], "quick", progress=False)


def test_quick_record_holds_the_system(quick_record: dict[str, Any]) -> None:
    check_record(quick_record, ["kernel_gram", "zarr_io"])
    assert set(quick_record["results"]["kernel_gram"]) == {
        "entries_per_s",
        "entries_per_s_into_buffer",
    }
    assert "neural-tangents not run" in quick_record["notes"]["kernel_gram"][0]


#: what runs the cases: none of it is loaded to register ``nnqs bench`` and list its cases
MEASURING = {
    "analysis.bench.run",
    "analysis.bench.measures",
    "analysis.bench.parallel",
    "analysis.bench.scale",
    "analysis.bench.kernels",
    "analysis.bench.training",
    "analysis.bench.entanglement",
}


def loaded_by(module: str) -> set[str]:
    """The modules a fresh python holds after importing ``module``."""
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    return set(json.loads(proc.stdout))


def test_the_command_line_loads_no_measurement() -> None:
    """``nnqs`` registers ``bench`` without loading what runs the cases; the bench command
    line alone loads neither JAX, the suite nor the sweep engine (``nnqs.cli`` itself
    imports the suite, and with it JAX)."""
    assert loaded_by("nnqs.cli").isdisjoint(MEASURING)
    assert loaded_by("analysis.bench.cli").isdisjoint({*MEASURING, "jax", "suite", "jobs.sweep"})


def test_every_case_names_its_measurement() -> None:
    """Each case's ``"module:function"`` imports, and names a function of that name."""
    for case in CASES.values():
        assert measurement(case).__name__ == case.run.partition(":")[2], case.name


def check_scaling(record: dict[str, Any], case: str, throughput: str, counts: list[int]) -> None:
    """``case`` reports ``throughput`` at ``counts`` workers, and its speed-up and efficiency
    (speed-up / workers) above one worker, consistent with the throughputs."""
    values = record["results"][case]
    expected = {f"{throughput}_{n}" for n in counts}
    expected |= {f"{kind}_{n}" for n in counts[1:] for kind in ("speedup", "efficiency")}
    assert set(values) == expected
    for n in counts[1:]:
        speedup = values[f"{throughput}_{n}"] / values[f"{throughput}_1"]
        assert values[f"speedup_{n}"] == pytest.approx(speedup, rel=2e-3)
        assert values[f"efficiency_{n}"] == pytest.approx(speedup / n, rel=2e-3)
        assert record["cases"][case]["metrics"][f"efficiency_{n}"]["unit"] == "fraction"
    assert record["cases"][case]["scaling"] == dataclasses.asdict(CASES[case].scaling)


#: every case but slurm_scaling, which needs SLURM (test_slurm_scaling_runs_array_tasks)
LOCAL_CASES = [name for name in CASES if name != "slurm_scaling"]


@pytest.mark.slow
def test_quick_record_has_every_case() -> None:
    """Every case but SLURM's: four device workers (device and weak scaling) and a pool of
    two processes; 243 s here under a load average of 5 on 2 cores."""
    record = run_bench(LOCAL_CASES, "quick", progress=False)
    check_record(record, LOCAL_CASES)
    results = record["results"]
    assert set(results["training"]) == {"member_steps_per_s", "gflop_per_s"}
    assert set(results["renyi2_chunked"]) == {"entries_per_s"}
    assert set(results["zarr_io"]) == {"write_gb_per_s", "read_gb_per_s"}
    assert record["cases"]["zarr_io"]["metrics"]["read_gb_per_s"]["unit"] == "GB/s"
    check_scaling(record, "device_scaling", "member_steps_per_s", [1, 2])
    check_scaling(record, "process_scaling", "tasks_per_s", [1, 2])
    check_scaling(record, "weak_scaling", "member_steps_per_s", [1, 2])
    assert record["notes"]["weak_scaling"][-1] == "32 members per device"


def test_scaling_figures() -> None:
    values = scaling_figures({1: 10.0, 2: 15.0, 4: 20.0}, "rate")
    assert values == {
        "rate_1": 10.0,
        "rate_2": 15.0,
        "rate_4": 20.0,
        "speedup_2": 1.5,
        "efficiency_2": 0.75,
        "speedup_4": 2.0,
        "efficiency_4": 0.5,
    }
    # without one worker there is nothing to scale against
    assert scaling_figures({2: 15.0}, "rate") == {"rate_2": 15.0}


def test_slurm_scaling_without_slurm_is_skipped_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No sinfo/sbatch on PATH: slurm_scaling is skipped with a one-line note (not an
    error, so --fail-on-regression passes on a machine without SLURM)."""
    monkeypatch.setenv("PATH", str(tmp_path))
    record = run_bench(["slurm_scaling", "zarr_io"], "quick", progress=False)
    [note] = record["notes"]["slurm_scaling"]
    assert note.startswith("skipped: SLURM is not reachable: no sinfo/sbatch on PATH")
    assert "slurm/cluster.sh start" in note and record["errors"] == {}
    assert list(record["results"]) == ["zarr_io"]


def test_comparison_with_references(quick_record: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "ref.json"
    path.write_text(json.dumps(scaled_reference(quick_record, 100.0)))
    far_above = compare(quick_record, load_reference(path))
    statuses = {m["reference"]["status"] for m in far_above["metrics"].values()}
    assert statuses == {"regression"}
    assert len(far_above["regressions"]) == len(far_above["metrics"])
    entry = far_above["metrics"]["zarr_io.read_gb_per_s"]
    assert entry["reference"]["ratio"] == pytest.approx(0.01, rel=1e-3)
    assert entry["previous"] == {"status": "no-reference"}

    far_below = compare(quick_record, scaled_reference(quick_record, 0.01))
    assert {m["reference"]["status"] for m in far_below["metrics"].values()} == {"improvement"}
    assert far_below["regressions"] == []

    same = compare(quick_record, scaled_reference(quick_record, 1.0, drop="zarr_io.write_gb_per_s"))
    assert same["metrics"]["zarr_io.write_gb_per_s"]["reference"] == {"status": "no-reference"}
    others = {k: m for k, m in same["metrics"].items() if k != "zarr_io.write_gb_per_s"}
    assert {m["reference"]["status"] for m in others.values()} == {"ok"}


def test_direction_is_per_metric() -> None:
    """A lower-is-better metric regresses when it rises past the upper tolerance."""
    record = {
        "size": "quick",
        "results": {"zarr_io": {"write_gb_per_s": 10.0, "read_gb_per_s": 10.0}},
        "cases": {
            "zarr_io": {
                "metrics": {
                    "write_gb_per_s": {"unit": "GB/s", "better": "lower"},
                    "read_gb_per_s": {"unit": "GB/s", "better": "higher"},
                }
            }
        },
    }
    entries = {"value": 1.0, "tolerance": [-0.5, 0.5], "unit": "GB/s"}
    reference = {
        "size": "quick",
        "references": {"zarr_io.write_gb_per_s": entries, "zarr_io.read_gb_per_s": entries},
    }
    metrics = compare(record, reference)["metrics"]
    assert metrics["zarr_io.write_gb_per_s"]["reference"]["status"] == "regression"
    assert metrics["zarr_io.read_gb_per_s"]["reference"]["status"] == "improvement"
    with pytest.raises(ValueError, match="full figures"):
        compare(record, {**reference, "size": "full"})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"size": "medium"}, "size must be one of quick, full, gpu"),
        ({"references": {"zarr_io.speed": {}}}, "unknown metric 'zarr_io.speed'"),
        (
            {"references": {"zarr_io.read_gb_per_s": {"value": 0, "tolerance": [-0.5, None]}}},
            r"references.zarr_io.read_gb_per_s.value must be a number > 0",
        ),
        (
            {"references": {"zarr_io.read_gb_per_s": {"value": math.inf, "unit": "GB/s"}}},
            r"references.zarr_io.read_gb_per_s.value must be a number > 0",
        ),
        (
            {"references": {"zarr_io.read_gb_per_s": {"value": 1, "tolerance": [-math.inf, None]}}},
            r"references.zarr_io.read_gb_per_s.tolerance must be",
        ),
        (
            {
                "references": {
                    "zarr_io.read_gb_per_s": {"value": 1, "tolerance": [-0.5, None], "unit": "MB/s"}
                }
            },
            r"references.zarr_io.read_gb_per_s.unit must be 'GB/s', got 'MB/s'",
        ),
        (
            {
                "references": {
                    "zarr_io.read_gb_per_s": {"value": 1, "tolerance": [0.5], "unit": "GB/s"}
                }
            },
            r"references.zarr_io.read_gb_per_s.tolerance must be",
        ),
    ],
)
def test_bad_reference_is_one_line(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"system": "x", "size": "quick", "references": {}} | change))
    with pytest.raises(ValueError, match=message) as info:
        load_reference(path)
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
    assert set(summary["comparison"]) == {"zarr_io.write_gb_per_s", "zarr_io.read_gb_per_s"}
    reference = load_reference(saved)
    assert reference["measured"]["record"] == summary["record"]
    earlier = json.loads((records / "test-box-1.json").read_text())
    assert {m["reference"]["status"] for m in compare(earlier, reference)["metrics"].values()} == {
        "ok"
    }

    # the earlier record made 100x faster: the next run regresses against it
    faster = copy.deepcopy(earlier)
    faster["results"]["zarr_io"] = {k: v * 100 for k, v in earlier["results"]["zarr_io"].items()}
    (records / "test-box-1.json").write_text(json.dumps(faster))
    (records / "notes.json").write_text("[]")  # not a record: passed over
    second = parse([*argv, "--reference", str(saved), "--fail-on-regression"])
    with pytest.raises(SystemExit) as exit_info:
        second.run(second)
    assert exit_info.value.code == 1
    output = capsys.readouterr()
    summary = json.loads(output.out)
    # the table on stderr: value, unit, direction, and both judgements
    row = [line for line in output.err.splitlines() if line.startswith("zarr_io.read_gb")][-1]
    judged = summary["comparison"]["zarr_io.read_gb_per_s"]
    reference, previous = (f"{judged[k]['ratio']:.3g}x" for k in ("reference", "previous"))
    status = judged["reference"]["status"]
    assert row.split()[2:] == ["GB/s", "higher", reference, status, previous, "regression"]
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


def test_format_table_prints_the_table_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = parse(
        [
            *("bench", "--quick", "--cases", "zarr_io", "--format", "table"),
            *("--records", str(tmp_path), "--system", "table-box"),
        ]
    )
    assert args.run(args) is None  # nothing left for the JSON printer
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("nnqs bench: table-box, quick, record ")
    assert lines[1].split() == [
        "metric",
        "value",
        "unit",
        "better",
        "vs",
        "reference",
        "vs",
        "previous",
    ]
    assert [line.split()[0] for line in lines[3:]] == [
        "zarr_io.write_gb_per_s",
        "zarr_io.read_gb_per_s",
    ]
    assert all(line.split()[2:] == ["GB/s", "higher", "-", "-"] for line in lines[3:])


def other_system(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` as if from a bigger machine at full size: zarr writes 2x, reads 0.5x, a
    lower-is-better time 2x, one metric dropped and one added, other parameters."""
    b = copy.deepcopy(record)
    b["size"], b["system"]["name"] = "full", "big-box"
    b["cases"]["zarr_io"]["parameters"]["shape"] = [8192, 8192]
    zarr = b["results"]["zarr_io"]
    zarr["write_gb_per_s"] *= 2
    zarr["read_gb_per_s"] *= 0.5
    del b["results"]["kernel_gram"]["entries_per_s"]
    b["results"]["training"] = {"member_steps_per_s": 4000.0}
    b["cases"]["training"] = {"parameters": {}, "metrics": {"member_steps_per_s": {}}}
    b["cases"]["training"]["metrics"]["member_steps_per_s"] = {
        "unit": "member-steps/s",
        "better": "higher",
    }
    return b


def with_time(record: dict[str, Any], seconds: float) -> dict[str, Any]:
    """``record`` with a lower-is-better ``time_to_solution.seconds``."""
    record = copy.deepcopy(record)
    record["results"]["time_to_solution"] = {"seconds": seconds}
    record["cases"]["time_to_solution"] = {
        "parameters": {"spec": "quickstart"},
        "metrics": {"seconds": {"unit": "s", "better": "lower"}},
    }
    return record


def test_compare_records_of_two_systems(quick_record: dict[str, Any]) -> None:
    a = with_time(quick_record, 10.0)
    b = with_time(other_system(quick_record), 20.0)
    result = compare_records(a, b, names=("a.json", "b.json"))
    metrics = result["metrics"]
    assert metrics["zarr_io.write_gb_per_s"]["ratio"] == pytest.approx(2, rel=1e-3)
    assert metrics["zarr_io.write_gb_per_s"]["verdict"] == "B better"
    assert metrics["zarr_io.read_gb_per_s"]["ratio"] == pytest.approx(0.5, rel=1e-3)
    assert metrics["zarr_io.read_gb_per_s"]["verdict"] == "B worse"
    assert metrics["time_to_solution.seconds"] == {
        **{"a": 10.0, "b": 20.0, "unit": "s", "better": "lower"},
        **{"ratio": 2.0, "verdict": "B worse"},  # twice the time is worse
    }
    assert metrics["kernel_gram.entries_per_s"]["verdict"] == "only in A"
    assert metrics["kernel_gram.entries_per_s"]["b"] is None
    assert metrics["training.member_steps_per_s"]["verdict"] == "only in B"
    assert metrics["kernel_gram.entries_per_s_into_buffer"]["verdict"] == "same"
    assert result["warnings"] == [
        "warning: sizes differ (A quick, B full): the cases ran other problems, so B / A is "
        "not a like-for-like ratio (parameters below)"
    ]
    assert result["parameters"] == {"zarr_io": {"shape": [[1024, 1024], [8192, 8192]]}}
    assert (result["a"]["system"], result["b"]["system"]) == (a["system"]["name"], "big-box")


def test_compare_command_table_and_json(
    quick_record: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = [tmp_path / "a.json", tmp_path / "b.json"]
    for path, record in zip(paths, [quick_record, other_system(quick_record)], strict=True):
        write_json(path, record)
    args = parse(["bench", "compare", *map(str, paths)])
    assert args.run(args) is None
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"A: {paths[0]} (") and lines[1].startswith(f"B: {paths[1]} (big")
    assert lines[2].startswith("warning: sizes differ (A quick, B full)")
    assert lines[3] == "  zarr_io.shape: A [1024, 1024], B [8192, 8192]"
    assert lines[4].split() == ["metric", "A", "B", "unit", "better", "B/A", "verdict"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[6:]}
    assert rows["zarr_io.write_gb_per_s"][2:] == ["GB/s", "higher", "2", "B", "better"]
    only_in_a = ["-", "entries/s", "higher", "-", "only", "in", "A"]
    assert rows["kernel_gram.entries_per_s"][1:] == only_in_a
    as_json = parse(["bench", "compare", *map(str, paths), "--json"])
    result = as_json.run(as_json)
    assert result["metrics"]["zarr_io.read_gb_per_s"]["verdict"] == "B worse"
    with pytest.raises(ValueError, match=r"^no record file .*missing.json$"):
        as_json.run(parse(["bench", "compare", str(paths[0]), str(tmp_path / "missing.json")]))
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(ValueError, match=r"list.json: not an nnqs bench record"):
        load_record(tmp_path / "list.json")


def test_schema_1_record_reads_as_schema_2(quick_record: dict[str, Any], tmp_path: Path) -> None:
    """A schema 1 record (zarr_io in MB/s, scaling without efficiencies) reads as schema 2."""
    old = copy.deepcopy(quick_record)
    old["schema"] = 1
    zarr = old["results"]["zarr_io"] = {"write_mb_per_s": 468.1, "read_mb_per_s": 304.7}
    old["cases"]["zarr_io"]["metrics"] = {m: {"unit": "MB/s", "better": "higher"} for m in zarr}
    old["results"]["process_scaling"] = {"tasks_per_s_1": 0.3, "tasks_per_s_2": 0.18}
    old["results"]["process_scaling"]["speedup_2"] = 0.6
    old["cases"]["process_scaling"] = {"parameters": {}, "metrics": {}}
    write_json(tmp_path / "old.json", old)
    record = load_record(tmp_path / "old.json")
    assert record["schema"] == SCHEMA == 2
    assert record["results"]["zarr_io"] == {
        "write_gb_per_s": pytest.approx(0.4681),
        "read_gb_per_s": pytest.approx(0.3047),
    }
    assert record["cases"]["zarr_io"]["metrics"]["read_gb_per_s"]["unit"] == "GB/s"
    assert record["results"]["process_scaling"]["efficiency_2"] == 0.3
    assert record["cases"]["process_scaling"]["scaling"]["workers"] == "processes"


def scaling_record() -> dict[str, Any]:
    """A record of device_scaling (1, 2, 4 devices) and weak_scaling (1, 2), as run_bench
    writes one (metric declarations, scaling, notes)."""
    results = {
        "device_scaling": scaling_figures({1: 100.0, 2: 150.0, 4: 200.0}, "member_steps_per_s"),
        "weak_scaling": scaling_figures({1: 100.0, 2: 180.0}, "member_steps_per_s"),
    }
    cases = {
        name: {
            "parameters": {},
            "metrics": {m: dataclasses.asdict(CASES[name].metrics[m]) for m in values},
            "scaling": dataclasses.asdict(CASES[name].scaling),
        }
        for name, values in results.items()
    }
    system = {"name": "box", "git_commit": "abc", "cpu_count": 2, "devices": {"count": 1}}
    return {
        **{"schema": SCHEMA, "size": "quick", "system": system, "cases": cases},
        **{"results": results, "notes": {"weak_scaling": ["32 members per device"]}},
    }


def test_scaling_report_tables_and_figure(tmp_path: Path) -> None:
    write_json(tmp_path / "r.json", scaling_record())
    args = parse(["bench", "report", str(tmp_path / "r.json"), "--out", str(tmp_path / "out")])
    written = args.run(args)
    rows = written["tables"]["device_scaling"]["rows"]
    assert [(r["workers"], r["speedup"], r["efficiency"]) for r in rows] == [
        (1, 1.0, 1.0),
        (2, 1.5, 0.75),
        (4, 2.0, 0.5),
    ]
    text = (tmp_path / "out" / "scaling.md").read_text()
    assert "## device_scaling: strong scaling over devices" in text
    assert "| devices | member-steps/s | speed-up | efficiency |" in text
    assert "| 4 | 200 | 2 | 0.5 |" in text
    assert "## weak_scaling: weak scaling over devices" in text
    assert "| devices | member-steps/s | scaled speed-up | efficiency |" in text
    assert "| 2 | 180 | 1.8 | 0.9 |" in text and "- 32 members per device" in text
    for name in ("scaling.png", "scaling.pdf"):
        assert (tmp_path / "out" / name).stat().st_size > 1000
    assert written["figures"] == [str(tmp_path / "out" / n) for n in ("scaling.png", "scaling.pdf")]
    no_scaling = {**scaling_record(), "results": {}}
    write_json(tmp_path / "none.json", no_scaling)
    with pytest.raises(ValueError, match=r"none.json: no scaling case with results"):
        args.run(parse(["bench", "report", str(tmp_path / "none.json")]))


@pytest.mark.slow
@pytest.mark.slurm
def test_slurm_scaling_runs_array_tasks(slurm_cluster: Path, tmp_path: Path) -> None:
    """The quick sweep as one array element of two tasks, then as two of one task each."""
    overrides = {"slurm_scaling": {"directory": str(tmp_path)}}
    record = run_bench(["slurm_scaling"], "quick", progress=False, overrides=overrides)
    assert record["errors"] == {}
    check_scaling(record, "slurm_scaling", "tasks_per_s", [1, 2])
    notes = record["notes"]["slurm_scaling"]
    assert notes[0] == "2 tasks on profile local"
    arrays = re.fullmatch(
        r"1 at once: 1 array element\(s\) \(job (\d+)\); "
        r"2 at once: 2 array element\(s\) \(job (\d+)\)",
        notes[1],
    )
    assert arrays is not None and arrays[1] != arrays[2], notes[1]
    assert list(tmp_path.iterdir()) == []  # the stores were temporary


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
