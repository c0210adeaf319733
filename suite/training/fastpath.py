"""Recognition of one-hidden-layer decoupled networks for the fast update
(:mod:`suite.training`, "Two implementations of one update"; docs/theory.md §3).

:func:`fast_template` reads the constants and the activation off ``nnqs.parts`` on probe
parameters, then verifies the template against ``nnqs.parts`` and ``jax.grad``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import erf

from suite.networks import NNQS

Array = jax.Array

#: the template must reproduce nnqs.parts and its gradients to this (relative, float64)
TEMPLATE_RTOL = 1e-12
_SQRT_PI = math.sqrt(math.pi)


@dataclass(frozen=True)
class Template:
    """``u(x) = alpha sum_j W1_j act(beta x.W0_j + gamma b0_j) + delta b1`` (module docstring).

    ``gamma`` is ``None`` without a hidden bias, ``delta`` ``None`` without an output
    bias; ``paths`` locate ``(W0, b0, W1, b1)`` in one part's trainable tree.
    """

    activation: str
    alpha: float
    beta: float
    gamma: float | None
    delta: float | None
    width: int
    paths: tuple[tuple[str, ...] | None, ...]


def activation(name: str, z: Array) -> Array:
    if name == "relu":
        # not jnp.maximum(z, 0): on XLA:CPU that materialises a broadcast zero operand of
        # the full block size for the fused readout
        return jnp.where(z > 0, z, jnp.zeros((), z.dtype))
    if name == "erf":
        return erf(z)
    return jnp.cos(z)


def activation_grad(name: str, z: Array, r: Array) -> Array:
    """``act'(z) * r`` (``r`` broadcast over the hidden axis)."""
    if name == "relu":
        return jnp.where(z > 0, r, jnp.zeros((), z.dtype))
    if name == "erf":
        return (2 / _SQRT_PI) * jnp.exp(-z * z) * r
    return -jnp.sin(z) * r


def _tree_paths(tree: Any) -> dict[tuple[str, ...], Any]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {tuple(str(getattr(k, "key", k)) for k in path): leaf for path, leaf in flat}


def _structure(trainable: Any, frozen: Any, in_dim: int) -> tuple[Any, ...] | None:
    """``(width, paths)`` if one part's tree has the one-hidden-layer shape, else None."""
    if _tree_paths(frozen):
        return None
    leaves = _tree_paths(trainable)
    groups: dict[tuple[str, ...], dict[str, Any]] = {}
    for path, leaf in leaves.items():
        groups.setdefault(path[:-1], {})[path[-1]] = leaf
    if len(groups) != 2:
        return None
    (first, g0), (second, g1) = sorted(groups.items())
    if not set(g0) <= {"w", "b"} or not set(g1) <= {"w", "b"} or "w" not in g0 or "w" not in g1:
        return None
    w0, w1 = g0["w"], g1["w"]
    if len(w0.shape) != 2 or w0.shape[0] != in_dim:
        return None
    width = w0.shape[1]
    if w1.shape != (width, 1):
        return None
    if "b" in g0 and g0["b"].shape != (width,):
        return None
    if "b" in g1 and g1["b"].shape != (1,):
        return None
    paths = (
        (*first, "w"),
        (*first, "b") if "b" in g0 else None,
        (*second, "w"),
        (*second, "b") if "b" in g1 else None,
    )
    return width, paths


def _set(tree: Any, path: tuple[str, ...], value: Array) -> Any:
    head, *rest = path
    out = dict(tree)
    out[head] = value if not rest else _set(tree[head], tuple(rest), value)
    return out


def _part_tree(zeros: Any, paths: tuple[Any, ...], w0: Any, b0: Any, w1: Any, b1: Any) -> Any:
    tree = zeros
    for path, value in zip(paths, (w0, b0, w1, b1), strict=True):
        if path is not None:
            tree = _set(tree, path, value)
    return tree


