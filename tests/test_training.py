"""Tests of finite-width ensemble gradient descent (docs/theory.md §3, §5; suite/training/).

Established here:

* :func:`train_ensemble` equals plain per-member gradient descent written with
  ``jax.grad`` (losses and sums, float64, ``1e-12``), on both update paths, and the fast
  path equals the autodiff path for every architecture it recognises (relu and erf MLPs
  in both parameterisations, with and without biases, CosNet); anything it does not
  recognise is refused by ``method="fast"`` and trained by autodiff under ``"auto"``;
* members are independent: the same whether trained alone, in a group or in another
  shard, padded or not, and :func:`combine` of shards equals one run over their union;
* the same run on 1, 2 and 4 (fake CPU) devices gives the same member losses
  (``1e-12`` float64, ``1e-5`` float32), also for member counts not divisible by the
  device count;
* at large width and small learning rate the ensemble behaves as docs/theory.md §5 says:
  the mean train loss decreases monotonically and the t = 0 variance is the NNGP prior
  ``K_uu(x, x) + K_vv(x, x)`` of ``nnqs.infinite`` within Monte-Carlo error;
* :func:`summarize` implements the documented estimators exactly; bad arguments raise
  ``ValueError`` naming the parameter before any work.
"""

from __future__ import annotations

import json
import textwrap

import suite  # noqa: F401  (first: enables JAX float64)

# isort: split

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from devices import run_on_devices

from suite import networks as nw
from suite.dynamics import max_learning_rate
from suite.kernels.gram import diagonal, gram
from suite.targets import TFIMQuench, build_target
from suite.training import (
    EnsembleStats,
    combine,
    ensemble,
    fast_template,
    summarize,
    train_ensemble,
)

#: two float64 evaluations of the same gradient descent (different summation order and
#: GEMM blocking only) agree to this, relative to the largest entry compared
RTOL64 = 1e-12
#: float32 runs across device counts (the brief's bound)
RTOL32 = 1e-5
#: Monte-Carlo z-scores: largest |z| over a few hundred correlated points (~3.5 under the
#: null); P(|z| > 5) ~ 6e-7 per point
MAX_Z = 5.0

N_SITES = 5


