"""A sweep store exported for tools that do not read Zarr: one netCDF file, or a folder of
tidy CSV files (``nnqs export STORE --to netcdf|csv [--out PATH] [--force]``). Any sweep
store can be exported; before aggregation its aggregates are NaN.

netCDF is written by xarray's ``scipy`` engine (no further dependency), so in the
netCDF-3 64-bit-offset format, which has no complex, 64-bit integer or boolean type and
only string, number and number-list attributes. Hence:

* a complex variable ``x`` becomes two float64 variables ``x_real`` and ``x_imag`` (with
  ``x``'s attributes, ``long_name`` suffixed and ``complex_part`` set to ``real`` or
  ``imag``); re-assemble it as ``x_real + 1j * x_imag``;
* an attribute that is not a string or a number (the spec, the provenance, the
  un-indexed dimensions, booleans, ``None``) becomes its JSON text; the global
  attribute ``json_attributes`` lists, space-separated, every ``variable:attribute`` (or
  ``attribute`` for a global one) so encoded;
* xarray stores 64-bit integers as 32-bit ones (refusing values that do not fit),
  booleans as 8-bit integers and strings as character arrays;
* the ``manifest`` (one JSON record per task) stays a string variable.

CSV: one file per data variable, ``OUT/<variable>.csv``, in long ("tidy") form: a header
row, then one row per element, with one column per dimension (its coordinate value, or
the integer index of a dimension without coordinates) and the value in a column named
after the variable (complex: ``<variable>_real`` and ``<variable>_imag``); plus
``OUT/metadata.json`` with the global attributes and each variable's dimensions and
attributes. Floats are written in full (shortest round-trip) precision: pandas reads them
back exactly with ``read_csv(..., float_precision="round_trip")``. Each variable is held
in memory while its file is written.

Both are written next to their destination and renamed into place, so a failure leaves
nothing; an existing destination is refused unless ``force`` is given.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: export formats and the suffix of their default destination (``<store><suffix>``)
FORMATS = {"netcdf": ".nc", "csv": ".csv"}


def destination(
    store: str | os.PathLike[str], to: str, out: str | os.PathLike[str] | None, force: bool
) -> Path:
    """Where ``store`` is exported as ``to`` (default ``<store>.nc`` or ``<store>.csv/``),
    checked before any work: ``ValueError`` for an unknown format or an existing
    destination without ``force``."""
    if to not in FORMATS:
        raise ValueError(f"--to: expected one of {', '.join(FORMATS)}, got {to!r}")
    path = Path(out) if out is not None else Path(f"{os.fspath(store).rstrip('/')}{FORMATS[to]}")
    if path.exists() and not force:
        raise ValueError(f"--out: {path} exists; pass another --out, or --force to replace it")
    return path


def export_store(
    store: str | os.PathLike[str],
    to: str,
    out: str | os.PathLike[str] | None = None,
    force: bool = False,
) -> Path:
    """Export the sweep store at ``store`` as ``to`` (``netcdf`` or ``csv``; see the module
    docstring) into ``out``; return the path written."""
    import xarray as xr

    from suite.store import SweepStore

    path = destination(store, to, out, force)
    finalized = "finalized_unix" in SweepStore(store).attrs  # or a StoreError naming it
    data = xr.open_zarr(store, consolidated=finalized).drop_encoding()  # consolidated if so
    staging = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    try:
        if to == "netcdf":
            netcdf_dataset(data).to_netcdf(staging, engine="scipy", format="NETCDF3_64BIT")
        else:
            write_csv(data, staging)
        _remove(path)
        staging.rename(path)
    except BaseException:
        _remove(staging)
        raise
    return path


def netcdf_dataset(data: Any) -> Any:
    """``data`` (an ``xarray.Dataset``) in netCDF-3 terms: complex variables split into
    ``_real`` and ``_imag`` parts, attributes that are not strings or numbers as JSON."""
    import xarray as xr

    encoded: list[str] = []
    variables = {}
    for name, variable in data.variables.items():
        attrs = _plain_attributes(variable.attrs, f"{name}:", encoded)
        if variable.dtype.kind != "c":
            variables[name] = xr.Variable(variable.dims, variable.data, attrs)
            continue
        for part in ("real", "imag"):
            split = f"{name}_{part}"
            if split in data.variables:
                raise ValueError(f"variable {name!r}: cannot split it, {split!r} exists")
            label = f"{attrs.get('long_name', name)} ({part} part)"
            part_attrs = {**attrs, "long_name": label, "complex_part": part}
            variables[split] = xr.Variable(variable.dims, getattr(variable, part).data, part_attrs)
    coords = [name for name in variables if name in data.coords]
    result = xr.Dataset(variables).set_coords(coords)
    result.attrs = _plain_attributes(data.attrs, "", encoded)
    result.attrs["json_attributes"] = " ".join(encoded)
    return result


def write_csv(data: Any, folder: Path) -> None:
    """One tidy CSV per data variable of ``data`` and ``metadata.json`` into ``folder``."""
    folder.mkdir(parents=True)
    metadata: dict[str, Any] = {"attributes": data.attrs, "variables": {}}
    for name, variable in data.data_vars.items():
        metadata["variables"][name] = {"dims": list(variable.dims), "attributes": variable.attrs}
        frame = variable.to_dataframe()[[name]]
        if variable.dtype.kind == "c":
            values = frame.pop(name).to_numpy()
            frame[f"{name}_real"], frame[f"{name}_imag"] = values.real, values.imag
        frame.to_csv(folder / f"{name}.csv")
    (folder / "metadata.json").write_text(json.dumps(metadata, indent=2, default=str) + "\n")


def _plain_attributes(attrs: Mapping[str, Any], prefix: str, encoded: list[str]) -> dict[str, Any]:
    """``attrs`` with every value that is not a string or a number as its JSON text; the
    names so encoded (with ``prefix``) are appended to ``encoded``."""
    plain = {}
    for key, value in attrs.items():
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            plain[key] = value
        else:
            plain[key] = json.dumps(value, sort_keys=True, default=str)
            encoded.append(f"{prefix}{key}")
    return plain


def _remove(path: Path) -> None:
    """Remove the file or folder at ``path``, if there is one."""
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
