"""Kernels on the full spin basis, diagonal in the Walsh-Hadamard basis (docs/theory.md §7).

On spins every kernel of the suite is ``K(x, y) = k(h)``, ``h`` the Hamming distance:
a convolution on the group ``Z_2^N``. With basis indices as bit strings (docs/theory.md
§1) and ``(W f)(s) = sum_x (-1)^{popcount(s & x)} f(x)``, the Walsh function ``s`` is an
eigenvector with eigenvalue ``lambda_w``, ``w = popcount(s)`` (a Krawtchouk sum), so

* a product ``K v = W[lambda * (W v)] / D`` costs two transforms, ``O(N D)``;
* ``W / sqrt(D)`` is orthogonal and symmetric, so ``W[sqrt(lambda) * xi] / sqrt(D)``
  with ``xi ~ N(0, I)`` is an exact Gaussian sample of covariance ``K``;
* the spectrum has ``N + 1`` distinct values, so positive-definiteness is an ``O(N)`` check.

No ``D x D`` array is ever formed: ``D = 2^20`` fits in memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import jax
import jax.numpy as jnp
import numpy as np

from suite.kernels.full_basis import is_positive_semidefinite, not_positive_semidefinite
from suite.layers import Kernel, input_kernel
from suite.qsntk import PairKernel

Array = jax.Array
T = TypeVar("T")


def fwht(values: Array) -> Array:
    """Unnormalised Walsh-Hadamard transform along the last axis (length ``2^N``).

    ``(W f)(s) = sum_x (-1)^{popcount(s & x)} f(x)``, the Sylvester ordering; ``W W = D I``.
    ``N`` butterfly passes, ``O(N D)`` work, no ``D x D`` array.
    """
    dimension = values.shape[-1]
    n_bits = dimension.bit_length() - 1
    if dimension != 1 << n_bits:
        raise ValueError(f"the last axis must have a power-of-two length, got {dimension}")
    batch = values.shape[:-1]
    for bit in range(n_bits):
        pairs = values.reshape(*batch, dimension >> (bit + 1), 2, 1 << bit)
        low, high = pairs[..., 0, :], pairs[..., 1, :]
        values = jnp.stack([low + high, low - high], axis=-2).reshape(*batch, dimension)
    return values


def hamming_profile(fn: Callable[[Kernel], T], n_sites: int) -> T:
    """``fn`` of the input kernel of two spin configurations at Hamming distance ``h = 0..N``.

    Each leaf has shape ``(N + 1,)``: the same float64 numbers as a Gram matrix of
    :func:`suite.kernels.gram.gram` on spins (``|x|^2 = N``, ``x.x' = N - 2h``).
    """
    hamming = jnp.arange(n_sites + 1, dtype=jnp.float64)
    size = jnp.full(n_sites + 1, float(n_sites))
    return fn(input_kernel(size, size, n_sites - 2 * hamming, n_sites))


def krawtchouk(n_sites: int) -> np.ndarray:
    """``C[w, h] = sum_j (-1)^j C(w, j) C(N - w, h - j)``, exact integers (as Python ints)."""
    return np.array(
        [
            [
                sum(
                    (-1) ** j * math.comb(w, j) * math.comb(n_sites - w, h - j)
                    for j in range(h + 1)
                )
                for h in range(n_sites + 1)
            ]
            for w in range(n_sites + 1)
        ],
        dtype=object,
    )


def walsh_eigenvalues(profile: np.ndarray, n_sites: int) -> np.ndarray:
    """``lambda_w = sum_h k(h) C[w, h]`` for ``w = 0..N`` (:func:`krawtchouk`).

    Summed with :func:`math.fsum` over exact integer weights, so an eigenvalue that
    is small next to ``D max|k|`` keeps its digits.
    """
    values = np.asarray(profile, dtype=np.float64)
    if values.shape != (n_sites + 1,):
        raise ValueError(f"profile must have shape ({n_sites + 1},), got {values.shape}")
    weights = krawtchouk(n_sites)
    return np.array(
        [
            math.fsum(float(values[h]) * weights[w, h] for h in range(n_sites + 1))
            for w in range(n_sites + 1)
        ]
    )


@dataclass(frozen=True)
class WalshPairKernel:
    """The four blocks of a :class:`~suite.qsntk.PairKernel` on the full spin basis.

    ``blocks[w]`` is the real ``2 x 2`` matrix ``[[uu, uv], [vu, vv]]`` of Walsh
    eigenvalues shared by the ``C(N, w)`` Walsh functions of weight ``w``: the kernel
    of the stacked real outputs ``(u, v)`` acts on each Walsh mode as that matrix.
    ``roots[w]`` is its symmetric square root (None when the kernel is indefinite).
    A JAX pytree: pass it to jitted code as an argument.
    """

    blocks: Array  # (N + 1, 2, 2) float64
    roots: Array | None
    n_sites: int

    @classmethod
    def from_profiles(cls, profiles: PairKernel, n_sites: int) -> WalshPairKernel:
        """From the Hamming profiles (:func:`hamming_profile`) of the four blocks."""
        eigen = [walsh_eigenvalues(np.asarray(block), n_sites) for block in profiles]
        blocks = np.stack([np.stack(eigen[:2], -1), np.stack(eigen[2:], -1)], -2)
        symmetric = 0.5 * (blocks + np.swapaxes(blocks, -1, -2))
        values, vectors = np.linalg.eigh(symmetric)
        roots = None
        if is_positive_semidefinite(values):
            scaled = vectors * np.sqrt(np.clip(values, 0.0, None))[:, None, :]
            roots = jnp.asarray(np.einsum("wij,wkj->wik", scaled, vectors))
        return cls(jnp.asarray(blocks), roots, n_sites)

    @property
    def dimension(self) -> int:
        return 1 << self.n_sites

    def eigenvalues(self) -> tuple[np.ndarray, np.ndarray]:
        """Distinct eigenvalues of the real ``2D x 2D`` kernel and their multiplicities."""
        blocks = np.asarray(self.blocks)
        values = np.linalg.eigvalsh(0.5 * (blocks + np.swapaxes(blocks, -1, -2))).ravel()
        counts = np.repeat([math.comb(self.n_sites, w) for w in range(self.n_sites + 1)], 2)
        return values, counts

    def _transform(self, matrices: Array, u: Array, v: Array) -> tuple[Array, Array]:
        """``W [m_s (W u, W v)] / D``: the operator acting as ``m_s`` on Walsh mode ``s``."""
        codes = jnp.arange(self.dimension, dtype=jnp.int32)
        per_mode = matrices[jax.lax.population_count(codes)]  # (D, 2, 2)
        u_hat, v_hat = fwht(u), fwht(v)
        new_u = per_mode[:, 0, 0] * u_hat + per_mode[:, 0, 1] * v_hat
        new_v = per_mode[:, 1, 0] * u_hat + per_mode[:, 1, 1] * v_hat
        return fwht(new_u) / self.dimension, fwht(new_v) / self.dimension

    def apply(self, u: Array, v: Array) -> tuple[Array, Array]:
        """``(Kuu u + Kuv v, Kvu u + Kvv v)`` along the last axis (length ``D``)."""
        return self._transform(self.blocks, u, v)

    def apply_root(self, u: Array, v: Array) -> tuple[Array, Array]:
        """The symmetric square root ``K^(1/2)`` applied like :meth:`apply`."""
        if self.roots is None:
            raise ValueError(not_positive_semidefinite(self.eigenvalues()[0]))
        return self._transform(self.roots, u, v)


jax.tree_util.register_dataclass(
    WalshPairKernel, data_fields=["blocks", "roots"], meta_fields=["n_sites"]
)