def _problem(n_train: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All 32 spin configurations of 5 sites, a random normalised complex target, a train set."""
    codes = np.arange(2**N_SITES)
    x = 1.0 - 2.0 * ((codes[:, None] >> np.arange(N_SITES - 1, -1, -1)) & 1)
    rng = np.random.default_rng(seed)
    phi = rng.normal(size=x.shape[0]) + 1j * rng.normal(size=x.shape[0])
    phi /= np.linalg.norm(phi) / np.sqrt(x.shape[0])  # |phi|^2 ~ 1 per point
    train = np.sort(rng.choice(x.shape[0], n_train, replace=False))
    return x.astype(np.float64), phi, train


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def _assert_same(a: EnsembleStats, b: EnsembleStats, rtol: float) -> None:
    np.testing.assert_array_equal(a.steps, b.steps)
    np.testing.assert_array_equal(a.members, b.members)
    for name in ("train_loss", "test_loss", "sum_u", "sum_v", "sum_uu", "sum_vv", "sum_uv"):
        assert _rel(getattr(a, name), getattr(b, name)) <= rtol, name


def _reference(nnqs, x, phi, train, *, seed, members, learning_rate, log_steps):
    """Plain per-member gradient descent with jax.grad, statistics in numpy (docs/theory.md §5)."""
    test = np.setdiff1d(np.arange(x.shape[0]), train)
    xt, yt = jnp.asarray(x[train]), jnp.asarray(phi[train])

    def loss(tr, fr):
        u, v = nnqs.parts((tr, fr), xt)
        return jnp.sum(jnp.abs(u + 1j * v - yt) ** 2) / (2 * len(train))

    grad = jax.jit(jax.grad(loss))
    parts = jax.jit(lambda tr, fr: nnqs.parts((tr, fr), jnp.asarray(x)))
    outputs = []
    for i in members:
        trainable, frozen = nnqs.init(nw.member_keys(seed, [i])[0], x.shape[1])
        logged = []
        for step in range(max(log_steps) + 1):
            if step in log_steps:
                logged.append(np.asarray(parts(trainable, frozen)))
            g = grad(trainable, frozen)
            trainable = jax.tree.map(lambda p, q: p - learning_rate * q, trainable, g)
        outputs.append(np.stack(logged))  # (L, 2, D)
    out = np.stack(outputs, axis=1)  # (L, m, 2, D)
    u, v = out[:, :, 0], out[:, :, 1]
    err = np.abs(u + 1j * v - phi) ** 2
    return EnsembleStats(
        members=np.asarray(members),
        steps=np.asarray(log_steps),
        train_loss=err[:, :, train].mean(axis=2),
        test_loss=err[:, :, test].mean(axis=2) if test.size else np.zeros(err.shape[:2]),
        sum_u=u.sum(axis=1),
        sum_v=v.sum(axis=1),
        sum_uu=(u * u).sum(axis=1),
        sum_vv=(v * v).sum(axis=1),
        sum_uv=(u * v).sum(axis=1),
    )


RELU = nw.decoupled(nw.mlp(1, 16))
SHARED = nw.shared_trunk(nw.mlp_trunk(1, 12))
COSNET = nw.decoupled(nw.cosnet(16, s0=1.5))


# ---------------------------------------------------------------------------------------
# correctness against a hand-written reference
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nnqs", "method"),
    [(RELU, "fast"), (RELU, "autodiff"), (SHARED, "auto"), (COSNET, "fast")],
    ids=["relu-fast", "relu-autodiff", "shared-trunk", "cosnet-fast"],
)
def test_matches_per_member_jax_grad(nnqs, method):
    x, phi, train = _problem()
    kwargs = dict(seed=3, members=[0, 5, 2], learning_rate=0.7, log_steps=[0, 1, 2, 4])
    ours = train_ensemble(nnqs, x, phi, train, method=method, block=2, **kwargs)
    _assert_same(ours, _reference(nnqs, x, phi, train, **kwargs), RTOL64)
    assert ours.train_loss.dtype == np.float64 and ours.sum_u.shape == (4, x.shape[0])
    assert ours.train_loss[-1].mean() < ours.train_loss[0].mean()  # it did train


FAST_NETS = {
    "relu-ntk": nw.decoupled(nw.mlp(1, 24, sw=1.3, sb=0.4)),
    "relu-standard-nobias": nw.decoupled(nw.mlp(1, 24, sb=None, parameterization="standard")),
    "erf": nw.decoupled(nw.mlp(1, 24, "erf", sw=1.5, sb=0.5)),
    "cosnet": nw.decoupled(nw.cosnet(24, s0=2.0, s1=1.5)),
}


@pytest.mark.parametrize("name", list(FAST_NETS))
def test_fast_path_equals_autodiff(name):
    nnqs = FAST_NETS[name]
    x, phi, train = _problem(n_train=20, seed=1)
    assert fast_template(nnqs, x.shape[1]) is not None
    kwargs = dict(seed=0, members=range(5), learning_rate=0.5, log_steps=[0, 3, 10])
    fast = train_ensemble(nnqs, x, phi, train, method="fast", **kwargs)
    slow = train_ensemble(nnqs, x, phi, train, method="autodiff", **kwargs)
    _assert_same(fast, slow, RTOL64)


UNRECOGNISED = {
    "two-hidden-layers": nw.decoupled(nw.mlp(2, 8)),
    "gaussnet": nw.decoupled(nw.gaussnet(8)),  # input-dependent normaliser
    "shared-trunk": SHARED,
    "frozen-features": nw.decoupled(nw.cosnet(8, train_features=False)),
    "different-parts": nw.decoupled(nw.mlp(1, 8), nw.mlp(1, 8, "erf")),
}


@pytest.mark.parametrize("name", list(UNRECOGNISED))
def test_unrecognised_networks_use_autodiff(name):
    nnqs = UNRECOGNISED[name]
    x, phi, train = _problem()
    assert fast_template(nnqs, x.shape[1]) is None
    kwargs = dict(seed=0, members=[0, 1], learning_rate=0.3, log_steps=[0, 2])
    with pytest.raises(ValueError, match="method='fast'"):
        train_ensemble(nnqs, x, phi, train, method="fast", **kwargs)
    auto = train_ensemble(nnqs, x, phi, train, **kwargs)
    _assert_same(auto, train_ensemble(nnqs, x, phi, train, method="autodiff", **kwargs), 0.0)


# ---------------------------------------------------------------------------------------
# members, shards, devices
# ---------------------------------------------------------------------------------------


def test_members_are_independent_of_grouping_and_shards():
    x, phi, train = _problem()
    kwargs = dict(seed=7, learning_rate=0.6, log_steps=[0, 2, 5])
    alone = train_ensemble(RELU, x, phi, train, members=[3], **kwargs)
    group = train_ensemble(RELU, x, phi, train, members=range(7), block=2, **kwargs)  # padded
    other = train_ensemble(RELU, x, phi, train, members=[9, 3], block=1, **kwargs)
    for run, column in ((group, 3), (other, 1)):
        for name in ("train_loss", "test_loss"):
            got, want = getattr(run, name)[:, column], getattr(alone, name)[:, 0]
            assert _rel(got, want) <= RTOL64, name
    # a single-member shard's sums are that member's outputs: u^2 = (sum_u)^2
    assert _rel(alone.sum_uu, alone.sum_u**2) <= RTOL64

    first = train_ensemble(RELU, x, phi, train, members=[0, 1, 2], **kwargs)
    second = train_ensemble(RELU, x, phi, train, members=[3, 4, 5, 6], **kwargs)
    _assert_same(combine([first, second]), group, RTOL64)
    merged = combine([first, second])
    assert merged.count == 7 and merged.sum_abs2.shape == merged.sum_psi.shape


def test_combine_refuses_mismatched_shards():
    x, phi, train = _problem()
    kwargs = dict(seed=0, learning_rate=0.5)
    a = train_ensemble(RELU, x, phi, train, members=[0], log_steps=[0, 1], **kwargs)
    b = train_ensemble(RELU, x, phi, train, members=[1], log_steps=[0, 2], **kwargs)
    with pytest.raises(ValueError, match="steps"):
        combine([a, b])
    with pytest.raises(ValueError, match="disjoint"):
        combine([a, a])
    with pytest.raises(ValueError, match="shards"):
        combine([])


SHARDING_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import suite
    import jax, numpy as np
    from suite import networks as nw
    from suite.training import train_ensemble
    assert len(jax.local_devices()) == 4
    x, phi, train = (np.asarray(a) for a in json.loads(sys.stdin.read()))
    phi = phi[0] + 1j * phi[1]
    nets = {"fast": nw.decoupled(nw.mlp(1, 16)), "autodiff": nw.shared_trunk(nw.mlp_trunk(1, 12))}
    out = {}
    for devices in (1, 2, 4):
        for name, net in nets.items():
            for dtype in ("float64", "float32"):
                if name == "autodiff" and dtype == "float32":
                    continue
                s = train_ensemble(net, x, phi, train, seed=1, members=range(7),
                                   learning_rate=0.5, log_steps=[0, 3, 8], dtype=dtype,
                                   devices=devices, block=1)
                out[f"{name}-{dtype}-{devices}"] = [s.train_loss.tolist(),
                                                   s.test_loss.tolist(), s.sum_u.tolist()]
    print(json.dumps(out))
    """
)


