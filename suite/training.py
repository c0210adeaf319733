"""Finite-width ensembles trained by full-batch gradient descent (theory.md §3, §5).

Every member ``i`` of an ensemble starts from ``nnqs.init(member_keys(seed, [i])[0], d)``
and follows, independently of the others,

    theta <- theta - eta grad L(theta),   L = (1/(2B)) sum_{b in train} |psi(x_b) - phi(x_b)|^2,

on its trainable parameters (``params = (trainable, frozen)``). At the logged steps
(step 0 = initialisation, step s = after s updates) :func:`train_ensemble` returns each
member's train and test loss ``(1/|S|) sum_{x in S} |psi(x) - phi(x)|^2`` (train set S,
and its complement in the basis) and, summed over the members on device, the sufficient
statistics ``sum u``, ``sum v``, ``sum u^2``, ``sum v^2``, ``sum u v`` at every basis
point (:class:`EnsembleStats`). :func:`combine` merges shards of an ensemble;
:func:`summarize` turns the sums into the ensemble mean, variance and the two ensemble
losses of theory.md §5 (:class:`EnsembleSummary`).

Execution (one compiled program per architecture, shapes, dtype and device count):

* **Sharding.** The member axis is split across a 1-d :class:`jax.sharding.Mesh` of
  ``devices`` local devices with :func:`jax.shard_map`. Members are padded with copies
  of the last one up to a multiple of ``devices x lanes x block``; padded copies carry
  weight 0 in every sum and their losses are dropped.
* **Blocks and lanes.** On a device, members are processed in blocks of ``block``
  members (``vmap`` or the fast path inside one block), and points in chunks, so that
  the ``networks x width x points`` intermediates of a block stay in cache
  (:data:`BLOCK_ELEMENTS`; on accelerators blocks are large enough to fill the device,
  :data:`ACCELERATOR_BLOCK_ELEMENTS`). The blocks are split into ``lanes`` independent
  ``lax.map`` loops; XLA:CPU runs independent loops concurrently, which keeps both cores
  of a small machine busy where one loop of mid-sized operations does not (two lanes per
  core, :data:`LANES`; one lane on accelerators). The MSE gradient is a sum over points
  of terms that depend on one point each, so chunking the points changes no arithmetic
  beyond summation order; nothing a member computes depends on the other members.
* **Steps and logs.** One ``jit``: a ``lax.scan`` over the logged steps whose body runs
  ``log_steps[k] - log_steps[k-1]`` updates in a ``fori_loop`` with a traced bound, then
  evaluates the statistics on device (psum over devices): ``(L, D)`` sums and ``(L, m)``
  losses come back, never ``(L, m, D)``. The learning rate and the step schedule are
  traced, so changing them does not recompile. The parameter buffers are donated (the
  program returns the final parameters into them).

Two implementations of one update, selected per network (``method``):

* ``"autodiff"`` - any :class:`~suite.networks.NNQS`: ``vmap`` over a block of
  ``jax.grad`` of the member loss, through ``nnqs.parts``.
* ``"fast"`` - decoupled NNQS whose two parts are one-hidden-layer networks
  ``u(x) = alpha sum_j W1_j act(beta x.W0_j + gamma b0_j) + delta b1`` with ``act`` one of
  relu, erf, cos (``networks.mlp(depth=1, ...)`` in either parameterisation, with or
  without biases, and ``networks.cosnet(train_features=True)``). The hand-derived
  gradient of a block runs its ``2 x block`` networks (the u and v nets of every
  member) as two GEMMs over all of them: ``Z = W0~ X~^T`` (``nets x n x P``), with the
  hidden bias folded in as a column of ``X~ = [beta x, gamma]`` (``K = d + 1``), and
  ``P = (act'(Z) * r) X~``, which is the first-layer weight and bias gradient at once;
  the readout ``sum_j act(Z) W1`` is one fused reduction. For relu the readout gradient
  needs no pass over ``Z``: ``sum_b relu(z_jb) r_b = sum_k W0~_jk P_jk``. No per-member
  Jacobian is formed.
* ``"auto"`` (default) - ``"fast"`` when the network is recognised, else ``"autodiff"``.

Recognition (:func:`fast_template`) uses only the public interface: the parameter tree
of ``nnqs.init`` must have the one-hidden-layer shape (two groups of leaves ``{w:(d,n),
[b:(n,)]}``, ``{w:(n,1), [b:(1,)]}``, nothing frozen), the constants ``alpha, beta,
gamma, delta`` and the activation are read off ``nnqs.parts`` on probe parameters
(one active hidden unit; values and autodiff derivatives at 0), and the result is then
*verified*: the template's outputs and gradients must equal ``nnqs.parts`` and
``jax.grad`` through it on random parameters and inputs to ``1e-12`` relative
(float64). Anything else (GaussNet's input-dependent normaliser, deeper or coupled
networks, frozen layers) falls back to ``"autodiff"``, which is never wrong, only slower.

``dtype="float32"`` casts parameters, inputs and targets to float32 for the whole run,
with matmuls at full float32 precision (``jax.default_matmul_precision("highest")``:
no TF32 on GPUs, whose 10-bit mantissa would be a different experiment); losses and
sums are accumulated and returned in float64 either way.
"""

