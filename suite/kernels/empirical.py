"""Empirical (finite-width) tangent kernels by autodiff (docs/theory.md §4).

``Theta_ab(x, x') = sum_p d_p a(x) d_p b(x')`` over the trainable parameters p,
for ``a, b in {u, v}`` of a network ``psi = u + i v``. The Jacobians of the
second argument's points (``B x P`` for B points and P parameters) are computed
once, in blocks; the first argument's points stream through in blocks of
``block`` rows, so a ``D x B`` Gram matrix never needs ``D x P`` memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from suite.layers import Layer, Params
from suite.networks import NNQS
from suite.qsntk import PairKernel

Array = jax.Array


def _blocks(x: Array, block: int) -> tuple[Array, int]:
    """``x`` padded to a multiple of ``block`` rows and reshaped to ``(n_blocks, block, d)``."""
    n = x.shape[0]
    block = min(block, n)
    pad = (-n) % block
    padded = jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)]) if pad else x
    return padded.reshape(-1, block, x.shape[1]), n


def _jacobian_gram(
    outputs: Callable[[Array, Array], Array], theta: Array, x1: Array, x2: Array, block: int
) -> Array:
    """``sum_p d_p outputs_a(x1) d_p outputs_b(x2)`` as an ``(A, A, n1, n2)`` array.

    ``outputs(theta, x)`` maps a flat parameter vector and points ``(n, d)`` to
    ``(A, n)`` real outputs.
    """
    # One reverse pass per point and output: (A, n, P) for a block of n points.
    per_point = jax.vmap(jax.jacrev(lambda t, x: outputs(t, x[None])[:, 0]), in_axes=(None, 0))

    def jacobian(t: Array, xb: Array) -> Array:
        return jnp.moveaxis(per_point(t, xb), 0, 1)

    blocks2, n2 = _blocks(x2, block)
    jac2 = jax.lax.map(lambda xb: jacobian(theta, xb), blocks2)  # (m, A, block, P)
    jac2 = jnp.moveaxis(jac2, 0, 1).reshape(jac2.shape[1], -1, theta.size)[:, :n2]

    blocks1, n1 = _blocks(x1, block)

    def row_block(xb: Array) -> Array:
        return jnp.einsum("anp,bmp->abnm", jacobian(theta, xb), jac2)

    grams = jax.lax.map(row_block, blocks1)  # (m, A, A, block, n2)
    grams = jnp.moveaxis(grams, 0, 2)
    return grams.reshape(*grams.shape[:2], -1, n2)[:, :, :n1]


def _check_block(block: int) -> None:
    if not (isinstance(block, int) and block > 0):
        raise ValueError(f"block must be a positive integer, got {block!r}")


@partial(jax.jit, static_argnames=("parts", "block"))
def _parts_gram(
    parts: Callable[[Params, Array], Array], params: Params, x1: Array, x2: Array, block: int
) -> Array:
    """Tangent Gram blocks of the real outputs ``parts(params, x) -> (A, n)``.

    ``parts`` is static (a network's own function, hashable and stable), so each
    network compiles once however often it is called.
    """
    trainable, frozen = params
    theta, unravel = ravel_pytree(trainable)
    if theta.size == 0:
        raise ValueError("params has no trainable parameters: the tangent kernel is zero")

    def outputs(flat: Array, x: Array) -> Array:
        return parts((unravel(flat), frozen), x)

    return _jacobian_gram(outputs, theta, x1, x2, block)


@dataclass(frozen=True)
class _FirstOutput:
    """``apply(params, x)[..., 0]`` as a ``(1, n)`` array; hashable by ``apply``."""

    apply: Callable[[Params, Array], Array]

    def __call__(self, params: Params, x: Array) -> Array:
        return self.apply(params, x)[..., 0][None]


@dataclass(frozen=True)
class _StackedParts:
    """``jnp.stack(nnqs.parts(params, x))``, ``(2, n)``; hashable by ``parts``."""

    parts: Callable[[Params, Array], tuple[Array, Array]]

    def __call__(self, params: Params, x: Array) -> Array:
        return jnp.stack(self.parts(params, x))


def empirical_ntk(layer: Layer, params: Params, x1: Array, x2: Array, block: int = 128) -> Array:
    """NTK ``Theta(x1, x2)`` of a real network with one output, ``(n1, n2)``."""
    _check_block(block)
    return _parts_gram(_FirstOutput(layer.apply), params, x1, x2, block)[0, 0]


def empirical_qs_ntk(
    nnqs: NNQS, params: Params, x1: Array, x2: Array, block: int = 128
) -> PairKernel:
    """Empirical QS-NTK blocks ``Theta_uu, Theta_uv, Theta_vu, Theta_vv`` of an NNQS."""
    _check_block(block)
    g = _parts_gram(_StackedParts(nnqs.parts), params, x1, x2, block)
    return PairKernel(g[0, 0], g[0, 1], g[1, 0], g[1, 1])