def read_part(tree: Any, paths: tuple[Any, ...]) -> list[Any]:
    out = []
    for path in paths:
        if path is None:
            out.append(None)
            continue
        node = tree
        for key in path:
            node = node[key]
        out.append(node)
    return out


def _probe_numbers(g: Callable[[Array], Array]) -> list[Array]:
    """``g(0), g(1), g(-1), g(2)`` and the first three derivatives at 0 (traced)."""
    d1 = jax.grad(g)
    d2 = jax.grad(d1)
    d3 = jax.grad(d2)
    zero = jnp.float64(0.0)
    return [*(g(jnp.float64(t)) for t in (0.0, 1.0, -1.0, 2.0)), d1(zero), d2(zero), d3(zero)]


def _identify(numbers: Sequence[float]) -> tuple[str, float, float] | None:
    """``(activation, alpha, kappa)`` with ``g(t) = alpha act(kappa t)``, or None.

    ``numbers`` from :func:`_probe_numbers`. Values and derivatives at 0 tell the
    candidates apart: cos has ``g(0) != 0`` (``kappa^2 = -g''(0)/alpha``); relu is zero
    for t < 0 and positively homogeneous (canonically ``alpha = 1``, ``kappa = g(1)``);
    erf is odd with ``kappa^2 = -g'''(0) / (2 g'(0))``, ``alpha = g'(0) sqrt(pi) / (2 kappa)``.
    """
    g0, g1, gm1, g2, first, second, third = numbers
    scale = max(abs(g1), abs(g0), 1e-300)
    if abs(g0) > 1e-12 * scale:
        if g0 > 0 and second < 0:
            return "cos", g0, math.sqrt(-second / g0)
        return None
    if abs(gm1) <= 1e-12 * scale and g1 > 0 and abs(g2 - 2 * g1) <= 1e-12 * abs(g2):
        return "relu", 1.0, g1
    if first > 0 and third < 0 and abs(gm1 + g1) <= 1e-12 * scale:
        kappa = math.sqrt(-third / (2 * first))
        return "erf", first * _SQRT_PI / (2 * kappa), kappa
    return None


def _template_forward(t: Template, part: list[Any], x: Array) -> Array:
    """The template's output for one part (one network), ``x (..., d)``."""
    w0, b0, w1, b1 = part
    z = t.beta * (x @ w0)
    if t.gamma is not None:
        z = z + t.gamma * b0
    out = t.alpha * (activation(t.activation, z) @ w1)[..., 0]
    return out + t.delta * b1[0] if t.delta is not None else out


def _probe_part(nnqs: NNQS, in_dim: int, shapes: Any, side: str, structure: Any) -> Any:
    """Identify the template of part ``side`` ('re' or 'im') from probes of nnqs.parts."""
    width, paths = structure
    zeros = jax.tree.map(lambda s: np.zeros(s.shape), shapes)
    trainable0, frozen0 = zeros
    index = 0 if side == "re" else 1

    def output(part_values: tuple[Any, ...], x: Array) -> Array:
        part = _part_tree(trainable0[side], paths, *part_values)
        trainable = dict(trainable0)
        trainable[side] = part
        return nnqs.parts((trainable, frozen0), x)[index]

    unit = np.zeros((width, 1))
    unit[0, 0] = 1.0
    w0_zero, b0_zero, b1_zero = np.zeros((in_dim, width)), np.zeros(width), np.zeros(1)
    x0 = np.zeros((1, in_dim))
    e0 = x0.copy()
    e0[0, 0] = 1.0

    def g_weight(t: Array) -> Array:
        return output((jnp.asarray(w0_zero).at[0, 0].set(t), b0_zero, unit, b1_zero), e0)[0]

    def g_bias(t: Array) -> Array:
        return output((w0_zero, jnp.asarray(b0_zero).at[0].set(t), unit, b1_zero), x0)[0]

    @jax.jit
    def probes() -> Array:
        numbers = _probe_numbers(g_weight)
        if paths[1] is not None:
            numbers += _probe_numbers(g_bias)
        if paths[3] is not None:  # W1 = 0, b1 = 1: u = delta
            numbers.append(output((w0_zero, b0_zero, unit * 0, b1_zero + 1.0), x0)[0])
        return jnp.stack(numbers)

    numbers = [float(v) for v in probes()]
    found_w = _identify(numbers[:7])
    if found_w is None:
        return None
    activation, alpha, beta = found_w
    gamma = None
    if paths[1] is not None:
        found_b = _identify(numbers[7:14])
        if found_b is None or found_b[0] != activation:
            return None
        if not math.isclose(found_b[1], alpha, rel_tol=1e-9):
            return None
        gamma = found_b[2]
    delta = numbers[-1] if paths[3] is not None else None
    return Template(activation, alpha, beta, gamma, delta, width, paths)