@pytest.mark.slow
def test_sharding_invariance_on_1_2_4_devices():
    x, phi, train = _problem()
    payload = json.dumps([x.tolist(), [phi.real.tolist(), phi.imag.tolist()], train.tolist()])
    printed = run_on_devices(SHARDING_SCRIPT, 4, payload)
    out = {k: [np.asarray(a) for a in v] for k, v in printed.items()}
    for name, dtype, rtol in (
        ("fast", "float64", RTOL64),
        ("fast", "float32", RTOL32),
        ("autodiff", "float64", RTOL64),
    ):
        base = out[f"{name}-{dtype}-1"]
        for devices in (2, 4):
            other = out[f"{name}-{dtype}-{devices}"]
            for got, want in zip(other, base, strict=True):  # losses and sum_u
                assert got.shape == want.shape
                assert _rel(got, want) <= rtol, (name, dtype, devices)
    # float32 is a different run of the same ensemble: close to float64, not equal
    assert 0 < _rel(out["fast-float32-1"][0], out["fast-float64-1"][0]) < 1e-4


def test_devices_default_and_bound():
    x, phi, train = _problem()
    kwargs = dict(seed=0, members=[0, 1, 2], learning_rate=0.5, log_steps=[1])
    auto = train_ensemble(RELU, x, phi, train, **kwargs)
    one = train_ensemble(RELU, x, phi, train, devices=1, **kwargs)
    _assert_same(auto, one, RTOL64)
    with pytest.raises(ValueError, match="devices"):
        train_ensemble(RELU, x, phi, train, devices=len(jax.local_devices()) + 1, **kwargs)


