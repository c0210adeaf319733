"""``nnqs export`` (analysis/export.py): a small real aggregated dynamics store exported to
netCDF and to CSV and read back (xarray, pandas) equal to the store, complex variables
re-assembled from their parts; bad ``--to`` values and existing outputs refused first."""

from __future__ import annotations

import json
from pathlib import Path

import suite  # noqa: F401  (first: enables JAX float64)

# isort: split

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from stores import tiny_dynamics

from nnqs import cli
from suite.store import SweepStore


@pytest.fixture(scope="module")
def aggregated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run and aggregated tiny dynamics store (TFIM 2x3, width 8, 4 steps)."""
    tmp = tmp_path_factory.mktemp("export")
    spec = tmp / "tiny.toml"
    spec.write_text(tiny_dynamics("tiny", seed=1, widths=[8], max_steps=4))
    store = tmp / "tiny.zarr"
    assert cli.main(["run", str(spec), "--store", str(store)]) == 0
    return store


def _equal(a: np.ndarray, b: np.ndarray) -> bool:
    return np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")


def test_netcdf_export_reads_back_equal(aggregated: Path, tmp_path: Path) -> None:
    out = tmp_path / "tiny.nc"
    assert cli.main(["export", str(aggregated), "--to", "netcdf", "--out", str(out)]) == 0
    stored = xr.open_zarr(aggregated)
    with xr.open_dataset(out, engine="scipy") as back:
        assert {"phi", "ensemble_mean"} <= {n for n, v in stored.items() if v.dtype.kind == "c"}
        for name, variable in stored.variables.items():
            values = variable.values
            if values.dtype.kind == "c":
                parts = back[f"{name}_real"].values + 1j * back[f"{name}_imag"].values
                assert _equal(parts, values), name
                assert back[f"{name}_imag"].attrs["complex_part"] == "imag"
            elif values.dtype.kind in "fiub":
                assert _equal(back[name].values.astype(values.dtype), values), name
            else:  # strings: coordinates and the manifest's JSON records
                assert back[name].values.tolist() == values.tolist(), name
        assert back["width"].attrs["units"] == "1"
        assert (
            back["learning_rate"].attrs["long_name"] == stored["learning_rate"].attrs["long_name"]
        )
        attrs = SweepStore(aggregated).attrs
        assert json.loads(back.attrs["spec"]) == attrs["spec"]
        assert json.loads(back.attrs["provenance"])["git_dirty"] in (True, False)
        assert {"spec", "provenance", "unindexed_dimensions"} <= set(
            back.attrs["json_attributes"].split()
        )
        records = [json.loads(r) for r in back["manifest"].values.tolist()]
        assert all(record["state"] == "done" for record in records)


def test_csv_export_is_one_tidy_file_per_variable(aggregated: Path, tmp_path: Path) -> None:
    out = tmp_path / "tiny.csv"
    assert cli.main(["export", str(aggregated), "--to", "csv", "--out", str(out)]) == 0
    stored = xr.open_zarr(aggregated)
    assert {p.stem for p in out.glob("*.csv")} == set(stored.data_vars)
    losses = pd.read_csv(out / "member_train_loss.csv", float_precision="round_trip")
    dims = ["train_size", "lr_factor", "width", "member", "step"]
    assert list(losses.columns) == [*dims, "member_train_loss"]
    expected = stored["member_train_loss"].to_dataframe().reset_index()
    np.testing.assert_array_equal(losses[dims].to_numpy(), expected[dims].to_numpy())
    np.testing.assert_array_equal(losses["member_train_loss"], expected["member_train_loss"])
    phi = pd.read_csv(out / "phi.csv", float_precision="round_trip")
    assert list(phi.columns) == ["basis", "phi_real", "phi_imag"]
    np.testing.assert_array_equal(phi["phi_real"] + 1j * phi["phi_imag"], stored["phi"].values)
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["variables"]["phi"]["attributes"]["units"] == "1"
    assert metadata["attributes"]["spec"]["sweep"]["name"] == "tiny"


def test_bad_format_and_existing_output_are_refused_before_any_work(
    aggregated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.nc"
    assert cli.main(["export", str(aggregated), "--to", "hdf5", "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert error == "nnqs: error: --to: expected one of netcdf, csv, got 'hdf5'"
    assert not out.exists()
    out.write_text("keep me")
    assert cli.main(["export", str(aggregated), "--to", "netcdf", "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"nnqs: error: --out: {out} exists") and "\n" not in error
    assert out.read_text() == "keep me"
    assert not list(tmp_path.glob(".*partial"))
    assert (
        cli.main(["export", str(aggregated), "--to", "netcdf", "--out", str(out), "--force"]) == 0
    )
    with xr.open_dataset(out, engine="scipy") as back:
        assert "phi_real" in back
