"""Sweep specs (jobs/spec.py): the shipped examples, fingerprints, and refusing bad specs.

A bad spec must fail before anything runs, with one line naming the field, and leave
nothing behind; a store that holds another sweep must be left byte for byte as it was.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pytest

import suite  # noqa: F401  (enables float64)
from jobs.spec import (
    SPEC_DIR,
    SpecError,
    load_spec,
    parse_spec,
    target_dimension,
)
from jobs.studies import base as studies_base
from jobs.studies import check_memory, expand, grid_axes, memory_estimates
from nnqs import cli

SHIPPED = sorted(path.stem for path in SPEC_DIR.glob("*.toml"))
#: (grid points, shards per point) of the specs this suite ships
EXPECTED_TASKS = {
    "quickstart": (2 * 1 * 2, 2),
    "paper-tfim": (5 * 1 * 4, 8),
    "paper-hubbard": (4 * 1 * 4, 8),
    "paper-entanglement": (3 * 3, 4),
    "paper-entanglement-s0": (8, 4),
    "scaling": (1, 16),
    "scale-members": (1, 16),
    "scale-tfim4x4": (2 * 1 * 2, 2),
    "paper-hubbard-rate": (4 * 1 * 4, 1),
    "ground-state-tfim": (1 * 4, 4),
    "ground-state-tfim-3x3": (1 * 4, 4),
    "fidelity-tfim": (1 * 4, 4),
    "tomography-tfim": (1 * 4, 4),
    "ground-state-hubbard": (1 * 4, 4),
    "paper-hubbard-linearised": (1 * 1 * 4, 2),
}


# ---------------------------------------------------------------------------------------
# the shipped specs
# ---------------------------------------------------------------------------------------


def test_the_example_specs_are_shipped() -> None:
    assert set(EXPECTED_TASKS) <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_spec_expands_to_its_tasks(name: str) -> None:
    spec = load_spec(name)
    assert spec.source == f"{name}.toml"
    assert spec.sweep.name == name
    members, size = spec.ensemble.members, spec.ensemble.shard_size
    points = math.prod(len(values) for values in grid_axes(spec).values())
    shards = math.ceil(members / size)
    if name in EXPECTED_TASKS:
        assert (points, shards) == EXPECTED_TASKS[name]

    tasks = expand(spec)
    assert len(tasks) == points * shards
    assert tasks == expand(load_spec(name))  # deterministic
    assert [task.id for task in tasks] == list(range(len(tasks)))

    by_point: dict[tuple[int, ...], list[int]] = {}
    for task in tasks:
        assert 0 < task.stop - task.start <= size
        by_point.setdefault(task.point, []).extend(task.members.tolist())
    assert len(by_point) == points
    for covered in by_point.values():
        assert sorted(covered) == list(range(members))  # each member exactly once


def test_paper_dynamics_specs_are_the_papers_settings() -> None:
    tfim, hubbard = load_spec("paper-tfim"), load_spec("paper-hubbard")
    for spec in (tfim, hubbard):
        assert spec.sweep.study == "dynamics" and spec.sweep.dtype == "float32"
        assert (spec.network.kind, spec.network.activation, spec.network.depth) == (
            "decoupled",
            "relu",
            1,
        )
        assert spec.grid.widths == (64, 256, 1024, 4096)
        assert spec.grid.lr_factors == (0.5,)
        assert (spec.ensemble.members, spec.ensemble.shard_size) == (256, 32)
        assert (spec.training.log_points, spec.training.max_steps) == (20, 0)
    assert tfim.target["model"] == "tfim" and (tfim.target["lx"], tfim.target["ly"]) == (3, 3)
    assert tfim.grid.train_sizes == (16, 32, 64, 128, 256)
    assert hubbard.target["model"] == "hubbard"
    dimension = target_dimension(hubbard)
    assert dimension == 225
    assert max(hubbard.grid.train_sizes) < dimension  # a test set remains


def test_paper_entanglement_and_scaling_specs() -> None:
    ent = load_spec("paper-entanglement")
    assert ent.sweep.study == "entanglement"
    assert ent.entanglement.n_sites == 12
    assert ent.grid.architectures == ("cosnet", "gaussnet", "relu")
    assert ent.grid.widths == (400, 1000, 4000)
    assert (ent.ensemble.members, ent.ensemble.shard_size) == (100, 25)
    assert (ent.grid.cosnet_s0, ent.entanglement.gaussnet_s0) == ((10.0,), 1.0)
    assert ent.entanglement.gaussnet_sb == 0.0

    scaling = load_spec("scaling")
    assert scaling.sweep.study == "dynamics"
    assert (scaling.grid.widths, scaling.grid.train_sizes) == ((1024,), (128,))
    assert (scaling.ensemble.members, scaling.ensemble.shard_size) == (1024, 64)
    assert scaling.training.max_steps == 200


@pytest.mark.parametrize("name", SHIPPED)
def test_to_dict_round_trips(name: str) -> None:
    spec = load_spec(name)
    assert parse_spec(spec.to_dict(), spec.source) == spec
    # as the store keeps it: JSON attributes (tuples become lists)
    stored = json.loads(json.dumps(spec.to_dict()))
    again = parse_spec(stored, spec.source)
    assert again == spec
    assert again.fingerprint() == spec.fingerprint()


# ---------------------------------------------------------------------------------------
# fingerprints
# ---------------------------------------------------------------------------------------

#: a small valid dynamics spec as parsed TOML (TFIM 2x2: D = 16)
TINY: dict[str, Any] = {
    "sweep": {"name": "tiny", "study": "dynamics", "seed": 0, "dtype": "float32"},
    "target": {"model": "tfim", "lx": 2, "ly": 2},
    "network": {"kind": "decoupled", "activation": "relu", "depth": 1},
    "grid": {"widths": [8], "train_sizes": [4], "lr_factors": [0.5]},
    "ensemble": {"members": 2, "shard_size": 2},
    "training": {"log_points": 3, "max_steps": 5},
    "executor": {"kind": "local"},
}
#: a small valid entanglement spec
TINY_ENT: dict[str, Any] = {
    "sweep": {"name": "tiny-ent", "study": "entanglement"},
    "grid": {"widths": [8], "architectures": ["cosnet"]},
    "ensemble": {"members": 4, "shard_size": 2},
    "entanglement": {"n_sites": 4},
}
DELETE = object()


def patched(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``"section.key": value`` (or ``DELETE``) and ``"section": table`` applied."""
    data = copy.deepcopy(base)
    for where, value in changes.items():
        section, _, key = where.partition(".")
        if not key and value is DELETE:
            del data[section]
        elif not key:
            data[section] = value
        elif value is DELETE:
            del data[section][key]
        else:
            data.setdefault(section, {})[key] = value
    return data


