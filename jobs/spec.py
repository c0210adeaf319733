"""Sweep specs: a TOML file describes a study over a grid; it is validated before anything runs.

A spec is data, not code (benchopt / ReFrame style). Sections (every key optional
except ``sweep.name`` and ``sweep.study``; unknown sections and keys are refused)::

    [sweep]        name, study (a registered study, jobs.registry), seed, dtype
    [target]       model ("tfim" | "hubbard") and its parameters (suite.targets)
    [network]      kind, activation, depth              (all but entanglement)
    [grid]         widths, train_sizes, lr_factors      (dynamics, kernels)
                   widths, lr_factors                   (ground_state, fidelity, tomography)
                   widths, architectures, cosnet_s0     (entanglement)
    [ensemble]     members, shard_size
    [training]     log_points, max_steps, tolerance, target_scale, linearised (dynamics)
    [search]       steps, log_points, linearised, bases, shots, continuous, paired
                   (ground_state, fidelity, tomography)
    [entanglement] n_sites, cosnet_s1, gaussnet_s0, gaussnet_sb, relu_depth
    [kernels]      full, block                          (kernels, dynamics)
    [checkpoint]   every_seconds, every_logs, keep      (dynamics and the loss studies)
    [executor]     kind ("local" | "slurm" | "mpi"), processes, profile, ranks,
                   and a [executor.slurm] table of cluster-profile overrides

Which sections and grid keys a study takes, and its cross-field rules, are the study's
(:class:`jobs.registry.Study`). Every error is a :class:`SpecError` (a ``ValueError``)
whose one-line message names the field (``spec quickstart.toml: grid.widths must be
...``). The executor section does not enter the :meth:`SweepSpec.fingerprint`: one
sweep may be started locally and resumed on a cluster.

Each section is a frozen ``msgspec.Struct`` whose field types carry the rules and whose
defaults are declared there, once. msgspec: one small dependency with none of its own;
strict (a bool is not an int, ``"64"`` is not a number); unknown keys refused; bounds as
``Annotated[int, Meta(ge=1)]``; errors with a JSON path (``Expected `int` >= 1 - at
`$.widths[0]```) that :func:`jobs.typed.convert` words as our one-line messages.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar, get_args

import msgspec
from msgspec import Meta, Struct

from jobs import registry
from jobs.profiles import check_overrides
from jobs.typed import NonNegative, Positive, convert, message
from suite import networks, supervised, targets, training
from suite.store import SweepStore

# the vocabularies of the library's own types
KINDS = get_args(networks.NNQSKind)
ARCHITECTURES = get_args(networks.Architecture)
#: the shipped example specs, by name (``nnqs run quickstart``)
SPEC_DIR = Path(__file__).resolve().parent / "specs"
#: entanglement studies hold 2**n_sites amplitudes per member
MAX_ENTANGLEMENT_SITES = 14


T = TypeVar("T")
#: a grid axis: a non-empty list of values (Grid refuses repeats)
Axis = Annotated[tuple[T, ...], Meta(min_length=1)]


class SpecError(ValueError):
    """An invalid sweep spec; the message names the file and the field."""


class Section(Struct, frozen=True, forbid_unknown_fields=True):
    """A table of a spec: its fields are its keys, with their types and defaults.

    ``added_later`` names fields added after stores were made, whose default keeps the
    earlier results: at that default they stay out of the fingerprint, so those stores
    still resume.
    """

    added_later: ClassVar[tuple[str, ...]] = ()


class Sweep(Section):
    name: Annotated[
        str, Meta(pattern=r"\A[\w-]*[^\W_][\w-]*\Z", description="letters, digits, '-' or '_'")
    ]
    study: str  # a registered study: checked below, as studies may register late
    seed: Annotated[int, Meta(ge=0)] = 0
    dtype: Literal[training.DTYPES] = "float32"

    def __post_init__(self) -> None:
        if self.study not in registry.names():
            requirement = f"must be one of {', '.join(registry.names())}"
            raise ValueError(message("study", requirement, self.study))


class Network(Section):
    kind: networks.NNQSKind = "decoupled"
    activation: networks.Activation = "relu"
    depth: Annotated[int, Meta(ge=1, le=8)] = 1


class Grid(Section):
    """The axes of the grid: each a non-empty list (a tuple once read) without repeats."""

    widths: Axis[Annotated[int, Meta(ge=1, le=2**20)]] = (64, 256)
    train_sizes: Axis[Annotated[int, Meta(ge=1)]] = (128,)
    lr_factors: Axis[Annotated[float, Meta(gt=0, lt=1)]] = (0.5,)  # eta < eta_max: §5
    architectures: Axis[networks.Architecture] = ARCHITECTURES
    #: CosNet input scales: an axis of the entanglement study (the s0 crossover)
    cosnet_s0: Annotated[Axis[Positive], Meta(description="a non-empty list of numbers > 0")] = (
        10.0,
    )

    def __post_init__(self) -> None:
        for key in self.__struct_fields__:
            values = getattr(self, key)
            if len(set(values)) != len(values):
                raise ValueError(message(key, "must not repeat values", list(values)))


class Ensemble(Section):
    members: Annotated[int, Meta(ge=2, le=10**7)] = 64
    shard_size: Annotated[int, Meta(ge=1)] = 16

    def __post_init__(self) -> None:
        if self.shard_size > self.members:
            requirement = f"must be at most members ({self.members})"
            raise ValueError(message("shard_size", requirement, self.shard_size))

    @property
    def shards(self) -> int:
        return -(-self.members // self.shard_size)


class Training(Section):
    """Supervised training (dynamics study; docs/theory.md §5): ``log_points`` logged
    steps up to the infinite-width convergence (``tolerance``), capped by ``max_steps``;
    with ``linearised`` each member's linearisation too (§7.3)."""

    added_later = ("linearised",)

    log_points: Annotated[int, Meta(ge=2, le=1000)] = 16
    max_steps: Annotated[int, Meta(ge=0, le=10**7)] = 0
    tolerance: Annotated[float, Meta(ge=1e-12, le=0.5)] = 1e-3
    target_scale: supervised.TargetScale = "unit-rms"
    linearised: bool = False


