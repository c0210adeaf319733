"""Layers as (init, apply, kernel) triples, in the style of neural-tangents' stax.

docs/theory.md §3 (networks) and §4 (kernels). A layer is three pure functions:

* ``init(key, in_dim) -> (out_dim, params)`` with ``params = (trainable, frozen)``,
  two dicts of arrays; gradient descent and the tangent kernels only see
  ``trainable`` (a frozen layer keeps its weights at their initial values).
* ``apply(params, x) -> y`` for ``x`` of shape ``(..., in_dim)``.
* ``kernel(k: Kernel) -> Kernel``: the infinite-width map of the layer on the
  NNGP kernel ``K`` and the NTK ``Theta`` between two inputs x, x'.

Every kernel map here is elementwise in the four arrays of :class:`Kernel`, so
a kernel is a plain function of the input statistics ``(|x|^2, |x'|^2, x.x')``:
that is what makes the table fast path of :mod:`suite.kernels.discrete` exact.

Parameterisations (docs/theory.md §3). NTK: all weights and biases iid N(0, 1),
``h = (sw/sqrt(n_in)) W a + sb b``. Standard: ``W ~ N(0, sw^2/n_in)``,
``b ~ N(0, sb^2)``, ``h = W a + b`` (same NNGP, NTK that grows with the width,
neural-tangents' convention). ``sb=None`` means no bias parameter at all.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import erf

Array = jax.Array
Params = tuple[dict[str, Any], dict[str, Any]]
Parameterization = Literal["ntk", "standard"]


class Kernel(NamedTuple):
    """Second moments between two inputs x, x' of one layer's units (docs/theory.md §4).

    ``var1 = K(x, x)``, ``var2 = K(x', x')``, ``nngp = K(x, x')``,
    ``dist = E[(z(x) - z(x'))^2] = K(x, x) + K(x', x') - 2 K(x, x')``,
    ``total = E[(z(x) + z(x'))^2]`` and ``ntk = Theta(x, x')`` broadcast against
    each other (typically shapes ``(n1, 1)``, ``(1, n2)``, ``(n1, n2)``); ``width``
    is the number of units (the fan-in of the next layer). ``dist`` and ``total``
    are carried, not recomputed, so that they are exactly zero for coincident and
    for opposite inputs and free of cancellation near them: the arc-cosine NTK is
    infinitely sensitive at both (its angle goes like a square root there), and the
    CosNet and GaussNet kernels depend on ``dist`` alone.
    """

    var1: Array
    var2: Array
    nngp: Array
    dist: Array
    total: Array
    ntk: Array
    width: int


class Layer(NamedTuple):
    """A layer: ``init(key, in_dim) -> (out_dim, params)``, ``apply``, ``kernel``."""

    init: Callable[[Array, int], tuple[int, Params]]
    apply: Callable[[Params, Array], Array]
    kernel: Callable[[Kernel], Kernel]


def input_kernel(sq1: Array, sq2: Array, dot: Array, dim: int) -> Kernel:
    """The kernel of the raw inputs: ``x.x'/d`` and no tangent part (docs/theory.md §4).

    ``sq1 = |x|^2``, ``sq2 = |x'|^2`` and ``dot = x.x'``; inputs enter only through
    these, which is what the discrete fast path exploits. For integer inputs
    ``|x -+ x'|^2 = sq1 + sq2 -+ 2 dot`` are exact.
    """
    scale = 1.0 / dim
    dist = jnp.maximum(sq1 + sq2 - 2 * dot, 0.0) * scale
    total = jnp.maximum(sq1 + sq2 + 2 * dot, 0.0) * scale
    nngp = dot * scale
    return Kernel(sq1 * scale, sq2 * scale, nngp, dist, total, jnp.zeros_like(nngp), dim)


def kernel_of_inputs(x1: Array, x2: Array) -> Kernel:
    """:func:`input_kernel` between every row of ``x1`` (n1, d) and of ``x2`` (n2, d)."""
    sq1 = jnp.sum(x1 * x1, axis=-1)[:, None]
    sq2 = jnp.sum(x2 * x2, axis=-1)[None, :]
    return input_kernel(sq1, sq2, x1 @ x2.T, x1.shape[-1])


def check_positive(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def check_width(name: str, value: int) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _empty() -> dict[str, Any]:
    return {}


def dense(
    out_dim: int,
    sw: float = 1.0,
    sb: float | None = 0.0,
    parameterization: Parameterization = "ntk",
    trainable: bool = True,
) -> Layer:
    """Fully connected layer ``h = (sw/sqrt(n_in)) W a + sb b`` (docs/theory.md §3-§4).

    Kernel map (NTK parameterisation): ``K' = sw^2 K + sb^2`` and
    ``Theta' = K' + sw^2 Theta`` (the ``K'`` term only when the layer trains).
    Standard parameterisation: ``Theta' = n_in K + 1[bias] + sw^2 Theta``.
    """
    check_width("out_dim", out_dim)
    check_positive("sw", sw)
    if sb is not None and not (math.isfinite(sb) and sb >= 0):
        raise ValueError(f"sb must be a non-negative number or None, got {sb!r}")
    if parameterization not in ("ntk", "standard"):
        raise ValueError(f"parameterization must be 'ntk' or 'standard', got {parameterization!r}")
    b_var = 0.0 if sb is None else sb**2

    def init(key: Array, in_dim: int) -> tuple[int, Params]:
        kw, kb = jax.random.split(key)
        w = jax.random.normal(kw, (in_dim, out_dim))
        p = {"w": w if parameterization == "ntk" else w * (sw / math.sqrt(in_dim))}
        if sb is not None:
            b = jax.random.normal(kb, (out_dim,))
            p["b"] = b if parameterization == "ntk" else b * sb
        return out_dim, (p, _empty()) if trainable else (_empty(), p)

    def apply(params: Params, x: Array) -> Array:
        p = params[0] if trainable else params[1]
        if parameterization == "ntk":
            y = (sw / math.sqrt(x.shape[-1])) * (x @ p["w"])
            return y + sb * p["b"] if sb is not None else y
        y = x @ p["w"]
        return y + p["b"] if sb is not None else y

    def kernel(k: Kernel) -> Kernel:
        var1, var2, nngp = (sw**2 * v + b_var for v in (k.var1, k.var2, k.nngp))
        dist = sw**2 * k.dist
        total = sw**2 * k.total + 4 * b_var
        ntk = sw**2 * k.ntk
        if trainable:
            if parameterization == "ntk":
                ntk = ntk + nngp
            else:
                ntk = ntk + k.width * k.nngp + (1.0 if sb is not None else 0.0)
        return Kernel(var1, var2, nngp, dist, total, ntk, out_dim)

    return Layer(init, apply, kernel)


def _stateless(apply: Callable[[Array], Array], kernel: Callable[[Kernel], Kernel]) -> Layer:
    def init(key: Array, in_dim: int) -> tuple[int, Params]:
        del key
        return in_dim, (_empty(), _empty())

    return Layer(init, lambda params, x: apply(x), kernel)


def _safe_sqrt(x: Array) -> Array:
    return jnp.sqrt(jnp.maximum(x, 0.0))


def relu() -> Layer:
    """ReLU with its arc-cosine kernel map (docs/theory.md §4).

    With ``c = K12/sqrt(K11 K22)`` and ``th = arccos c``:
    ``K12' = sqrt(K11 K22) J(th) / (2 pi)``, ``J = sin th + (pi - th) cos th``,
    ``K11' = K11/2`` and ``Theta' = Theta (pi - th) / (2 pi)``. The angle comes from
    ``1 -+ c = (E(z -+ z')^2 - (|z| - |z'|)^2) / (2 |z||z'|)``, exact at coincident
    and at opposite inputs.
    """

    def kernel(k: Kernel) -> Kernel:
        root1, root2 = _safe_sqrt(k.var1), _safe_sqrt(k.var2)
        norm = root1 * root2
        safe = jnp.where(norm > 0, norm, 1.0)
        # 1 -+ c from the carried E(z -+ z')^2: each exactly zero at its singular point
        gap = jnp.maximum(k.dist - (root1 - root2) ** 2, 0.0)
        gap_plus = jnp.maximum(k.total - (root1 - root2) ** 2, 0.0)
        one_minus = jnp.where(norm > 0, jnp.clip(gap / (2 * safe), 0.0, 2.0), 1.0)
        one_plus = jnp.where(norm > 0, jnp.clip(gap_plus / (2 * safe), 0.0, 2.0), 1.0)
        theta = 2.0 * jnp.arctan2(jnp.sqrt(gap), jnp.sqrt(gap_plus))
        sin = jnp.sqrt(one_minus * one_plus)
        # pi - J(th) = pi (1 - cos th) + th cos th - sin th, kept apart from J itself
        deficit = jnp.pi * one_minus + theta * (one_plus - 1.0) - sin
        nngp = norm * (jnp.pi - deficit) / (2 * jnp.pi)
        dist = (root1 - root2) ** 2 / 2 + norm * deficit / jnp.pi
        derivative = (jnp.pi - theta) / (2 * jnp.pi)
        var1, var2 = k.var1 / 2, k.var2 / 2
        total = var1 + var2 + 2 * nngp
        return Kernel(var1, var2, nngp, dist, total, k.ntk * derivative, k.width)

    return _stateless(jax.nn.relu, kernel)


def erf_activation() -> Layer:
    """``erf`` with its closed-form kernel map (Williams 1997; docs/theory.md §4).

    ``K12' = (2/pi) arcsin(2 K12 / sqrt((1 + 2 K11)(1 + 2 K22)))`` and
    ``Theta' = Theta (4/pi) / sqrt((1 + 2 K11)(1 + 2 K22) - 4 K12^2)``.
    """

    def kernel(k: Kernel) -> Kernel:
        a1, a2 = 1 + 2 * k.var1, 1 + 2 * k.var2

        def arcsine(num: Array, den: Array) -> Array:
            return (2 / jnp.pi) * jnp.arcsin(jnp.clip(num / den, -1, 1))

        var1, var2 = arcsine(2 * k.var1, a1), arcsine(2 * k.var2, a2)
        nngp = arcsine(2 * k.nngp, jnp.sqrt(a1 * a2))
        dist = jnp.maximum(var1 + var2 - 2 * nngp, 0.0)
        derivative = (4 / jnp.pi) / _safe_sqrt(a1 * a2 - 4 * k.nngp**2)
        total = var1 + var2 + 2 * nngp
        return Kernel(var1, var2, nngp, dist, total, k.ntk * derivative, k.width)

    return _stateless(erf, kernel)


def cos_features(width: int, s0: float, trainable: bool = True) -> Layer:
    """CosNet hidden layer ``cos((s0/sqrt(d)) W0 x + b)``, ``b ~ U(-pi, pi)`` (docs/theory.md §3).

    With ``z`` the Gaussian part: ``K' = exp(-E[(z-z')^2]/2) / 2`` and, because the
    uniform phase removes ``cos(z + z')`` terms, ``E[sin z sin z'] = K'`` too, so
    ``Theta' = K' (Theta_z + [trainable] (s0^2 K + 1))`` with ``Theta_z = s0^2 Theta``
    (the ``+1`` is the phase's own gradient).
    """
    check_width("width", width)
    check_positive("s0", s0)

    def init(key: Array, in_dim: int) -> tuple[int, Params]:
        kw, kb = jax.random.split(key)
        p = {
            "w": jax.random.normal(kw, (in_dim, width)),
            "b": jax.random.uniform(kb, (width,), minval=-jnp.pi, maxval=jnp.pi),
        }
        return width, (p, _empty()) if trainable else (_empty(), p)

    def apply(params: Params, x: Array) -> Array:
        p = params[0] if trainable else params[1]
        return jnp.cos((s0 / math.sqrt(x.shape[-1])) * (x @ p["w"]) + p["b"])

    def kernel(k: Kernel) -> Kernel:
        nngp = 0.5 * jnp.exp(-0.5 * s0**2 * k.dist)
        dist = -jnp.expm1(-0.5 * s0**2 * k.dist)
        ntk_z = s0**2 * k.ntk + (s0**2 * k.nngp + 1.0 if trainable else 0.0)
        half1, half2 = jnp.full_like(k.var1, 0.5), jnp.full_like(k.var2, 0.5)
        return Kernel(half1, half2, nngp, dist, 1.0 + 2 * nngp, nngp * ntk_z, width)

    return Layer(init, apply, kernel)


def exp_features(width: int, s0: float, sb: float = 1.0, trainable: bool = True) -> Layer:
    """GaussNet hidden layer ``exp(z) / sqrt(E[exp(2 z)])`` with ``z = (s0/sqrt(d)) W0 x + sb b``.

    docs/theory.md §3 and paper Eq. S26-S28. The normaliser ``exp(Var z(x))`` depends on
    the input only, so it must be the first layer (its input is deterministic).
    ``K' = exp(-E[(z-z')^2]/2)`` and ``Theta' = K' (s0^2 Theta + [trainable] K_z)``.
    """
    check_width("width", width)
    check_positive("s0", s0)
    if not (math.isfinite(sb) and sb >= 0):
        raise ValueError(f"sb must be a non-negative number, got {sb!r}")

    def init(key: Array, in_dim: int) -> tuple[int, Params]:
        kw, kb = jax.random.split(key)
        p = {"w": jax.random.normal(kw, (in_dim, width)), "b": jax.random.normal(kb, (width,))}
        return width, (p, _empty()) if trainable else (_empty(), p)

    def apply(params: Params, x: Array) -> Array:
        p = params[0] if trainable else params[1]
        d = x.shape[-1]
        z = (s0 / math.sqrt(d)) * (x @ p["w"]) + sb * p["b"]
        variance = s0**2 * jnp.sum(x * x, axis=-1, keepdims=True) / d + sb**2
        return jnp.exp(z - variance)

    def kernel(k: Kernel) -> Kernel:
        nngp = jnp.exp(-0.5 * s0**2 * k.dist)
        dist = -2.0 * jnp.expm1(-0.5 * s0**2 * k.dist)
        ntk_z = s0**2 * k.ntk + (s0**2 * k.nngp + sb**2 if trainable else 0.0)
        one1, one2 = jnp.ones_like(k.var1), jnp.ones_like(k.var2)
        return Kernel(one1, one2, nngp, dist, 2.0 + 2 * nngp, nngp * ntk_z, width)

    return Layer(init, apply, kernel)


def serial(*layers: Layer) -> Layer:
    """Compose layers left to right (init, apply and kernel maps alike)."""
    if not layers:
        raise ValueError("serial needs at least one layer")

    def init(key: Array, in_dim: int) -> tuple[int, Params]:
        params = []
        for layer, k in zip(layers, jax.random.split(key, len(layers)), strict=True):
            in_dim, p = layer.init(k, in_dim)
            params.append(p)
        return in_dim, _stack_params(params)

    def apply(params: Params, x: Array) -> Array:
        for layer, p in zip(layers, _unstack_params(params, len(layers)), strict=True):
            x = layer.apply(p, x)
        return x

    def kernel(k: Kernel) -> Kernel:
        for layer in layers:
            k = layer.kernel(k)
        return k

    return Layer(init, apply, kernel)


def _stack_params(params: list[Params]) -> Params:
    """A list of per-layer ``(trainable, frozen)`` pairs as one pair of dicts keyed by layer."""
    trainable = {f"{i}": p[0] for i, p in enumerate(params) if p[0]}
    frozen = {f"{i}": p[1] for i, p in enumerate(params) if p[1]}
    return trainable, frozen


def _unstack_params(params: Params, n: int) -> list[Params]:
    trainable, frozen = params
    empty: dict[str, Any] = {}
    return [(trainable.get(f"{i}", empty), frozen.get(f"{i}", empty)) for i in range(n)]
