"""The kernels study: the empirical QS-NTK of finite networks against its infinite-width
limit (docs/theory.md §4).

Grid ``width``. Preparing the store computes the train sets, the infinite-width QS-NTK
on the train set of the largest train size and ``Theta(basis, train)`` per train size
(and, with ``kernels.full``, the ``D x D`` NNGP and NTK), as Dask tiles. A task writes
its members' relative distance of the empirical QS-NTK from the infinite one and the
shard's kernel sum; aggregating a width gives the members' mean distance and the
distance of their mean kernel.
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax
import numpy as np

from jobs.registry import Layout, Study, Task, TaskCost, register
from jobs.spec import BASELINE_BYTES, SpecChecker, SweepSpec
from jobs.studies.base import (
    About,
    aggregation_bytes,
    array_spec,
    coordinate_spec,
    grid_coordinates,
    grid_value,
    shard_total,
)
from jobs.studies.problems import (
    BLOCKS,
    INPUTS,
    basis_and_target,
    check_train_sizes,
    dynamics_nnqs,
    full_gram_arrays,
    parameter_count,
    preparation_bytes,
    supervised_problem,
    train_set_arrays,
)
from suite import networks
from suite.kernels.empirical import empirical_qs_ntk
from suite.qsntk import PairKernel
from suite.store import Region, SweepStore


class Kernels(Study):
    """Empirical QS-NTKs of finite ensembles against the infinite-width QS-NTK."""

    name = "kernels"
    sections = ("target", "network", "grid", "ensemble", "kernels")
    grid_keys = ("widths", "train_sizes")
    lowered_by: ClassVar[dict[str, str]] = {
        "preparation": "grid.train_sizes",
        "shard": "grid.widths",
        "aggregation": "grid.train_sizes",
    }

    def axes(self, spec: SweepSpec) -> dict[str, tuple[Any, ...]]:
        return {"width": spec.grid.widths}

    def check(self, spec: SweepSpec, check: SpecChecker) -> None:
        check_train_sizes(spec, check)

    def layout(self, spec: SweepSpec) -> Layout:
        """Store of a kernels sweep: infinite NNGP/NTK Grams (Dask tiles), train-set spectra.

        ``ntk_basis_train`` (per train size) always; the full ``D x D`` ``ntk`` and
        ``nngp`` when ``kernels.full``. A task's members get the empirical QS-NTK on the
        train set of the largest train size.
        """
        inputs, phi = basis_and_target(spec)
        trains, blocks = [], []
        for t in range(len(spec.grid.train_sizes)):
            problem = supervised_problem(spec, inputs, phi, t)
            trains.append(problem.train)
            blocks.append(problem.train_ntk_block)
            del problem
        dimension = inputs.shape[0]
        n_w, b_max = len(spec.grid.widths), max(spec.grid.train_sizes)
        n_m, size = spec.ensemble.members, spec.ensemble.shard_size
        coords, initial = grid_coordinates(spec)
        for name, values in (
            ("train_size", spec.grid.train_sizes),
            ("block", list(BLOCKS)),
            ("member", np.arange(n_m)),
        ):
            array, data = coordinate_spec(name, values)
            coords.append(array)
            initial[name] = data
        train_arrays, train_values, grams = train_set_arrays(spec, inputs, trains, blocks)
        square = {"row": 2 * b_max, "column": 2 * b_max}
        arrays = [
            *coords,
            *train_arrays,
            array_spec(
                "inputs", {"basis": dimension, "site": inputs.shape[1]}, inputs.shape, about=INPUTS
            ),
            array_spec(
                "ntk_train",
                square,
                (2 * b_max, 2 * b_max),
                about=About(
                    "infinite-width QS-NTK on the train set",
                    "1",
                    "the 2B x 2B block matrix [[uu, uv], [vu, vv]] of the infinite-width NTK "
                    "on the largest train set (docs/theory.md §4)",
                ),
            ),
            array_spec(
                "empirical_deviation",
                {"width": n_w, "member": n_m},
                (1, size),
                about=About(
                    "member's QS-NTK distance",
                    "1",
                    "each member's ||Theta_empirical - Theta_inf||_F / ||Theta_inf||_F on the "
                    "largest train set (docs/theory.md §4)",
                ),
            ),
            array_spec(
                "empirical_sum",
                {"width": n_w, "shard": spec.ensemble.shards, **square},
                (1, 1, 2 * b_max, 2 * b_max),
                about=About(
                    "shard sum of empirical QS-NTKs",
                    "1",
                    "sum over the shard's members of the 2B x 2B empirical QS-NTK (§4)",
                ),
            ),
            array_spec(
                "mean_empirical_deviation",
                {"width": n_w},
                (1,),
                about=About(
                    "mean member QS-NTK distance",
                    "1",
                    "mean over the members of empirical_deviation (docs/theory.md §4)",
                ),
            ),
            array_spec(
                "deviation_of_mean_kernel",
                {"width": n_w},
                (1,),
                about=About(
                    "QS-NTK distance of the mean kernel",
                    "1",
                    "relative Frobenius distance of the members' mean empirical QS-NTK from "
                    "the infinite-width one (docs/theory.md §4)",
                ),
            ),
        ]
        initial.update(
            train_values, inputs=inputs, ntk_train=blocks[int(np.argmax(spec.grid.train_sizes))]
        )
        full_arrays, full_grams = full_gram_arrays(spec, inputs)
        return Layout(arrays + full_arrays, initial, {}, grams + full_grams)

    def run(self, spec: SweepSpec, store: SweepStore, task: Task) -> list[tuple[str, Region]]:
        """Empirical QS-NTK of the task's members on the largest train set, and its deviation."""
        (w,) = task.point
        width = spec.grid.widths[w]
        t = int(np.argmax(spec.grid.train_sizes))
        x = store.read("inputs")[np.flatnonzero(store.read("train_mask")[t])]
        reference = store.read("ntk_train")
        nnqs = dynamics_nnqs(spec, width)
        total = np.zeros_like(reference)
        deviations = []
        for member in task.members:
            key = networks.member_keys(spec.sweep.seed, np.array([member]))[0]
            params = nnqs.init(key, x.shape[1])
            blocks = empirical_qs_ntk(nnqs, params, jax.numpy.asarray(x), jax.numpy.asarray(x))
            empirical = block_matrix(blocks)
            total += empirical
            deviations.append(np.linalg.norm(empirical - reference) / np.linalg.norm(reference))
        regions: list[tuple[str, Region]] = []
        region: Region = (slice(w, w + 1), slice(task.start, task.stop))
        store.write("empirical_deviation", region, np.asarray(deviations)[None])
        regions.append(("empirical_deviation", region))
        region = (slice(w, w + 1), slice(task.shard, task.shard + 1), slice(None), slice(None))
        store.write("empirical_sum", region, total[None, None])
        regions.append(("empirical_sum", region))
        return regions

    def aggregate(self, store: SweepStore, point: tuple[int, ...]) -> None:
        (w,) = point
        deviations = store.read("empirical_deviation")[w]
        mean_kernel = shard_total(store, "empirical_sum", (slice(w, w + 1),)) / deviations.size
        reference = store.read("ntk_train")
        gap = np.linalg.norm(mean_kernel - reference) / np.linalg.norm(reference)
        store.write("mean_empirical_deviation", (slice(w, w + 1),), np.array([deviations.mean()]))
        store.write("deviation_of_mean_kernel", (slice(w, w + 1),), np.array([gap]))

    def cost(self, spec: SweepSpec, task: Task) -> TaskCost:
        """Per member, the Jacobian of ``2B`` outputs (``6 P`` each, reverse mode) and the
        ``2B x 2B`` kernel (``2 P`` per entry), for ``P`` parameters."""
        width, train = grid_value(spec, task)["width"], max(spec.grid.train_sizes)
        parameters = parameter_count(spec, width)
        per_member = 6.0 * 2 * train * parameters + 2.0 * (2 * train) ** 2 * parameters
        return TaskCost((task.stop - task.start) * per_member)

    def memory(self, spec: SweepSpec) -> dict[str, int]:
        """Preparation: :func:`jobs.studies.problems.preparation_bytes`. A shard: one
        member's Jacobian on the largest train set and the ``2B x 2B`` kernels.
        Aggregating a width: the ``2B x 2B`` kernel sums."""
        train = max(spec.grid.train_sizes)
        parameters = parameter_count(spec, max(spec.grid.widths))
        shard = BASELINE_BYTES + 8 * (2 * train * parameters + 4 * (2 * train) ** 2)
        point = 3 * 8 * (2 * train) ** 2 + 8 * spec.ensemble.members
        return {
            "preparation": preparation_bytes(spec),
            "shard": shard,
            "aggregation": aggregation_bytes(spec, point),
        }


def block_matrix(blocks: PairKernel) -> np.ndarray:
    uu, uv, vu, vv = (np.asarray(b) for b in blocks)
    return np.block([[uu, uv], [vu, vv]])


register(Kernels())
