"""Finite-width ensembles on any whole-basis loss (docs/theory.md §7;
:func:`suite.training.train_on_loss`).

Established here:

* on the MSE, :func:`train_on_loss` reproduces :func:`suite.training.train_ensemble`
  (the function-space gradient replaces the residual): losses and sums to ``1e-12``,
  fast and autodiff updates;
* on the energy, infidelity and tomography losses it equals the reference route
  :func:`suite.member_flow.member_flows` (every member vmapped, plain ``jax.vjp``) to
  ``1e-10`` in float64, for the fast update and for autodiff through a coupled network;
  float32 stays within ``1e-5`` of it;
* members are independent of sharding (1, 2 and 4 fake CPU devices) and of grouping:
  :func:`combine` of two runs equals one run over their union;
* bad losses and observables are refused by name before any work.

Resuming from a checkpoint (and refusing a snapshot of another problem) is tested in
tests/test_checkpoints.py.
"""

from __future__ import annotations

import textwrap

import suite  # noqa: F401  (first: enables JAX float64)

# isort: split

import jax.numpy as jnp
import numpy as np
import pytest
from devices import run_on_devices

from suite.hilbert import SpinBasis
from suite.lattice import Lattice
from suite.losses import Energy, Infidelity, SparseRows, SupervisedMSE, tomography_targets
from suite.member_flow import member_flows
from suite.networks import init_ensemble, mlp_nnqs
from suite.operators import tfim_hamiltonian
from suite.supervised import scale_target, split_basis
from suite.targets import make_target
from suite.training import combine, ensemble, leave_out, train_ensemble, train_on_loss

FAST = mlp_nnqs("decoupled", "relu", 1, 48)
COUPLED = mlp_nnqs("shared_trunk", "relu", 1, 16)  # not recognised: autodiff
STEPS = np.array([0, 1, 10, 60])


