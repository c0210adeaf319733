"""The entanglement study (paper Fig. 1 and the CosNet s0 crossover; docs/theory.md §6).

Grid ``architecture x width x cosnet_s0``: each architecture is ``psi = f_R + i f_I``
with two independent networks (CosNet, GaussNet or a ReLU MLP; scales in
``[entanglement]``), and ``grid.cosnet_s0`` scans CosNet's input scale (a scan takes
CosNet alone). Preparing the store computes, per cut ``N_A = 1 .. N/2`` (A = the first
``N_A`` sites), the Page value, the Haar Renyi-2 value and the GP replica estimate of
each (architecture, s0). A task writes its members' von Neumann entropies, purities
and norms (:func:`suite.entanglement.ensemble_entanglement`); aggregating a grid point
gives their means and standard errors and the replica ratio with its jackknife error
(:func:`suite.entanglement.ensemble_summary`). Natural logarithms throughout.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from jobs.registry import Layout, Study, Task, TaskCost, register
from jobs.spec import BASELINE_BYTES, SpecChecker, SweepSpec
from jobs.studies.base import (
    About,
    aggregation_bytes,
    array_spec,
    coordinate_spec,
    forward_flop,
    grid_coordinates,
    grid_value,
)
from suite import networks
from suite.entanglement import (
    EnsembleEntanglement,
    ensemble_entanglement,
    ensemble_summary,
    haar_purity,
    page_entropy,
)
from suite.store import Region, SweepStore

#: the entanglement aggregation's per-cut statistics (suite.entanglement.ensemble_summary)
ENTANGLEMENT_STATISTICS = (
    "mean_von_neumann",
    "sem_von_neumann",
    "mean_renyi2",
    "sem_renyi2",
    "ratio_renyi2",
    "sem_ratio_renyi2",
)
#: the aggregated statistics' attributes (docs/theory.md §6; natural logarithms)
STATISTIC_ABOUT = {
    "mean_von_neumann": About(
        "mean von Neumann entropy", "nat", "mean over the members of S_vN of subsystem A (§6)"
    ),
    "sem_von_neumann": About(
        "standard error of the mean S_vN", "nat", "sample std (ddof 1) of S_vN / sqrt(M) (§6)"
    ),
    "mean_renyi2": About(
        "mean Renyi-2 entropy", "nat", "mean over the members of S_2 = -ln Tr rho_A^2 (§6)"
    ),
    "sem_renyi2": About(
        "standard error of the mean S_2", "nat", "sample std (ddof 1) of S_2 / sqrt(M) (§6)"
    ),
    "ratio_renyi2": About(
        "Renyi-2 replica ratio",
        "nat",
        "-ln(mean Tr rho~_A^2 / mean (Tr rho~)^2) over the members: the finite-ensemble "
        "quantity the GP estimate predicts (docs/theory.md §6)",
    ),
    "sem_ratio_renyi2": About(
        "jackknife error of the replica ratio", "nat", "leave-one-member-out jackknife (§6)"
    ),
}

#: hidden activations evaluated at once when computing a shard's amplitudes
CHUNK_ENTRIES = 2**25


def architecture_nnqs(spec: SweepSpec, architecture: str, width: int, s0: float) -> networks.NNQS:
    """``psi = f_R + i f_I``: two independent networks of ``architecture`` and ``width``
    (CosNet with input scale ``s0``; the other scales from ``[entanglement]``)."""
    e = spec.entanglement
    if architecture == "cosnet":
        part = networks.cosnet(width, s0, e.cosnet_s1)
    elif architecture == "gaussnet":
        part = networks.gaussnet(width, e.gaussnet_s0, sb=e.gaussnet_sb)
    else:
        part = networks.mlp(e.relu_depth, width, "relu")
    return networks.decoupled(part)


def cuts(spec: SweepSpec) -> list[int]:
    """Subsystem sizes ``N_A = 1 .. N/2`` (A = the first ``N_A`` sites)."""
    return list(range(1, spec.entanglement.n_sites // 2 + 1))


def member_chunk(spec: SweepSpec, width: int) -> int:
    """Members evaluated together: about :data:`CHUNK_ENTRIES` hidden activations."""
    return max(1, CHUNK_ENTRIES // (2**spec.entanglement.n_sites * width))


class Entanglement(Study):
    """Entanglement of finite-width NNQS ensembles against the GP and Page values."""

    name = "entanglement"
    sections = ("grid", "ensemble", "entanglement")
    grid_keys = ("architectures", "widths", "cosnet_s0")
    lowered_by: ClassVar[dict[str, str]] = {
        "preparation": "entanglement.n_sites",
        "shard": "ensemble.shard_size",
        "aggregation": "ensemble.members",
    }

    def check(self, spec: SweepSpec, check: SpecChecker) -> None:
        """``grid.cosnet_s0`` is CosNet's: a scan (several values) takes CosNet alone, and
        without CosNet in the grid it keeps its default (it would change nothing)."""
        s0, architectures = spec.grid.cosnet_s0, spec.grid.architectures
        if len(s0) > 1 and architectures != ("cosnet",):
            requirement = (
                "scans CosNet only: with more than one value, grid.architectures must be "
                f'["cosnet"] (it is {list(architectures)})'
            )
            raise check.error("grid.cosnet_s0", requirement, list(s0))
        if "cosnet" not in architectures and s0 != type(spec.grid)().cosnet_s0:
            requirement = "applies to CosNet only, and grid.architectures has no cosnet"
            raise check.error("grid.cosnet_s0", requirement, list(s0))

    def axes(self, spec: SweepSpec) -> dict[str, tuple[Any, ...]]:
        return {
            "architecture": spec.grid.architectures,
            "width": spec.grid.widths,
            "cosnet_s0": spec.grid.cosnet_s0,
        }

    def layout(self, spec: SweepSpec) -> Layout:
        """Store of an entanglement sweep; prepares Page, Haar and GP values per cut."""
        from suite.replica import nnqs_renyi2  # Dask: only when a store is created

        subsystems = cuts(spec)
        grid = spec.grid
        n_a, n_w, n_s = len(grid.architectures), len(grid.widths), len(grid.cosnet_s0)
        n_c, n_m, size = len(subsystems), spec.ensemble.members, spec.ensemble.shard_size
        n = spec.entanglement.n_sites
        dims = [(2**c, 2 ** (n - c)) for c in subsystems]
        page = np.array([page_entropy(a, b) for a, b in dims])
        haar = np.array([-math.log(haar_purity(a, b)) for a, b in dims])
        # the NNGP does not depend on the width: any width builds the same kernel map
        gp = np.array(
            [
                [
                    nnqs_renyi2(architecture_nnqs(spec, arch, grid.widths[0], s0), n, subsystems)
                    for s0 in grid.cosnet_s0
                ]
                for arch in grid.architectures
            ]
        )
        coords, initial = grid_coordinates(spec)
        for name, values in (("cut", subsystems), ("member", np.arange(n_m))):
            array, data = coordinate_spec(name, values)
            coords.append(array)
            initial[name] = data
        point = {"architecture": n_a, "width": n_w, "cosnet_s0": n_s}
        one = (1, 1, 1)
        arrays = (
            coords
            + [
                array_spec(
                    "page",
                    {"cut": n_c},
                    (n_c,),
                    about=About("Page value", "nat", "mean S_vN of Haar-random pure states (§6)"),
                ),
                array_spec(
                    "haar_renyi2",
                    {"cut": n_c},
                    (n_c,),
                    about=About(
                        "Haar Renyi-2 value",
                        "nat",
                        "-ln of the Haar mean purity of subsystem A (docs/theory.md §6)",
                    ),
                ),
                array_spec(
                    "gp_renyi2",
                    {"architecture": n_a, "cosnet_s0": n_s, "cut": n_c},
                    (n_a, n_s, n_c),
                    about=About(
                        "GP Renyi-2 estimate",
                        "nat",
                        "the infinite-width (NNGP) replica estimate of S_2 (docs/theory.md §6)",
                    ),
                ),
                array_spec(
                    "von_neumann",
                    {**point, "member": n_m, "cut": n_c},
                    (*one, size, n_c),
                    about=About("von Neumann entropy", "nat", "each member's S_vN of A (§6)"),
                ),
                array_spec(
                    "purity",
                    {**point, "member": n_m, "cut": n_c},
                    (*one, size, n_c),
                    about=About(
                        "purity", "1", "each member's Tr rho_A^2 of the normalised state (§6)"
                    ),
                ),
                array_spec(
                    "norm_sq",
                    {**point, "member": n_m},
                    (*one, size),
                    about=About(
                        "squared norm",
                        "1",
                        "each member's unnormalised sum over the basis of |psi|^2 (§6)",
                    ),
                ),
            ]
            + [
                array_spec(name, {**point, "cut": n_c}, (*one, n_c), about=STATISTIC_ABOUT[name])
                for name in ENTANGLEMENT_STATISTICS
            ]
        )
        initial.update(page=page, haar_renyi2=haar, gp_renyi2=gp)
        return Layout(arrays, initial, {"log": "natural"}, [])

    def run(self, spec: SweepSpec, store: SweepStore, task: Task) -> list[tuple[str, Region]]:
        """Entropies of the task's members at its (architecture, width, cosnet_s0)."""
        value = grid_value(spec, task)
        width = value["width"]
        result = ensemble_entanglement(
            architecture_nnqs(spec, value["architecture"], width, value["cosnet_s0"]),
            spec.entanglement.n_sites,
            cuts(spec),
            seed=spec.sweep.seed,
            members=task.members,
            member_chunk=member_chunk(spec, width),
        )
        at = (*(slice(i, i + 1) for i in task.point), slice(task.start, task.stop))
        regions: list[tuple[str, Region]] = [
            ("von_neumann", (*at, slice(None))),
            ("purity", (*at, slice(None))),
            ("norm_sq", at),
        ]
        for name, region in regions:
            store.write(name, region, getattr(result, name)[None, None, None])
        return regions

    def aggregate(self, store: SweepStore, point: tuple[int, ...]) -> None:
        at = tuple(slice(i, i + 1) for i in point)
        every = (slice(None), slice(None))
        cuts_stored = store.read("cut")
        result = EnsembleEntanglement(
            subsystems=tuple(tuple(range(c)) for c in cuts_stored),
            members=store.read("member"),
            von_neumann=store.read("von_neumann", (*at, *every))[0, 0, 0],
            purity=store.read("purity", (*at, *every))[0, 0, 0],
            norm_sq=store.read("norm_sq", (*at, slice(None)))[0, 0, 0],
        )
        summary = ensemble_summary(result)
        for name in ENTANGLEMENT_STATISTICS:
            store.write(name, (*at, slice(None)), np.asarray(summary[name])[None, None, None])

    def cost(self, spec: SweepSpec, task: Task) -> TaskCost:
        """Each member's amplitudes on the ``2^N`` configurations, and one Schmidt
        decomposition per cut (``4 a b min(a, b)`` for an ``a x b`` matrix)."""
        n, width = spec.entanglement.n_sites, grid_value(spec, task)["width"]
        depth = spec.entanglement.relu_depth
        schmidt = sum(4.0 * 2**c * 2 ** (n - c) * 2 ** min(c, n - c) for c in range(1, n // 2 + 1))
        members = task.stop - task.start
        return TaskCost(members * (forward_flop(2**n, width, n, depth) + schmidt))

    def memory(self, spec: SweepSpec) -> dict[str, int]:
        """Preparation: the closed-form GP estimate is ``O(n_sites)``. A shard: its
        members' amplitudes and hidden activations on ``2**n_sites`` configurations.
        Aggregating a point: its members' entropies and purities per cut."""
        n, members = spec.entanglement.n_sites, spec.ensemble.shard_size
        shard = BASELINE_BYTES + 8 * members * 2**n * (max(spec.grid.widths) + 4)
        point = 3 * 8 * spec.ensemble.members * (n + 2)
        return {
            "preparation": BASELINE_BYTES,
            "shard": shard,
            "aggregation": aggregation_bytes(spec, point),
        }


register(Entanglement())
