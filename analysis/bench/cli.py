"""The ``nnqs bench`` command line: ``add_bench_parser`` registers ``bench`` (run the cases,
write the record, compare it) and its ``compare`` and ``report`` subcommands on ``nnqs``.

Registering the parser needs only the case names (:mod:`analysis.bench.cases`); what runs
the cases (:mod:`analysis.bench.run`, and with it JAX and the measurements) is imported
when ``nnqs bench`` runs them.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from analysis.bench.cases import CASES, RECORDS_DIR, SIZES
from analysis.bench.records import (
    REFERENCE_DIR,
    compare,
    load_record,
    load_reference,
    next_record_path,
    previous_record,
    reference_from_record,
    write_json,
)
from analysis.bench.report import (
    compare_records,
    compare_table,
    metrics_table,
    write_scaling_report,
)

_SYSTEM_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


def _check_cases(cases: Sequence[str] | None) -> list[str]:
    names = list(dict.fromkeys(cases or CASES))
    unknown = [name for name in names if name not in CASES]
    if unknown:
        raise ValueError(f"--cases: unknown case {unknown[0]!r} (cases: {', '.join(CASES)})")
    return names


def _save_reference(path: Path, record: Mapping[str, Any], out: Path) -> None:
    """``--save-reference``: ``record`` (written to ``out``) as a reference file."""
    measured = {
        "command": " ".join(["nnqs", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d", time.gmtime(record["system"]["created_unix"])),
        "record": str(out),
        "git_commit": record["system"]["git_commit"],
        "load_average": record["load_average"],
    }
    write_json(path, reference_from_record(record, measured))


def _emit(args: argparse.Namespace, summary: dict[str, Any], failed: bool) -> dict[str, Any] | None:
    """The human-readable table of ``summary``: on stdout with ``--format table`` (then no
    JSON), else on stderr and the summary as JSON on stdout; exit 1 when ``failed``."""
    title = (
        f"nnqs bench: {summary['system']}, {summary['size']}, record {summary['record']}; "
        f"reference {summary['reference']}; previous {summary['previous']}"
    )
    table = metrics_table(summary["comparison"], summary["errors"], title)
    if args.format == "table":
        print(table)
    else:
        print(table, file=sys.stderr)
    if failed:
        if args.format != "table":
            json.dump(summary, sys.stdout, indent=2)
            sys.stdout.write("\n")
        raise SystemExit(1)
    return None if args.format == "table" else summary


def _given_reference(path: Path | None, size: str) -> dict[str, Any] | None:
    """``--reference``: the file at ``path`` (none without one), checked, of ``size``."""
    if path is None:
        return None
    if not path.is_file():
        raise ValueError(f"--reference: no file {path}")
    reference = load_reference(path)
    if reference["size"] != size:
        raise ValueError(
            f"--reference: {path} holds {reference['size']} figures, this is a {size} run"
        )
    return reference


def _system_reference(
    system: str, size: str
) -> tuple[Path | None, dict[str, Any] | None, str | None]:
    """The reference file of ``system`` in :data:`REFERENCE_DIR`: its path and contents when
    it holds ``size`` figures, else a note saying which it holds (all ``None`` without)."""
    path = REFERENCE_DIR / f"{system}.json"
    if not path.is_file():
        return None, None, None
    candidate = load_reference(path)
    if candidate["size"] == size:
        return path, candidate, None
    return None, None, f"{REFERENCE_DIR / system}.json holds {candidate['size']} figures only"


def _cmd_bench(args: argparse.Namespace) -> dict[str, Any] | None:
    """``nnqs bench``: run, write the record, compare; the summary (a table on stderr, and
    JSON on stdout; or the table alone on stdout)."""
    from analysis.bench.run import run_bench, submit_slurm

    names = _check_cases(args.cases)
    if args.quick and args.size not in (None, "quick"):
        raise ValueError(f"--quick and --size {args.size} contradict each other")
    size = "quick" if args.quick else args.size or "full"
    if args.system is not None and not _SYSTEM_NAME.match(args.system):
        raise ValueError(f"--system: {args.system!r} must be lower-case letters, digits, . _ -")
    reference_path = Path(args.reference) if args.reference else None
    reference = _given_reference(reference_path, size)
    records = Path(args.records)
    if args.executor == "slurm":
        record = submit_slurm(names, size, args.system, args.profile, records / "slurm")
    else:
        record = run_bench(names, size, args.system)
    system = record["system"]["name"]
    note = None
    if reference_path is None:
        reference_path, reference, note = _system_reference(system, size)
    out = Path(args.out) if args.out else next_record_path(records, system)
    previous = previous_record(records, record, exclude=out)
    write_json(out, record)
    comparison = compare(record, reference, previous[1] if previous else None)
    summary: dict[str, Any] = {
        "record": str(out),
        "system": system,
        "size": size,
        "executor": args.executor,
        "slurm": record["system"].get("slurm"),
        "seconds": record["seconds"],
        "results": record["results"],
        "errors": record["errors"],
        "reference": str(reference_path) if reference is not None else None,
        **({"reference_note": note} if note else {}),
        "previous": str(previous[0]) if previous else None,
        "regressions": comparison["regressions"],
        "improvements": comparison["improvements"],
        "comparison": comparison["metrics"],
    }
    if args.save_reference:
        _save_reference(Path(args.save_reference), record, out)
        summary["reference_saved"] = args.save_reference
    failed = args.fail_on_regression and bool(comparison["regressions"] or record["errors"])
    return _emit(args, summary, failed)


def _load_records(*paths: str) -> list[dict[str, Any]]:
    """The records at ``paths`` (:func:`load_record`), each path's file checked first."""
    for path in paths:
        if not Path(path).is_file():
            raise ValueError(f"no record file {path}")
    return [load_record(Path(path)) for path in paths]


