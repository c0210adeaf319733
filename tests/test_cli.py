"""The ``nnqs`` command line: target summaries, the demo, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import suite  # noqa: F401  (enables float64)
from nnqs.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_target_tfim_summary_matches_theory(capsys: pytest.CaptureFixture[str]) -> None:
    """TFIM quench from all-up: <H> = -J x (number of bonds), dimension 2^N (docs/theory.md §2)."""
    status, out, _ = run_cli(
        capsys, "target", "tfim", "--lattice", "3x2", "--boundary", "open", "--J", "0.7"
    )
    assert status == 0
    summary = json.loads(out)
    assert summary["dimension"] == 2**6
    assert summary["energy"] == pytest.approx(-0.7 * 7, abs=1e-10)  # 3x2 open: 7 bonds
    assert summary["norm"] == pytest.approx(1.0, abs=1e-10)
    assert summary["initial_energy"] is None
    assert 0.0 <= summary["loschmidt_echo"] <= 1.0
    assert summary["n_subsystem_sites"] == 3


def test_target_hubbard_several_times(capsys: pytest.CaptureFixture[str]) -> None:
    """Several times give a list; the initial ground energy at U0 = 0 is -4 - 2 sqrt 2 on 2x3."""
    status, out, _ = run_cli(
        capsys, "target", "hubbard", "--filling", "2,2", "--time", "0", "0.5", "1"
    )
    assert status == 0
    summaries = json.loads(out)
    assert [s["parameters"]["time"] for s in summaries] == [0.0, 0.5, 1.0]
    assert summaries[0]["loschmidt_echo"] == pytest.approx(1.0, abs=1e-12)
    for s in summaries:
        assert s["dimension"] == 225
        assert s["initial_energy"] == pytest.approx(-4 - 2 * 2**0.5, abs=1e-9)
    assert summaries[1]["energy"] == pytest.approx(summaries[2]["energy"], abs=1e-9)


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["target", "tfim", "--lattice", "0x3"], "lx"),
        (["target", "hubbard", "--filling", "7,1"], "n_up"),
        (["target", "tfim", "--lattice", "6x6"], "dimension"),
        (["target", "tfim", "--filling", "1,1"], "--filling"),
        (["target", "hubbard", "--lattice", "2x2", "--u-initial", "0"], "u_initial"),
    ],
)
def test_target_bad_input_is_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], names: str
) -> None:
    """Bad input: exit status 2, one line on stderr that names the parameter, no output."""
    status, out, err = run_cli(capsys, *argv)
    assert status == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("nnqs: error:")
    assert names in err


def test_unknown_model_is_rejected_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["target", "heisenberg"])
    assert exit_info.value.code == 2
    assert "heisenberg" in capsys.readouterr().err


def test_demo_summary(capsys: pytest.CaptureFixture[str]) -> None:
    """The quick-start demo: PD train kernel, learning rate 0.5 eta_max, losses that fall."""
    status, out, _ = run_cli(capsys, "demo", "--train-size", "64", "--width", "256")
    assert status == 0
    summary = json.loads(out)
    assert summary["target"]["name"] == "tfim-3x3-pbc"
    spectrum = summary["ntk_train_spectrum"]
    assert spectrum["min"] > 0
    assert summary["learning_rate"] == pytest.approx(0.5 * 2 * 64 / spectrum["max"])
    losses = summary["infinite_width_test_loss"]
    assert losses["t=inf"] < losses["t=0"]
    assert 0 < summary["empirical_vs_infinite_hermitian_ntk"] < 0.5


def test_target_entanglement_profile(capsys: pytest.CaptureFixture[str]) -> None:
    """--entanglement adds S_vN and S_2 of the first N_A sites; S_2 <= S_vN (docs/theory.md §6)."""
    status, out, _ = run_cli(capsys, "target", "tfim", "--lattice", "2x2", "--entanglement")
    assert status == 0
    profile = json.loads(out)["entanglement_profile"]
    assert [entry["sites"] for entry in profile] == [[0], [0, 1]]
    for entry in profile:
        assert 0 <= entry["entropies"]["renyi_2"] <= entry["entropies"]["von_neumann"]
    assert profile[-1]["entropies"]["von_neumann"] == pytest.approx(
        json.loads(out)["entanglement_entropy"]
    )


def test_validate_prints_the_plan_and_creates_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobs.spec import load_spec
    from jobs.studies import expand
    from suite.training.engines import flops_per_member_step

    monkeypatch.chdir(tmp_path)
    status, out, _ = run_cli(capsys, "validate", "quickstart", "--gflops", "50")
    assert status == 0
    plan = json.loads(out)
    spec = load_spec("quickstart")
    assert plan["tasks"] == len(expand(spec)) == 8 and plan["points"] == 4
    assert plan["grid"] == {"train_size": [32, 128], "lr_factor": [0.5], "width": [64, 512]}
    assert plan["fits"] and set(plan["memory_gib"]) == {"preparation", "shard", "aggregation"}
    # the largest point: 16 members x 300 steps of B = 128, n = 512, d = 9, plus 13 evaluations
    # of u and v on the 512 basis states
    largest = plan["per_task"][-1]
    assert largest["point"] == {"train_size": 128, "lr_factor": 0.5, "width": 512}
    steps = 16 * 300 * flops_per_member_step(128, 512, 9)
    evaluations = 16 * 13 * 2 * 512 * 512 * (2 * 9 + 2)
    assert largest["gflop"] == pytest.approx((steps + evaluations) / 1e9, rel=1e-3)
    assert largest["compute_seconds"] == pytest.approx(largest["gflop"] / 50, rel=1e-3)
    assert list(tmp_path.iterdir()) == []  # no store, no runs/ folder


def test_validate_of_a_spec_too_large_for_this_host_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    spec = tmp_path / "huge.toml"
    spec.write_text(
        '[sweep]\nname = "huge"\nstudy = "dynamics"\n[target]\nmodel = "tfim"\n'
        "[grid]\nwidths = [65536]\ntrain_sizes = [128]\n[ensemble]\nmembers = 4096\n"
        "shard_size = 4096\n[training]\nmax_steps = 10\n"
    )
    status, out, err = run_cli(capsys, "validate", str(spec), "--gflops", "50")
    assert status == 2
    assert json.loads(out)["fits"] is False
    assert "ensemble.shard_size" in err and "GiB" in err and err.count("\n") == 1


def test_validate_of_a_bad_spec_names_the_field(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    spec = tmp_path / "bad.toml"
    spec.write_text('[sweep]\nname = "bad"\nstudy = "dynamics"\n[grid]\nwidths = [0]\n')
    status, out, err = run_cli(capsys, "validate", str(spec))
    assert status == 2 and out == ""
    assert "grid.widths" in err and "bad.toml" in err


# ---------------------------------------------------------------------------------------
# exit status and scripting
# ---------------------------------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out.strip() == f"nnqs {version('nnqs-suite')}"


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--processes", "0"], "--processes"),
        (["--tasks-per-job", "0", "--executor", "slurm"], "--tasks-per-job"),
        (["--tasks-per-job", "-1", "--no-wait", "--executor", "slurm"], "--tasks-per-job"),
        (["--ranks", "0", "--executor", "mpi"], "--ranks"),
        (["--processes", "two"], "--processes"),
    ],
    ids=lambda value: "_".join(value) if isinstance(value, list) else value,
)
def test_executor_options_are_checked_before_anything_runs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, options: list[str], named: str
) -> None:
    store = tmp_path / "never.zarr"
    with pytest.raises(SystemExit) as caught:
        main(["run", "quickstart", "--store", str(store), *options])
    assert caught.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert named in error and "must be an integer >= 1" in error
    assert list(tmp_path.iterdir()) == []  # no store


def test_an_unknown_cluster_profile_is_refused_before_the_store_exists(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    store = tmp_path / "never.zarr"
    argv = ["run", "quickstart", "--store", str(store), "--executor", "slurm"]
    status, _, err = run_cli(capsys, *argv, "--profile", "nosuchcluster")
    assert status == 2
    assert err.count("\n") == 1 and "nosuchcluster" in err
    assert list(tmp_path.iterdir()) == []


def test_a_reader_that_goes_away_ends_the_output_quietly(tmp_path: Path) -> None:
    """``nnqs validate quickstart | true``: the reader exits before the JSON is written;
    no BrokenPipeError traceback, and the command's own status stands."""
    import subprocess
    import sys

    done = subprocess.run(
        ["bash", "-c", f"{sys.executable} -m nnqs validate quickstart | true; "
         "echo ${PIPESTATUS[0]} >&2"],
        capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "0"


@pytest.mark.parametrize("sites", [6, 11], ids=["kernel-route", "tangent-route"])
def test_validate_prices_the_linearisations_and_partners_of_a_loss_study(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, sites: int
) -> None:
    """A task of a loss study (jobs.studies.loss_search) costs per member and step one update
    on the D basis states; ``search.linearised`` adds on up to 1,024 states each member's
    2D x 2D empirical QS-NTK once (8 D^2 P) and a 2D x 2D product a step (8 D^2), beyond
    that a second update a step (jobs.studies.base.linearisation_flops); ``search.paired``
    adds each member's partner, a kernel-flow step on the Walsh-Hadamard route (the
    documented model: 4 D N for the product, 8 D (N + 1) for the energy's gradient). P is
    counted here from the network's own parameters, not from the cost model."""
    import jax

    from suite.networks import init_ensemble, mlp_nnqs
    from suite.training.engines import flops_per_member_step

    width, members, steps, dimension = 256, 32, 200, 2**sites
    plans = {}
    for linearised, paired in (("true", "false"), ("false", "false"), ("false", "true")):
        spec = tmp_path / f"search-{linearised}-{paired}.toml"
        spec.write_text(
            f'[sweep]\nname = "price"\nstudy = "ground_state"\n[target]\nmodel = "tfim"\n'
            f"lx = {sites}\nly = 1\nperiodic = false\nh = 3.0\n[grid]\nwidths = [{width}]\n"
            f"lr_factors = [0.5]\n[ensemble]\nmembers = {members}\nshard_size = {members}\n"
            f"[search]\nsteps = {steps}\nlinearised = {linearised}\npaired = {paired}\n"
        )
        status, out, _ = run_cli(capsys, "validate", str(spec), "--gflops", "50")
        assert status == 0
        (plans[linearised if paired == "false" else "paired"],) = json.loads(out)["per_task"]
    params = init_ensemble(mlp_nnqs("decoupled", "relu", 1, width), 0, [0], sites)
    parameters = sum(leaf.size for leaf in jax.tree.leaves(params))
    update = members * steps * flops_per_member_step(dimension, width, sites)
    assert plans["false"]["gflop"] == pytest.approx(update / 1e9, rel=1e-3)
    if dimension <= 1024:
        linear = members * (8 * dimension**2 * parameters + steps * 8 * dimension**2)
    else:
        linear = update
    assert plans["true"]["gflop"] == pytest.approx((update + linear) / 1e9, rel=1e-3)
    partners = members * steps * (4 * dimension * sites + 8 * dimension * (sites + 1))
    assert plans["paired"]["gflop"] == pytest.approx((update + partners) / 1e9, rel=1e-3)