# ---------------------------------------------------------------------------------------
# docs/theory.md §5: the linearised regime
# ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_wide_ensemble_descends_monotonically_from_the_nngp_prior():
    target = build_target(TFIMQuench())
    x, phi = np.asarray(target.inputs), np.asarray(target.psi)
    train = np.sort(np.random.default_rng(0).choice(x.shape[0], 64, replace=False))
    nnqs = nw.decoupled(nw.mlp(1, 2048))
    ntk = gram(lambda k: nnqs.infinite(k)[1], x[train], x[train])
    eta = 0.5 * max_learning_rate(np.asarray(ntk.uu))
    members = 128
    stats = train_ensemble(
        nnqs,
        x,
        phi,
        train,
        seed=11,
        members=range(members),
        learning_rate=eta,
        log_steps=range(0, 21, 2),
    )
    summary = summarize(stats, phi, train)
    assert np.all(np.diff(summary.train_mean_of_losses) < 0)
    assert summary.train_mean_of_losses[-1] < 0.5 * summary.train_mean_of_losses[0]

    prior = diagonal(lambda k: nnqs.infinite(k)[0], x)
    k_uu, k_vv = np.asarray(prior.uu), np.asarray(prior.vv)
    # population variance of M Gaussian samples: mean (M-1)/M K, variance ~ 2 K^2 / M
    expected = (members - 1) / members * (k_uu + k_vv)
    spread = np.sqrt(2 * (k_uu**2 + k_vv**2) / members)
    z = (summary.variance[0] - expected) / spread
    assert np.max(np.abs(z)) < MAX_Z, np.max(np.abs(z))


# ---------------------------------------------------------------------------------------
# summarize
# ---------------------------------------------------------------------------------------


def test_summary_estimators_are_the_documented_ones():
    x, phi, train = _problem()
    stats = train_ensemble(
        RELU, x, phi, train, seed=2, members=range(6), learning_rate=0.5, log_steps=[0, 4]
    )
    s = summarize(stats, phi, train)
    test = np.setdiff1d(np.arange(x.shape[0]), train)
    # mean of the member losses = loss of the sample mean + mean population variance
    assert _rel(s.train_mean_of_losses, s.train_loss_of_mean + s.variance[:, train].mean(1)) < 1e-12
    assert _rel(s.test_mean_of_losses, s.test_loss_of_mean + s.variance[:, test].mean(1)) < 1e-12
    assert (
        _rel(s.train_loss_of_mean_debiased, s.train_loss_of_mean - s.variance[:, train].mean(1) / 5)
        < 1e-12
    )

    # two members a, b: variance |a-b|^2/4 (1/M), and the debiased loss of the mean is
    # Re[(a - phi) conj(b - phi)], whose expectation is |E psi - phi|^2 exactly
    rng = np.random.default_rng(0)
    a, b = (rng.normal(size=(1, 8)) + 1j * rng.normal(size=(1, 8)) for _ in range(2))
    target = rng.normal(size=8) + 1j * rng.normal(size=8)
    pair = np.stack([a, b])  # (m, L, D)
    err = np.abs(pair - target).transpose(1, 0, 2) ** 2  # (L, m, D)
    hand = EnsembleStats(
        members=np.array([0, 1]),
        steps=np.array([0]),
        train_loss=err[..., :5].mean(-1),
        test_loss=err[..., 5:].mean(-1),
        sum_u=pair.real.sum(0),
        sum_v=pair.imag.sum(0),
        sum_uu=(pair.real**2).sum(0),
        sum_vv=(pair.imag**2).sum(0),
        sum_uv=(pair.real * pair.imag).sum(0),
    )
    h = summarize(hand, target, np.arange(5))
    assert _rel(h.variance, np.abs(a - b) ** 2 / 4) < 1e-12
    cross = np.real((a - target) * np.conj(b - target))
    assert _rel(h.train_loss_of_mean_debiased, cross[:, :5].mean(1)) < 1e-12
    assert _rel(h.test_loss_of_mean_debiased, cross[:, 5:].mean(1)) < 1e-12
    assert _rel(h.mean, (a + b) / 2) < 1e-15