def _cmd_compare(args: argparse.Namespace) -> dict[str, Any] | None:
    """``nnqs bench compare A B``: B against A per metric; a table, or JSON (``--json``)."""
    a, b = _load_records(args.a, args.b)
    comparison = compare_records(a, b, names=(args.a, args.b))
    if args.json:
        return comparison
    print(compare_table(comparison))
    return None


def _cmd_report(args: argparse.Namespace) -> dict[str, Any]:
    """``nnqs bench report RECORD``: scaling tables (Markdown) and figure in ``--out``."""
    (record,) = _load_records(args.record)
    out = Path(args.out) if args.out else Path(args.record).with_suffix(".report")
    return write_scaling_report(record, out, source=args.record)


def add_bench_parser(commands: Any) -> argparse.ArgumentParser:
    """Register ``bench`` on the ``nnqs`` subcommands (``parser.add_subparsers()``)."""
    bench = commands.add_parser(
        "bench",
        help="performance suite: a JSON record, compared with references and earlier records",
    )
    bench.add_argument("--quick", action="store_true", help="the small sizes (--size quick)")
    bench.add_argument(
        "--size",
        choices=SIZES,
        help="quick: seconds (tests); full: a real run here (default); gpu: one modern GPU",
    )
    bench.add_argument(
        "--cases", nargs="+", metavar="NAME", help=f"cases to run (default all: {', '.join(CASES)})"
    )
    bench.add_argument("--out", help="record path (default <records>/<system>-<n>.json)")
    bench.add_argument("--system", help="system name (default: from the CPU model, cores and GPUs)")
    bench.add_argument(
        "--reference", help="reference file (default analysis/references/<system>.json)"
    )
    bench.add_argument(
        "--records", default=str(RECORDS_DIR), help="records directory (default runs/bench)"
    )
    bench.add_argument(
        "--executor",
        choices=("local", "slurm"),
        default="local",
        help="local: in this process; slurm: as one SLURM job on --profile (waits for it)",
    )
    bench.add_argument("--profile", default="local", help="slurm: cluster profile name or path")
    bench.add_argument(
        "--fail-on-regression",
        action="store_true",
        help="exit with status 1 on a regression or a failed case",
    )
    bench.add_argument(
        "--save-reference",
        metavar="PATH",
        help="also write this run's figures as a reference file (tolerance -50%%, no upper)",
    )
    bench.add_argument(
        "--format",
        choices=("json", "table"),
        default="json",
        help="json: the summary as JSON on stdout, the table on stderr (default); "
        "table: the table alone on stdout",
    )
    bench.set_defaults(run=_cmd_bench)
    _add_record_commands(bench)
    return bench


def _add_record_commands(bench: argparse.ArgumentParser) -> None:
    """``nnqs bench compare A B`` and ``nnqs bench report RECORD`` (records already made;
    the options of ``nnqs bench`` itself apply to a run only)."""
    commands = bench.add_subparsers(
        dest="bench_command", metavar="{compare,report}", title="on records already made"
    )
    compare_parser = commands.add_parser(
        "compare", help="two records (any systems) metric by metric: B / A, better or worse"
    )
    compare_parser.add_argument("a", metavar="A.json", help="the record compared against")
    compare_parser.add_argument("b", metavar="B.json", help="the record compared")
    compare_parser.add_argument("--json", action="store_true", help="JSON instead of a table")
    compare_parser.set_defaults(run=_cmd_compare)
    report = commands.add_parser(
        "report", help="scaling cases of a record: efficiency tables (Markdown) and a figure"
    )
    report.add_argument("record", metavar="RECORD.json")
    report.add_argument("--out", help="output folder (default RECORD.report next to it)")
    report.set_defaults(run=_cmd_report)