def test_fingerprint_is_stable() -> None:
    spec = parse_spec(TINY, "a.toml")
    fingerprint = spec.fingerprint()
    assert len(fingerprint) == 64 and int(fingerprint, 16) >= 0
    assert parse_spec(copy.deepcopy(TINY), "b.toml").fingerprint() == fingerprint
    # key order, explicit defaults and the file name do not matter
    reordered = {name: dict(reversed(table.items())) for name, table in reversed(TINY.items())}
    assert parse_spec(reordered).fingerprint() == fingerprint
    explicit = patched(TINY, {"training.tolerance": 1e-3, "target.J": 1.0})
    assert parse_spec(explicit).fingerprint() == fingerprint
    assert parse_spec(spec.to_dict()).fingerprint() == fingerprint
    for name in SHIPPED:
        assert load_spec(name).fingerprint() == load_spec(name).fingerprint()


def test_a_field_added_later_enters_the_fingerprint_only_off_its_default() -> None:
    # training.linearised came after dynamics stores existed: false keeps their fingerprint
    base = parse_spec(TINY).fingerprint()
    assert parse_spec(patched(TINY, {"training.linearised": False})).fingerprint() == base
    linearised = parse_spec(patched(TINY, {"training.linearised": True}))
    assert linearised.fingerprint() != base
    assert linearised.science()["training"]["linearised"] is True
    assert parse_spec(linearised.to_dict()).fingerprint() == linearised.fingerprint()
    # search.continuous came after loss-study stores existed: the same for the shipped one
    shipped = load_spec("ground-state-tfim")
    data = shipped.to_dict()
    assert FINGERPRINTS["ground-state-tfim"] == shipped.fingerprint()
    data["search"]["continuous"] = False
    assert parse_spec(data).fingerprint() == shipped.fingerprint()
    data["search"]["continuous"] = True
    assert parse_spec(data).fingerprint() != shipped.fingerprint()
    # so did search.paired
    data = shipped.to_dict()
    data["search"]["paired"] = False
    assert parse_spec(data).fingerprint() == shipped.fingerprint()
    data["search"]["paired"] = True
    assert parse_spec(data).fingerprint() != shipped.fingerprint()


