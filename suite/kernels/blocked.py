"""Gram matrices computed in Dask tiles straight into a Zarr array (docs/theory.md §4, §6).

A Gram matrix between ``n1`` rows and ``n2`` columns is a Dask array of tiles, each
``gram(fn, row block, column block)``; it is stored into a Zarr array whose chunks
are the tiles, so every chunk has exactly one writer and memory stays at a few
tiles per thread, whatever the matrix size.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any

import dask.array as da
import numpy as np
import zarr

from suite.kernels.gram import gram
from suite.layers import Kernel

KernelFn = Callable[[Kernel], Any]


def _tile(x_rows: np.ndarray, x_columns: np.ndarray, fn: KernelFn) -> np.ndarray:
    return np.asarray(gram(fn, x_rows, x_columns))


def store_gram(
    fn: KernelFn,
    rows: np.ndarray,
    columns: np.ndarray,
    target: zarr.Array,
    prefix: tuple[int, ...] = (),
    workers: int | None = None,
) -> None:
    """Write ``gram(fn, rows, columns)`` into ``target[prefix + (:n1, :n2)]`` in Dask tiles.

    ``fn`` returns one array per kernel (e.g. ``lambda k: nnqs.infinite(k)[1].uu``); the
    tiles are ``target``'s chunks along its last two axes (which must start at 0 and
    cover ``(n1, n2)`` within the array); the axes in ``prefix`` are chunked by 1.
    Threads: ``workers`` (default: all cores).
    """
    rows, columns = np.asarray(rows), np.asarray(columns)
    n1, n2 = len(rows), len(columns)
    if target.ndim != len(prefix) + 2:
        raise ValueError(
            f"target has {target.ndim} axes; expected len(prefix) + 2 = {len(prefix) + 2}"
        )
    if n1 > target.shape[-2] or n2 > target.shape[-1]:
        raise ValueError(f"a ({n1}, {n2}) Gram matrix does not fit in {target.shape[-2:]}")
    if any(chunk != 1 for chunk in target.chunks[: len(prefix)]):
        raise ValueError(f"target chunks {target.chunks} must be 1 along the prefix axes")
    block_rows, block_columns = target.chunks[-2:]
    dtype = _tile(rows[:1], columns[:1], fn).dtype
    x = da.from_array(rows, chunks=(block_rows, rows.shape[1]))
    y = da.from_array(columns, chunks=(block_columns, columns.shape[1]))
    with warnings.catch_warnings():  # one tile per (row block, column block) is the point
        warnings.simplefilter("ignore", da.PerformanceWarning)
        tiles = da.blockwise(_tile, "ij", x, "ik", y, "jk", dtype=dtype, concatenate=True, fn=fn)
    region = (*prefix, slice(0, n1), slice(0, n2))
    da.store(
        tiles,
        target,
        regions=region,
        lock=False,
        scheduler="threads",
        num_workers=workers or os.cpu_count(),
    )
