"""The quantum-state kernels of a complex network ``psi = u + i v`` (docs/theory.md §4).

A :class:`PairKernel` holds the four real blocks ``K_ab(x, x')`` for
``a, b in {u, v}``. The same algebra serves two kernels:

* tangent kernels, ``K_ab = sum_p d_p a(x) d_p b(x')``: then
  :meth:`PairKernel.symmetric` is the NTK ``Theta``, :meth:`PairKernel.hermitian`
  the Hermitian NTK ``ThetaH`` and ``uv`` the mixing kernel;
* covariances, ``K_ab = E[a(x) b(x')]``: then :meth:`PairKernel.hermitian` is
  ``G = E[psi(x) conj psi(x')]`` and :meth:`PairKernel.symmetric` the pseudo-covariance
  ``E[psi(x) psi(x')]``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


class PairKernel(NamedTuple):
    """Real blocks ``uu, uv, vu, vv`` of a kernel between ``psi = u + i v`` at x and x'."""

    uu: Array
    uv: Array
    vu: Array
    vv: Array

    def symmetric(self) -> Array:
        """``Theta = Theta_uu - Theta_vv + i (Theta_uv + Theta_vu)`` (complex symmetric)."""
        return (self.uu - self.vv) + 1j * (self.uv + self.vu)

    def hermitian(self) -> Array:
        """``ThetaH = Theta_uu + Theta_vv + i (Theta_vu - Theta_uv)``."""
        return (self.uu + self.vv) + 1j * (self.vu - self.uv)

    def omega(self) -> Array:
        """The QS-NTK block matrix ``[[ThetaH, Theta], [conj Theta, conj ThetaH]]``.

        For ``n1`` and ``n2`` points the result is ``(2 n1, 2 n2)``: rows and columns
        are ``[psi(x_1..n); conj psi(x_1..n)]`` as in the gradient-flow equation of
        docs/theory.md §4.
        """
        hermitian, symmetric = self.hermitian(), self.symmetric()
        return jnp.block([[hermitian, symmetric], [jnp.conj(symmetric), jnp.conj(hermitian)]])


def decoupled_pair(uu: Array, vv: Array) -> PairKernel:
    """Blocks of two independent real networks: no mixing (``uv = vu = 0``)."""
    zero = jnp.zeros(jnp.broadcast_shapes(jnp.shape(uu), jnp.shape(vv)), dtype=jnp.result_type(uu))
    return PairKernel(uu, zero, zero, vv)
