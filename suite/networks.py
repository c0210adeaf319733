"""Finite-width networks and neural network quantum states (docs/theory.md §3).

Architectures are :class:`suite.layers.Layer` triples with one real output;
:class:`NNQS` turns them into complex wavefunctions ``psi(x) = u(x) + i v(x)``:

* :func:`decoupled` - two independent real networks, the paper's NNQS;
* :func:`shared_trunk` - one trunk, a readout with two real outputs;
* :func:`complex_output` - one trunk, one complex readout ``W = A + i B`` with
  ``E|W|^2`` the real readout's variance. A complex-linear readout trained on its
  real and imaginary parts is exactly a two-output readout with scales
  ``sw/sqrt(2)``, ``sb/sqrt(2)``, which is how it is built (and tested).

Ensembles: member ``i`` draws its parameters from ``fold_in(key(seed), i)`` alone,
so a member is the same however an ensemble is sharded or resumed.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import jax
import jax.numpy as jnp
import numpy as np

from suite.layers import (
    Kernel,
    Layer,
    Parameterization,
    Params,
    check_width,
    cos_features,
    dense,
    erf_activation,
    exp_features,
    relu,
    serial,
)
from suite.qsntk import PairKernel, decoupled_pair

Array = jax.Array
Activation = Literal["relu", "erf"]
ACTIVATIONS: dict[str, Callable[[], Layer]] = {"relu": relu, "erf": erf_activation}


def mlp_trunk(
    depth: int = 1,
    width: int = 512,
    activation: Activation = "relu",
    sw: float = 1.0,
    sb: float | None = 1.0,
    parameterization: Parameterization = "ntk",
) -> Layer:
    """``depth`` hidden layers ``Dense(width) -> activation`` (docs/theory.md §3), no readout.

    The default bias ``sb = 1`` matters on spin inputs: without a bias a ReLU
    network is positively homogeneous, its kernels miss every odd Walsh component
    of degree >= 3 on the hypercube, and Theta(X, X) is singular on large train sets.
    """
    if not (isinstance(depth, int) and depth >= 1):
        raise ValueError(f"depth must be an integer >= 1, got {depth!r}")
    check_width("width", width)  # here, so the error names mlp's parameter, not dense's
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    hidden = [dense(width, sw, sb, parameterization) for _ in range(depth)]
    return serial(*(layer for h in hidden for layer in (h, ACTIVATIONS[activation]())))


def mlp(
    depth: int = 1,
    width: int = 512,
    activation: Activation = "relu",
    sw: float = 1.0,
    sb: float | None = 1.0,
    parameterization: Parameterization = "ntk",
    out_dim: int = 1,
) -> Layer:
    """MLP ``h1 = (sw/sqrt(d)) W0 x + sb b0``, ..., ``f = (sw/sqrt(n)) W phi(h) + sb b``."""
    trunk = mlp_trunk(depth, width, activation, sw, sb, parameterization)
    return serial(trunk, dense(out_dim, sw, sb, parameterization))


def cosnet_trunk(width: int = 512, s0: float = 1.0, train_features: bool = True) -> Layer:
    """CosNet features ``cos(W0 x + b)``, ``W0 ~ N(0, s0^2/d)``, ``b ~ U(-pi, pi)``."""
    return cos_features(width, s0, trainable=train_features)


def cosnet(
    width: int = 512, s0: float = 1.0, s1: float = 1.0, train_features: bool = True
) -> Layer:
    """CosNet ``f(x) = sum_i W1_i cos(W0_i . x + b_i)``, ``W1 ~ N(0, s1^2/n)`` (docs/theory.md §3).

    NNGP ``K = (s1^2/2) exp(-s0^2 |x-x'|^2 / (2d))``. With ``train_features=False``
    only ``W1`` trains and the NTK equals the NNGP (paper Eq. S23-S25); otherwise
    ``Theta = K (2 + s0^2 x.x'/d)``.
    """
    return serial(cosnet_trunk(width, s0, train_features), dense(1, s1, None))


def gaussnet_trunk(
    width: int = 512, s0: float = 1.0, sb: float = 1.0, train_features: bool = True
) -> Layer:
    """GaussNet features ``exp(W0 x + b) / sqrt(E[exp(2 (W0 x + b))])``."""
    return exp_features(width, s0, sb, trainable=train_features)


def gaussnet(
    width: int = 512,
    s0: float = 1.0,
    s1: float = 1.0,
    sb: float = 1.0,
    train_features: bool = True,
) -> Layer:
    """GaussNet (paper Eq. S26-S28): NNGP ``K = s1^2 exp(-s0^2 |x-x'|^2 / (2d))``.

    With ``train_features=False`` the NTK equals the NNGP; otherwise
    ``Theta = K (1 + s0^2 x.x'/d + sb^2)``.
    """
    return serial(gaussnet_trunk(width, s0, sb, train_features), dense(1, s1, None))


NNQSKind = Literal["decoupled", "shared_trunk", "complex_output"]
#: the one-part architectures of the entanglement study (docs/theory.md §3, §6)
Architecture = Literal["cosnet", "gaussnet", "relu"]


@dataclass(frozen=True)
class NNQS:
    """A neural network quantum state ``psi(x) = u(x) + i v(x)`` (docs/theory.md §3-§4).

    ``init(key, in_dim) -> params``; ``parts(params, x) -> (u, v)`` with the
    leading shape of ``x`` minus its last axis; ``infinite(k) -> (nngp, ntk)``
    maps the kernel of the inputs to the infinite-width covariance and tangent
    :class:`~suite.qsntk.PairKernel` blocks, elementwise.
    """

    kind: NNQSKind
    init: Callable[[Array, int], Params]
    parts: Callable[[Params, Array], tuple[Array, Array]]
    infinite: Callable[[Kernel], tuple[PairKernel, PairKernel]]

    def apply(self, params: Params, x: Array) -> Array:
        """The complex amplitude ``psi(x) = u(x) + i v(x)``."""
        u, v = self.parts(params, x)
        return u + 1j * v


def _check_scalar_output(net: Layer, name: str) -> None:
    out_dim = net.init(jax.random.key(0), 1)[0]
    if out_dim != 1:
        raise ValueError(f"{name} must have one real output, got out_dim={out_dim}")


def decoupled(real: Layer, imag: Layer | None = None) -> NNQS:
    """Two independent real networks ``psi = f_R + i f_I`` (the paper's NNQS).

    ``imag`` defaults to the architecture of ``real`` with its own parameters.
    Infinite width: ``Theta_uv = 0``, so real and imaginary parts train independently.
    """
    imag = real if imag is None else imag
    _check_scalar_output(real, "real")
    _check_scalar_output(imag, "imag")

    def init(key: Array, in_dim: int) -> Params:
        k_re, k_im = jax.random.split(key)
        p_re, p_im = real.init(k_re, in_dim)[1], imag.init(k_im, in_dim)[1]
        return {"re": p_re[0], "im": p_im[0]}, {"re": p_re[1], "im": p_im[1]}

    def parts(params: Params, x: Array) -> tuple[Array, Array]:
        trainable, frozen = params
        u = real.apply((trainable["re"], frozen["re"]), x)[..., 0]
        v = imag.apply((trainable["im"], frozen["im"]), x)[..., 0]
        return u, v

    def infinite(k: Kernel) -> tuple[PairKernel, PairKernel]:
        ku, kv = real.kernel(k), imag.kernel(k)
        return decoupled_pair(ku.nngp, kv.nngp), decoupled_pair(ku.ntk, kv.ntk)

    return NNQS("decoupled", init, parts, infinite)


def _two_output(
    kind: NNQSKind, trunk: Layer, sw: float, sb: float | None, parameterization: Parameterization
) -> NNQS:
    net = serial(trunk, dense(2, sw, sb, parameterization))
    single = serial(trunk, dense(1, sw, sb, parameterization))

    def init(key: Array, in_dim: int) -> Params:
        return net.init(key, in_dim)[1]

    def parts(params: Params, x: Array) -> tuple[Array, Array]:
        y = net.apply(params, x)
        return y[..., 0], y[..., 1]

    def infinite(k: Kernel) -> tuple[PairKernel, PairKernel]:
        # The readout columns of u and v are independent: every trunk term of
        # Theta_uv carries E[W_u W_v] = 0, so the mixing kernel vanishes at infinite width.
        ks = single.kernel(k)
        return decoupled_pair(ks.nngp, ks.nngp), decoupled_pair(ks.ntk, ks.ntk)

    return NNQS(kind, init, parts, infinite)


def shared_trunk(
    trunk: Layer,
    sw: float = 1.0,
    sb: float | None = 1.0,
    parameterization: Parameterization = "ntk",
) -> NNQS:
    """One trunk with a two-output readout: ``u, v`` share every hidden parameter.

    At finite width the mixing kernel ``Theta_uv`` is non-zero (O(1/sqrt(width)));
    it vanishes at infinite width.
    """
    return _two_output("shared_trunk", trunk, sw, sb, parameterization)


def complex_output(
    trunk: Layer,
    sw: float = 1.0,
    sb: float | None = 1.0,
    parameterization: Parameterization = "ntk",
) -> NNQS:
    """One trunk with a complex readout ``psi = (sw/sqrt(n)) W phi + sb b``, ``W, b`` complex.

    ``Re W, Im W ~ N(0, 1/2)`` (so ``E|W|^2 = 1``): built as a two-output readout with
    scales ``sw/sqrt(2)``, ``sb/sqrt(2)`` (module docstring). Infinite width: a
    circular GP, ``E[psi psi'] = 0`` and ``Theta = 0``, ``ThetaH`` the real NTK.
    """
    scaled_sb = None if sb is None else sb / math.sqrt(2)
    return _two_output("complex_output", trunk, sw / math.sqrt(2), scaled_sb, parameterization)


@functools.cache
def mlp_nnqs(kind: NNQSKind, activation: Activation, depth: int, width: int) -> NNQS:
    """The NNQS of ``kind`` over MLPs of ``depth`` hidden layers of ``width`` (docs/theory.md §3).

    The same object for the same settings, so that compiled training code is reused.
    """
    if kind == "decoupled":
        return decoupled(mlp(depth, width, activation))
    trunk = mlp_trunk(depth, width, activation)
    if kind == "shared_trunk":
        return shared_trunk(trunk)
    if kind == "complex_output":
        return complex_output(trunk)
    raise ValueError(f"kind must be one of {', '.join(get_args(NNQSKind))}; got {kind!r}")


def member_keys(seed: int, members: Sequence[int] | np.ndarray | Array) -> Array:
    """Keys ``fold_in(key(seed), i)`` for each member index ``i`` (docs/theory.md §5 ensembles)."""
    base = jax.random.key(seed)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(members, dtype=jnp.uint32))


def init_ensemble(
    nnqs: NNQS, seed: int, members: Sequence[int] | np.ndarray | Array, in_dim: int
) -> Params:
    """Parameters of the given ensemble members, stacked on a leading member axis."""
    return jax.vmap(lambda key: nnqs.init(key, in_dim))(member_keys(seed, members))
