"""Gram matrices of infinite-width kernels, with the fast path for discrete inputs
(docs/theory.md §4).

Every kernel of :mod:`suite.layers` depends on two inputs only through the triple
``(|x|^2, |x'|^2, x.x')``. On integer-valued inputs (spins ``+-1``, the Hubbard
encoding ``0..3``) that triple takes few values, so a Gram matrix is a small table,
evaluated once, and an integer matmul that indexes it:

* the squared norms of the rows are labelled by their distinct values;
* ``x.x'`` is an integer in ``[-q, q]``, ``q = floor(sqrt(max|x|^2 max|x'|^2))``;
* the table ``T[a, b, x.x' + q]`` holds the kernel; the Gram matrix is a gather.

On spin inputs this is a function of the Hamming distance ``h = (N - x.x')/2``. The
table is evaluated by the same code on the same float64 numbers as the direct route,
so both agree to rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Literal, TypeVar

import jax
import jax.numpy as jnp
import numpy as np

from suite.layers import Kernel, input_kernel, kernel_of_inputs

Array = jax.Array
T = TypeVar("T")
Method = Literal["auto", "direct", "table"]
#: the table route is used by ``method="auto"`` up to this many table entries
MAX_TABLE_ENTRIES = 1 << 20
#: dot products the float32 index matmul represents exactly
MAX_EXACT_DOT = 1 << 24


class DiscreteStats:
    """Row norms and the dot-product range of two integer-valued input sets."""

    def __init__(self, x1: np.ndarray, x2: np.ndarray) -> None:
        self.norms1, self.label1 = np.unique(np.sum(x1 * x1, axis=1), return_inverse=True)
        self.norms2, self.label2 = np.unique(np.sum(x2 * x2, axis=1), return_inverse=True)
        self.half_range = math.isqrt(int(self.norms1[-1] * self.norms2[-1]))
        self.dim = x1.shape[1]

    @property
    def table_shape(self) -> tuple[int, int, int]:
        return len(self.norms1), len(self.norms2), 2 * self.half_range + 1

    def table_kernel(self) -> Kernel:
        """The input kernel at every table entry, shape ``table_shape``."""
        q = np.arange(-self.half_range, self.half_range + 1, dtype=np.float64)
        return input_kernel(
            jnp.asarray(self.norms1[:, None, None], jnp.float64),
            jnp.asarray(self.norms2[None, :, None], jnp.float64),
            jnp.broadcast_to(jnp.asarray(q), self.table_shape),
            self.dim,
        )


def is_integer_valued(x: np.ndarray) -> bool:
    """Whether every entry of ``x`` is an integer small enough for exact float32 matmuls."""
    return bool(np.all(np.isfinite(x)) and np.all(x == np.round(x)) and np.abs(x).max() < 1024)


def _check_inputs(x1: np.ndarray, x2: np.ndarray) -> None:
    if x1.ndim != 2 or x2.ndim != 2 or x1.shape[1] != x2.shape[1]:
        raise ValueError(
            f"x1 and x2 must be 2-d arrays with the same number of columns, got shapes "
            f"{x1.shape} and {x2.shape}"
        )


def spin_codes(x: np.ndarray) -> np.ndarray | None:
    """Bit codes of spin rows (``-1`` -> bit 1, first column most significant), or None.

    For spin inputs ``x.x' = N - 2 popcount(a XOR b)``: the Hamming distance of the codes.
    """
    if x.shape[1] > 64 or not np.all(np.abs(x) == 1.0):
        return None
    weights = np.left_shift(np.uint64(1), np.arange(x.shape[1] - 1, -1, -1, dtype=np.uint64))
    return ((x < 0).astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)


def _spin_index(a: Array, b: Array, n_sites: int) -> Array:
    """Table index ``x.x' + N = 2 (N - h)`` of spin pairs from their bit codes."""
    hamming = jax.lax.population_count(a[:, None] ^ b[None, :]).astype(jnp.int32)
    return 2 * (n_sites - hamming)


def _integer_index(
    x1: Array, x2: Array, label1: Array, label2: Array, n_norms2: int, half_range: int
) -> Array:
    """Flat table index ``(label1, label2, x.x' + q)`` of integer-valued pairs."""
    # full float32 (no TF32 on GPUs): exact for the integers is_integer_valued admits
    dots = jnp.matmul(
        x1.astype(jnp.float32), x2.astype(jnp.float32).T, precision=jax.lax.Precision.HIGHEST
    )
    dots = jnp.rint(dots).astype(jnp.int32)
    width = 2 * half_range + 1
    return (label1[:, None] * n_norms2 + label2[None, :]) * width + dots + half_range


INDEX_FUNCTIONS: dict[str, Callable[..., Array]] = {
    "spin": _spin_index,
    "integer": _integer_index,
}


def _fill(out: Array | None, values: Array) -> Array:
    return values if out is None else out.at[...].set(values)


@partial(jax.jit, static_argnames=("route", "statics"), donate_argnames="out")
def _gather(
    table: Array, args: tuple[Array, ...], route: str, statics: tuple[int, ...], out: Array | None
) -> Array:
    index = INDEX_FUNCTIONS[route](*args, *statics)
    return _fill(out, jnp.take(table, index, mode="clip"))


