"""Sweep specs: a TOML file describes a study over a grid; it is validated before anything runs.

A spec is data, not code (benchopt / ReFrame style). Sections (every key optional
except ``sweep.name`` and ``sweep.study``; unknown sections and keys are refused)::

    [sweep]        name, study ("dynamics" | "entanglement" | "kernels"), seed, dtype
    [target]       model ("tfim" | "hubbard") and its parameters (suite.targets)
    [network]      kind, activation, depth              (dynamics, kernels)
    [grid]         widths, train_sizes, lr_factors      (dynamics, kernels)
                   widths, architectures                (entanglement)
    [ensemble]     members, shard_size
    [training]     log_points, max_steps, tolerance, target_scale   (dynamics)
    [entanglement] n_sites, cosnet_s0, cosnet_s1, gaussnet_s0, gaussnet_sb, relu_depth
    [kernels]      full, block                          (kernels, dynamics)
    [executor]     kind ("local" | "slurm" | "mpi"), processes, profile, ranks,
                   and a [executor.slurm] table of cluster-profile overrides

Every error is a :class:`SpecError` (a ``ValueError``) whose one-line message names
the field (``spec quickstart.toml: grid.widths must be ...``). The executor section
does not enter the :meth:`SweepSpec.fingerprint`: one sweep may be started locally
and resumed on a cluster.
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
from typing import Any

from suite import targets
from suite.supervised import ROW_BLOCK_ELEMENTS
from suite.training import BLOCK_ELEMENTS

STUDIES = ("dynamics", "entanglement", "kernels")
DTYPES = ("float32", "float64")
KINDS = ("decoupled", "shared_trunk", "complex_output")
ACTIVATIONS = ("relu", "erf")
ARCHITECTURES = ("cosnet", "gaussnet", "relu")
TARGET_SCALES = ("unit-norm", "unit-rms")
EXECUTORS = ("local", "slurm", "mpi")
#: the shipped example specs, by name (``nnqs run quickstart``)
SPEC_DIR = Path(__file__).resolve().parent / "specs"
#: entanglement studies hold 2**n_sites amplitudes per member
MAX_ENTANGLEMENT_SITES = 14


#: the sections (besides sweep and executor) and grid axes each study takes
SECTIONS = {
    "dynamics": ("target", "network", "grid", "ensemble", "training", "kernels"),
    "entanglement": ("grid", "ensemble", "entanglement"),
    "kernels": ("target", "network", "grid", "ensemble", "kernels"),
}
GRID_KEYS = {
    "dynamics": ("widths", "train_sizes", "lr_factors"),
    "entanglement": ("widths", "architectures"),
    "kernels": ("widths", "train_sizes"),
}


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
    cosnet_s0: float = 10.0
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
        sections = ("sweep", *SECTIONS[self.sweep.study], "executor")
        tables = {name: data[name] for name in sections}
        tables["grid"] = {key: data["grid"][key] for key in GRID_KEYS[self.sweep.study]}
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
    """Validate a spec given as nested dicts (parsed TOML); raise :class:`SpecError`."""
    check = _Checker(source)
    if not isinstance(data, dict):
        raise check.error("spec", "must be a table", data)
    sections = {
        "sweep": Sweep,
        "target": None,
        "network": Network,
        "grid": Grid,
        "ensemble": Ensemble,
        "training": Training,
        "entanglement": Entanglement,
        "kernels": Kernels,
        "executor": Executor,
    }
    check.known("spec", data, sections)
    if "sweep" not in data:
        raise SpecError(f"spec {source}: the [sweep] section is required (name and study)")
    tables = {name: check.table(name, data.get(name, {})) for name in sections}

    sweep = tables["sweep"]
    check.known("sweep", sweep, Sweep)
    for key in ("name", "study"):
        if key not in sweep:
            raise SpecError(f"spec {source}: sweep.{key} is required")
    name = check.text("sweep.name", sweep["name"])
    if not name.replace("-", "").replace("_", "").isalnum():
        raise check.error("sweep.name", "must be letters, digits, '-' or '_'", name)
    study = check.choice("sweep.study", sweep["study"], STUDIES)
    sweep_section = Sweep(
        name=name,
        study=study,
        seed=check.integer("sweep.seed", sweep.get("seed", 0), 0),
        dtype=check.choice("sweep.dtype", sweep.get("dtype", "float32"), DTYPES),
    )

    network = tables["network"]
    check.known("network", network, Network)
    network_section = Network(
        kind=check.choice("network.kind", network.get("kind", "decoupled"), KINDS),
        activation=check.choice(
            "network.activation", network.get("activation", "relu"), ACTIVATIONS
        ),
        depth=check.integer("network.depth", network.get("depth", 1), 1, 8),
    )

    grid = tables["grid"]
    check.known("grid", grid, Grid)
    default = Grid()
    grid_section = Grid(
        widths=check.integers("grid.widths", grid.get("widths", default.widths), 1, 2**20),
        train_sizes=check.integers(
            "grid.train_sizes", grid.get("train_sizes", default.train_sizes), 1
        ),
        lr_factors=check.numbers(
            "grid.lr_factors", grid.get("lr_factors", default.lr_factors), 0.0, 2.0
        ),
        architectures=check.choices(
            "grid.architectures", grid.get("architectures", default.architectures), ARCHITECTURES
        ),
    )

    ensemble = tables["ensemble"]
    check.known("ensemble", ensemble, Ensemble)
    members = check.integer("ensemble.members", ensemble.get("members", 64), 2, 10**7)
    shard_size = check.integer("ensemble.shard_size", ensemble.get("shard_size", 16), 1)
    if shard_size > members:
        raise check.error("ensemble.shard_size", f"must be at most members ({members})", shard_size)
    ensemble_section = Ensemble(members, shard_size)

    training = tables["training"]
    check.known("training", training, Training)
    training_section = Training(
        log_points=check.integer("training.log_points", training.get("log_points", 16), 2, 1000),
        max_steps=check.integer("training.max_steps", training.get("max_steps", 0), 0, 10**7),
        tolerance=check.number("training.tolerance", training.get("tolerance", 1e-3), 1e-12, 0.5),
        target_scale=check.choice(
            "training.target_scale", training.get("target_scale", "unit-rms"), TARGET_SCALES
        ),
    )

    entanglement = tables["entanglement"]
    check.known("entanglement", entanglement, Entanglement)
    ent_default = Entanglement()
    entanglement_section = Entanglement(
        n_sites=check.integer(
            "entanglement.n_sites",
            entanglement.get("n_sites", ent_default.n_sites),
            2,
            MAX_ENTANGLEMENT_SITES,
        ),
        **{
            key: check.number(f"entanglement.{key}", entanglement.get(key, value), 0.0)
            for key, value in dataclasses.asdict(ent_default).items()
            if key not in ("n_sites", "relu_depth")
        },
        relu_depth=check.integer(
            "entanglement.relu_depth", entanglement.get("relu_depth", 1), 1, 8
        ),
    )
    for key in ("cosnet_s0", "cosnet_s1", "gaussnet_s0"):
        if getattr(entanglement_section, key) <= 0:
            raise check.error(f"entanglement.{key}", "must be positive", entanglement.get(key))

    kernels = tables["kernels"]
    check.known("kernels", kernels, Kernels)
    kernels_section = Kernels(
        full=check.boolean("kernels.full", kernels.get("full", False)),
        block=check.integer("kernels.block", kernels.get("block", 1024), 16, 2**16),
    )

    executor = tables["executor"]
    check.known("executor", executor, Executor)
    executor_section = Executor(
        kind=check.choice("executor.kind", executor.get("kind", "local"), EXECUTORS),
        processes=check.integer("executor.processes", executor.get("processes", 1), 1, 1024),
        profile=check.text("executor.profile", executor.get("profile", "local")),
        ranks=check.integer("executor.ranks", executor.get("ranks", 2), 1, 4096),
        slurm=check.table("executor.slurm", executor.get("slurm", {})),
    )
    if executor_section.slurm:
        from jobs.profiles import check_overrides

        try:
            check_overrides(executor_section.slurm, f"{source} [executor.slurm]")
        except ValueError as error:
            raise SpecError(f"spec {source}: executor.slurm: {error}") from None

    target_section = _target(check, tables["target"], study)
    spec = SweepSpec(
        sweep=sweep_section,
        target=target_section,
        network=network_section,
        grid=grid_section,
        ensemble=ensemble_section,
        training=training_section,
        entanglement=entanglement_section,
        kernels=kernels_section,
        executor=executor_section,
        source=source,
    )
    _check_study(check, spec, data)
    return spec


def _target(check: _Checker, table: dict[str, Any], study: str) -> dict[str, Any]:
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


def _check_study(check: _Checker, spec: SweepSpec, data: dict[str, Any]) -> None:
    """Cross-field rules: settings of another study are refused, sizes fit the basis."""
    study = spec.sweep.study
    for section in data:
        if section not in ("sweep", "executor", *SECTIONS[study]):
            raise SpecError(f"spec {check.source}: [{section}] does not apply to a {study} study")
    grid = data.get("grid", {})
    for key in grid:
        if key not in GRID_KEYS[study]:
            raise SpecError(
                f"spec {check.source}: grid.{key} does not apply to a {study} study "
                f"(its grid: {', '.join(GRID_KEYS[study])})"
            )
    if study == "entanglement":
        return
    dimension = target_dimension(spec)
    for size in spec.grid.train_sizes:
        if size >= dimension:
            raise check.error(
                "grid.train_sizes",
                f"must be less than the basis dimension {dimension} (a test set must remain)",
                size,
            )


def target_dimension(spec: SweepSpec) -> int:
    """Dimension of the target's basis (no diagonalisation)."""
    return _basis(spec).dimension


