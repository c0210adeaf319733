"""Human-readable views of ``nnqs bench`` records (made by :mod:`analysis.bench.run`).

* :func:`metrics_table` - the summary of a run: per metric its value, unit, which way is
  better, and the ratio and verdict against the reference and the previous record;
* :func:`compare_records` / :func:`compare_table` - two records of any systems, metric by
  metric: A, B, unit, ``B / A`` and whether B is better or worse by the metric's direction,
  with a warning and the parameter differences where the cases did not run the same
  problem (other sizes, or overridden parameters);
* :func:`scaling_tables` / :func:`write_scaling_report` - the scaling cases of a record
  (those whose case entry declares ``scaling``): per worker count the throughput, the
  speed-up over one worker and the parallel efficiency, as Markdown tables and a figure
  (:func:`analysis.figures.scaling_figure`).

Records are self-describing (each case lists its metrics' unit and direction, and how it
scales), so nothing here depends on the cases this version of the suite declares.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: what the table says for a metric without a baseline
NONE = "-"


def _cell(value: Any) -> str:
    """A table cell: numbers to 4 significant digits, ``None`` as :data:`NONE`."""
    if value is None:
        return NONE
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def text_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """``rows`` under ``header`` in aligned columns (two spaces apart), for a terminal."""
    cells = [list(header)] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def _against(entry: Mapping[str, Any]) -> str:
    """``0.93x ok`` (value over baseline, then the status), or :data:`NONE`."""
    if entry.get("status", "no-reference") == "no-reference":
        return NONE
    return f"{entry['ratio']:.3g}x {entry['status']}"


def metrics_table(
    metrics: Mapping[str, Mapping[str, Any]], errors: Mapping[str, str], title: str
) -> str:
    """The summary of a run: ``metrics`` as :func:`analysis.bench.records.compare` returns them
    (``case.metric``: value, unit, better, and the ``reference`` and ``previous``
    judgements), then one line per failed case of ``errors``."""
    header = ["metric", "value", "unit", "better", "vs reference", "vs previous"]
    rows = [
        [
            key,
            float(e["value"]),
            e["unit"],
            e["better"],
            _against(e["reference"]),
            _against(e["previous"]),
        ]
        for key, e in metrics.items()
    ]
    lines = [title, text_table(header, rows)]
    lines += [f"FAILED {case}: {error}" for case, error in errors.items()]
    return "\n".join(lines)


# -- two records -----------------------------------------------------------------------


def _flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested parameters as ``{"spec.width": 32, ...}``."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, Mapping):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def parameter_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Per case run in both records, the parameters that differ: ``{name: [A, B]}``
    (``None`` where one record lacks the parameter)."""
    differences: dict[str, Any] = {}
    for case in [c for c in a["cases"] if c in b["cases"]]:
        pa, pb = (_flatten(r["cases"][case].get("parameters", {})) for r in (a, b))
        changed = {k: [pa.get(k), pb.get(k)] for k in {**pa, **pb} if pa.get(k) != pb.get(k)}
        if changed:
            differences[case] = changed
    return differences


def _verdict(va: float | None, vb: float | None, better: str) -> tuple[float | None, str]:
    """``B / A`` and ``B better`` / ``B worse`` / ``same`` by the direction ``better``."""
    if vb is None:
        return None, "only in A"
    if va is None:
        return None, "only in B"
    if not (va > 0 and math.isfinite(va) and math.isfinite(vb)):
        return None, "no ratio (A not > 0)"
    ratio = vb / va
    if ratio == 1:
        return ratio, "same"
    return ratio, "B better" if (ratio > 1) == (better == "higher") else "B worse"


def _metric(record: Mapping[str, Any], case: str, metric: str) -> tuple[Any, dict[str, Any]]:
    value = record["results"].get(case, {}).get(metric)
    return value, record["cases"].get(case, {}).get("metrics", {}).get(metric, {})


def _system(record: Mapping[str, Any], name: str) -> dict[str, Any]:
    system = record["system"]
    return {
        "record": name,
        "system": system.get("name"),
        "size": record["size"],
        "cpu_model": system.get("cpu_model"),
        "devices": system.get("devices"),
        "git_commit": system.get("git_commit"),
    }


def compare_records(
    a: Mapping[str, Any], b: Mapping[str, Any], names: tuple[str, str] = ("A", "B")
) -> dict[str, Any]:
    """Record ``b`` against record ``a`` (any systems): per ``case.metric`` of either, the
    values ``a`` and ``b``, ``unit``, ``better``, ``ratio`` (B / A) and ``verdict`` (``B
    better``, ``B worse``, ``same``, ``only in A``, ``only in B``, ``units differ``); the
    ``parameters`` that differ per case, ``warnings`` (one line each) when sizes or
    parameters differ, and both records' systems."""
    keys = [f"{c}.{m}" for r in (a, b) for c, values in r["results"].items() for m in values]
    metrics: dict[str, Any] = {}
    for key in dict.fromkeys(keys):
        case, _, metric = key.partition(".")
        (va, da), (vb, db) = _metric(a, case, metric), _metric(b, case, metric)
        unit, better = (da or db).get("unit"), (da or db).get("better", "higher")
        if va is not None and vb is not None and da.get("unit") != db.get("unit"):
            ratio, verdict = None, f"units differ ({da.get('unit')} vs {db.get('unit')})"
        else:
            ratio, verdict = _verdict(va, vb, better)
        metrics[key] = {"a": va, "b": vb, "unit": unit, "better": better}
        metrics[key] |= {"ratio": None if ratio is None else float(f"{ratio:.4g}")}
        metrics[key]["verdict"] = verdict
    differences = parameter_differences(a, b)
    warnings = []
    if a["size"] != b["size"]:
        warnings.append(
            f"warning: sizes differ (A {a['size']}, B {b['size']}): the cases ran other "
            "problems, so B / A is not a like-for-like ratio (parameters below)"
        )
    elif differences:
        warnings.append(
            f"warning: parameters differ in {', '.join(differences)}: B / A is not a "
            "like-for-like ratio there (parameters below)"
        )
    return {
        "a": _system(a, names[0]),
        "b": _system(b, names[1]),
        "warnings": warnings,
        "parameters": differences,
        "metrics": metrics,
    }