def test_the_checkpoint_cadence_is_not_in_the_fingerprint() -> None:
    # a task pauses only between slices fixed by its logged steps: the cadence changes
    # when it saves, never its results (tests/test_checkpoints.py checks the bits)
    cadence = {"checkpoint": {"every_seconds": 5.0, "every_logs": 2, "keep": True}}
    spec = parse_spec(patched(TINY, cadence))
    assert spec.checkpoint.every_logs == 2 and spec.to_dict()["checkpoint"]["keep"] is True
    assert spec.fingerprint() == parse_spec(TINY).fingerprint()
    assert parse_spec(spec.to_dict()).checkpoint == spec.checkpoint


#: the shipped specs' fingerprints (the older ones measured with the hand-written checker
#: of 922b348, before the spec's sections became msgspec structs): the stores made with
#: them must still be found
FINGERPRINTS = {
    "ground-state-tfim": "b8c7ba1141682a3a3f281e9409de0c07c27488086e3b7d37488d00811925ebab",
    "ground-state-tfim-3x3": "ceba7ce4c257c4ead156a2cf2bc7da27cff3ec5b71bbb77d462c82e9fac6adb1",
    "fidelity-tfim": "17f2c05b01aabd47e5bb6cb8e7964a93bca694dcd510cc4642e71acbdfde76ea",
    "tomography-tfim": "7365a6e6a2c137e8feace94e2e3d195aa591fcc221386d56a996dd78049736b6",
    "ground-state-hubbard": "49429337593ddb1bb9069bfd534e5f6de15cf65d7d36d4b12bf61962c295644b",
    "paper-hubbard-linearised": "2d605c7a8610a54527a1a1bd0fadcb953ad170b612bf056ed086b8e4b6a78ac6",
    "paper-entanglement": "5dc44e10b1f89af655287494a284e3841a744204629c434f934683bb2db5d0fc",
    "paper-hubbard-rate": "2b08187676ee414dae0101fb9bbbee603488785aee25bfd72045a03891f6e269",
    "paper-hubbard": "ee0accf408737c7ce9393cc1d86639e7a39e9a10c3e1a3fe6b2d03391a513fe7",
    "paper-tfim": "bd4c626dc165b45d9e24a60f72f1ec5c19d3d5e5db68c64de12dd31931619f6c",
    "quickstart": "6d0182c40bb880e354bcbf1f3b1d0bd4609e2d1d895628aae13aceb39211a67b",
    "scale-members": "7b1bab435c99eed66f55dfc8069210a5c104e1040f70b3e0724ff56161b84ba6",
    "scale-tfim4x4": "f61ba2406baa97428d56f39cc047e5ac8877927a88fa226fbb8faff3f6fb2a6f",
    "scaling": "0f4d667dece3cc6ad1ce0f5acacd366f344904cfa4411f5fc2d4c68feb8c3598",
}


@pytest.mark.parametrize("name", sorted(FINGERPRINTS))
def test_shipped_fingerprints_are_unchanged(name: str) -> None:
    assert load_spec(name).fingerprint() == FINGERPRINTS[name]


