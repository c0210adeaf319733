"""Tests of layers, networks and ensembles (docs/theory.md §3, kernel maps of §4).

What is established here: the kernel maps of single layers against the textbook
closed forms of docs/theory.md §4, the equivalence of the NTK and standard
parameterisations, that frozen layers are invisible to the tangent kernel, that an
ensemble member's parameters depend on (seed, index) only, and that bad
hyper-parameters are rejected with an error naming the parameter.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import suite  # noqa: F401  (first: enables JAX float64)

# isort: split

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from suite import networks as nw
from suite.kernels.empirical import empirical_ntk
from suite.layers import (
    Kernel,
    Layer,
    cos_features,
    dense,
    erf_activation,
    exp_features,
    kernel_of_inputs,
    relu,
    serial,
)

#: closed forms evaluated two ways in float64 agree to this (relative to the largest entry)
EXACT = 1e-12


def _spins(n_sites: int, n_configs: int, seed: int = 0) -> np.ndarray:
    """``n_configs`` distinct spin configurations in ``{-1, +1}^n_sites`` (docs/theory.md §1)."""
    codes = np.random.default_rng(seed).choice(2**n_sites, n_configs, replace=False)
    bits = (codes[:, None] >> np.arange(n_sites - 1, -1, -1)) & 1
    return 1.0 - 2.0 * bits


def _max_rel(a: np.ndarray | jax.Array, b: np.ndarray | jax.Array) -> float:
    """``max |a - b| / max |b|``."""
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _random_kernel(seed: int, n: int = 40, integer: bool = False) -> Kernel:
    """A valid input :class:`Kernel` of ``n x n`` pairs, with a non-trivial incoming NTK.

    ``integer=True`` draws integer-valued inputs, for which ``dist`` is exact (zero on
    the diagonal); otherwise Gaussian inputs with row scales spread over a decade.
    """
    rng = np.random.default_rng(seed)
    if integer:
        z = rng.integers(-3, 4, size=(n, 6)).astype(np.float64)
    else:
        z = rng.normal(size=(n, 6)) * rng.uniform(0.2, 2.0, size=(n, 1))
    k = kernel_of_inputs(jnp.asarray(z), jnp.asarray(z))
    w = rng.normal(size=(n, 4))  # the incoming tangent kernel: another PSD Gram matrix
    return k._replace(ntk=jnp.asarray(w @ w.T / 4))


# ---------------------------------------------------------------------------------------
# single-layer kernel maps against docs/theory.md §4
# ---------------------------------------------------------------------------------------


def test_relu_map_matches_arccos_formula() -> None:
    """ReLU map = arc-cosine formulas of docs/theory.md §4 (textbook arccos form, float64).

    The layer computes the angle from ``dist`` to stay exact near coincident inputs;
    here it is compared with the plain ``arccos(K12/sqrt(K11 K22))`` formula away from them.
    """
    k = _random_kernel(1)
    out = relu().kernel(k)
    k11, k22, k12 = np.asarray(k.var1), np.asarray(k.var2), np.asarray(k.nngp)
    c = np.clip(k12 / np.sqrt(k11 * k22), -1, 1)
    th = np.arccos(c)
    nngp = np.sqrt(k11 * k22) * (np.sin(th) + (np.pi - th) * np.cos(th)) / (2 * np.pi)
    ntk = np.asarray(k.ntk) * (np.pi - th) / (2 * np.pi)
    off = ~np.eye(len(k11), dtype=bool)  # arccos loses digits at c = 1
    assert _max_rel(np.asarray(out.nngp)[off], nngp[off]) < EXACT
    assert _max_rel(np.asarray(out.ntk)[off], ntk[off]) < EXACT
    np.testing.assert_allclose(np.asarray(out.var1), k11 / 2, rtol=EXACT)


def test_relu_map_exact_at_coincident_inputs() -> None:
    """At coincident (integer-valued) inputs ``th = 0`` exactly: ``Theta' = Theta/2``, ``K' = K/2``.

    The arc-cosine NTK has an infinite slope there (``th ~ sqrt(1 - c)``); the carried
    ``dist`` is exactly zero for integer inputs, so nothing of that slope leaks in.
    """
    k = _random_kernel(5, integer=True)
    out = serial(relu(), dense(3, sw=1.1, sb=0.2), relu()).kernel(k)
    expected = relu().kernel(dense(3, sw=1.1, sb=0.2).kernel(relu().kernel(k)))
    np.testing.assert_array_equal(np.asarray(out.ntk), np.asarray(expected.ntk))
    first = relu().kernel(k)
    np.testing.assert_allclose(np.diag(first.ntk), np.diag(k.ntk) / 2, rtol=EXACT)
    np.testing.assert_allclose(np.diag(first.nngp), np.diag(k.nngp) / 2, rtol=EXACT)


def test_erf_map_matches_williams_formula() -> None:
    """erf map = Williams' arcsine NNGP and its derivative kernel (docs/theory.md §4)."""
    k = _random_kernel(2)
    out = erf_activation().kernel(k)
    k11, k22, k12 = np.asarray(k.var1), np.asarray(k.var2), np.asarray(k.nngp)
    den = (1 + 2 * k11) * (1 + 2 * k22)
    nngp = (2 / np.pi) * np.arcsin(2 * k12 / np.sqrt(den))
    ntk = np.asarray(k.ntk) * (4 / np.pi) / np.sqrt(den - 4 * k12**2)
    assert _max_rel(out.nngp, nngp) < EXACT
    assert _max_rel(out.ntk, ntk) < EXACT