def test_empty_test_set_gives_zeros():
    x, phi, _ = _problem()
    everything = np.arange(x.shape[0])
    stats = train_ensemble(
        RELU, x, phi, everything, seed=0, members=[0, 1], learning_rate=0.5, log_steps=[0, 2]
    )
    assert stats.test_loss.shape == (2, 2) and np.all(stats.test_loss == 0)
    s = summarize(stats, phi, everything)
    for name in ("test_mean_of_losses", "test_loss_of_mean", "test_loss_of_mean_debiased"):
        assert np.all(getattr(s, name) == 0), name
    single = summarize(combine([stats]), phi, everything)
    assert single.count == 2


# ---------------------------------------------------------------------------------------
# arguments
# ---------------------------------------------------------------------------------------


def _refuse(*args, **kwargs):
    raise AssertionError("called before the arguments were validated")


EXPLODING = nw.NNQS("decoupled", _refuse, _refuse, _refuse)

BAD = [
    ({"members": []}, "members"),
    ({"members": [1, 1]}, "members"),
    ({"members": [-1]}, "members"),
    ({"log_steps": [-1, 2]}, "log_steps"),
    ({"log_steps": [3, 1]}, "log_steps"),
    ({"log_steps": [1, 1]}, "log_steps"),
    ({"log_steps": []}, "log_steps"),
    ({"train_index": [0, 32]}, "train_index"),
    ({"train_index": [2, 2]}, "train_index"),
    ({"train_index": []}, "train_index"),
    ({"dtype": "float16"}, "dtype"),
    ({"learning_rate": 0.0}, "learning_rate"),
    ({"learning_rate": -1.0}, "learning_rate"),
    ({"learning_rate": float("nan")}, "learning_rate"),
    ({"target": np.zeros(31)}, "target"),
    ({"inputs": np.zeros(32)}, "inputs"),
    ({"devices": 0}, "devices"),
    ({"devices": 1000}, "devices"),
    ({"method": "magic"}, "method"),
    ({"block": 0}, "block"),
    ({"seed": 1.5}, "seed"),
    ({"nnqs": "not a network"}, "nnqs"),
]


@pytest.mark.parametrize(("change", "name"), BAD, ids=[f"{n}-{i}" for i, (_, n) in enumerate(BAD)])
def test_bad_arguments_raise_before_any_work(monkeypatch, change, name):
    x, phi, train = _problem()
    monkeypatch.setattr(jax, "jit", _refuse)
    monkeypatch.setattr(ensemble, "_compiled", _refuse)  # where train_ensemble finds them
    monkeypatch.setattr(ensemble, "fast_template", _refuse)
    args = dict(
        nnqs=EXPLODING,
        inputs=x,
        target=phi,
        train_index=train,
        seed=0,
        members=[0, 1],
        learning_rate=0.1,
        log_steps=[0, 5],
        dtype="float64",
        devices=None,
    )
    args.update(change)
    with pytest.raises(ValueError, match=name):
        train_ensemble(
            args.pop("nnqs"),
            args.pop("inputs"),
            args.pop("target"),
            args.pop("train_index"),
            **args,
        )


def test_accelerator_blocks_fill_the_device():
    """On a GPU a block is one set of kernel launches: 4,096 width-4096 members run in
    blocks of 32 (2^26 elements), not 4,096 one-member blocks (the CPU's cache size)."""
    from suite.training.layout import ACCELERATOR_BLOCK_ELEMENTS, BLOCK_ELEMENTS, plan_layout

    cpu = plan_layout(4096, 1, 256, 512, 4096, None, 1)
    gpu = plan_layout(4096, 1, 256, 512, 4096, None, 1, block_elements=ACCELERATOR_BLOCK_ELEMENTS)
    assert (cpu.block, cpu.n_blocks) == (1, 4096)
    assert (gpu.block, gpu.n_blocks) == (32, 128) and gpu.train_chunk == 256
    assert 2 * gpu.block * gpu.train_chunk * 4096 == ACCELERATOR_BLOCK_ELEMENTS
    assert 2 * cpu.block * cpu.train_chunk * 4096 <= 2 * BLOCK_ELEMENTS