from __future__ import annotations

import functools
import math
import numbers
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import erf
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from suite.networks import NNQS, init_ensemble

Array = jax.Array
Method = Literal["auto", "fast", "autodiff"]
DTYPES = ("float32", "float64")
AXIS = "members"

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
#: the template must reproduce nnqs.parts and its gradients to this (relative, float64)
TEMPLATE_RTOL = 1e-12
_SQRT_PI = math.sqrt(math.pi)


# ---------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnsembleStats:
    """One shard's results: per-member losses and sufficient statistics over its members.

    ``members (m,)``; ``steps (L,)``; ``train_loss``, ``test_loss`` ``(L, m)`` float64,
    ``(1/|S|) sum_{x in S} |psi(x) - phi(x)|^2`` per member (zeros if the test set is
    empty); ``sum_u``, ``sum_v``, ``sum_uu``, ``sum_vv``, ``sum_uv`` ``(L, D)`` float64,
    sums over the shard's members at every basis point.
    """

    members: np.ndarray
    steps: np.ndarray
    train_loss: np.ndarray
    test_loss: np.ndarray
    sum_u: np.ndarray
    sum_v: np.ndarray
    sum_uu: np.ndarray
    sum_vv: np.ndarray
    sum_uv: np.ndarray

    @property
    def count(self) -> int:
        """Number of members ``m``."""
        return int(self.members.size)

    @property
    def sum_psi(self) -> np.ndarray:
        """``sum_members psi = sum_u + i sum_v``, ``(L, D)`` complex."""
        return self.sum_u + 1j * self.sum_v

    @property
    def sum_abs2(self) -> np.ndarray:
        """``sum_members |psi|^2 = sum_uu + sum_vv``, ``(L, D)``."""
        return self.sum_uu + self.sum_vv


_SUMS = ("sum_u", "sum_v", "sum_uu", "sum_vv", "sum_uv")


def combine(shards: Sequence[EnsembleStats]) -> EnsembleStats:
    """Merge shards of one ensemble: members and losses concatenated, sums added.

    The shards must have the same logged steps and basis size and disjoint members.
    """
    shards = list(shards)
    if not shards:
        raise ValueError("shards must contain at least one EnsembleStats")
    first = shards[0]
    for s in shards[1:]:
        if not np.array_equal(s.steps, first.steps):
            raise ValueError(f"steps must match across shards: {first.steps} vs {s.steps}")
        if s.sum_u.shape != first.sum_u.shape:
            raise ValueError(
                f"shards must cover the same basis: sums of shape {first.sum_u.shape} "
                f"vs {s.sum_u.shape}"
            )
    members = np.concatenate([s.members for s in shards])
    if np.unique(members).size != members.size:
        raise ValueError("shards must have disjoint members")
    sums = {name: functools.reduce(np.add, [getattr(s, name) for s in shards]) for name in _SUMS}
    return EnsembleStats(
        members=members,
        steps=first.steps.copy(),
        train_loss=np.concatenate([s.train_loss for s in shards], axis=1),
        test_loss=np.concatenate([s.test_loss for s in shards], axis=1),
        **sums,
    )


