"""``nnqs bench`` records and references: the record file (:data:`SCHEMA`, where runs
go, reading with the schema 1 upgrade, the previous record of a system), the reference
files of ``analysis/references/`` (:data:`REFERENCE_DIR`), and the ReFrame-style
comparison of a record with both (:func:`judge`, :func:`compare`)."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from msgspec import Meta, Struct

from analysis.bench.cases import CASES, SIZES
from jobs.typed import FLOAT_MAX, Positive, convert, message

#: the reference files of the systems, ``<system>.json`` (package data of ``analysis``)
REFERENCE_DIR = Path(__file__).resolve().parents[1] / "references"
#: 2: zarr_io in GB/s (was MB/s), scaling cases with efficiencies (:func:`load_record`
#: reads schema 1 records as 2)
SCHEMA = 2
#: tolerance of a comparison with an earlier record, or with a reference saved by
#: ``--save-reference``: a drop to half is a regression, no rise is flagged
DEFAULT_TOLERANCE: tuple[float | None, float | None] = (-0.5, None)


def next_record_path(records: Path, system: str) -> Path:
    """``<records>/<system>-<n>.json`` with ``n`` the next free integer (from 1)."""
    pattern = re.compile(rf"{re.escape(system)}-(\d+)\.json")
    taken = [int(m.group(1)) for p in records.glob("*.json") if (m := pattern.fullmatch(p.name))]
    return records / f"{system}-{max(taken, default=0) + 1}.json"


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` to ``path`` whole (a temporary file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(data, indent=1) + "\n")
    partial.replace(path)


#: metrics renamed since schema 1: ``case.old -> (new, factor to the new unit, new unit)``
_RENAMED_V1 = {
    "zarr_io.write_mb_per_s": ("write_gb_per_s", 1e-3, "GB/s"),
    "zarr_io.read_mb_per_s": ("read_gb_per_s", 1e-3, "GB/s"),
}


def _upgrade_v1(record: dict[str, Any]) -> None:
    """A schema 1 record as schema 2, in place: MB/s metrics renamed to GB/s, and the
    scaling cases' declarations and efficiencies (``speedup_n / n``) added."""
    for key, (new, factor, unit) in _RENAMED_V1.items():
        case, _, old = key.partition(".")
        if old in record["results"].get(case, {}):
            record["results"][case][new] = record["results"][case].pop(old) * factor
            record["cases"][case]["metrics"].pop(old, None)
            record["cases"][case]["metrics"][new] = {"unit": unit, "better": "higher"}
    for name, values in record["results"].items():
        scaling = CASES[name].scaling if name in CASES else None
        if scaling is None:
            continue
        record["cases"][name]["scaling"] = dataclasses.asdict(scaling)
        for metric in [m for m in values if m.startswith("speedup_")]:
            n = int(metric.removeprefix("speedup_"))
            values[f"efficiency_{n}"] = float(f"{values[metric] / n:.4g}")
            record["cases"][name]["metrics"][f"efficiency_{n}"] = {
                "unit": "fraction",
                "better": "higher",
            }
    record["schema"] = 2


def load_record(path: Path) -> dict[str, Any]:
    """Read a record written by :func:`analysis.bench.run.run_bench` (a schema 1 record is
    upgraded to the current schema); ``ValueError`` naming the file when it is not one."""
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"record {path}: not valid JSON: {error}") from None
    keys = ("schema", "size", "system", "cases", "results")
    if not isinstance(record, dict) or not all(key in record for key in keys):
        raise ValueError(f"record {path}: not an nnqs bench record (needs {', '.join(keys)})")
    if record["schema"] not in (1, SCHEMA):
        raise ValueError(f"record {path}: schema {record['schema']!r}, this nnqs reads 1-{SCHEMA}")
    if record["schema"] == 1:
        _upgrade_v1(record)
    return record