# ---------------------------------------------------------------------------------------
# memory estimate
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


def shard_memory_bytes(spec: SweepSpec) -> int:
    """Rough peak memory (bytes) of the process that runs one task.

    dynamics (the engine of ``suite.training``): the members' parameters three times
    (state, gradients, update) in the training dtype; per lane (two per core) the block
    intermediates the engine bounds by ``suite.training.BLOCK_ELEMENTS`` elements (per
    hidden layer: pre-activations, ``act'(z) r``, ``act(z)``); the per-block sums of one
    evaluation and the shard's sums ``5 x steps x D`` (float64: on device, on the host,
    encoded); the basis inputs; the compiled programs of the grid points a process may
    run in turn (:data:`PROGRAM_BYTES` each). kernels: one member's Jacobian on the
    largest train set and the ``2B x 2B`` kernels. entanglement: the members' amplitudes
    and hidden activations on ``2**n_sites`` configurations. Each plus
    :data:`BASELINE_BYTES`.
    """
    width = max(spec.grid.widths)
    members = spec.ensemble.shard_size
    if spec.sweep.study == "entanglement":
        dimension = 2**spec.entanglement.n_sites
        return BASELINE_BYTES + 8 * members * dimension * (width + 4)
    itemsize = 4 if spec.sweep.dtype == "float32" else 8
    basis = _basis(spec)
    dimension, in_dim, depth = basis.dimension, basis.n_sites, spec.network.depth
    parameters = 2 * (width * (in_dim + 2) + (depth - 1) * width * (width + 1))
    train = max(spec.grid.train_sizes)
    if spec.sweep.study == "kernels":
        return BASELINE_BYTES + 8 * (2 * train * parameters + 4 * (2 * train) ** 2)
    per_unit = 2 * width  # the engine's block arithmetic (suite.training._layout)
    chunk = max(1, min(train, BLOCK_ELEMENTS // per_unit))
    blocks = -(-members // max(1, BLOCK_ELEMENTS // (per_unit * chunk)))
    intermediates = 3 * depth * 2 * _cores() * BLOCK_ELEMENTS * itemsize
    sums = 8 * 5 * dimension * (blocks + 3 * (spec.training.log_points + 1))
    inputs = 32 * dimension * (in_dim + 2)
    programs = PROGRAM_BYTES * min(32, _grid_points(spec))
    arrays = 3 * itemsize * members * parameters + intermediates + sums + inputs
    return BASELINE_BYTES + programs + arrays


def preparation_memory_bytes(spec: SweepSpec) -> int:
    """Rough peak memory (bytes) of the process that creates the store (jobs.studies).

    dynamics / kernels: the target (sparse Hamiltonian, Krylov vectors, inputs: about
    ``24 (n_sites + 8)`` bytes a state); one supervised problem at a time, the largest:
    its NNGP and NTK blocks between the basis and the train set, ``2 x 4 x D x B``
    float64, and the Gram's integer index; the train-set QS-NTK's eigendecomposition and
    the products of the set losses, ``(2B)^2`` float64 several times, and their row
    blocks (``suite.supervised.ROW_BLOCK_ELEMENTS``, theory.md §5); the Gram tiles in
    flight (a few per core; ``D x D`` tiles with ``kernels.full``). entanglement: the
    closed-form GP estimate is ``O(n_sites)``. Each plus :data:`BASELINE_BYTES`.
    """
    if spec.sweep.study == "entanglement":
        return BASELINE_BYTES
    basis = _basis(spec)
    dimension, train = basis.dimension, max(spec.grid.train_sizes)
    target = 24 * dimension * (basis.n_sites + 8)
    problem = 72 * dimension * train
    rows = min(ROW_BLOCK_ELEMENTS, 4 * dimension * train)
    train_algebra = 8 * 8 * ((2 * train) ** 2 + rows)
    tile = min(dimension, spec.kernels.block)
    columns = max(train, tile) if spec.kernels.full else train
    tiles = 4 * 8 * _cores() * tile * columns
    return BASELINE_BYTES + target + problem + train_algebra + tiles


def aggregation_memory_bytes(spec: SweepSpec) -> int:
    """Rough peak memory (bytes) of aggregating (analysis.aggregate), in the process that
    runs the Dask threads: :func:`aggregation_threads` grid points at once, each holding
    its members' results and (dynamics) its shards' sums accumulated one shard at a time,
    with the estimators of ``suite.training.summarize``: about 25 ``steps x D`` float64
    arrays; (kernels) the ``2B x 2B`` kernel sums. Plus :data:`BASELINE_BYTES`.
    """
    threads = min(aggregation_threads(), _grid_points(spec))
    members, steps = spec.ensemble.members, spec.training.log_points + 1
    if spec.sweep.study == "entanglement":
        per_point = 3 * 8 * members * (spec.entanglement.n_sites + 2)
    elif spec.sweep.study == "kernels":
        per_point = 3 * 8 * (2 * max(spec.grid.train_sizes)) ** 2 + 8 * members
    else:
        per_point = 25 * 8 * steps * _basis(spec).dimension + 2 * 2 * 8 * members * steps
    return BASELINE_BYTES + threads * per_point


#: each phase's estimate and what it is called
PHASES = {
    "preparation": (preparation_memory_bytes, "preparing the store"),
    "shard": (shard_memory_bytes, "a shard"),
    "aggregation": (aggregation_memory_bytes, "aggregating a grid point"),
}
#: the field that lowers each phase's memory, per study
LOWERED_BY = {
    ("preparation", "dynamics"): "grid.train_sizes",
    ("preparation", "kernels"): "grid.train_sizes",
    ("preparation", "entanglement"): "entanglement.n_sites",
    ("shard", "dynamics"): "ensemble.shard_size",
    ("shard", "kernels"): "grid.widths",
    ("shard", "entanglement"): "ensemble.shard_size",
    ("aggregation", "dynamics"): "training.log_points",
    ("aggregation", "kernels"): "grid.train_sizes",
    ("aggregation", "entanglement"): "ensemble.members",
}


def memory_estimates(spec: SweepSpec) -> dict[str, int]:
    """Rough peak memory (bytes) of each phase: ``preparation``, ``shard``, ``aggregation``."""
    return {name: estimate(spec) for name, (estimate, _) in PHASES.items()}


def check_memory(spec: SweepSpec, available: int | None = None) -> None:
    """Refuse a sweep whose most demanding phase (creating the store, a shard, aggregating;
    :func:`memory_estimates`) would not fit in ``available`` bytes (default: this host).

    The message names that phase and the field that lowers it.
    """
    available = available_memory_bytes() if available is None else available
    estimates = memory_estimates(spec)
    name = max(estimates, key=estimates.__getitem__)
    needed = estimates[name]
    if needed <= available:
        return
    field_name = LOWERED_BY[name, spec.sweep.study]
    both = field_name == "ensemble.shard_size"
    lower = f"{field_name} or grid.widths" if both else field_name
    raise SpecError(
        f"spec {spec.source}: {field_name}: {PHASES[name][1]} needs about "
        f"{needed / 2**30:.1f} GiB, more than the {available / 2**30:.1f} GiB available; "
        f"lower {lower}"
    )


def aggregation_threads() -> int:
    """Grid points the in-process Dask aggregation works on at once (analysis.aggregate)."""
    return min(4, os.cpu_count() or 1)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def _basis(spec: SweepSpec) -> Any:
    return targets.basis_of(targets.make_spec(**spec.target))


def _grid_points(spec: SweepSpec) -> int:
    """Number of grid points (as jobs.studies.grid_axes, whose module imports this one)."""
    grid = spec.grid
    if spec.sweep.study == "dynamics":
        return len(grid.train_sizes) * len(grid.lr_factors) * len(grid.widths)
    if spec.sweep.study == "entanglement":
        return len(grid.architectures) * len(grid.widths)
    return len(grid.widths)


# ---------------------------------------------------------------------------------------
# field checks
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Checker:
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