def test_tiny_fingerprints_are_unchanged() -> None:
    """As measured before the structs, integers given for numbers included (read as floats)."""
    tiny = "aadcecfae6ee10040a31f9611751a5ef8ae7781de3df046217ba23cd19078f0c"
    assert parse_spec(TINY).fingerprint() == tiny
    tiny_ent = "726e0777d98f6416668cf80850812d427d0a2eeb7ddf9afe9b6793700553063f"
    assert parse_spec(TINY_ENT).fingerprint() == tiny_ent
    integers = {"entanglement.cosnet_s1": 2, "entanglement.gaussnet_sb": 0, "grid.cosnet_s0": [3]}
    assert parse_spec(patched(TINY_ENT, integers)).fingerprint() == (
        "542d07930b076a2a6aa127c54fe1c3939dea6f76f57620ebf8e7bd5c1efb39d9"
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"grid.widths": [16]},
        {"grid.widths": [8, 16]},
        {"grid.train_sizes": [5]},
        {"grid.lr_factors": [0.25]},
        {"sweep.seed": 1},
        {"sweep.dtype": "float64"},
        {"target.h": 0.5},
        {"target.time": 2.0},
        {"target.periodic": False},
        {"network.depth": 2},
        {"network.activation": "erf"},
        {"ensemble.members": 4},
        {"ensemble.shard_size": 1},
        {"training.max_steps": 6},
        {"training.log_points": 4},
        {"training.target_scale": "unit-norm"},
    ],
    ids=lambda changes: ",".join(changes),
)
def test_fingerprint_changes_with_the_science(changes: dict[str, Any]) -> None:
    assert parse_spec(patched(TINY, changes)).fingerprint() != parse_spec(TINY).fingerprint()


@pytest.mark.parametrize(
    "changes",
    [
        {"grid.widths": [16]},
        {"grid.architectures": ["gaussnet"]},
        {"entanglement.n_sites": 6},
        {"grid.cosnet_s0": [2.0]},
        {"grid.cosnet_s0": [10.0, 2.0]},
        {"sweep.seed": 3},
    ],
    ids=lambda changes: ",".join(changes),
)
def test_entanglement_fingerprint_changes_with_the_science(changes: dict[str, Any]) -> None:
    before = parse_spec(TINY_ENT).fingerprint()
    assert parse_spec(patched(TINY_ENT, changes)).fingerprint() != before


@pytest.mark.parametrize(
    "executor",
    [
        {"kind": "slurm"},
        {"kind": "mpi", "ranks": 8},
        {"processes": 4},
        {"profile": "somewhere"},
        {"kind": "slurm", "slurm": {"partition": "gpu", "time_min": 30}},
    ],
    ids=lambda executor: ",".join(executor),
)
def test_fingerprint_ignores_the_executor(executor: dict[str, Any]) -> None:
    spec = parse_spec(TINY)
    other = parse_spec(patched(TINY, {"executor": executor}))
    assert other.executor != spec.executor  # the change took effect ...
    assert other.fingerprint() == spec.fingerprint()  # ... and is not science
    assert spec.with_executor(**executor).fingerprint() == spec.fingerprint()


# ---------------------------------------------------------------------------------------
# bad specs: one line, the field named, a SpecError
# ---------------------------------------------------------------------------------------