def compare_table(comparison: Mapping[str, Any]) -> str:
    """:func:`compare_records` for a terminal: both systems, the warnings, the parameter
    differences per case, and the table of metrics."""
    lines = [
        f"{side.upper()}: {s['record']} ({s['system']}, {s['size']}, commit "
        f"{str(s['git_commit'])[:10]})"
        for side, s in (("a", comparison["a"]), ("b", comparison["b"]))
    ]
    lines += comparison["warnings"]
    for case, changed in comparison["parameters"].items():
        lines += [f"  {case}.{k}: A {va!r}, B {vb!r}" for k, (va, vb) in changed.items()]
    header = ["metric", "A", "B", "unit", "better", "B/A", "verdict"]
    rows = [
        [key, m["a"], m["b"], m["unit"], m["better"], m["ratio"], m["verdict"]]
        for key, m in comparison["metrics"].items()
    ]
    return "\n".join([*lines, text_table(header, rows)])


# -- scaling ---------------------------------------------------------------------------


def scaling_tables(record: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per scaling case with results: its ``kind``, ``workers``, throughput ``metric`` and
    ``unit``, and ``rows`` of ``workers``, ``throughput``, ``speedup`` and ``efficiency``
    (1 and 1 at one worker, by definition; ``None`` where the record has no value)."""
    tables: dict[str, dict[str, Any]] = {}
    for case, entry in record["cases"].items():
        scaling, values = entry.get("scaling"), record["results"].get(case, {})
        if scaling is None or not values:
            continue
        pattern = re.compile(rf"{re.escape(scaling['throughput'])}_(\d+)")
        counts = sorted(int(m.group(1)) for k in values if (m := pattern.fullmatch(k)))
        rows = [
            {
                "workers": n,
                "throughput": values[f"{scaling['throughput']}_{n}"],
                "speedup": 1.0 if n == 1 else values.get(f"speedup_{n}"),
                "efficiency": 1.0 if n == 1 else values.get(f"efficiency_{n}"),
            }
            for n in counts
        ]
        unit = entry["metrics"][f"{scaling['throughput']}_{counts[0]}"]["unit"]
        tables[case] = {**scaling, "metric": scaling["throughput"], "unit": unit, "rows": rows}
    return tables


def _scaling_markdown(case: str, table: Mapping[str, Any], notes: Sequence[str]) -> list[str]:
    from analysis.report import markdown_table

    speedup = "scaled speed-up" if table["kind"] == "weak" else "speed-up"
    header = [table["workers"], table["unit"], speedup, "efficiency"]
    rows = [
        [r["workers"], r["throughput"], _cell(r["speedup"]), _cell(r["efficiency"])]
        for r in table["rows"]
    ]
    lines = [f"## {case}: {table['kind']} scaling over {table['workers']}", ""]
    lines += [*markdown_table(header, rows), ""]
    return lines + [f"- {note}" for note in notes] + ([""] if notes else [])


def write_scaling_report(
    record: Mapping[str, Any], out: Path, source: str = "record"
) -> dict[str, Any]:
    """``out/scaling.md`` (per scaling case of ``record``: a Markdown table of workers,
    throughput, speed-up and efficiency, and the case's notes) and ``out/scaling.png`` /
    ``.pdf`` (:func:`analysis.figures.scaling_figure`); what was written, and the tables.
    ``ValueError`` when the record holds no scaling case with results."""
    from analysis import figures

    tables = scaling_tables(record)
    if not tables:
        raise ValueError(
            f"record {source}: no scaling case with results (run nnqs bench --cases "
            "device_scaling process_scaling slurm_scaling weak_scaling)"
        )
    system = record["system"]
    devices = system.get("devices") or {}
    load = record.get("load_average", {}).get("start", [None])[0]
    lines = [
        f"# Scaling: {system.get('name')} ({record['size']})",
        "",
        f"Record `{source}`, commit {system.get('git_commit')}, {system.get('cpu_count')} "
        f"cores, {devices.get('count')} x {devices.get('kind')}, 1-minute load average "
        f"{_cell(load)} at the start. "
        "Speed-up = throughput(n) / throughput(1); efficiency = speed-up / n (1 is ideal; "
        "under weak scaling the problem grows with n, so efficiency = "
        "t(1 worker, M) / t(n workers, n M)).",
        "",
    ]
    for case, table in tables.items():
        lines += _scaling_markdown(case, table, record.get("notes", {}).get(case, []))
    out.mkdir(parents=True, exist_ok=True)
    paths = figures.save(figures.scaling_figure(tables), out, "scaling")
    lines += [f"![speed-up and efficiency against workers]({paths[0].name})", ""]
    (out / "scaling.md").write_text("\n".join(lines))
    return {
        "report": str(out / "scaling.md"),
        "figures": [str(p) for p in paths],
        "tables": tables,
    }
