"""The entanglement study (paper Fig. 1; docs/theory.md §6).

Grid ``architecture x width``. Preparing the store computes, per cut ``N_A = 1 .. N/2``,
the Page value, the Haar Renyi-2 value and the GP replica estimate of each
architecture. A task writes its members' von Neumann entropies, purities and norms
(:func:`suite.entanglement.ensemble_entanglement`); aggregating a grid point gives their
means and standard errors and the replica ratio with its jackknife error
(:func:`suite.entanglement.ensemble_summary`). Natural logarithms throughout.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from jobs.entanglement import EntanglementStudy, gp_renyi2
from jobs.registry import Layout, Study, Task, TaskCost, register
from jobs.spec import BASELINE_BYTES, SweepSpec
from jobs.studies.base import (
    aggregation_bytes,
    array_spec,
    coordinate_spec,
    forward_flop,
    grid_coordinates,
    grid_value,
)
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


def entanglement_study(spec: SweepSpec) -> EntanglementStudy:
    """The Fig. 1 study's settings (architectures' scales) from ``[entanglement]``."""
    e = spec.entanglement
    return EntanglementStudy(
        n_sites=e.n_sites,
        members=spec.ensemble.members,
        widths=spec.grid.widths,
        architectures=spec.grid.architectures,
        cosnet_s0=e.cosnet_s0,
        cosnet_s1=e.cosnet_s1,
        gaussnet_s0=e.gaussnet_s0,
        gaussnet_sb=e.gaussnet_sb,
        relu_depth=e.relu_depth,
        seed=spec.sweep.seed,
    )


class Entanglement(Study):
    """Entanglement of finite-width NNQS ensembles against the GP and Page values."""

    name = "entanglement"
    sections = ("grid", "ensemble", "entanglement")
    grid_keys = ("widths", "architectures")
    lowered_by: ClassVar[dict[str, str]] = {
        "preparation": "entanglement.n_sites",
        "shard": "ensemble.shard_size",
        "aggregation": "ensemble.members",
    }

    def axes(self, spec: SweepSpec) -> dict[str, tuple[Any, ...]]:
        return {"architecture": spec.grid.architectures, "width": spec.grid.widths}

    def layout(self, spec: SweepSpec) -> Layout:
        """Store of an entanglement sweep; prepares Page, Haar and GP values per cut."""
        study = entanglement_study(spec)
        cuts = study.cuts
        n_a, n_w, n_c = len(spec.grid.architectures), len(spec.grid.widths), len(cuts)
        n_m, size = spec.ensemble.members, spec.ensemble.shard_size
        n = spec.entanglement.n_sites
        dims = [(2**c, 2 ** (n - c)) for c in cuts]
        page = np.array([page_entropy(a, b) for a, b in dims])
        haar = np.array([-math.log(haar_purity(a, b)) for a, b in dims])
        gp = np.array(
            [
                gp_renyi2(study.nnqs(arch, spec.grid.widths[0]), n, cuts)
                for arch in spec.grid.architectures
            ]
        )
        coords, initial = grid_coordinates(spec)
        for name, values in (("cut", cuts), ("member", np.arange(n_m))):
            array, data = coordinate_spec(name, values)
            coords.append(array)
            initial[name] = data
        point = {"architecture": n_a, "width": n_w}
        arrays = (
            coords
            + [
                array_spec("page", {"cut": n_c}, (n_c,)),
                array_spec("haar_renyi2", {"cut": n_c}, (n_c,)),
                array_spec("gp_renyi2", {"architecture": n_a, "cut": n_c}, (n_a, n_c)),
                array_spec("von_neumann", {**point, "member": n_m, "cut": n_c}, (1, 1, size, n_c)),
                array_spec("purity", {**point, "member": n_m, "cut": n_c}, (1, 1, size, n_c)),
                array_spec("norm_sq", {**point, "member": n_m}, (1, 1, size)),
            ]
            + [
                array_spec(name, {**point, "cut": n_c}, (1, 1, n_c))
                for name in ENTANGLEMENT_STATISTICS
            ]
        )
        initial.update(page=page, haar_renyi2=haar, gp_renyi2=gp)
        return Layout(arrays, initial, {"log": "natural"}, [])

    def run(self, spec: SweepSpec, store: SweepStore, task: Task) -> list[tuple[str, Region]]:
        """Entropies of the task's members at its (architecture, width)."""
        a, w = task.point
        study = entanglement_study(spec)
        width = spec.grid.widths[w]
        result = ensemble_entanglement(
            study.nnqs(spec.grid.architectures[a], width),
            study.n_sites,
            study.cuts,
            seed=spec.sweep.seed,
            members=task.members,
            member_chunk=study.member_chunk(width),
        )
        members = slice(task.start, task.stop)
        regions: list[tuple[str, Region]] = []
        for name, values in (
            ("von_neumann", result.von_neumann[None, None]),
            ("purity", result.purity[None, None]),
            ("norm_sq", result.norm_sq[None, None]),
        ):
            region = (slice(a, a + 1), slice(w, w + 1), members) + (
                (slice(None),) if name != "norm_sq" else ()
            )
            store.write(name, region, values)
            regions.append((name, region))
        return regions

    def aggregate(self, store: SweepStore, point: tuple[int, ...]) -> None:
        a, w = point
        at = (slice(a, a + 1), slice(w, w + 1))
        members = slice(None)
        cuts = store.read("cut")
        result = EnsembleEntanglement(
            subsystems=tuple(tuple(range(c)) for c in cuts),
            members=store.read("member"),
            von_neumann=store.read("von_neumann", (*at, members, slice(None)))[0, 0],
            purity=store.read("purity", (*at, members, slice(None)))[0, 0],
            norm_sq=store.read("norm_sq", (*at, members))[0, 0],
        )
        summary = ensemble_summary(result)
        for name in ENTANGLEMENT_STATISTICS:
            store.write(name, (*at, slice(None)), np.asarray(summary[name])[None, None])

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