def toml_text(data: dict[str, Any]) -> str:
    """TOML of ``{section: {key: scalar or list}}`` (JSON literals are TOML literals here)."""
    lines = []
    for section, table in data.items():
        if not isinstance(table, dict):
            lines.append(f"{section} = {json.dumps(table)}")
            continue
        lines.append(f"[{section}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in table.items()]
    return "\n".join(lines) + "\n"


def bad(name: str, base: dict[str, Any], change: dict[str, Any] | str, names: list[str]) -> Any:
    """A bad spec: ``change`` (a patch of ``base``, or raw TOML) and what its message names."""
    return pytest.param(name, base, change, names, id=name)


DYNAMICS = "[sweep]\nname = 'x'\nstudy = 'dynamics'\n"
ENT = "[sweep]\nname = 'x'\nstudy = 'entanglement'\n"
BAD_SPECS = [
    bad("unknown-section", TINY, {"plots": {"dpi": 100}}, ["plots"]),
    bad("unknown-key", TINY, {"grid.heights": [8]}, ["grid", "heights"]),
    bad("missing-sweep", TINY, {"sweep": DELETE}, ["[sweep]"]),
    bad("missing-name", TINY, {"sweep.name": DELETE}, ["sweep.name"]),
    bad("missing-study", TINY, {"sweep.study": DELETE}, ["sweep.study"]),
    bad("bad-name", TINY, {"sweep.name": "my sweep"}, ["sweep.name"]),
    bad("bad-study", TINY, {"sweep.study": "training"}, ["sweep.study"]),
    bad("bad-dtype", TINY, {"sweep.dtype": "float16"}, ["sweep.dtype"]),
    bad("negative-seed", TINY, {"sweep.seed": -1}, ["sweep.seed"]),
    bad("negative-width", TINY, {"grid.widths": [8, -16]}, ["grid.widths"]),
    bad("zero-width", TINY, {"grid.widths": [0]}, ["grid.widths"]),
    bad("empty-widths", TINY, {"grid.widths": []}, ["grid.widths"]),
    bad("widths-not-a-list", TINY, {"grid.widths": 8}, ["grid.widths"]),
    bad("repeated-widths", TINY, {"grid.widths": [8, 16, 8]}, ["grid.widths"]),
    bad("float-width", TINY, {"grid.widths": [64.5]}, ["grid.widths"]),
    bad("string-width", TINY, {"grid.widths": ["64"]}, ["grid.widths"]),
    bad("boolean-width", TINY, {"grid.widths": [True]}, ["grid.widths"]),
    bad("boolean-members", TINY, {"ensemble.members": True}, ["ensemble.members"]),
    bad("lr-factor-zero", TINY, {"grid.lr_factors": [0.0]}, ["grid.lr_factors"]),
    bad("lr-factor-two", TINY, {"grid.lr_factors": [0.5, 2.0]}, ["grid.lr_factors"]),
    # eta = c eta_max diverges for c >= 1 (docs/theory.md §5): refused, not run
    bad("lr-factor-at-bound", TINY, {"grid.lr_factors": [1.0]}, ["grid.lr_factors", "< 1"]),
    bad("lr-factor-above-bound", TINY, {"grid.lr_factors": [1.5]}, ["grid.lr_factors", "< 1"]),
    bad("lr-factor-negative", TINY, {"grid.lr_factors": [-0.5]}, ["grid.lr_factors"]),
    bad("shard-larger", TINY, {"ensemble.shard_size": 3}, ["ensemble.shard_size"]),
    bad(
        "one-member", TINY, {"ensemble.members": 1, "ensemble.shard_size": 1}, ["ensemble.members"]
    ),
    bad("train-size-too-large", TINY, {"grid.train_sizes": [4, 17]}, ["grid.train_sizes"]),
    bad("log-points", TINY, {"training.log_points": 1}, ["training.log_points"]),
    bad("network-kind", TINY, {"network.kind": "transformer"}, ["network.kind"]),
    bad("target-model", TINY, {"target.model": "heisenberg"}, ["target.model"]),
    bad("target-unknown-key", TINY, {"target.U": 4.0}, ["target.U"]),
    bad("target-lx-zero", TINY, {"target.lx": 0}, ["target", "lx"]),
    bad("target-filling", TINY, {"target": {"model": "hubbard", "n_up": 9}}, ["target", "n_up"]),
    bad("target-too-large", TINY, {"target.lx": 6, "target.ly": 6}, ["target", "dimension"]),
    bad("entanglement-in-dynamics", TINY, {"entanglement": {"n_sites": 8}}, ["[entanglement]"]),
    bad(
        "architectures-in-dynamics", TINY, {"grid.architectures": ["relu"]}, ["grid.architectures"]
    ),
    bad("training-in-entanglement", TINY_ENT, {"training": {"max_steps": 5}}, ["[training]"]),
    bad("checkpoint-in-entanglement", TINY_ENT, {"checkpoint": {"keep": True}}, ["[checkpoint]"]),
    bad("negative-cadence", TINY, {"checkpoint.every_seconds": -1}, ["checkpoint.every_seconds"]),
    bad("cadence-as-text", TINY, {"checkpoint.every_logs": "5"}, ["checkpoint.every_logs"]),
    bad("keep-as-text", TINY, {"checkpoint.keep": "yes"}, ["checkpoint.keep"]),
    bad("lr-in-entanglement", TINY_ENT, {"grid.lr_factors": [0.5]}, ["grid.lr_factors"]),
    bad("n-sites-too-large", TINY_ENT, {"entanglement.n_sites": 15}, ["entanglement.n_sites"]),
    bad("n-sites-too-small", TINY_ENT, {"entanglement.n_sites": 1}, ["entanglement.n_sites"]),
    bad(
        "s0-scan-with-others",
        TINY_ENT,
        {"grid.architectures": ["cosnet", "relu"], "grid.cosnet_s0": [1.0, 2.0]},
        ["grid.cosnet_s0", "cosnet", "'relu'"],
    ),
    bad(
        "s0-without-cosnet",
        TINY_ENT,
        {"grid.architectures": ["relu"], "grid.cosnet_s0": [2.0]},
        ["grid.cosnet_s0", "CosNet only"],
    ),
    bad("bad-architecture", TINY_ENT, {"grid.architectures": ["cnn"]}, ["grid.architectures"]),
    bad("cosnet-s0-zero", TINY_ENT, {"grid.cosnet_s0": [1.0, 0.0]}, ["grid.cosnet_s0"]),
    bad("cosnet-s0-scalar", TINY_ENT, {"grid.cosnet_s0": 1.0}, ["grid.cosnet_s0"]),
    bad("cosnet-s0-moved", TINY_ENT, {"entanglement.cosnet_s0": 1.0}, ["entanglement.cosnet_s0"]),
    bad("cosnet-s0-in-dynamics", TINY, {"grid.cosnet_s0": [1.0]}, ["grid.cosnet_s0"]),
    bad("executor-kind", TINY, {"executor.kind": "kubernetes"}, ["executor.kind"]),
    bad("executor-processes", TINY, {"executor.processes": 0}, ["executor.processes"]),
    bad(
        "invalid-toml", TINY, "[sweep]\nname = 'x\nstudy = 'dynamics'\n", ["not valid TOML", "line"]
    ),
    bad(
        "section-not-a-table", TINY, "grid = 3\n[sweep]\nname = 'x'\nstudy = 'dynamics'\n", ["grid"]
    ),
    bad("nested-list-width", TINY, {"grid.widths": [[8]]}, ["grid.widths"]),
    # the train loss never falls to 0 x its start: refused before any work
    bad("tolerance-zero", TINY, {"training.tolerance": 0.0}, ["training.tolerance"]),
    # train size = D = 16 would leave an empty test set
    bad("train-size-is-dimension", TINY, {"grid.train_sizes": [16]}, ["grid.train_sizes"]),
    bad("name-without-letters", TINY, {"sweep.name": "-"}, ["sweep.name"]),
    # numbers are finite (TOML has inf and nan)
    bad("nan-lr-factor", TINY, f"{DYNAMICS}[grid]\nlr_factors = [nan]\n", ["grid.lr_factors"]),
    bad("inf-tolerance", TINY, f"{DYNAMICS}[training]\ntolerance = inf\n", ["training.tolerance"]),
    bad("inf-cosnet-s0", TINY_ENT, f"{ENT}[grid]\ncosnet_s0 = [1.0, inf]\n", ["grid.cosnet_s0"]),
    bad("inf-cosnet-s1", TINY_ENT, f"{ENT}[entanglement]\ncosnet_s1 = inf\n", ["cosnet_s1"]),
    bad("nan-gaussnet-sb", TINY_ENT, f"{ENT}[entanglement]\ngaussnet_sb = nan\n", ["gaussnet_sb"]),
    bad("inf-gaussnet-sb", TINY_ENT, f"{ENT}[entanglement]\ngaussnet_sb = inf\n", ["gaussnet_sb"]),
]


def write_bad(tmp_path: Path, name: str, base: dict[str, Any], change: Any) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(change if isinstance(change, str) else toml_text(patched(base, change)))
    return path


@pytest.mark.parametrize("base", [TINY, TINY_ENT], ids=["dynamics", "entanglement"])
def test_the_bases_of_the_bad_specs_are_valid(tmp_path: Path, base: dict[str, Any]) -> None:
    spec = load_spec(write_bad(tmp_path, "good", base, {}))
    assert spec == parse_spec(base, "good.toml")


@pytest.mark.parametrize(
    ("name", "base", "change", "names"),
    BAD_SPECS,
)
def test_bad_spec_is_refused_in_one_line(
    tmp_path: Path, name: str, base: dict[str, Any], change: Any, names: list[str]
) -> None:
    path = write_bad(tmp_path, name, base, change)
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    message = str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert "\n" not in message and message.strip() == message
    assert message.startswith(f"spec {path.name}: ")
    for part in names:
        assert part in message, f"{part!r} not in {message!r}"


def test_missing_spec_file_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(SpecError) as caught:
        load_spec(missing)
    message = str(caught.value)
    assert "\n" not in message
    assert str(missing) in message and "no such file" in message
    assert "quickstart" in message  # lists the shipped specs
    with pytest.raises(SpecError, match="no such file"):
        load_spec("no-such-shipped-spec")


# ---------------------------------------------------------------------------------------
# memory estimate
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["quickstart", "paper-entanglement"])
def test_check_memory_refuses_a_shard_that_does_not_fit(name: str) -> None:
    spec = load_spec(name)
    needed = memory_estimates(spec)["shard"]
    assert needed > 0
    check_memory(spec, available=needed)
    check_memory(spec, available=10 * needed)
    with pytest.raises(SpecError) as caught:
        check_memory(spec, available=needed - 1)
    message = str(caught.value)
    assert "\n" not in message
    assert "ensemble.shard_size" in message and spec.source in message
    # the estimate grows with the shard and with the width
    smaller = spec.to_dict()
    smaller["ensemble"]["shard_size"] = spec.ensemble.shard_size // 2
    assert memory_estimates(parse_spec(smaller))["shard"] < needed
    wider = spec.to_dict()
    wider["grid"]["widths"] = [width * 2 for width in spec.grid.widths]
    assert memory_estimates(parse_spec(wider))["shard"] > needed