@dataclass(frozen=True)
class EnsembleSummary:
    """Ensemble mean, variance and losses of M members at the logged steps (theory.md §5).

    * ``mean (L, D)`` complex: the sample mean of ``psi``.
    * ``variance (L, D)``: ``Var u + Var v`` with the **population** normalisation ``1/M``
      (the theory's ``Var psi_t``; the sample estimate of it is biased by ``(M-1)/M``).
    * ``*_mean_of_losses (L,)``: mean over members of the member losses (estimates
      ``L_ens``, Eq. 17/18); exactly ``*_loss_of_mean + mean over the set of variance``.
    * ``*_loss_of_mean (L,)``: loss of the sample mean (estimates ``L_mean``, Eq. 16). For
      iid members ``E|mean - phi|^2 = |mu - phi|^2 + Var/M``: biased upward.
    * ``*_loss_of_mean_debiased (L,)``: ``loss_of_mean - (1/|S|) sum_S variance / (M-1)``,
      an exactly unbiased estimate of ``L_mean`` (``E[variance] = (M-1)/M Var``); NaN when
      ``M = 1``.

    Over an empty test set every test quantity is 0.
    """

    steps: np.ndarray
    count: int
    mean: np.ndarray
    variance: np.ndarray
    train_mean_of_losses: np.ndarray
    test_mean_of_losses: np.ndarray
    train_loss_of_mean: np.ndarray
    test_loss_of_mean: np.ndarray
    train_loss_of_mean_debiased: np.ndarray
    test_loss_of_mean_debiased: np.ndarray


def summarize(stats: EnsembleStats, target: np.ndarray, train_index: np.ndarray) -> EnsembleSummary:
    """Mean, population variance and ensemble losses of ``stats`` (see :class:`EnsembleSummary`)."""
    dim = stats.sum_u.shape[1]
    phi = np.asarray(target)
    if phi.shape != (dim,):
        raise ValueError(f"target must have shape ({dim},), got {phi.shape}")
    train = _check_train_index(train_index, dim)
    count = stats.count
    mean = stats.sum_psi / count
    variance = np.maximum(stats.sum_abs2 / count - np.abs(mean) ** 2, 0.0)
    test = np.setdiff1d(np.arange(dim), train)
    error = np.abs(mean - phi) ** 2

    def average(values: np.ndarray, subset: np.ndarray) -> np.ndarray:
        if subset.size == 0:
            return np.zeros(values.shape[0])
        return values[:, subset].mean(axis=1)

    correction = 1.0 / (count - 1) if count > 1 else np.nan
    train_lom, test_lom = average(error, train), average(error, test)
    test_debiased = test_lom - average(variance, test) * correction if test.size else test_lom
    return EnsembleSummary(
        steps=stats.steps.copy(),
        count=count,
        mean=mean,
        variance=variance,
        train_mean_of_losses=stats.train_loss.mean(axis=1),
        test_mean_of_losses=stats.test_loss.mean(axis=1),
        train_loss_of_mean=train_lom,
        test_loss_of_mean=test_lom,
        train_loss_of_mean_debiased=train_lom - average(variance, train) * correction,
        test_loss_of_mean_debiased=test_debiased,
    )


# ---------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_train_index(train_index: Any, dim: int) -> np.ndarray:
    index = np.asarray(train_index)
    if index.ndim != 1 or index.size == 0:
        raise ValueError(f"train_index must be a non-empty 1-d array, got shape {index.shape}")
    if not np.issubdtype(index.dtype, np.integer):
        raise ValueError(f"train_index must hold integers, got dtype {index.dtype}")
    if index.min() < 0 or index.max() >= dim:
        raise ValueError(
            f"train_index out of range [0, {dim}): min {index.min()}, max {index.max()}"
        )
    if np.unique(index).size != index.size:
        raise ValueError("train_index has duplicate entries")
    return index.astype(np.int64)