class Search(Section):
    """Training on a whole-basis loss (ground_state, fidelity, tomography studies;
    docs/theory.md §7): ``steps`` gradient-descent steps logged at ``log_points`` steps
    (log-spaced from 0), the per-member linearisations with ``linearised``, the
    infinite-width ensemble also in continuous time with ``continuous``, each member's
    own initial function under the infinite-width QS-NTK with ``paired``, and for
    tomography the measurement ``bases`` besides all-Z and all-X (strings of X, Y, Z, one
    letter per site) and ``shots`` per basis (0: the exact Born distributions)."""

    added_later = ("continuous", "paired")

    steps: Annotated[int, Meta(ge=1, le=10**7)] = 1000
    log_points: Annotated[int, Meta(ge=2, le=1000)] = 16
    linearised: bool = True
    bases: tuple[str, ...] = ()
    shots: Annotated[int, Meta(ge=0, le=10**9)] = 0
    continuous: bool = False
    paired: bool = False


class Entanglement(Section):
    n_sites: Annotated[int, Meta(ge=2, le=MAX_ENTANGLEMENT_SITES)] = 12
    cosnet_s1: Positive = 1.0
    gaussnet_s0: Positive = 1.0
    gaussnet_sb: NonNegative = 0.0
    relu_depth: Annotated[int, Meta(ge=1, le=8)] = 1


class Kernels(Section):
    full: bool = False
    block: Annotated[int, Meta(ge=16, le=2**16)] = 1024


class Checkpoint(Section):
    """When a training task saves its state into the store (jobs.checkpoints): after
    ``every_seconds`` of training since its last save (0: never by time) or after
    ``every_logs`` more logged steps (0: never by count), whichever comes first, and when
    SLURM signals its time limit; ``keep`` keeps the checkpoints of a finished task."""

    every_seconds: Annotated[float, Meta(ge=0, le=10**6)] = 600.0
    every_logs: Annotated[int, Meta(ge=0, le=1000)] = 0
    keep: bool = False


class Executor(Section):
    kind: Literal["local", "slurm", "mpi"] = "local"
    processes: Annotated[int, Meta(ge=1, le=1024)] = 1
    profile: Annotated[str, Meta(min_length=1, description="a non-empty string")] = "local"
    ranks: Annotated[int, Meta(ge=1, le=4096)] = 2
    #: cluster-profile overrides (:func:`jobs.profiles.check_overrides`)
    slurm: dict[str, Any] = {}