def _verify(nnqs: NNQS, template: Template, in_dim: int) -> bool:
    """The template reproduces ``nnqs.parts`` and its gradients on random probes."""
    rng = np.random.default_rng(20240601)
    params = jax.jit(nnqs.init, static_argnums=1)(jax.random.key(20240601), in_dim)
    x, y = rng.normal(size=(7, in_dim)), rng.normal(size=(2, 7))
    trainable, frozen = params

    def loss_parts(tr: Any) -> Array:
        u, v = nnqs.parts((tr, frozen), x)
        return jnp.sum((u - y[0]) ** 2) + jnp.sum((v - y[1]) ** 2)

    def loss_template(tr: Any) -> Array:
        u = _template_forward(template, read_part(tr["re"], template.paths), x)
        v = _template_forward(template, read_part(tr["im"], template.paths), x)
        return jnp.sum((u - y[0]) ** 2) + jnp.sum((v - y[1]) ** 2)

    @jax.jit
    def compare() -> tuple[Any, Any]:
        u, v = nnqs.parts(params, x)
        ut = _template_forward(template, read_part(trainable["re"], template.paths), x)
        vt = _template_forward(template, read_part(trainable["im"], template.paths), x)
        ours = [u, v, *jax.tree.leaves(jax.grad(loss_parts)(trainable))]
        theirs = [ut, vt, *jax.tree.leaves(jax.grad(loss_template)(trainable))]
        return ours, theirs

    pairs = zip(*compare(), strict=True)
    for a, b in pairs:
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape or not np.all(np.isfinite(a)):
            return False
        if np.max(np.abs(a - b)) > TEMPLATE_RTOL * max(np.max(np.abs(a)), 1e-300):
            return False
    return True


@functools.lru_cache(maxsize=64)
def fast_template(nnqs: NNQS, in_dim: int) -> Template | None:
    """The verified one-hidden-layer template of a decoupled NNQS, or None (module docstring).

    Both parts must share one template (same width, activation and constants).
    """
    if nnqs.kind != "decoupled":
        return None
    shapes = jax.eval_shape(lambda: nnqs.init(jax.random.key(0), in_dim))
    trainable, frozen = shapes
    if set(trainable) != {"re", "im"} or set(frozen) != {"re", "im"}:
        return None
    structures = [_structure(trainable[s], frozen[s], in_dim) for s in ("re", "im")]
    if structures[0] is None or structures[0] != structures[1]:
        return None
    templates = [_probe_part(nnqs, in_dim, shapes, s, structures[0]) for s in ("re", "im")]
    if templates[0] is None or templates[1] is None:
        return None
    t0, t1 = templates
    same = t0.activation == t1.activation and all(
        (a is None and b is None)
        or (a is not None and b is not None and math.isclose(a, b, rel_tol=1e-12))
        for a, b in zip(
            (t0.alpha, t0.beta, t0.gamma, t0.delta),
            (t1.alpha, t1.beta, t1.gamma, t1.delta),
            strict=True,
        )
    )
    if not same or not _verify(nnqs, t0, in_dim):
        return None
    return t0