def _validate(
    nnqs: Any,
    inputs: Any,
    target: Any,
    train_index: Any,
    seed: Any,
    members: Any,
    learning_rate: Any,
    log_steps: Any,
    dtype: Any,
    devices: Any,
    method: Any,
    block: Any,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    if not isinstance(nnqs, NNQS):
        raise ValueError(f"nnqs must be a suite.networks.NNQS, got {type(nnqs).__name__}")
    x = np.asarray(inputs)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"inputs must be a non-empty 2-d array (D, d), got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.number) and not np.iscomplexobj(x)):
        raise ValueError(f"inputs must be real numbers, got dtype {x.dtype}")
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("inputs has non-finite entries")
    phi = np.asarray(target)
    if phi.shape != (x.shape[0],):
        raise ValueError(f"target must have shape ({x.shape[0]},), got {phi.shape}")
    if not np.issubdtype(phi.dtype, np.number) or not np.all(np.isfinite(phi)):
        raise ValueError("target must hold finite numbers")
    phi = phi.astype(np.complex128)
    train = _check_train_index(train_index, x.shape[0])
    if not _is_int(seed):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    ids = np.asarray(members)
    if ids.ndim != 1 or ids.size == 0:
        raise ValueError(f"members must be a non-empty 1-d sequence, got shape {ids.shape}")
    if not np.issubdtype(ids.dtype, np.integer) or ids.min() < 0 or ids.max() >= 2**32:
        raise ValueError("members must be integers in [0, 2^32)")
    if np.unique(ids).size != ids.size:
        raise ValueError("members must be distinct")
    if not (
        isinstance(learning_rate, numbers.Real)
        and not isinstance(learning_rate, bool)
        and math.isfinite(learning_rate)
        and learning_rate > 0
    ):
        raise ValueError(f"learning_rate must be a positive finite number, got {learning_rate!r}")
    steps = np.asarray(log_steps)
    if steps.ndim != 1 or steps.size == 0 or not np.issubdtype(steps.dtype, np.integer):
        raise ValueError(
            f"log_steps must be a non-empty 1-d sequence of integers, got {log_steps!r}"
        )
    if steps.min() < 0:
        raise ValueError(f"log_steps must be non-negative, got {steps.tolist()}")
    if np.any(np.diff(steps) <= 0):
        raise ValueError(f"log_steps must be strictly ascending, got {steps.tolist()}")
    if steps.max() >= 2**31:
        raise ValueError("log_steps must be below 2^31")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    available = len(jax.local_devices())
    if devices is None:
        n_devices = available
    elif not _is_int(devices) or not 1 <= devices <= available:
        raise ValueError(f"devices must be an integer in [1, {available}], got {devices!r}")
    else:
        n_devices = int(devices)
    if method not in ("auto", "fast", "autodiff"):
        raise ValueError(f"method must be 'auto', 'fast' or 'autodiff', got {method!r}")
    if block is not None and not (_is_int(block) and block >= 1):
        raise ValueError(f"block must be a positive integer or None, got {block!r}")
    return x, phi, train, ids.astype(np.int64), steps.astype(np.int64), n_devices


# ---------------------------------------------------------------------------------------
# fast path: one-hidden-layer decoupled networks
# ---------------------------------------------------------------------------------------


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


def _act(name: str, z: Array) -> Array:
    if name == "relu":
        # not jnp.maximum(z, 0): on XLA:CPU that materialises a broadcast zero operand of
        # the full block size for the fused readout
        return jnp.where(z > 0, z, jnp.zeros((), z.dtype))
    if name == "erf":
        return erf(z)
    return jnp.cos(z)


def _act_grad(name: str, z: Array, r: Array) -> Array:
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


def _read_part(tree: Any, paths: tuple[Any, ...]) -> list[Any]:
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
    out = t.alpha * (_act(t.activation, z) @ w1)[..., 0]
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
        u = _template_forward(template, _read_part(tr["re"], template.paths), x)
        v = _template_forward(template, _read_part(tr["im"], template.paths), x)
        return jnp.sum((u - y[0]) ** 2) + jnp.sum((v - y[1]) ** 2)

    @jax.jit
    def compare() -> tuple[Any, Any]:
        u, v = nnqs.parts(params, x)
        ut = _template_forward(template, _read_part(trainable["re"], template.paths), x)
        vt = _template_forward(template, _read_part(trainable["im"], template.paths), x)
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


# ---------------------------------------------------------------------------------------
# layout: blocks of members, chunks of points
# ---------------------------------------------------------------------------------------


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


def _layout(
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


def _default_lanes(devices: Sequence[Any]) -> int:
    """Two lanes per core left to each CPU device; a single lane on accelerators."""
    if LANES is not None:
        return LANES
    if devices[0].platform != "cpu":
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cores = os.cpu_count() or 1
    # two lanes per core: measured (analysis/bench_training.py) to fill the cores better
    # than one, with no loss from the smaller loops
    return max(1, 2 * cores // len(devices))


def _chunks(a: np.ndarray, size: int, count: int, fill: float | None = None) -> np.ndarray:
    """Rows of ``a`` padded to ``size x count`` (copies of row 0, or ``fill``), shaped
    ``(count, size, ...)``."""
    pad = size * count - a.shape[0]
    if pad:
        extra = (
            np.repeat(a[:1], pad, axis=0) if fill is None else np.full((pad, *a.shape[1:]), fill)
        )
        a = np.concatenate([a, extra.astype(a.dtype)])
    return a.reshape(count, size, *a.shape[1:])


# ---------------------------------------------------------------------------------------
# the compiled program
# ---------------------------------------------------------------------------------------


def _update_blocks(fn: Callable[[Any], Any], tree: Any, layout: Layout) -> Any:
    """``fn`` on each block of one lane (a loop over blocks), results in member order."""
    out = _map_blocks(fn, layout, tree)
    return jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:]), out)


