"""A store that describes itself (suite/store.py, jobs/studies/): every array of every
study's store, created by the real code path (:func:`jobs.sweep.open_sweep`), carries a
non-empty ``long_name``, ``units`` and ``description``; every dimension has a coordinate
array or its reason in the ``unindexed_dimensions`` attribute; arrays NaN-padded across
train sizes say so; the provenance records whether the checkout had uncommitted changes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import suite  # noqa: F401  (first: enables JAX float64)

# isort: split

import numpy as np
import pytest
import xarray as xr
import zarr
from stores import tiny_dynamics

from jobs.spec import load_spec
from jobs.studies.base import UNINDEXED
from jobs.sweep import open_sweep
from suite.store import MANIFEST, ArraySpec, StoreError, SweepStore, git_state

ENTANGLEMENT = """
[sweep]
name = "ent"
study = "entanglement"
[grid]
widths = [8]
architectures = ["cosnet", "relu"]
[ensemble]
members = 4
shard_size = 2
[entanglement]
n_sites = 4
"""

KERNELS = """
[sweep]
name = "ker"
study = "kernels"
[target]
model = "tfim"
lx = 2
ly = 2
[grid]
widths = [8]
train_sizes = [4, 6]
[ensemble]
members = 2
shard_size = 2
[kernels]
full = true
"""

SPECS = {
    "dynamics": tiny_dynamics("dyn", seed=0, widths=[8], max_steps=4),
    "entanglement": ENTANGLEMENT,
    "kernels": KERNELS,
}


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A freshly created (not run) store of each built-in study."""
    tmp = tmp_path_factory.mktemp("described")
    paths = {}
    for study, text in SPECS.items():
        spec_path = tmp / f"{study}.toml"
        spec_path.write_text(text)
        paths[study] = open_sweep(load_spec(spec_path), tmp / f"{study}.zarr").path
    return paths


@pytest.mark.parametrize("study", list(SPECS))
def test_every_array_has_a_long_name_units_and_description(
    stores: dict[str, Path], study: str
) -> None:
    group = zarr.open_group(stores[study], mode="r")
    names = [name for name, _ in group.arrays()]
    assert MANIFEST in names and len(names) > 5
    for name, array in group.arrays():
        for key in ("long_name", "units", "description"):
            value = array.attrs.get(key)
            assert isinstance(value, str) and value.strip(), (study, name, key)
    data = xr.open_zarr(
        stores[study], consolidated=False
    )  # xarray sees them as the variables' attributes
    assert all(variable.attrs["units"] for variable in data.variables.values())


@pytest.mark.parametrize("study", list(SPECS))
def test_every_dimension_is_indexed_or_says_why_not(stores: dict[str, Path], study: str) -> None:
    group = zarr.open_group(stores[study], mode="r")
    arrays = dict(group.arrays())
    reasons = SweepStore(stores[study]).attrs["unindexed_dimensions"]
    dims = {dim for array in arrays.values() for dim in array.metadata.dimension_names}
    for dim in dims:
        coordinate = arrays.get(dim)
        if coordinate is not None and coordinate.metadata.dimension_names == (dim,):
            assert dim not in reasons, (study, dim)
        else:
            assert reasons[dim].strip(), (study, dim)
    assert set(reasons) <= dims
    assert {dim: reasons[dim] for dim in reasons if dim != "task"} == {
        dim: UNINDEXED[dim] for dim in reasons if dim != "task"
    }


def test_arrays_padded_across_train_sizes_say_so(stores: dict[str, Path]) -> None:
    """Kernels at B = 4 and 6: the spectrum of B = 4 is NaN beyond 2B = 8 of 12 entries,
    and ``Theta(basis, train)`` beyond its 4 train points; both descriptions say NaN."""
    store = SweepStore(stores["kernels"])
    spectrum = store.read("ntk_spectrum")
    assert np.isfinite(spectrum[0, :8]).all() and np.isnan(spectrum[0, 8:]).all()
    assert np.isfinite(spectrum[1]).all()
    theta = store.read("ntk_basis_train")
    assert np.isfinite(theta[0, :, :, :4]).all() and np.isnan(theta[0, :, :, 4:]).all()
    for name in ("ntk_spectrum", "ntk_basis_train"):
        assert "NaN" in store.array(name).attrs["description"], name
    assert "NaN" not in store.array("ntk_train").attrs["description"]


def test_an_array_without_units_or_a_dimension_without_reason_is_refused(
    tmp_path: Path,
) -> None:
    with pytest.raises(ValueError, match="'x': units must be non-empty"):
        ArraySpec("x", ("a",), (2,), (2,), "<f8", long_name="x", units=" ", description="d")
    about = {"long_name": "x", "units": "1", "description": "d"}
    arrays = [ArraySpec("x", ("a",), (2,), (2,), "<f8", **about)]
    with pytest.raises(StoreError, match="dimension 'a': expected a coordinate array"):
        SweepStore.create(tmp_path / "s.zarr", arrays, {}, "f", 1)
    assert not (tmp_path / "s.zarr").exists()
    store = SweepStore.create(tmp_path / "s.zarr", arrays, {}, "f", 1, unindexed={"a": "why"})
    reasons = store.attrs["unindexed_dimensions"]
    assert reasons["a"] == "why" and reasons["task"].startswith("task id") and len(reasons) == 2
    assert store.array("x").attrs["units"] == "1"


def _git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        check=True,
        capture_output=True,
    )


def test_provenance_says_whether_the_checkout_was_dirty(
    tmp_path: Path, stores: dict[str, Path]
) -> None:
    assert git_state(tmp_path) == {"git_commit": None, "git_dirty": None}  # not a checkout
    (tmp_path / "f.txt").write_text("one")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "f.txt")
    _git(tmp_path, "commit", "-q", "-m", "one")
    clean = git_state(tmp_path)
    assert clean["git_dirty"] is False and len(clean["git_commit"]) == 40
    (tmp_path / "untracked.txt").write_text("new")
    assert git_state(tmp_path)["git_dirty"] is False  # untracked files do not count
    (tmp_path / "f.txt").write_text("two")
    assert git_state(tmp_path) == {"git_commit": clean["git_commit"], "git_dirty": True}
    provenance = SweepStore(stores["entanglement"]).attrs["provenance"]
    assert provenance["git_dirty"] in (True, False)  # this checkout is a git checkout