def previous_record(
    records: Path, record: Mapping[str, Any], exclude: Path | None = None
) -> tuple[Path, dict[str, Any]] | None:
    """The most recent record in ``records`` made before ``record`` on the same system
    (name) at the same size, and its path; files that are not records are passed over."""
    found: tuple[float, Path, dict[str, Any]] | None = None
    created = record["system"]["created_unix"]
    for path in sorted(records.glob("*.json")):
        if exclude is not None and path.resolve() == exclude.resolve():
            continue
        try:
            other = load_record(path)
            same = (other["system"]["name"], other["size"]) == (
                record["system"]["name"],
                record["size"],
            )
            when = float(other["system"]["created_unix"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if same and when < created and (found is None or when > found[0]):
            found = (when, path, other)
    return None if found is None else (found[1], found[2])


# -- references and comparison -----------------------------------------------------


#: ``[lower, upper]``: fractions of the reference, either ``None`` (unbounded)
Tolerance = Annotated[
    tuple[
        Annotated[float, Meta(ge=-FLOAT_MAX, le=0)] | None,
        Annotated[float, Meta(ge=0, le=FLOAT_MAX)] | None,
    ],
    Meta(description="[lower <= 0 or null, upper >= 0 or null] (fractions of the value)"),
]


class Entry(Struct, frozen=True, forbid_unknown_fields=True):
    """The reference of one ``case.metric``; ``unit`` is the metric's declared one."""

    value: Positive
    unit: str
    tolerance: Tolerance
    samples: Annotated[tuple[Positive, ...], Meta(description="a list of numbers > 0")] = ()


class Reference(Struct, frozen=True, forbid_unknown_fields=True):
    """A reference file; ``references`` maps ``case.metric`` to an :class:`Entry`."""

    system: str
    size: Literal[SIZES]
    references: dict[str, Any]
    measured: dict[str, Any] = {}


def load_reference(path: Path) -> dict[str, Any]:
    """Read and check a reference file (:class:`Reference`): declared metrics with their
    declared unit. ``ValueError`` (one line, naming the file and the key) otherwise."""
    where = f"reference {path}"
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{where}: not valid JSON: {error}") from None
    for key, entry in convert(data, Reference, where).references.items():
        case, _, metric = key.partition(".")
        if case not in CASES or metric not in CASES[case].metrics:
            raise ValueError(f"{where}: unknown metric {key!r} (cases: {', '.join(CASES)})")
        unit = CASES[case].metrics[metric].unit
        # one entry at a time: msgspec's path of a dict value does not name its key
        found = convert(entry, Entry, where, f"references.{key}").unit
        if found != unit:
            raise ValueError(
                f"{where}: {message(f'references.{key}.unit', f'must be {unit!r}', found)}"
            )
    return data


def reference_from_record(record: Mapping[str, Any], measured: Mapping[str, Any]) -> dict[str, Any]:
    """A reference file holding every value of ``record`` with :data:`DEFAULT_TOLERANCE`."""
    return {
        "system": record["system"]["name"],
        "size": record["size"],
        "measured": dict(measured),
        "references": {
            f"{case}.{metric}": {
                "value": value,
                "tolerance": list(DEFAULT_TOLERANCE),
                "unit": record["cases"][case]["metrics"][metric]["unit"],
            }
            for case, values in record["results"].items()
            for metric, value in values.items()
        },
    }


def judge(
    value: float,
    baseline: float,
    tolerance: tuple[float | None, float | None],
    better: str,
) -> dict[str, Any]:
    """ReFrame's check: ``value`` within ``baseline x [1 + lower, 1 + upper]`` is ``ok``;
    outside on the worse side (below for ``better == "higher"``) a ``regression``, on the
    better side an ``improvement``."""
    ratio = value / baseline
    lower, upper = tolerance
    below = lower is not None and ratio < 1 + lower
    above = upper is not None and ratio > 1 + upper
    worse, finer = (below, above) if better == "higher" else (above, below)
    status = "regression" if worse else "improvement" if finer else "ok"
    return {
        "value": baseline,
        "ratio": float(f"{ratio:.4g}"),
        "tolerance": [lower, upper],
        "status": status,
    }


def compare(
    record: Mapping[str, Any],
    reference: Mapping[str, Any] | None = None,
    previous: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Score every metric of ``record`` against ``reference`` (a :func:`load_reference`
    file of the same size) and against ``previous`` (an earlier record; the tolerance of
    the metric's reference, else :data:`DEFAULT_TOLERANCE`).

    Returns ``metrics``: per ``case.metric`` its ``value``, ``unit``, ``better`` and, under
    ``reference`` and ``previous``, the baseline ``value``, ``ratio``, ``tolerance`` and
    ``status`` (``ok``, ``regression``, ``improvement``; ``no-reference`` without a
    baseline); and the ``regressions`` and ``improvements`` as lists.
    """
    if reference is not None and reference["size"] != record["size"]:
        raise ValueError(
            f"the reference holds {reference['size']} figures, the record is {record['size']}"
        )
    references = reference["references"] if reference is not None else {}
    result: dict[str, Any] = {"metrics": {}, "regressions": [], "improvements": []}
    for case, values in record["results"].items():
        declared = record["cases"][case]["metrics"]
        for metric, value in values.items():
            key, better = f"{case}.{metric}", declared[metric]["better"]
            entry: dict[str, Any] = {"value": value, "unit": declared[metric]["unit"]}
            entry["better"] = better
            ref = references.get(key)
            tolerance = tuple(ref["tolerance"]) if ref else DEFAULT_TOLERANCE
            old = (previous or {}).get("results", {}).get(case, {}).get(metric)
            baselines = {"reference": ref["value"] if ref else None, "previous": old}
            for against, baseline in baselines.items():
                if baseline is None or not baseline > 0:
                    entry[against] = {"status": "no-reference"}
                    continue
                entry[against] = judge(value, baseline, tolerance, better)
                status = entry[against]["status"]
                if status != "ok":
                    result["regressions" if status == "regression" else "improvements"].append(
                        {"metric": key, "against": against, "value": value, "baseline": baseline}
                        | {"ratio": entry[against]["ratio"]}
                    )
            result["metrics"][key] = entry
    return result