def test_the_memory_estimate_covers_preparation_and_aggregation() -> None:
    """TFIM 4x4: preparing the store holds the largest train size's kernels (2 x 4 x D x B
    float64), far more than a shard; a host with room for a shard but not for them is
    refused before anything runs, naming the field, and so is one without room to
    aggregate a grid point (about 25 steps x D float64 arrays per point)."""
    spec = load_spec("scale-tfim4x4")
    dimension, train = 2**16, max(spec.grid.train_sizes)
    estimates = memory_estimates(spec)
    assert set(estimates) == {"preparation", "shard", "aggregation"}
    assert estimates["preparation"] > 64 * dimension * train > 4 * estimates["shard"]
    check_memory(spec, available=max(estimates.values()))
    with pytest.raises(SpecError) as caught:
        check_memory(spec, available=estimates["preparation"] - 1)
    message = str(caught.value)
    assert "grid.train_sizes" in message and "preparing the store" in message
    assert "\n" not in message
    # many logged steps: the aggregation of a point outgrows the rest
    longer = spec.to_dict()
    longer["training"]["log_points"] = 1000
    longer_spec = parse_spec(longer, "longer.toml")
    grown = memory_estimates(longer_spec)
    assert grown["aggregation"] > 25 * 8 * 1000 * dimension > grown["preparation"]
    with pytest.raises(SpecError, match=r"training\.log_points: aggregating a grid point"):
        check_memory(longer_spec, available=grown["aggregation"] - 1)


