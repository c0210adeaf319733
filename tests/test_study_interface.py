"""A study is one class and one registration line (jobs.registry): a tiny study defined
here runs through the whole engine as the built-in ones do, with no other file changed:
``nnqs run``, ``status --verify``, ``resubmit`` of a corrupted chunk, ``aggregate``,
``report`` and ``validate``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from jobs.registry import Layout, Study, Task, TaskCost, register, study
from jobs.spec import BASELINE_BYTES, SweepSpec, parse_spec
from jobs.studies.base import (
    About,
    aggregation_bytes,
    array_spec,
    coordinate_spec,
    grid_coordinates,
    grid_value,
)
from nnqs.cli import main
from suite.store import Region, SweepStore


def member_norm(seed: int, member: int, width: int) -> float:
    """The tiny study's per-member result: the norm of a seeded Gaussian vector."""
    return float(np.linalg.norm(np.random.default_rng((seed, member)).normal(size=width)))


class Norms(Study):
    """Per member, the norm of a ``width``-vector; per width, the mean over the members."""

    name = "test-norms"
    sections = ("grid", "ensemble")
    grid_keys = ("widths",)
    lowered_by: ClassVar[dict[str, str]] = {
        "preparation": "grid.widths",
        "shard": "ensemble.shard_size",
        "aggregation": "ensemble.members",
    }

    def axes(self, spec: SweepSpec) -> dict[str, tuple[Any, ...]]:
        return {"width": spec.grid.widths}

    def memory(self, spec: SweepSpec) -> dict[str, int]:
        point = 8 * spec.ensemble.members
        return {
            "preparation": BASELINE_BYTES,
            "shard": BASELINE_BYTES + 8 * max(spec.grid.widths),
            "aggregation": aggregation_bytes(spec, point),
        }

    def layout(self, spec: SweepSpec) -> Layout:
        n_w, n_m = len(spec.grid.widths), spec.ensemble.members
        arrays, initial = grid_coordinates(spec)
        member, initial["member"] = coordinate_spec("member", np.arange(n_m))
        arrays += [
            member,
            array_spec(
                "norm",
                {"width": n_w, "member": n_m},
                (1, spec.ensemble.shard_size),
                about=About("norm", "1", "each member's Gaussian vector's norm"),
            ),
            array_spec(
                "mean_norm",
                {"width": n_w},
                (1,),
                about=About("mean norm", "1", "mean over the members of norm"),
            ),
        ]
        return Layout(arrays, initial, {}, [])

    def run(self, spec: SweepSpec, store: SweepStore, task: Task) -> list[tuple[str, Region]]:
        width = grid_value(spec, task)["width"]
        norms = [member_norm(spec.sweep.seed, int(m), width) for m in task.members]
        (w,) = task.point
        region: Region = (slice(w, w + 1), slice(task.start, task.stop))
        store.write("norm", region, np.asarray(norms)[None])
        return [("norm", region)]

    def aggregate(self, store: SweepStore, point: tuple[int, ...]) -> None:
        (w,) = point
        store.write("mean_norm", (slice(w, w + 1),), np.array([store.read("norm")[w].mean()]))

    def cost(self, spec: SweepSpec, task: Task) -> TaskCost:
        return TaskCost(3.0 * (task.stop - task.start) * grid_value(spec, task)["width"])


register(Norms())  # the one registration line

SPEC = """
[sweep]
name = "norms"
study = "test-norms"
seed = 3
[grid]
widths = [4, 64, 1024]
[ensemble]
members = 6
shard_size = 4
"""


def nnqs(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    """``nnqs ARGV`` in this process (where the study is registered); status and JSON."""
    status = main(list(argv))
    out = capsys.readouterr().out
    return status, json.loads(out) if out.strip() else None


def test_a_study_defined_here_runs_through_the_engine(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert study("test-norms").name == "test-norms"
    spec_path = tmp_path / "norms.toml"
    spec_path.write_text(SPEC)
    store = tmp_path / "norms.zarr"

    status, plan = nnqs(capsys, "validate", str(spec_path), "--gflops", "1")
    assert status == 0 and plan["tasks"] == 6 and plan["grid"] == {"width": [4, 64, 1024]}
    assert plan["per_task"][-1]["gflop"] == pytest.approx(3 * 4 * 1024 / 1e9, rel=1e-3)

    status, answer = nnqs(capsys, "run", str(spec_path), "--store", str(store), "--no-aggregate")
    assert status == 0 and answer["tasks"]["done"] == 6
    expected = np.array([[member_norm(3, m, w) for m in range(6)] for w in (4, 64, 1024)])
    np.testing.assert_array_equal(SweepStore(store).read("norm"), expected)

    # a flipped chunk is found by the checksums and only its task is recomputed
    chunk = next(p for p in (store / "norm").rglob("*") if p.is_file() and p.name != "zarr.json")
    chunk.write_bytes(bytes(b ^ 0xFF for b in chunk.read_bytes()))
    status, report = nnqs(capsys, "status", str(store), "--verify")
    assert status == 1 and report["tasks"]["corrupt"] == 1  # exit status 1: a corrupt task
    status, again = nnqs(capsys, "resubmit", str(store), "--no-aggregate")
    assert status == 0 and len(again["resubmitted"]) == 1 and again["tasks"]["done"] == 6
    np.testing.assert_array_equal(SweepStore(store).read("norm"), expected)

    status, done = nnqs(capsys, "aggregate", str(store))
    assert status == 0 and done["aggregated"]
    np.testing.assert_allclose(SweepStore(store).read("mean_norm"), expected.mean(axis=1))

    status, written = nnqs(capsys, "report", str(store), "--out", str(tmp_path / "report"))
    assert status == 0
    text = Path(written["report"]).read_text()
    assert "# Sweep norms (test-norms)" in text and "| width | mean_norm |" in text
    assert f"| 1024 | {expected[2].mean():.4g} |" in text


def test_a_study_refuses_sections_and_grid_keys_it_does_not_take() -> None:
    base = {"sweep": {"name": "n", "study": "test-norms"}, "grid": {"widths": [4]}}
    parse_spec(base, "n.toml")
    with pytest.raises(ValueError, match=r"\[training\] does not apply to a test-norms study"):
        parse_spec({**base, "training": {"max_steps": 3}}, "n.toml")
    with pytest.raises(ValueError, match=r"grid\.train_sizes does not apply to a test-norms study"):
        parse_spec({**base, "grid": {"widths": [4], "train_sizes": [2]}}, "n.toml")


def test_registering_another_study_under_a_taken_name_is_refused() -> None:
    class Impostor(Norms):
        pass

    with pytest.raises(ValueError, match="already registered"):
        register(Impostor())
    with pytest.raises(KeyError, match="known: dynamics, entanglement, kernels"):
        study("no-such-study")