def _map_blocks(fn: Callable[..., Any], layout: Layout, *trees: Any) -> Any:
    """``fn`` on each block of one lane (leading axis of every leaf), results stacked."""

    def split(a: Array) -> Array:
        return a.reshape(layout.blocks_per_lane, layout.block, *a.shape[1:])

    blocks = jax.tree.map(split, trees)
    if layout.blocks_per_lane == 1:
        out = fn(*jax.tree.map(lambda a: a[0], blocks))
        return jax.tree.map(lambda a: a[None], out)
    return jax.lax.map(lambda b: fn(*b), blocks)


def _split_lanes(tree: Any, layout: Layout) -> tuple[Any, ...]:
    """A device's members as ``layout.lanes`` consecutive groups (independent arrays)."""
    n = layout.per_lane
    return tuple(
        jax.tree.map(lambda a, i=i: a[i * n : (i + 1) * n], tree) for i in range(layout.lanes)
    )


def _join_lanes(lanes: tuple[Any, ...]) -> Any:
    return jax.tree.map(lambda *a: jnp.concatenate(a), *lanes)


def _sum_chunks(fn: Callable[..., Any], chunks: tuple[Array, ...]) -> Any:
    """``sum_c fn(chunk c)`` over the leading axis of ``chunks`` (a scan when > 1)."""
    count = chunks[0].shape[0]
    first = fn(*(c[0] for c in chunks))
    if count == 1:
        return first

    def body(acc: Any, chunk: tuple[Array, ...]) -> tuple[Any, None]:
        return jax.tree.map(jnp.add, acc, fn(*chunk)), None

    rest = tuple(c[1:] for c in chunks)
    return jax.lax.scan(body, first, rest)[0]


def _stack_chunks(fn: Callable[..., Any], chunks: tuple[Array, ...]) -> Any:
    """``fn`` on each chunk, results concatenated along their last axis."""
    count = chunks[0].shape[0]
    if count == 1:
        return fn(*(c[0] for c in chunks))
    out = jax.lax.map(lambda c: fn(*c), chunks)
    return jax.tree.map(lambda a: jnp.moveaxis(a, 0, -2).reshape(*a.shape[1:-1], -1), out)


class _Autodiff:
    """The general update: ``vmap`` of ``jax.grad`` of the member loss through nnqs.parts."""

    def __init__(self, nnqs: NNQS) -> None:
        self.nnqs = nnqs

    def state(self, params: Any, dtype: Any) -> Any:
        return jax.tree.map(lambda a: a.astype(dtype), params)

    def inputs(self, x: np.ndarray) -> np.ndarray:
        return x

    def grads(self, state: Any, x: Array, y: Array, weight: Array) -> Any:
        trainable, frozen = state

        def member_loss(tr: Any, fr: Any) -> Array:
            u, v = self.nnqs.parts((tr, fr), x)
            return 0.5 * jnp.sum(weight * ((u - y[0]) ** 2 + (v - y[1]) ** 2))

        return jax.vmap(jax.grad(member_loss))(trainable, frozen)

    def update(self, state: Any, grads: Any, lr: Array) -> Any:
        trainable, frozen = state
        return jax.tree.map(lambda p, g: p - lr * g, trainable, grads), frozen

    def outputs(self, state: Any, x: Array) -> tuple[Array, Array]:
        return jax.vmap(lambda tr, fr: self.nnqs.parts((tr, fr), x))(*state)