# ---------------------------------------------------------------------------------------
# the command line: one line on stderr, nothing created, nothing lost
# ---------------------------------------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = cli.main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_one_error_line(err: str, *parts: str) -> None:
    assert err.startswith("nnqs: error: ")
    assert err.endswith("\n") and err.count("\n") == 1, err
    for part in parts:
        assert part in err, f"{part!r} not in {err!r}"


@pytest.mark.parametrize(
    ("name", "change", "field"),
    [
        ("unknown-key", {"grid.heights": [8]}, "heights"),
        ("negative-width", {"grid.widths": [-8]}, "grid.widths"),
        ("invalid-toml", "[sweep\nname = 'x'\n", "not valid TOML"),
    ],
)
def test_cli_refuses_a_bad_spec_and_creates_nothing(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    change: Any,
    field: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    path = write_bad(tmp_path, name, TINY, change)
    store = tmp_path / "s.zarr"
    status, out, err = run_cli(capsys, "run", str(path), "--store", str(store))
    assert status == 2
    assert out == ""
    assert_one_error_line(err, path.name, field)
    assert not store.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no staging, no runs/


def test_cli_refuses_a_shard_too_large_for_this_host(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """check_memory runs before the store is prepared: a refusal leaves no store."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(studies_base, "available_memory_bytes", lambda: 1024)
    path = write_bad(tmp_path, "tiny", TINY, {})
    store = tmp_path / "s.zarr"
    status, _, err = run_cli(capsys, "run", str(path), "--store", str(store))
    assert status == 2
    assert_one_error_line(err, "ensemble.shard_size")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.toml"]


def tree_digest(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root`` by relative path (directories listed too)."""
    digest = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        digest[key] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return digest


def test_a_store_of_another_sweep_is_left_untouched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs the one tiny real sweep of this file (TFIM 2x2, width 8, 2 members, 5 steps)."""
    monkeypatch.chdir(tmp_path)
    tiny = write_bad(tmp_path, "tiny", TINY, {})
    store = tmp_path / "s.zarr"
    status, out, _ = run_cli(capsys, "run", str(tiny), "--store", str(store))
    assert status == 0
    result = json.loads(out)
    assert result["tasks"]["done"] == len(expand(load_spec(tiny))) == 1
    before = tree_digest(store)
    assert "zarr.json" in before and len(before) > 10

    other = write_bad(tmp_path, "other", TINY, {"grid.widths": [16]})
    status, out, err = run_cli(capsys, "run", str(other), "--store", str(store))
    assert status == 2
    assert out == ""
    assert_one_error_line(err, "holds another sweep", str(store))
    assert tree_digest(store) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "other.toml",
        "s.zarr",
        "s.zarr.report",  # the first run's report
        "tiny.toml",
    ]

    # the same sweep under another executor is the same store: reopened, nothing to do
    status, out, _ = run_cli(
        capsys, "run", str(tiny), "--store", str(store), "--processes", "2", "--no-aggregate"
    )
    assert status == 0
    assert json.loads(out)["tasks_run"] == 0
    assert tree_digest(store) == before


def test_a_store_of_an_older_spec_format_is_refused_with_what_to_do() -> None:
    """An entanglement store made before grid.cosnet_s0 (its spec has entanglement.cosnet_s0)."""
    from types import SimpleNamespace

    from jobs.spec import store_spec

    old = patched(TINY_ENT, {"entanglement.cosnet_s0": 10.0})
    store = SimpleNamespace(attrs={"spec": old}, path=Path("old.zarr"))
    with pytest.raises(SpecError) as caught:
        store_spec(store)  # type: ignore[arg-type]
    message = str(caught.value)
    assert message.startswith("spec store old.zarr: entanglement.cosnet_s0 is now grid.cosnet_s0")
    assert "grid.cosnet_s0 = [10.0]" in message and "new store" in message
    assert "\n" not in message
