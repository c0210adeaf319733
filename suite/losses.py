"""Losses of a wavefunction on the whole basis and their function-space gradients
(docs/theory.md §7).

A loss is data: a frozen dataclass registered as a JAX pytree (its arrays are leaves,
its shape-defining settings static), with two pure methods on one wavefunction
``psi`` of shape ``(D,)``, complex:

* ``value(psi)``: the real loss, an exact sum over the basis (no sampling);
* ``gradient(psi)``: the Wirtinger gradient ``g = dL/d conj(psi)``, in closed form.

``jax.vmap`` over either gives an ensemble. The closed forms are tested against
autodiff of ``value`` (``g = (dL/d Re psi + i dL/d Im psi) / 2``).

Conventions: ``<a|b> = sum_x conj(a(x)) b(x)``; the tomography bases rotate each site
by ``U_Z = I``, ``U_X = [[1, 1], [1, -1]]/sqrt2``, ``U_Y = [[1, -i], [1, i]]/sqrt2`` in
the local order (up, down) of docs/theory.md §1, mapping the ``+1`` eigenvector of the
measured Pauli to ``s = +1``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

Array = jax.Array

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
#: single-site measurement rotations (docs/theory.md §7), local order (up, down)
ROTATIONS: dict[str, np.ndarray] = {
    "Z": np.eye(2, dtype=np.complex128),
    "X": _INV_SQRT2 * np.array([[1, 1], [1, -1]], dtype=np.complex128),
    "Y": _INV_SQRT2 * np.array([[1, -1j], [1, 1j]], dtype=np.complex128),
}


class Loss(Protocol):
    """A real loss of ``psi`` on the whole basis and its Wirtinger gradient."""

    def value(self, psi: Array) -> Array: ...

    def gradient(self, psi: Array) -> Array: ...


def real_gradient(loss: Loss, psi: Array) -> tuple[Array, Array]:
    """``(dL/du, dL/dv) = (2 Re g, 2 Im g)`` at ``psi = u + i v``: the gradient in the real
    coordinates in which the QS-NTK acts (docs/theory.md §7.1)."""
    g = loss.gradient(psi)
    return 2 * g.real, 2 * g.imag


def _pytree(cls: type, data: Sequence[str], meta: Sequence[str] = ()) -> type:
    return jax.tree_util.register_dataclass(cls, data_fields=list(data), meta_fields=list(meta))


def _norm(psi: Array) -> Array:
    return jnp.sum(jnp.abs(psi) ** 2)


#: gathered elements (terms x functions x basis states) up to which
#: :meth:`SparseRows.apply` gathers every term at once
GATHER_ELEMENTS = 1 << 16


@dataclass(frozen=True)
class SparseRows:
    """A sparse real-symmetric operator as ``r`` padded diagonals of gathers.

    ``(H psi)(x) = sum_j values[j, x] psi(columns[j, x])``: ``O(r M D)`` work for an
    ensemble ``(M, D)``. Up to :data:`GATHER_ELEMENTS` gathered elements per call (the
    losses apply it to one function at a time under ``vmap``, so the bound is per
    function: at most 1 MiB of complex values each, 256 MiB for a chunk of 256) the
    ``r`` terms are gathered at once, 8x faster than a term at a time for TFIM 3x3
    (measured in the energy gradient of 256 functions on XLA CPU); beyond, one term at
    a time (``O(M D)`` extra memory).
    """

    columns: Array  # (r, D) int32
    values: Array  # (r, D) float64

    @classmethod
    def from_csr(cls, matrix: sp.csr_matrix) -> SparseRows:
        matrix = sp.csr_matrix(matrix)
        if matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"the Hamiltonian must be square, got shape {matrix.shape}")
        asymmetry = abs(matrix - matrix.T).max() if matrix.nnz else 0.0
        if asymmetry > 1e-12 * max(abs(matrix).max() if matrix.nnz else 0.0, 1.0):
            raise ValueError("the Hamiltonian must be real symmetric")
        dimension = matrix.shape[0]
        counts = np.diff(matrix.indptr)
        width = max(int(counts.max(initial=0)), 1)
        columns = np.tile(np.arange(dimension, dtype=np.int32), (width, 1))
        values = np.zeros((width, dimension), dtype=np.float64)
        rows = np.repeat(np.arange(dimension), counts)
        slot = np.arange(matrix.nnz) - np.repeat(matrix.indptr[:-1], counts)
        columns[slot, rows] = matrix.indices
        values[slot, rows] = matrix.data
        return cls(jnp.asarray(columns), jnp.asarray(values))

    def apply(self, psi: Array) -> Array:
        """``H psi`` along the last axis."""
        if self.columns.size * psi.size // max(psi.shape[-1], 1) <= GATHER_ELEMENTS:
            return jnp.sum(self.values * jnp.take(psi, self.columns, axis=-1), axis=-2)

        def term(total: Array, row: tuple[Array, Array]) -> tuple[Array, None]:
            columns, values = row
            return total + values * jnp.take(psi, columns, axis=-1), None

        return jax.lax.scan(term, jnp.zeros_like(psi), (self.columns, self.values), unroll=True)[0]


_pytree(SparseRows, ["columns", "values"])


@dataclass(frozen=True)
class SupervisedMSE:
    """``L = (1/2B) sum_b |psi(x_b) - phi_b|^2`` on the train indices (docs/theory.md §5)."""

    train: Array  # (B,) int
    phi: Array  # (B,) complex, the target on the train set

    def value(self, psi: Array) -> Array:
        residual = psi[self.train] - self.phi
        return _norm(residual) / (2 * self.train.shape[0])

    def gradient(self, psi: Array) -> Array:
        residual = psi[self.train] - self.phi
        return jnp.zeros_like(psi).at[self.train].set(residual / (2 * self.train.shape[0]))


_pytree(SupervisedMSE, ["train", "phi"])


@dataclass(frozen=True)
class Energy:
    """``E = <psi|H|psi> / <psi|psi>``; ``g = (H psi - E psi) / <psi|psi>``."""

    hamiltonian: SparseRows

    def value(self, psi: Array) -> Array:
        return jnp.real(jnp.vdot(psi, self.hamiltonian.apply(psi))) / _norm(psi)

    def gradient(self, psi: Array) -> Array:
        h_psi, norm = self.hamiltonian.apply(psi), _norm(psi)
        energy = jnp.real(jnp.vdot(psi, h_psi)) / norm
        return (h_psi - energy * psi) / norm


_pytree(Energy, ["hamiltonian"])


@dataclass(frozen=True)
class Infidelity:
    """``1 - |<phi|psi>|^2 / (<phi|phi> <psi|psi>)`` to the target ``phi``."""

    phi: Array  # (D,) complex

    def value(self, psi: Array) -> Array:
        overlap = jnp.vdot(self.phi, psi)
        return 1.0 - jnp.abs(overlap) ** 2 / (_norm(self.phi) * _norm(psi))

    def gradient(self, psi: Array) -> Array:
        overlap, norm = jnp.vdot(self.phi, psi), _norm(psi)
        return -(overlap * self.phi / norm - jnp.abs(overlap) ** 2 * psi / norm**2) / _norm(
            self.phi
        )


_pytree(Infidelity, ["phi"])


def check_bases(bases: Sequence[str], n_sites: int) -> tuple[str, ...]:
    """Measurement bases as strings of ``X``, ``Y``, ``Z``, one letter per site."""
    if isinstance(bases, str) or not bases:
        raise ValueError(f"bases must be a non-empty list of strings, got {bases!r}")
    for basis in bases:
        if not isinstance(basis, str) or len(basis) != n_sites or set(basis) - set(ROTATIONS):
            raise ValueError(
                f"each basis must be a string of {n_sites} letters from X, Y, Z "
                f"(one per site), got {basis!r}"
            )
    return tuple(bases)


def rotate(psi: Array, basis: str, adjoint: bool = False) -> Array:
    """``(U_1 x ... x U_N) psi`` (or its adjoint) along the last axis, one site at a time.

    Site ``i`` is axis ``i`` of the ``(2,) * N`` reshape (site 0 the most significant
    bit, docs/theory.md §1); ``O(N D)`` work. All-X is ``W / 2^(N/2)``.
    """
    n_sites = len(basis)
    batch = psi.shape[:-1]
    tensor = psi.reshape(*batch, *(2,) * n_sites)
    for site, letter in enumerate(basis):
        if letter == "Z":
            continue
        rotation = ROTATIONS[letter].conj().T if adjoint else ROTATIONS[letter]
        axis = len(batch) + site
        tensor = jnp.moveaxis(
            jnp.tensordot(jnp.asarray(rotation), tensor, axes=([1], [axis])), 0, axis
        )
    return tensor.reshape(psi.shape)


@dataclass(frozen=True)
class Tomography:
    """``L = sum_k sum_s Q_k(s) ln(Q_k(s) / P_k(s))``, ``P_k(s) = |(U_k psi)(s)|^2 / <psi|psi>``.

    ``targets[k]`` is ``Q_k``: the target's Born distribution in basis ``bases[k]``, or the
    frequencies of a finite number of shots (:func:`tomography_targets`). Outcomes with
    ``Q = 0`` contribute nothing; ``P = 0`` where ``Q > 0`` gives an infinite loss.
    """

    targets: Array  # (K, D) float64
    bases: tuple[str, ...] = field(default=())

    def value(self, psi: Array) -> Array:
        log_norm = jnp.log(_norm(psi))
        total = jnp.zeros((), dtype=jnp.float64)
        for basis, target in zip(self.bases, self.targets, strict=True):
            log_model = jnp.log(jnp.abs(rotate(psi, basis)) ** 2) - log_norm
            safe = jnp.where(target > 0, target, 1.0)
            total += jnp.sum(jnp.where(target > 0, target * (jnp.log(safe) - log_model), 0.0))
        return total

    def gradient(self, psi: Array) -> Array:
        norm = _norm(psi)
        gradient = jnp.zeros_like(psi)
        for basis, target in zip(self.bases, self.targets, strict=True):
            amplitude = rotate(psi, basis)
            weight = jnp.where(target > 0, target / jnp.abs(amplitude) ** 2, 0.0)
            gradient += jnp.sum(target) * psi / norm - rotate(
                weight * amplitude, basis, adjoint=True
            )
        return gradient


_pytree(Tomography, ["targets"], ["bases"])


def tomography_targets(
    phi: np.ndarray, bases: Sequence[str], shots: int | None = None, seed: int = 0
) -> Tomography:
    """The tomography loss to the state ``phi`` on a full spin basis.

    ``shots=None``: exact Born distributions. Otherwise ``shots`` outcomes per basis are
    drawn (NumPy's PCG64 seeded by ``(seed, k)`` for basis ``k``) and ``Q_k`` is their
    frequencies.
    """
    phi = np.asarray(phi, dtype=np.complex128)
    n_sites = phi.size.bit_length() - 1
    if phi.ndim != 1 or phi.size != 1 << n_sites:
        raise ValueError(f"phi must be a state on a full spin basis (2^N,), got shape {phi.shape}")
    bases = check_bases(bases, n_sites)
    if shots is not None and not (isinstance(shots, int) and shots > 0):
        raise ValueError(f"shots must be a positive integer or None, got {shots!r}")
    targets = []
    for k, basis in enumerate(bases):
        born = np.abs(np.asarray(rotate(jnp.asarray(phi), basis))) ** 2
        born /= born.sum()
        if shots is not None:
            counts = np.random.default_rng([seed, k]).multinomial(shots, born)
            born = counts / shots
        targets.append(born)
    return Tomography(jnp.asarray(np.stack(targets)), bases)