class _Fast:
    """The one-hidden-layer update (module docstring), state ``(W0~, W1, b1)``.

    ``W0~ (m, 2, n, K)`` (first-layer weights; with a hidden bias ``K = d + 1`` and the
    bias is the last column), ``W1 (m, 2, n)``, ``b1 (m, 2)`` (zeros and unused without
    an output bias); axis 1 holds the u and v networks. Inputs enter as
    ``X~ = [beta x, gamma] (P, K)``. Hidden activations are laid out ``(nets, n, P)``:
    ``Z = W0~ X~^T`` and ``P = G X~`` are then plain row-major GEMMs with no transposes,
    and the readout is a reduction fused with the activation (never materialised).
    """

    def __init__(self, template: Template) -> None:
        self.t = template

    def state(self, params: Any, dtype: Any) -> Any:
        trainable = params[0]
        t = self.t
        w0s, w1s, b1s = [], [], []
        for side in ("re", "im"):
            w0, b0, w1, b1 = _read_part(trainable[side], t.paths)
            w0 = jnp.swapaxes(w0, -1, -2)  # (m, n, d)
            if b0 is not None:
                w0 = jnp.concatenate([w0, b0[..., None]], axis=-1)
            w0s.append(w0)
            w1s.append(w1[..., 0])
            b1s.append(b1[..., 0] if b1 is not None else jnp.zeros(w1.shape[:1]))
        return (
            jnp.stack(w0s, axis=1).astype(dtype),
            jnp.stack(w1s, axis=1).astype(dtype),
            jnp.stack(b1s, axis=1).astype(dtype),
        )

    def inputs(self, x: np.ndarray) -> np.ndarray:
        scaled = self.t.beta * x
        if self.t.gamma is None:
            return scaled
        return np.concatenate([scaled, np.full((x.shape[0], 1), self.t.gamma)], axis=1)

    @staticmethod
    def _nets(state: Any) -> tuple[Array, Array, Array]:
        w0, w1, b1 = state
        nets = 2 * w0.shape[0]
        return w0.reshape(nets, *w0.shape[2:]), w1.reshape(nets, -1), b1.reshape(nets)

    def _forward(self, w0: Array, w1: Array, b1: Array, x: Array) -> tuple[Array, Array]:
        z = jnp.einsum("njk,pk->njp", w0, x)
        f = jnp.sum(_act(self.t.activation, z) * w1[:, :, None], axis=1)
        f = self.t.alpha * f
        if self.t.delta is not None:
            f = f + self.t.delta * b1[:, None]
        return z, f

    def grads(self, state: Any, x: Array, y: Array, weight: Array) -> Any:
        w0, w1, b1 = self._nets(state)
        z, f = self._forward(w0, w1, b1, x)
        r = (f - jnp.tile(y, (w0.shape[0] // 2, 1))) * weight  # dL/df, (nets, P)
        g = _act_grad(self.t.activation, z, r[:, None, :])
        p = jnp.einsum("njp,pk->njk", g, x)
        if self.t.activation == "relu":
            readout = None  # from p: sum_b relu(z_jb) r_b = sum_k W0~_jk P_jk
        else:
            readout = jnp.sum(_act(self.t.activation, z) * r[:, None, :], axis=2)
        return p, readout, jnp.sum(r, axis=1)

    def update(self, state: Any, grads: Any, lr: Array) -> Any:
        w0, w1, b1 = state
        w0n, w1n, _ = self._nets(state)
        p, readout, rsum = grads
        alpha = self.t.alpha
        if readout is None:
            # sum over the K columns as K elementwise terms: a reduction over a short minor
            # axis is a separate, slow library call on XLA:CPU
            g_w1 = alpha * sum(w0n[..., k] * p[..., k] for k in range(p.shape[-1]))
        else:
            g_w1 = alpha * readout
        g_w0 = alpha * w1n[:, :, None] * p
        new_w0 = w0 - lr * g_w0.reshape(w0.shape)
        new_w1 = w1 - lr * g_w1.reshape(w1.shape)
        if self.t.delta is not None:
            b1 = b1 - lr * self.t.delta * rsum.reshape(b1.shape)
        return new_w0, new_w1, b1

    def outputs(self, state: Any, x: Array) -> tuple[Array, Array]:
        _, f = self._forward(*self._nets(state), x)
        f = f.reshape(-1, 2, f.shape[-1])
        return f[:, 0], f[:, 1]


def _program(engine: Any, layout: Layout, mesh: Mesh) -> Callable[..., Any]:
    """The jitted, sharded run: ``(state, valid, lr, segments, consts) -> results``."""

    def local(state: Any, valid: Array, lr: Array, segments: Array, consts: Any) -> Any:
        x_train, y_train, w_train, x_eval, phi_eval, w_fit, w_test = consts

        def block_step(block_state: Any) -> Any:
            grads = _sum_chunks(
                lambda x, y, w: engine.grads(block_state, x, y, w), (x_train, y_train, w_train)
            )
            return engine.update(block_state, grads, lr)

        def step(_: Array, lanes: tuple[Any, ...]) -> tuple[Any, ...]:
            return tuple(_update_blocks(block_step, lane, layout) for lane in lanes)

        def block_stats(block_state: Any, block_valid: Array) -> Any:
            u, v = _stack_chunks(lambda x: engine.outputs(block_state, x), (x_eval,))
            u, v = u.astype(jnp.float64), v.astype(jnp.float64)
            du, dv = u - phi_eval[0], v - phi_eval[1]
            err = du * du + dv * dv
            weights = block_valid[:, None]
            sums = jnp.stack(
                [
                    jnp.sum(weights * u, axis=0),
                    jnp.sum(weights * v, axis=0),
                    jnp.sum(weights * u * u, axis=0),
                    jnp.sum(weights * v * v, axis=0),
                    jnp.sum(weights * u * v, axis=0),
                ]
            )
            return err @ w_fit, err @ w_test, sums

        valid_lanes = _split_lanes(valid, layout)

        def stats(lanes: tuple[Any, ...]) -> Any:
            outs = [
                _map_blocks(block_stats, layout, lane, v)
                for lane, v in zip(lanes, valid_lanes, strict=True)
            ]
            fit = jnp.concatenate([o[0].reshape(-1) for o in outs])
            test = jnp.concatenate([o[1].reshape(-1) for o in outs])
            return fit, test, sum(jnp.sum(o[2], axis=0) for o in outs)

        def segment(lanes: tuple[Any, ...], n: Array) -> tuple[Any, Any]:
            lanes = jax.lax.fori_loop(0, n, step, lanes)
            return lanes, stats(lanes)

        final, (fit, test, sums) = jax.lax.scan(segment, _split_lanes(state, layout), segments)
        # the final state is returned so that the donated input buffers can hold it
        return _join_lanes(final), fit, test, jax.lax.psum(sums, AXIS)

    sharded = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(P(AXIS), P(AXIS), P(), P(), P()),
        out_specs=(P(AXIS), P(None, AXIS), P(None, AXIS), P()),
    )
    return jax.jit(sharded, donate_argnums=(0,))


@functools.lru_cache(maxsize=32)
def _compiled(engine_key: Any, layout: Layout, devices: tuple[Any, ...]) -> Callable[..., Any]:
    engine = _Fast(engine_key) if isinstance(engine_key, Template) else _Autodiff(engine_key)
    mesh = Mesh(np.array(devices), (AXIS,))
    return _program(engine, layout, mesh)


# ---------------------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------------------


def _width_estimate(nnqs: NNQS, in_dim: int) -> int:
    """Hidden units per network, for block sizes (parameters per member / (2 (d + 2)))."""
    shapes = jax.eval_shape(lambda: nnqs.init(jax.random.key(0), in_dim))
    size = sum(math.prod(s.shape) for s in jax.tree.leaves(shapes))
    return max(1, size // (2 * (in_dim + 2)))


def train_ensemble(
    nnqs: NNQS,
    inputs: np.ndarray,
    target: np.ndarray,
    train_index: np.ndarray,
    *,
    seed: int,
    members: Sequence[int] | np.ndarray,
    learning_rate: float,
    log_steps: Sequence[int],
    dtype: str = "float64",
    devices: int | None = None,
    method: Method = "auto",
    block: int | None = None,
) -> EnsembleStats:
    """Train ensemble ``members`` of ``nnqs`` by full-batch GD on ``inputs[train_index]``.

    ``inputs (D, d)`` is the whole basis, ``target (D,)`` the wavefunction ``phi``;
    ``learning_rate`` is ``eta`` for ``L = (1/(2B)) sum_train |psi - phi|^2``; the
    results are logged at ``log_steps`` (strictly ascending, 0 = initialisation). Member
    ``i`` starts from ``nnqs.init(member_keys(seed, [i])[0], d)`` whatever the sharding.
    ``devices`` (default: all local devices) split the members; ``method`` picks the
    update (``"auto"``: the fast path when :func:`fast_template` recognises ``nnqs``);
    ``block`` overrides the members per on-device block. Every argument is validated
    (``ValueError`` naming it) before any work. See the module docstring.
    """
    x, phi, train, ids, steps, n_devices = _validate(
        nnqs,
        inputs,
        target,
        train_index,
        seed,
        members,
        learning_rate,
        log_steps,
        dtype,
        devices,
        method,
        block,
    )
    in_dim = x.shape[1]
    template = fast_template(nnqs, in_dim) if method != "autodiff" else None
    if method == "fast" and template is None:
        raise ValueError(
            "method='fast' needs a decoupled NNQS of two identical one-hidden-layer networks "
            "(relu, erf or cos; nothing frozen); use method='auto' or 'autodiff'"
        )
    engine: Any = _Fast(template) if template is not None else _Autodiff(nnqs)
    width = template.width if template is not None else _width_estimate(nnqs, in_dim)

    n_points, n_train = x.shape[0], train.size
    devices_used = tuple(jax.local_devices()[:n_devices])
    on_cpu = devices_used[0].platform == "cpu"
    layout = _layout(
        *(ids.size, n_devices, n_train, n_points, width, block, _default_lanes(devices_used)),
        block_elements=BLOCK_ELEMENTS if on_cpu else ACCELERATOR_BLOCK_ELEMENTS,
    )
    compute = jnp.float32 if dtype == "float32" else jnp.float64
    np_compute = np.float32 if dtype == "float32" else np.float64

    # members padded with copies of the last one; padded copies have weight 0
    padded = np.concatenate([ids, np.full(layout.padded - ids.size, ids[-1])])
    valid = (np.arange(layout.padded) < ids.size).astype(np.float64)

    # data, rounded to the compute dtype once (the run's inputs and targets)
    x_run = x.astype(np_compute).astype(np.float64)
    phi_run = np.stack([phi.real, phi.imag]).astype(np_compute).astype(np.float64)
    x_engine = engine.inputs(x_run)
    x_train = _chunks(x_engine[train].astype(np_compute), layout.train_chunk, layout.n_train_chunks)
    y_train = _chunks(
        phi_run[:, train].T.astype(np_compute), layout.train_chunk, layout.n_train_chunks
    )
    y_train = np.moveaxis(y_train, -1, 1)  # (chunks, 2, chunk)
    w_train = _chunks(
        np.full(n_train, 1.0 / n_train, np_compute), layout.train_chunk, layout.n_train_chunks, 0.0
    )
    x_eval = _chunks(x_engine.astype(np_compute), layout.eval_chunk, layout.n_eval_chunks)
    eval_size = layout.eval_chunk * layout.n_eval_chunks
    phi_eval = np.zeros((2, eval_size))
    phi_eval[:, :n_points] = phi_run
    test = np.setdiff1d(np.arange(n_points), train)
    w_fit = np.zeros(eval_size)
    w_fit[train] = 1.0 / n_train
    w_test = np.zeros(eval_size)
    if test.size:
        w_test[test] = 1.0 / test.size
    segments = np.diff(steps, prepend=0).astype(np.int32)

    mesh = Mesh(np.array(devices_used), (AXIS,))
    params = init_ensemble(nnqs, seed, padded, in_dim)
    state = engine.state(params, compute)
    del params
    member_sharding = NamedSharding(mesh, P(AXIS))
    replicated = NamedSharding(mesh, P())
    state = jax.device_put(state, member_sharding)
    consts = jax.device_put(
        (x_train, y_train, w_train, x_eval, phi_eval, w_fit, w_test), replicated
    )
    run = _compiled(template if template is not None else nnqs, layout, devices_used)
    with jax.default_matmul_precision("highest"):  # float32 is float32, not TF32 on GPUs
        _, fit, test_loss, sums = run(
            state,
            jax.device_put(valid, member_sharding),
            jax.device_put(np.asarray(learning_rate, np_compute), replicated),
            jax.device_put(segments, replicated),
            consts,
        )
    fit = np.asarray(fit, np.float64)[:, : ids.size]
    test_loss = np.asarray(test_loss, np.float64)[:, : ids.size]
    sums = np.asarray(sums, np.float64)[:, :, :n_points]
    return EnsembleStats(
        members=ids,
        steps=steps,
        train_loss=fit,
        test_loss=test_loss,
        sum_u=sums[:, 0],
        sum_v=sums[:, 1],
        sum_uu=sums[:, 2],
        sum_vv=sums[:, 3],
        sum_uv=sums[:, 4],
    )
