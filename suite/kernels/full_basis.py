"""Infinite-width kernels acting on functions of the whole basis (docs/theory.md §7).

A :class:`BasisKernel` is the real kernel of the stacked outputs ``(u, v)`` of an
NNQS, ``[[K_uu, K_uv], [K_vu, K_vv]]``, as an operator on ensembles of functions
``(M, D)``: its product, the product with its symmetric square root (exact Gaussian
samples, the learning-rate rule) and its spectrum. Two implementations:

* :class:`DensePairKernel`: the ``2D x 2D`` matrix, for any basis (Hubbard sectors);
  refused above :data:`MAX_DENSE_DIMENSION` states;
* :class:`~suite.kernels.walsh.WalshPairKernel`: the full spin basis, diagonal in the
  Walsh-Hadamard basis, ``O(D log D)`` and no ``D x D`` array.

Both are JAX pytrees: pass them to jitted code as arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np

from suite.networks import member_keys
from suite.qsntk import PairKernel

Array = jax.Array
#: eigenvalues below ``-PSD_RTOL * max |lambda|`` make a kernel indefinite
PSD_RTOL = 1e-12
#: largest basis of a dense kernel: its ``2D x 2D`` float64 matrix and square root
#: take 2 x 2 GiB at this size
MAX_DENSE_DIMENSION = 8192


class BasisKernel(Protocol):
    """The kernel of ``(u, v)`` on the whole basis, acting along the last axis."""

    @property
    def dimension(self) -> int: ...

    def apply(self, u: Array, v: Array) -> tuple[Array, Array]: ...

    def apply_root(self, u: Array, v: Array) -> tuple[Array, Array]: ...

    def eigenvalues(self) -> tuple[np.ndarray, np.ndarray]: ...


def is_positive_semidefinite(eigenvalues: np.ndarray) -> bool:
    """No eigenvalue below ``-PSD_RTOL`` times the largest magnitude."""
    scale = float(np.abs(eigenvalues).max(initial=0.0))
    return bool(eigenvalues.min(initial=0.0) >= -PSD_RTOL * scale)


def not_positive_semidefinite(eigenvalues: np.ndarray) -> str:
    smallest, largest = float(np.min(eigenvalues)), float(np.abs(eigenvalues).max())
    return (
        f"the kernel is not positive semi-definite: smallest eigenvalue {smallest:.3e}, "
        f"largest magnitude {largest:.3e}"
    )


@dataclass(frozen=True)
class DensePairKernel:
    """The ``2D x 2D`` real kernel ``[[K_uu, K_uv], [K_vu, K_vv]]`` and its square root."""

    matrix: Array
    root: Array | None

    @classmethod
    def from_blocks(cls, blocks: PairKernel, with_root: bool = True) -> DensePairKernel:
        """From the ``(D, D)`` blocks of a Gram matrix (:func:`suite.kernels.gram.gram`);
        without ``with_root``, for products only (no eigendecomposition)."""
        dimension = np.shape(blocks.uu)[0]
        if dimension > MAX_DENSE_DIMENSION:
            raise ValueError(
                f"a dense basis kernel needs dimension <= {MAX_DENSE_DIMENSION}, got {dimension} "
                f"(full spin bases use the Walsh-Hadamard route)"
            )
        matrix = np.block([[blocks.uu, blocks.uv], [blocks.vu, blocks.vv]]).astype(np.float64)
        if not with_root:
            return cls(jnp.asarray(matrix), None)
        values, vectors = np.linalg.eigh(0.5 * (matrix + matrix.T))
        root = None
        if is_positive_semidefinite(values):
            root = jnp.asarray((vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T)
        return cls(jnp.asarray(matrix), root)

    @property
    def dimension(self) -> int:
        return self.matrix.shape[0] // 2

    def eigenvalues(self) -> tuple[np.ndarray, np.ndarray]:
        matrix = np.asarray(self.matrix)
        values = np.linalg.eigvalsh(0.5 * (matrix + matrix.T))
        return values, np.ones(values.size, dtype=np.int64)

    def _product(self, matrix: Array, u: Array, v: Array) -> tuple[Array, Array]:
        stacked = jnp.concatenate([u, v], axis=-1) @ matrix.T
        return stacked[..., : self.dimension], stacked[..., self.dimension :]

    def apply(self, u: Array, v: Array) -> tuple[Array, Array]:
        return self._product(self.matrix, u, v)

    def apply_root(self, u: Array, v: Array) -> tuple[Array, Array]:
        if self.root is None:
            raise ValueError(not_positive_semidefinite(self.eigenvalues()[0]))
        return self._product(self.root, u, v)


jax.tree_util.register_dataclass(DensePairKernel, data_fields=["matrix", "root"], meta_fields=[])


def sample_functions(kernel: BasisKernel, seed: int, members: np.ndarray | range) -> Array:
    """Exact draws ``psi_0 = u + i v`` of the centred Gaussian with covariance ``kernel``.

    Member ``i`` uses the noise of ``fold_in(key(seed), i)`` (docs/theory.md §3,
    ensembles), so it is the same draw however an ensemble is split into chunks.
    Shape ``(len(members), D)``, complex128.
    """
    keys = member_keys(seed, np.asarray(members))
    noise = jax.vmap(lambda key: jax.random.normal(key, (2, kernel.dimension), jnp.float64))(keys)
    u, v = kernel.apply_root(noise[:, 0], noise[:, 1])
    return u + 1j * v