def _rel(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def _tfim() -> tuple[np.ndarray, Energy, np.ndarray]:
    """TFIM 2x2 periodic at h = 3: the basis, the energy loss and the ground state."""
    hamiltonian = tfim_hamiltonian(Lattice(2, 2, periodic=True), J=1.0, h=3.0)
    ground = np.linalg.eigh(hamiltonian.toarray())[1][:, 0]
    return SpinBasis(4).inputs(), Energy(SparseRows.from_csr(hamiltonian)), ground


@pytest.mark.parametrize("method", ["fast", "autodiff"])
def test_the_mse_through_the_loss_path_is_the_supervised_run(method: str) -> None:
    target = make_target("tfim", lx=2, ly=2, periodic=False, h=1.0, time=0.5)
    phi = scale_target(target.psi, "unit-rms")
    train, test = split_basis(phi.size, 6, 0)
    loss = SupervisedMSE(jnp.asarray(train), jnp.asarray(phi[train]))
    test_loss = SupervisedMSE(jnp.asarray(test), jnp.asarray(phi[test]))
    kwargs = dict(seed=5, members=range(5), learning_rate=0.3, log_steps=STEPS, method=method)
    supervised = train_ensemble(FAST, target.inputs, phi, train, **kwargs)
    general = train_on_loss(FAST, target.inputs, loss, observables={"test": test_loss}, **kwargs)
    # L = (1/2B) sum |r|^2 is half the logged train loss (1/B) sum |r|^2
    assert _rel(2 * general.values["loss"], supervised.train_loss) <= 1e-12
    assert _rel(2 * general.values["test"], supervised.test_loss) <= 1e-12
    for name in ("sum_u", "sum_v", "sum_uu", "sum_vv", "sum_uv"):
        assert _rel(getattr(general, name), getattr(supervised, name)) <= 1e-12, name
    assert supervised.train_loss[-1].max() < 0.5 * supervised.train_loss[0].min()


def _losses() -> dict[str, tuple[object, dict[str, object]]]:
    _, energy, ground = _tfim()
    fidelity = Infidelity(jnp.asarray(ground))
    tomography = tomography_targets(ground, ["ZZZZ", "XXXX", "XYZX"])
    return {
        "energy": (energy, {"infidelity": fidelity}),
        "infidelity": (fidelity, {"energy": energy}),
        "tomography": (tomography, {"infidelity": fidelity}),
    }


@pytest.mark.parametrize("name", ["energy", "infidelity", "tomography"])
@pytest.mark.parametrize("nnqs", [FAST, COUPLED], ids=["fast", "coupled"])
def test_any_loss_equals_the_reference_members(name: str, nnqs) -> None:
    inputs = _tfim()[0]
    loss, observables = _losses()[name]
    params = init_ensemble(nnqs, 3, range(4), inputs.shape[1])
    reference = member_flows(nnqs, params, inputs, loss, 0.05, STEPS, observables=observables)
    kwargs = dict(seed=3, members=range(4), learning_rate=0.05, log_steps=STEPS)
    run = train_on_loss(nnqs, inputs, loss, observables=observables, block=2, **kwargs)
    assert set(run.values) == set(reference.values)
    for key, want in reference.values.items():
        assert run.values[key].shape == (STEPS.size, 4)
        assert _rel(run.values[key], want) <= 1e-10, key
    loss_values = reference.values["loss"]
    assert np.all(loss_values[-1] < loss_values[0] - 1e-3)  # they moved
    single = train_on_loss(nnqs, inputs, loss, dtype="float32", **kwargs)
    assert 0 < _rel(single.values["loss"], loss_values) <= 1e-5


def test_the_fast_update_is_used_and_equals_autodiff_on_the_energy(monkeypatch) -> None:
    inputs, energy, _ = _tfim()
    kwargs = dict(seed=1, members=range(3), learning_rate=0.05, log_steps=STEPS)
    traced = []
    pullback = ensemble.FastEngine.pullback
    monkeypatch.setattr(
        ensemble.FastEngine, "pullback", lambda *a: traced.append(1) or pullback(*a)
    )
    ensemble._compiled.cache_clear()  # trace the programs again
    fast = train_on_loss(FAST, inputs, energy, method="fast", **kwargs)
    assert traced
    auto = train_on_loss(FAST, inputs, energy, method="autodiff", **kwargs)
    assert _rel(fast.values["loss"], auto.values["loss"]) <= 1e-12
    assert _rel(fast.sum_uu, auto.sum_uu) <= 1e-12
    ensemble._compiled.cache_clear()  # no spy in later tests' programs


@pytest.mark.parametrize("method", ["fast", "autodiff"])
def test_points_in_several_padded_chunks_give_the_same_run(monkeypatch, method: str) -> None:
    """Blocks small enough that the 16 basis points run in chunks of 5 (the last padded
    with 4 copies): the same values as the reference members."""
    inputs, energy, ground = _tfim()
    monkeypatch.setattr(ensemble, "BLOCK_ELEMENTS", 2 * 48 * 5)
    observables = {"infidelity": Infidelity(jnp.asarray(ground))}
    kwargs = dict(seed=6, members=range(3), log_steps=STEPS, observables=observables)
    layout = ensemble._plan(FAST, inputs, np.arange(3), 16, 1, "float64", method, None).layout
    assert layout.n_train_chunks == 4 and layout.train_chunk == 5
    run = train_on_loss(FAST, inputs, energy, learning_rate=jnp.asarray(0.05), method=method,
                        **kwargs)  # fmt: skip
    params = init_ensemble(FAST, 6, range(3), 4)
    reference = member_flows(FAST, params, inputs, energy, 0.05, STEPS, observables=observables)
    for key, want in reference.values.items():
        assert _rel(run.values[key], want) <= 1e-10, key


def test_members_are_independent_of_grouping_and_combine_merges_shards() -> None:
    inputs, energy, _ = _tfim()
    kwargs = dict(seed=4, learning_rate=0.05, log_steps=STEPS)
    whole = train_on_loss(FAST, inputs, energy, members=range(5), block=2, **kwargs)
    parts = [
        train_on_loss(FAST, inputs, energy, members=ids, **kwargs) for ids in ([3, 0], [1, 4, 2])
    ]
    merged = combine(parts)
    order = np.argsort(merged.members)
    assert _rel(merged.values["loss"][:, order], whole.values["loss"]) <= 1e-12
    for name in ("sum_u", "sum_v", "sum_uu", "sum_vv", "sum_uv"):
        assert _rel(getattr(merged, name), getattr(whole, name)) <= 1e-12, name
    rest = leave_out(merged, parts[0])
    assert np.array_equal(rest.members, parts[1].members)
    assert np.array_equal(rest.values["loss"], parts[1].values["loss"])
    assert _rel(rest.sum_uv, parts[1].sum_uv) <= 1e-12
    supervised = train_ensemble(FAST, inputs, np.ones(16), np.arange(4), members=[9], **kwargs)
    with pytest.raises(ValueError, match="one kind"):
        combine([parts[0], supervised])
    watched = train_on_loss(FAST, inputs, energy, members=[7], observables={"e": energy}, **kwargs)
    with pytest.raises(ValueError, match="same values"):
        combine([parts[0], watched])


SHARDING_SCRIPT = textwrap.dedent(
    """
    import json
    import suite
    import jax, numpy as np
    from suite.hilbert import SpinBasis
    from suite.lattice import Lattice
    from suite.losses import Energy, SparseRows
    from suite.networks import mlp_nnqs
    from suite.operators import tfim_hamiltonian
    from suite.training import train_on_loss
    assert len(jax.local_devices()) == 4
    energy = Energy(SparseRows.from_csr(tfim_hamiltonian(Lattice(2, 2, periodic=True), 1.0, 3.0)))
    nets = {"fast": mlp_nnqs("decoupled", "relu", 1, 16),
            "autodiff": mlp_nnqs("shared_trunk", "relu", 1, 12)}
    out = {}
    for devices in (1, 2, 4):
        for name, net in nets.items():
            s = train_on_loss(net, SpinBasis(4).inputs(), energy, seed=1, members=range(7),
                              learning_rate=0.05, log_steps=[0, 3, 8], devices=devices,
                              block=1)
            out[f"{name}-{devices}"] = [s.values["loss"].tolist(), s.sum_u.tolist()]
    print(json.dumps(out))
    """
)


@pytest.mark.slow
def test_sharding_invariance_on_1_2_4_devices() -> None:
    out = {k: [np.asarray(a) for a in v] for k, v in run_on_devices(SHARDING_SCRIPT).items()}
    for name in ("fast", "autodiff"):
        for devices in (2, 4):
            for got, want in zip(out[f"{name}-{devices}"], out[f"{name}-1"], strict=True):
                assert got.shape == want.shape and _rel(got, want) <= 1e-12, (name, devices)


def _refuse(*args, **kwargs):
    raise AssertionError("work started before the arguments were checked")


class _NotAPytree:
    """Has the methods of a loss but is not a pytree of arrays."""

    def value(self, psi):
        return jnp.sum(jnp.abs(psi) ** 2)

    def gradient(self, psi):
        return psi


BAD = [
    ({"loss": "energy"}, "loss"),
    ({"loss": _NotAPytree()}, "loss must be a loss of suite.losses"),
    ({"loss": Infidelity(jnp.ones(8))}, "loss"),  # a state on another basis
    ({"observables": {"loss": Infidelity(jnp.ones(16))}}, "observables"),
    ({"observables": {"fid": Infidelity(jnp.ones(32))}}, "observables\\['fid'\\]"),
    ({"observables": [Infidelity(jnp.ones(16))]}, "observables"),
    ({"learning_rate": -1.0}, "learning_rate"),
    ({"log_steps": [3, 1]}, "log_steps"),
    ({"members": [1, 1]}, "members"),
    ({"inputs": np.zeros(16)}, "inputs"),
    ({"method": "magic"}, "method"),
]


@pytest.mark.parametrize(("change", "name"), BAD, ids=[f"{n}-{i}" for i, (_, n) in enumerate(BAD)])
def test_bad_arguments_raise_before_any_work(monkeypatch, change, name) -> None:
    inputs, energy, _ = _tfim()
    monkeypatch.setattr(ensemble, "_compiled", _refuse)
    monkeypatch.setattr(ensemble, "fast_template", _refuse)
    args = dict(inputs=inputs, loss=energy, seed=0, members=[0, 1], learning_rate=0.1,
                log_steps=[0, 5])  # fmt: skip
    args.update(change)
    with pytest.raises(ValueError, match=name):
        train_on_loss(FAST, args.pop("inputs"), args.pop("loss"), **args)
