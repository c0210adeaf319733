"""How a run is cut: members in blocks and lanes per device, points in chunks
(:mod:`suite.training`, "Blocks and lanes"), and the loops over them."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

#: target number of elements of one block's ``networks x width x points`` intermediate
#: on a CPU: a few MB, so that a block's GEMM outputs stay in cache between the passes
#: over them. Measured on 2 cores (float32, B = 256): 2^20-2^21 best at width 1024; at
#: width 4096 2^21 (one member, all points) beats 2^20 (points in two chunks) by ~30%.
BLOCK_ELEMENTS = 1 << 21
#: the same on an accelerator, where a block is one set of kernel launches and must be
#: large enough to fill the device (2^26 elements: 256 MB in float32, 512 MB in
#: float64 per intermediate); at 2^21 an ensemble of 4,096 width-4096 members would
#: run as 4,096 sequential one-member blocks per step
ACCELERATOR_BLOCK_ELEMENTS = 1 << 26
#: independent block loops per device (``None``: two per core left to each CPU device,
#: one on accelerators; see :class:`Layout`)
LANES: int | None = None


@dataclass(frozen=True)
class Layout:
    """How a run is cut: per device ``lanes x blocks_per_lane x block`` members, points
    in chunks. Lanes are independent loops over blocks that XLA:CPU runs concurrently
    (one per core); within a loop the blocks run one after the other."""

    n_devices: int
    lanes: int
    block: int
    n_blocks: int
    train_chunk: int
    n_train_chunks: int
    eval_chunk: int
    n_eval_chunks: int

    @property
    def blocks_per_lane(self) -> int:
        return self.n_blocks // self.lanes

    @property
    def per_lane(self) -> int:
        return self.block * self.blocks_per_lane

    @property
    def per_device(self) -> int:
        return self.block * self.n_blocks

    @property
    def padded(self) -> int:
        return self.per_device * self.n_devices


def plan_layout(
    m: int,
    n_devices: int,
    n_train: int,
    n_points: int,
    width: int,
    block: int | None,
    lanes: int = 1,
    block_elements: int = BLOCK_ELEMENTS,
) -> Layout:
    """Blocks so that ``2 x block x chunk x width`` is about ``block_elements``."""
    per_unit = 2 * max(width, 1)  # u and v networks
    train_chunk = max(1, min(n_train, block_elements // per_unit))
    per_device = -(-m // n_devices)
    if block is None:
        block = max(1, block_elements // (per_unit * train_chunk))
    block = min(block, per_device)
    n_blocks = -(-per_device // block)
    lanes = max(1, min(lanes, n_blocks))
    n_blocks = -(-n_blocks // lanes) * lanes
    block = -(-per_device // n_blocks)  # balance the blocks
    eval_chunk = max(1, min(n_points, block_elements // (per_unit * block)))
    return Layout(
        n_devices,
        lanes,
        block,
        n_blocks,
        train_chunk,
        -(-n_train // train_chunk),
        eval_chunk,
        -(-n_points // eval_chunk),
    )


def default_lanes(devices: Sequence[Any]) -> int:
    """Two lanes per core left to each CPU device; a single lane on accelerators."""
    if LANES is not None:
        return LANES
    if devices[0].platform != "cpu":
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cores = os.cpu_count() or 1
    # two lanes per core: measured (analysis/bench/training.py) to fill the cores better
    # than one, with no loss from the smaller loops
    return max(1, 2 * cores // len(devices))


def chunk_rows(a: np.ndarray, size: int, count: int, fill: float | None = None) -> np.ndarray:
    """Rows of ``a`` padded to ``size x count`` (copies of row 0, or ``fill``), shaped
    ``(count, size, ...)``."""
    pad = size * count - a.shape[0]
    if pad:
        extra = (
            np.repeat(a[:1], pad, axis=0) if fill is None else np.full((pad, *a.shape[1:]), fill)
        )
        a = np.concatenate([a, extra.astype(a.dtype)])
    return a.reshape(count, size, *a.shape[1:])


def update_blocks(fn: Callable[[Any], Any], tree: Any, layout: Layout) -> Any:
    """``fn`` on each block of one lane (a loop over blocks), results in member order."""
    out = map_blocks(fn, layout, tree)
    return jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:]), out)


def map_blocks(fn: Callable[..., Any], layout: Layout, *trees: Any) -> Any:
    """``fn`` on each block of one lane (leading axis of every leaf), results stacked."""

    def split(a: Array) -> Array:
        return a.reshape(layout.blocks_per_lane, layout.block, *a.shape[1:])

    blocks = jax.tree.map(split, trees)
    if layout.blocks_per_lane == 1:
        out = fn(*jax.tree.map(lambda a: a[0], blocks))
        return jax.tree.map(lambda a: a[None], out)
    return jax.lax.map(lambda b: fn(*b), blocks)


def split_lanes(tree: Any, layout: Layout) -> tuple[Any, ...]:
    """A device's members as ``layout.lanes`` consecutive groups (independent arrays)."""
    n = layout.per_lane
    return tuple(
        jax.tree.map(lambda a, i=i: a[i * n : (i + 1) * n], tree) for i in range(layout.lanes)
    )


def join_lanes(lanes: tuple[Any, ...]) -> Any:
    return jax.tree.map(lambda *a: jnp.concatenate(a), *lanes)


def sum_chunks(fn: Callable[..., Any], chunks: tuple[Array, ...]) -> Any:
    """``sum_c fn(chunk c)`` over the leading axis of ``chunks`` (a scan when > 1)."""
    count = chunks[0].shape[0]
    first = fn(*(c[0] for c in chunks))
    if count == 1:
        return first

    def body(acc: Any, chunk: tuple[Array, ...]) -> tuple[Any, None]:
        return jax.tree.map(jnp.add, acc, fn(*chunk)), None

    rest = tuple(c[1:] for c in chunks)
    return jax.lax.scan(body, first, rest)[0]


def stack_chunks(fn: Callable[..., Any], chunks: tuple[Array, ...]) -> Any:
    """``fn`` on each chunk, results concatenated along their last axis."""
    count = chunks[0].shape[0]
    if count == 1:
        return fn(*(c[0] for c in chunks))
    out = jax.lax.map(lambda c: fn(*c), chunks)
    return jax.tree.map(lambda a: jnp.moveaxis(a, 0, -2).reshape(*a.shape[1:-1], -1), out)