def test_dense_map() -> None:
    """Dense map (NTK parameterisation): ``K' = sw^2 K + sb^2``, ``Theta' = K' + sw^2 Theta``."""
    k = _random_kernel(3)
    out = dense(7, sw=1.3, sb=0.4).kernel(k)
    nngp = 1.3**2 * np.asarray(k.nngp) + 0.4**2
    assert _max_rel(out.nngp, nngp) < EXACT
    assert _max_rel(out.ntk, nngp + 1.3**2 * np.asarray(k.ntk)) < EXACT
    assert out.width == 7


@pytest.mark.parametrize(
    "layer",
    [
        relu(),
        erf_activation(),
        dense(3, sw=1.5, sb=0.7),
        cos_features(8, s0=1.7),
        exp_features(8, s0=0.8, sb=0.5),
        serial(dense(5, sw=1.2, sb=0.3), relu(), dense(5, sw=1.2, sb=0.3), relu()),
    ],
    ids=["relu", "erf", "dense", "cos", "exp", "relu-depth2"],
)
def test_carried_distance_is_consistent(layer: Layer) -> None:
    """The carried ``dist`` equals ``var1 + var2 - 2 nngp`` after every map (docs/theory.md §4).

    ``dist`` is propagated by its own formula (no cancellation); a wrong formula would
    silently corrupt every kernel downstream of it. On integer inputs it is exactly
    zero at coincident inputs, through every layer.
    """
    out = layer.kernel(_random_kernel(4, integer=True))
    dist = np.asarray(out.var1 + out.var2 - 2 * out.nngp)
    scale = float(np.max(np.abs(out.var1)))
    assert float(np.max(np.abs(np.asarray(out.dist) - dist))) < EXACT * scale
    assert np.all(np.diag(np.asarray(out.dist)) == 0.0)