class SweepSpec(Struct, frozen=True):
    """A validated sweep (see the module docstring for the TOML layout)."""

    sweep: Sweep
    target: dict[str, Any]
    network: Network
    grid: Grid
    ensemble: Ensemble
    training: Training
    search: Search
    entanglement: Entanglement
    kernels: Kernels
    checkpoint: Checkpoint
    executor: Executor
    source: str = "<spec>"

    def science(self) -> dict[str, Any]:
        """Everything that determines the results: the study's sections, less the executor
        and the checkpoint cadence (module docstring)."""
        data = self.to_dict()
        data.pop("executor")
        data.pop("checkpoint", None)
        for name, table in data.items():
            section = getattr(self, name)
            if not isinstance(section, Section):
                continue  # [target] is a plain table
            defaults = {
                field.name: msgspec.to_builtins(field.default)
                for field in msgspec.structs.fields(section)
                if field.name in section.added_later
            }
            for key, default in defaults.items():
                if table[key] == default:
                    del table[key]
        return data

    def fingerprint(self) -> str:
        """SHA-256 of the canonical JSON of :meth:`science` (the store refuses another)."""
        text = json.dumps(self.science(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """The spec as TOML-shaped tables: the study's own sections and the executor."""
        data = msgspec.to_builtins(self)
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


#: the tables of a spec and their types ([target] is suite.targets', read by _target)
SECTIONS = {
    field.name: field.type for field in msgspec.structs.fields(SweepSpec) if field.name != "source"
}


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

    Each table is read into its section's struct (the types carry the rules and the
    defaults), then the target, and the study's own rules (:meth:`jobs.registry.Study.check`).
    """
    check = SpecChecker(source)
    if not isinstance(data, dict):
        raise check.error("spec", "must be a table", data)
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise SpecError(f"spec {source}: unknown sections {unknown}; known: {sorted(SECTIONS)}")
    if "sweep" not in data:
        raise SpecError(f"spec {source}: the [sweep] section is required (name and study)")
    where = f"spec {source}"
    sweep = convert(data["sweep"], Sweep, where, "sweep", SpecError)
    study = registry.study(sweep.study)
    _check_applies(check, study, data)
    tables = {
        name: convert(data.get(name, {}), kind, where, name, SpecError)
        for name, kind in SECTIONS.items()
        if name != "sweep"
    }
    if tables["executor"].slurm:
        try:
            check_overrides(tables["executor"].slurm, f"{source} [executor.slurm]")
        except ValueError as error:
            raise SpecError(f"{where}: executor.slurm: {error}") from None
    target = _target(check, tables.pop("target"))
    spec = SweepSpec(sweep=sweep, target=target, **tables, source=source)
    study.check(spec, check)
    return spec


def _target(check: SpecChecker, table: dict[str, Any]) -> dict[str, Any]:
    """The target section as ``suite.targets.make_spec`` accepts it, dimension checked."""
    models = tuple(sorted(targets.TARGETS))
    model = table.get("model", "tfim")
    if model not in models:
        raise check.error("target.model", f"must be one of {', '.join(models)}", model)
    known = sorted(field.name for field in dataclasses.fields(targets.TARGETS[model]))
    params = {key: value for key, value in table.items() if key != "model"}
    if unknown := sorted(set(params) - set(known)):
        keys = ", ".join(known)
        raise SpecError(f"spec {check.source}: unknown key 'target.{unknown[0]}' (known: {keys})")
    try:
        quench = targets.make_spec(model, **params)
    except (ValueError, TypeError) as error:  # suite.targets names the parameter first
        raise SpecError(f"spec {check.source}: target.{error}") from None
    try:
        targets.basis_of(quench)
    except ValueError as error:
        raise SpecError(f"spec {check.source}: target: {error}") from None
    return {"model": model, **dataclasses.asdict(quench)}


def _check_applies(check: SpecChecker, study: registry.Study, data: dict[str, Any]) -> None:
    """Sections and grid keys of another study are refused before their values are read."""
    for section in data:
        if section not in ("sweep", "executor", *study.sections):
            raise SpecError(
                f"spec {check.source}: [{section}] does not apply to a {study.name} study"
            )
    grid = data.get("grid", {})
    for key in grid if isinstance(grid, dict) else ():
        if key not in study.grid_keys:
            raise SpecError(
                f"spec {check.source}: grid.{key} does not apply to a {study.name} study "
                f"(its grid: {', '.join(study.grid_keys)})"
            )
    moved = data.get("entanglement", {})
    if isinstance(moved, dict) and "cosnet_s0" in moved:
        raise SpecError(
            f"spec {check.source}: entanglement.cosnet_s0 is now grid.cosnet_s0, a list "
            f"(an axis of the grid): write grid.cosnet_s0 = [{moved['cosnet_s0']!r}]"
        )


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


@dataclass(frozen=True)
class SpecChecker:
    """How a study's rules (:meth:`jobs.registry.Study.check`) refuse a spec: the error
    names the spec and the field."""

    source: str

    def error(self, name: str, requirement: str, value: Any) -> SpecError:
        return SpecError(f"spec {self.source}: {message(name, requirement, value)}")


def store_spec(store: SweepStore) -> SweepSpec:
    """The spec a store was created from (re-validated): a store whose spec this version
    no longer accepts (made by an older nnqs) is refused with what to do."""
    try:
        return parse_spec(store.attrs["spec"], f"store {store.path.name}")
    except SpecError as error:
        raise SpecError(
            f"{error} (this store was made by an nnqs whose spec format differs: run its "
            "spec, updated, into a new store; see the README's store migrations)"
        ) from None
