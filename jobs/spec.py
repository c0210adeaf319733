"""Sweep specs: a TOML file describes a study over a grid; it is validated before anything runs.

A spec is data, not code (benchopt / ReFrame style). Sections (every key optional
except ``sweep.name`` and ``sweep.study``; unknown sections and keys are refused)::

    [sweep]        name, study (a registered study, jobs.registry), seed, dtype
    [target]       model ("tfim" | "hubbard") and its parameters (suite.targets)
    [network]      kind, activation, depth              (dynamics, kernels)
    [grid]         widths, train_sizes, lr_factors      (dynamics, kernels)
                   widths, architectures, cosnet_s0     (entanglement)
    [ensemble]     members, shard_size
    [training]     log_points, max_steps, tolerance, target_scale   (dynamics)
    [entanglement] n_sites, cosnet_s1, gaussnet_s0, gaussnet_sb, relu_depth
    [kernels]      full, block                          (kernels, dynamics)
    [executor]     kind ("local" | "slurm" | "mpi"), processes, profile, ranks,
                   and a [executor.slurm] table of cluster-profile overrides

Which sections and grid keys a study takes, and its cross-field rules, are the study's
(:class:`jobs.registry.Study`). Every error is a :class:`SpecError` (a ``ValueError``)
whose one-line message names the field (``spec quickstart.toml: grid.widths must be
...``). The executor section does not enter the :meth:`SweepSpec.fingerprint`: one
sweep may be started locally and resumed on a cluster.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from jobs import registry
from jobs.profiles import check_overrides
from suite import networks, supervised, targets, training
from suite.store import SweepStore

# the vocabularies of the library's own types
DTYPES = training.DTYPES
KINDS = get_args(networks.NNQSKind)
ACTIVATIONS = get_args(networks.Activation)
TARGET_SCALES = get_args(supervised.TargetScale)
ARCHITECTURES = get_args(networks.Architecture)
EXECUTORS = ("local", "slurm", "mpi")
#: the shipped example specs, by name (``nnqs run quickstart``)
SPEC_DIR = Path(__file__).resolve().parent / "specs"
#: entanglement studies hold 2**n_sites amplitudes per member
MAX_ENTANGLEMENT_SITES = 14


class SpecError(ValueError):
    """An invalid sweep spec; the message names the file and the field."""


@dataclass(frozen=True)
class Sweep:
    name: str
    study: str
    seed: int = 0
    dtype: str = "float32"


@dataclass(frozen=True)
class Network:
    kind: str = "decoupled"
    activation: str = "relu"
    depth: int = 1


@dataclass(frozen=True)
class Grid:
    widths: tuple[int, ...] = (64, 256)
    train_sizes: tuple[int, ...] = (128,)
    lr_factors: tuple[float, ...] = (0.5,)
    architectures: tuple[str, ...] = ARCHITECTURES
    #: CosNet input scales: an axis of the entanglement study (the s0 crossover)
    cosnet_s0: tuple[float, ...] = (10.0,)


@dataclass(frozen=True)
class Ensemble:
    members: int = 64
    shard_size: int = 16

    @property
    def shards(self) -> int:
        return -(-self.members // self.shard_size)


@dataclass(frozen=True)
class Training:
    log_points: int = 16
    max_steps: int = 0
    tolerance: float = 1e-3
    target_scale: str = "unit-rms"


@dataclass(frozen=True)
class Entanglement:
    n_sites: int = 12
    cosnet_s1: float = 1.0
    gaussnet_s0: float = 1.0
    gaussnet_sb: float = 0.0
    relu_depth: int = 1


@dataclass(frozen=True)
class Kernels:
    full: bool = False
    block: int = 1024


@dataclass(frozen=True)
class Executor:
    kind: str = "local"
    processes: int = 1
    profile: str = "local"
    ranks: int = 2
    slurm: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep (see the module docstring for the TOML layout)."""

    sweep: Sweep
    target: dict[str, Any] = field(default_factory=lambda: {"model": "tfim"})
    network: Network = Network()
    grid: Grid = Grid()
    ensemble: Ensemble = Ensemble()
    training: Training = Training()
    entanglement: Entanglement = Entanglement()
    kernels: Kernels = Kernels()
    executor: Executor = Executor()
    source: str = "<spec>"

    def science(self) -> dict[str, Any]:
        """Everything that determines the results: the study's sections, less the executor."""
        data = self.to_dict()
        data.pop("executor")
        return data

    def fingerprint(self) -> str:
        """SHA-256 of the canonical JSON of :meth:`science` (the store refuses another)."""
        text = json.dumps(self.science(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """The spec as TOML-shaped tables: the study's own sections and the executor."""
        data = dataclasses.asdict(self)
        study = registry.study(self.sweep.study)
        sections = ("sweep", *study.sections, "executor")
        tables = {name: data[name] for name in sections}
        tables["grid"] = {key: data["grid"][key] for key in study.grid_keys}
        return tables

    def with_executor(self, **changes: Any) -> SweepSpec:
        """The same sweep with executor settings changed (validated)."""
        data = self.to_dict()
        data["executor"].update({k: v for k, v in changes.items() if v is not None})
        return parse_spec(data, self.source)


def load_spec(name_or_path: str | os.PathLike[str]) -> SweepSpec:
    """Read and validate a spec file; a bare name is one of the shipped ``jobs/specs``."""
    path = Path(name_or_path)
    if not path.exists() and path.suffix == "" and (SPEC_DIR / f"{path}.toml").exists():
        path = SPEC_DIR / f"{path}.toml"
    if not path.is_file():
        shipped = ", ".join(sorted(p.stem for p in SPEC_DIR.glob("*.toml")))
        raise SpecError(f"spec {name_or_path}: no such file (shipped specs: {shipped})")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise SpecError(f"spec {path.name}: not valid TOML: {error}") from None
    return parse_spec(data, path.name)


def parse_spec(data: dict[str, Any], source: str = "<spec>") -> SweepSpec:
    """Validate a spec given as nested dicts (parsed TOML); raise :class:`SpecError`.

    Each section is read by its own function below, with the defaults of its dataclass;
    then the target, and the study's own rules (:meth:`jobs.registry.Study.check`).
    """
    check = SpecChecker(source)
    if not isinstance(data, dict):
        raise check.error("spec", "must be a table", data)
    readers = {
        "sweep": _sweep,
        "target": None,
        "network": _network,
        "grid": _grid,
        "ensemble": _ensemble,
        "training": _training,
        "entanglement": _entanglement,
        "kernels": _kernels,
        "executor": _executor,
    }
    check.known("spec", data, readers)
    if "sweep" not in data:
        raise SpecError(f"spec {source}: the [sweep] section is required (name and study)")
    tables = {name: check.table(name, data.get(name, {})) for name in readers}
    sections = {
        name: read(check, tables[name]) for name, read in readers.items() if read is not None
    }
    target = _target(check, tables["target"], sections["sweep"].study)
    spec = SweepSpec(**sections, target=target, source=source)
    _check_study(check, spec, data)
    return spec


def _sweep(check: SpecChecker, table: dict[str, Any]) -> Sweep:
    check.known("sweep", table, Sweep)
    for key in ("name", "study"):
        if key not in table:
            raise SpecError(f"spec {check.source}: sweep.{key} is required")
    name = check.text("sweep.name", table["name"])
    if not name.replace("-", "").replace("_", "").isalnum():
        raise check.error("sweep.name", "must be letters, digits, '-' or '_'", name)
    default = Sweep(name, "")
    return Sweep(
        name=name,
        study=check.choice("sweep.study", table["study"], registry.names()),
        seed=check.integer("sweep.seed", table.get("seed", default.seed), 0),
        dtype=check.choice("sweep.dtype", table.get("dtype", default.dtype), DTYPES),
    )


def _network(check: SpecChecker, table: dict[str, Any]) -> Network:
    check.known("network", table, Network)
    default = Network()
    return Network(
        kind=check.choice("network.kind", table.get("kind", default.kind), KINDS),
        activation=check.choice(
            "network.activation", table.get("activation", default.activation), ACTIVATIONS
        ),
        depth=check.integer("network.depth", table.get("depth", default.depth), 1, 8),
    )


def _grid(check: SpecChecker, table: dict[str, Any]) -> Grid:
    check.known("grid", table, Grid)
    default = Grid()
    return Grid(
        widths=check.integers("grid.widths", table.get("widths", default.widths), 1, 2**20),
        train_sizes=check.integers(
            "grid.train_sizes", table.get("train_sizes", default.train_sizes), 1
        ),
        lr_factors=check.numbers(
            "grid.lr_factors", table.get("lr_factors", default.lr_factors), 0.0, 2.0
        ),
        architectures=check.choices(
            "grid.architectures", table.get("architectures", default.architectures), ARCHITECTURES
        ),
        cosnet_s0=check.numbers(
            "grid.cosnet_s0", table.get("cosnet_s0", default.cosnet_s0), 0.0, math.inf
        ),
    )


def _ensemble(check: SpecChecker, table: dict[str, Any]) -> Ensemble:
    check.known("ensemble", table, Ensemble)
    default = Ensemble()
    members = check.integer("ensemble.members", table.get("members", default.members), 2, 10**7)
    shard_size = check.integer(
        "ensemble.shard_size", table.get("shard_size", default.shard_size), 1
    )
    if shard_size > members:
        raise check.error("ensemble.shard_size", f"must be at most members ({members})", shard_size)
    return Ensemble(members, shard_size)


def _training(check: SpecChecker, table: dict[str, Any]) -> Training:
    check.known("training", table, Training)
    default = Training()
    return Training(
        log_points=check.integer(
            "training.log_points", table.get("log_points", default.log_points), 2, 1000
        ),
        max_steps=check.integer(
            "training.max_steps", table.get("max_steps", default.max_steps), 0, 10**7
        ),
        tolerance=check.number(
            "training.tolerance", table.get("tolerance", default.tolerance), 1e-12, 0.5
        ),
        target_scale=check.choice(
            "training.target_scale", table.get("target_scale", default.target_scale), TARGET_SCALES
        ),
    )


def _entanglement(check: SpecChecker, table: dict[str, Any]) -> Entanglement:
    check.known("entanglement", table, Entanglement)
    default = Entanglement()
    section = Entanglement(
        n_sites=check.integer(
            "entanglement.n_sites",
            table.get("n_sites", default.n_sites),
            2,
            MAX_ENTANGLEMENT_SITES,
        ),
        **{
            key: check.number(f"entanglement.{key}", table.get(key, value), 0.0)
            for key, value in dataclasses.asdict(default).items()
            if key not in ("n_sites", "relu_depth")
        },
        relu_depth=check.integer(
            "entanglement.relu_depth", table.get("relu_depth", default.relu_depth), 1, 8
        ),
    )
    for key in ("cosnet_s1", "gaussnet_s0"):
        if getattr(section, key) <= 0:
            raise check.error(f"entanglement.{key}", "must be positive", table.get(key))
    return section


def _kernels(check: SpecChecker, table: dict[str, Any]) -> Kernels:
    check.known("kernels", table, Kernels)
    default = Kernels()
    return Kernels(
        full=check.boolean("kernels.full", table.get("full", default.full)),
        block=check.integer("kernels.block", table.get("block", default.block), 16, 2**16),
    )


def _executor(check: SpecChecker, table: dict[str, Any]) -> Executor:
    check.known("executor", table, Executor)
    default = Executor()
    section = Executor(
        kind=check.choice("executor.kind", table.get("kind", default.kind), EXECUTORS),
        processes=check.integer(
            "executor.processes", table.get("processes", default.processes), 1, 1024
        ),
        profile=check.text("executor.profile", table.get("profile", default.profile)),
        ranks=check.integer("executor.ranks", table.get("ranks", default.ranks), 1, 4096),
        slurm=check.table("executor.slurm", table.get("slurm", {})),
    )
    if section.slurm:
        try:
            check_overrides(section.slurm, f"{check.source} [executor.slurm]")
        except ValueError as error:
            raise SpecError(f"spec {check.source}: executor.slurm: {error}") from None
    return section


def _target(check: SpecChecker, table: dict[str, Any], study: str) -> dict[str, Any]:
    """The target section as ``suite.targets.make_spec`` accepts it, dimension checked."""
    model = check.choice("target.model", table.get("model", "tfim"), tuple(sorted(targets.TARGETS)))
    params = {key: value for key, value in table.items() if key != "model"}
    known = {f.name for f in dataclasses.fields(targets.TARGETS[model])}
    check.known("target", params, dict.fromkeys(known))
    try:
        quench = targets.make_spec(model, **params)
    except (ValueError, TypeError) as error:  # suite.targets names the parameter first
        raise SpecError(f"spec {check.source}: target.{error}") from None
    try:
        targets.basis_of(quench)
    except ValueError as error:
        raise SpecError(f"spec {check.source}: target: {error}") from None
    return {"model": model, **dataclasses.asdict(quench)}


def _check_study(check: SpecChecker, spec: SweepSpec, data: dict[str, Any]) -> None:
    """Cross-field rules: settings of another study are refused, then the study's own."""
    study = registry.study(spec.sweep.study)
    for section in data:
        if section not in ("sweep", "executor", *study.sections):
            raise SpecError(
                f"spec {check.source}: [{section}] does not apply to a {study.name} study"
            )
    for key in data.get("grid", {}):
        if key not in study.grid_keys:
            raise SpecError(
                f"spec {check.source}: grid.{key} does not apply to a {study.name} study "
                f"(its grid: {', '.join(study.grid_keys)})"
            )
    study.check(spec, check)


def target_dimension(spec: SweepSpec) -> int:
    """Dimension of the target's basis (no diagonalisation)."""
    return target_basis(spec).dimension


# ---------------------------------------------------------------------------------------
# resources of this host (the memory estimates of jobs.studies use them)
# ---------------------------------------------------------------------------------------


#: resident memory of an nnqs process besides its arrays: Python, NumPy, JAX and XLA, and
#: compiling its programs (measured here: 0.30 GiB after the imports, 0.62 GiB for a task
#: whose own arrays take under 0.2 GiB, 0.65-0.68 GiB in a pool worker after 8 such tasks)
BASELINE_BYTES = 640 << 20
#: what a process keeps of each compiled training program: an in-process run of many grid
#: points holds up to 32 (``suite.training`` caches them; measured 0.35 GiB for 16)
PROGRAM_BYTES = 24 << 20


def available_memory_bytes() -> int:
    """``MemAvailable`` of this host (``/proc/meminfo``), or total physical memory."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def aggregation_threads() -> int:
    """Grid points the in-process Dask aggregation works on at once (jobs.aggregate)."""
    return min(4, os.cpu_count() or 1)


def usable_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def target_basis(spec: SweepSpec) -> Any:
    """The target's basis (its dimension and sites), without diagonalising anything."""
    return targets.basis_of(targets.make_spec(**spec.target))


# ---------------------------------------------------------------------------------------
# field checks
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpecChecker:
    """Checks of one field each; every error names the spec and the field."""

    source: str

    def error(self, name: str, requirement: str, value: Any) -> SpecError:
        return SpecError(f"spec {self.source}: {name} {requirement}, got {value!r}")

    def known(self, where: str, table: dict[str, Any], schema: Any) -> None:
        known = schema if isinstance(schema, dict) else {f.name for f in dataclasses.fields(schema)}
        unknown = sorted(set(table) - set(known))
        if unknown and where == "spec":
            raise SpecError(
                f"spec {self.source}: unknown sections {unknown}; known: {sorted(known)}"
            )
        if unknown:
            raise SpecError(
                f"spec {self.source}: {where}.{unknown[0]} is not a known key "
                f"(known: {', '.join(sorted(known))})"
            )

    def table(self, name: str, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(name, "must be a table", value)
        return value

    def text(self, name: str, value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise self.error(name, "must be a non-empty string", value)
        return value

    def boolean(self, name: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise self.error(name, "must be true or false", value)
        return value

    def choice(self, name: str, value: Any, options: tuple[str, ...]) -> str:
        if value not in options:
            raise self.error(name, f"must be one of {', '.join(options)}", value)
        return value

    def integer(self, name: str, value: Any, low: int, high: int | None = None) -> int:
        if not (isinstance(value, int) and not isinstance(value, bool)):
            raise self.error(name, "must be an integer", value)
        if value < low or (high is not None and value > high):
            bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
            raise self.error(name, f"must be {bound}", value)
        return value

    def number(self, name: str, value: Any, low: float, high: float | None = None) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(name, "must be a number", value)
        if not math.isfinite(value) or value < low or (high is not None and value > high):
            bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
            raise self.error(name, f"must be a finite number {bound}", value)
        return float(value)

    def _items(self, name: str, value: Any) -> list[Any]:
        if not isinstance(value, list | tuple) or not value:
            raise self.error(name, "must be a non-empty list", value)
        return list(value)

    def _distinct(self, name: str, items: list[Any]) -> tuple[Any, ...]:
        """``items`` (already checked one by one) if no value repeats."""
        if len(set(items)) != len(items):
            raise self.error(name, "must not repeat values", items)
        return tuple(items)

    def integers(self, name: str, value: Any, low: int, high: int | None = None) -> tuple[int, ...]:
        items = self._items(name, value)
        for item in items:
            self.integer(name, item, low, high)
        return self._distinct(name, items)

    def numbers(self, name: str, value: Any, low: float, high: float) -> tuple[float, ...]:
        items = self._items(name, value)
        for item in items:
            number = self.number(name, item, low, high)
            if number in (low, high):
                raise self.error(name, f"must lie strictly inside ({low}, {high})", item)
        return self._distinct(name, [float(item) for item in items])

    def choices(self, name: str, value: Any, options: tuple[str, ...]) -> tuple[str, ...]:
        items = self._items(name, value)
        for item in items:
            self.choice(name, item, options)
        return self._distinct(name, items)


def store_spec(store: SweepStore) -> SweepSpec:
    """The spec a store was created from (re-validated)."""
    return parse_spec(store.attrs["spec"], f"store {store.path.name}")