# ---------------------------------------------------------------------------------------
# parameterisations, frozen layers
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("activation", ["relu", "erf"])
def test_standard_and_ntk_parameterisation_share_nngp(depth: int, activation: str) -> None:
    """Standard and NTK parameterisations: same NNGP map and the same function (docs/theory.md §3).

    Both draw the same N(0, 1) numbers; the standard one stores ``w sw/sqrt(n_in)`` and
    ``b sb``, so networks from the same key compute the same outputs.
    """
    kw = dict(depth=depth, width=16, activation=activation, sw=1.4, sb=0.6)
    ntk_net = nw.mlp(**kw, parameterization="ntk")
    std_net = nw.mlp(**kw, parameterization="standard")
    x = jnp.asarray(np.random.default_rng(0).normal(size=(12, 5)))
    k = kernel_of_inputs(x, x)
    a, b = ntk_net.kernel(k), std_net.kernel(k)
    for name in ("var1", "var2", "nngp", "dist"):
        assert _max_rel(getattr(b, name), getattr(a, name)) < EXACT, name
    # the NTKs differ: standard parameterisation scales with the fan-in
    assert _max_rel(b.ntk, a.ntk) > 1.0
    key = jax.random.key(3)
    y_ntk = ntk_net.apply(ntk_net.init(key, 5)[1], x)
    y_std = std_net.apply(std_net.init(key, 5)[1], x)
    assert _max_rel(y_std, y_ntk) < EXACT


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("sb", [None, 0.0, 0.7])
def test_single_dense_layer_ntk_is_exact(parameterization: str, sb: float | None) -> None:
    """A linear network ``f = W x + b`` has a deterministic NTK: the kernel map is exact at
    any width. NTK parameterisation: ``sw^2 x.x'/d + sb^2``; standard: ``x.x' + 1[bias]``
    (the bias gradient is 1 even when ``sb = 0``) (docs/theory.md §3-§4)."""
    net = dense(1, sw=1.3, sb=sb, parameterization=parameterization)  # type: ignore[arg-type]
    x = jnp.asarray(np.random.default_rng(2).normal(size=(9, 4)))
    params = net.init(jax.random.key(0), 4)[1]
    dot = np.asarray(x @ x.T)
    if parameterization == "ntk":
        expected = 1.3**2 * dot / 4 + (0.0 if sb is None else sb**2)
    else:
        expected = dot + (0.0 if sb is None else 1.0)
    assert _max_rel(empirical_ntk(net, params, x, x, block=8), expected) < EXACT
    assert _max_rel(net.kernel(kernel_of_inputs(x, x)).ntk, expected) < EXACT


def test_frozen_layer_contributes_nothing_to_empirical_ntk() -> None:
    """``trainable=False`` parameters are absent from the tangent kernel (docs/theory.md §4).

    With a frozen hidden layer the empirical NTK is exactly that of the readout,
    ``(sw^2/n) phi(x).phi(x') + sb^2``, built here from the features by hand; the
    infinite-width NTK then equals the NNGP.
    """
    width, sw, sb = 24, 1.3, 0.4
    net = serial(dense(width, sw=sw, sb=sb, trainable=False), relu(), dense(1, sw=sw, sb=sb))
    _, params = net.init(jax.random.key(0), 6)
    trainable, frozen = params
    assert set(trainable) == {"2"} and set(frozen) == {"0"}
    x = jnp.asarray(_spins(6, 10))
    features = jax.nn.relu((sw / np.sqrt(6)) * x @ frozen["0"]["w"] + sb * frozen["0"]["b"])
    expected = (sw**2 / width) * features @ features.T + sb**2
    assert _max_rel(empirical_ntk(net, params, x, x, block=8), expected) < EXACT

    k = net.kernel(kernel_of_inputs(x, x))
    assert _max_rel(k.ntk, k.nngp) < EXACT
    # same parameters, all trainable: strictly larger NTK (the hidden layer now counts)
    full = serial(dense(width, sw=sw, sb=sb), relu(), dense(1, sw=sw, sb=sb))
    full_params = ({"0": frozen["0"], "2": trainable["2"]}, {})
    np.testing.assert_allclose(full.apply(full_params, x), net.apply(params, x), rtol=EXACT)
    gap = empirical_ntk(full, full_params, x, x, block=8) - expected
    assert float(jnp.min(jnp.linalg.eigvalsh(gap))) > -EXACT * float(jnp.max(expected))
    assert float(jnp.trace(gap)) > 0.1 * float(jnp.trace(expected))