@partial(jax.jit, static_argnames="fn", donate_argnames="out")
def _direct(fn: Callable[[Kernel], T], x1: Array, x2: Array, out: T | None) -> T:
    # every leaf as a full (n1, n2) Gram matrix, also those that depend on one input only
    # (a Kernel's var1, var2) or on none (its width), as the table route returns them
    shape = (x1.shape[0], x2.shape[0])
    values = jax.tree.map(lambda leaf: jnp.broadcast_to(leaf, shape), fn(kernel_of_inputs(x1, x2)))
    return values if out is None else jax.tree.map(_fill, out, values)


def gram(
    fn: Callable[[Kernel], T],
    x1: np.ndarray | Array,
    x2: np.ndarray | Array,
    method: Method = "auto",
    out: T | None = None,
) -> T:
    """Evaluate ``fn(kernel of the inputs)`` between all rows of ``x1`` and ``x2``.

    ``fn`` maps an input :class:`~suite.layers.Kernel` elementwise to a pytree of
    arrays (e.g. ``layer.kernel``, or ``nnqs.infinite``); each leaf comes back with
    shape ``(len(x1), len(x2))``. ``method="table"`` uses the discrete fast path
    (integer-valued inputs only), ``"direct"`` the closed form on every pair, and
    ``"auto"`` the table whenever the inputs allow it. With ``out``, a pytree of
    float64 arrays shaped like the result, the result is written into those
    buffers, which are donated (steady-state throughput: no first touch of fresh
    pages). Pass the same ``fn`` object to reuse the compiled code.
    """
    x1n, x2n = np.asarray(x1, dtype=np.float64), np.asarray(x2, dtype=np.float64)
    _check_inputs(x1n, x2n)
    if method not in ("auto", "direct", "table"):
        raise ValueError(f"method must be 'auto', 'direct' or 'table', got {method!r}")
    discrete = is_integer_valued(x1n) and is_integer_valued(x2n)
    if method == "table" and not discrete:
        raise ValueError("method='table' needs integer-valued inputs (|x| < 1024)")
    stats = DiscreteStats(x1n, x2n) if discrete else None
    if stats is not None and stats.half_range >= MAX_EXACT_DOT:
        # the table index comes from a float32 matmul, exact only below 2^24
        if method == "table":
            raise ValueError(
                f"method='table' needs |x.x'| < 2^24 for an exact index, got inputs with "
                f"|x||x'| up to {stats.half_range}"
            )
        stats = None
    if (
        method == "direct"
        or stats is None
        or (method == "auto" and math.prod(stats.table_shape) > MAX_TABLE_ENTRIES)
    ):
        return _direct(fn, jnp.asarray(x1n), jnp.asarray(x2n), out)
    return table_gram(fn, stats, x1n, x2n, out)


@partial(jax.jit, static_argnames="fn")
def _tables(fn: Callable[[Kernel], T], table_kernel: Kernel) -> T:
    # broadcast before ravelling: a leaf of a smaller shape (a Kernel's var1, var2 or
    # width) would otherwise be gathered with out-of-range, clipped, indices
    shape = table_kernel.nngp.shape
    return jax.tree.map(lambda leaf: jnp.ravel(jnp.broadcast_to(leaf, shape)), fn(table_kernel))


def table_gram(
    fn: Callable[[Kernel], T],
    stats: DiscreteStats,
    x1: np.ndarray,
    x2: np.ndarray,
    out: T | None = None,
) -> T:
    """The discrete fast path of :func:`gram` (see the module docstring).

    Spin inputs index the table by the popcount of XOR-ed bit codes (one fused
    elementwise pass); other integer inputs by an exact float32 matmul.
    """
    tables = _tables(fn, stats.table_kernel())
    codes1, codes2 = spin_codes(x1), spin_codes(x2)
    if codes1 is not None and codes2 is not None:
        route, statics = "spin", (stats.dim,)
        args: tuple[Array, ...] = (jnp.asarray(codes1), jnp.asarray(codes2))
    else:
        route, statics = "integer", (stats.table_shape[1], stats.half_range)
        args = (
            jnp.asarray(x1),
            jnp.asarray(x2),
            jnp.asarray(stats.label1, jnp.int32),
            jnp.asarray(stats.label2, jnp.int32),
        )
    if out is None:
        return jax.tree.map(lambda table: _gather(table, args, route, statics, None), tables)
    return jax.tree.map(
        lambda buffer, table: _gather(table, args, route, statics, buffer), out, tables
    )


@partial(jax.jit, static_argnames="fn")
def _diagonal(fn: Callable[[Kernel], T], x: Array) -> T:
    sq = jnp.sum(x * x, axis=-1)
    return fn(input_kernel(sq, sq, sq, x.shape[-1]))


def diagonal(fn: Callable[[Kernel], T], x: np.ndarray | Array) -> T:
    """``fn`` at the coincident pairs ``(x_i, x_i)``: each leaf has shape ``(len(x),)``."""
    xn = np.asarray(x, dtype=np.float64)
    _check_inputs(xn, xn)
    return _diagonal(fn, jnp.asarray(xn))