def test_frozen_features_keep_their_parameters_out_of_the_gradient() -> None:
    """A frozen CosNet feature layer has no parameters in the trainable tree (docs/theory.md §3)."""
    net = nw.cosnet(width=10, s0=1.0, s1=1.0, train_features=False)
    trainable, frozen = net.init(jax.random.key(0), 4)[1]
    flat, _ = ravel_pytree(trainable)
    assert flat.size == 10  # the readout weights only (no readout bias: sb=None)
    assert set(frozen["0"]) == {"w", "b"}


# ---------------------------------------------------------------------------------------
# ensembles
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: nw.decoupled(nw.mlp(1, 8, "relu", sb=0.5)),
        lambda: nw.complex_output(nw.cosnet_trunk(8, 1.0)),
    ],
    ids=["decoupled", "complex_output"],
)
def test_ensemble_member_depends_only_on_seed_and_index(make: Callable[[], nw.NNQS]) -> None:
    """Member i's parameters are a function of (seed, i) only (networks.py, docs/theory.md §5).

    ``init_ensemble(seed, [5])`` reproduces row 5 of ``init_ensemble(seed, range(8))`` bit
    for bit; a different seed or index gives different parameters.
    """
    nnqs = make()
    full = nw.init_ensemble(nnqs, 11, range(8), 5)
    single = nw.init_ensemble(nnqs, 11, [5], 5)
    other_seed = nw.init_ensemble(nnqs, 12, [5], 5)
    for leaf_full, leaf_single in zip(jax.tree.leaves(full), jax.tree.leaves(single), strict=True):
        assert leaf_single.shape == (1, *leaf_full.shape[1:])
        np.testing.assert_array_equal(leaf_single[0], leaf_full[5])
    big = max(jax.tree.leaves(full), key=lambda a: a.size)
    big_other = max(jax.tree.leaves(other_seed), key=lambda a: a.size)
    assert not np.array_equal(big_other[0], big[5])
    assert not np.array_equal(big[4], big[5])
    # the keys themselves: fold_in(key(seed), i)
    keys = nw.member_keys(11, [5])
    expected = jax.random.fold_in(jax.random.key(11), 5)
    np.testing.assert_array_equal(jax.random.key_data(keys[0]), jax.random.key_data(expected))


# ---------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "name"),
    [
        (lambda: nw.mlp(width=0), "width"),
        (lambda: nw.mlp(width=-3), "width"),
        (lambda: nw.mlp(width=2.5), "width"),
        (lambda: nw.mlp_trunk(width=0), "width"),
        (lambda: nw.mlp(sw=0.0), "sw"),
        (lambda: nw.mlp(sw=-1.0), "sw"),
        (lambda: nw.mlp(sb=-0.5), "sb"),
        (lambda: nw.mlp(activation="tanh"), "activation"),
        (lambda: nw.mlp(depth=0), "depth"),
        (lambda: nw.mlp(depth=1.5), "depth"),
        (lambda: nw.mlp(parameterization="mup"), "parameterization"),
        (lambda: nw.mlp(out_dim=0), "out_dim"),
        (lambda: dense(0), "out_dim"),
        (lambda: dense(4, sw=float("nan")), "sw"),
        (lambda: nw.cosnet(width=0), "width"),
        (lambda: nw.cosnet(s0=0.0), "s0"),
        (lambda: nw.gaussnet(width=0), "width"),
        (lambda: nw.gaussnet(s0=-1.0), "s0"),
        (lambda: nw.gaussnet(sb=-1.0), "sb"),
        (lambda: nw.decoupled(nw.mlp(1, 4, out_dim=2)), "real"),
        (lambda: nw.decoupled(nw.mlp(1, 4), nw.mlp(1, 4, out_dim=3)), "imag"),
    ],
)
def test_bad_hyper_parameters_raise_naming_the_parameter(
    build: Callable[[], object], name: str
) -> None:
    """Invalid hyper-parameters raise ValueError whose message starts with the parameter."""
    with pytest.raises(ValueError, match=rf"^{re.escape(name)}\b"):
        build()
