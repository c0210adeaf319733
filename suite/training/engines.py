"""The two implementations of one gradient-descent update (:mod:`suite.training`, "Two
implementations of one update"): autodiff through ``nnqs.parts`` for any network, and the
hand-derived GEMM update of one-hidden-layer networks.

Each engine has two gradients: ``grads`` of the MSE loss on a chunk of train points
(docs/theory.md §5; the residual is formed inside, from one forward pass), and
``pullback`` of a given cotangent ``(dL/du, dL/dv)`` on a chunk of basis points, the
function-space gradient of any loss on the whole basis (docs/theory.md §7)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from suite.networks import NNQS
from suite.training.fastpath import Template, activation, activation_grad, read_part

Array = jax.Array


class AutodiffEngine:
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

    def pullback(self, state: Any, x: Array, cotangent: Array) -> Any:
        """``sum_x (dL/du(x) du(x)/dtheta + dL/dv(x) dv(x)/dtheta)`` per member;
        ``cotangent (block, 2, P)`` in the compute dtype."""
        trainable, frozen = state

        def member_grad(tr: Any, fr: Any, r: Array) -> Any:
            pull = jax.vjp(lambda t: self.nnqs.parts((t, fr), x), tr)[1]
            return pull((r[0], r[1]))[0]

        return jax.vmap(member_grad)(trainable, frozen, cotangent)

    def update(self, state: Any, grads: Any, lr: Array) -> Any:
        trainable, frozen = state
        return jax.tree.map(lambda p, g: p - lr * g, trainable, grads), frozen

    def outputs(self, state: Any, x: Array) -> tuple[Array, Array]:
        return jax.vmap(lambda tr, fr: self.nnqs.parts((tr, fr), x))(*state)


class FastEngine:
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
            w0, b0, w1, b1 = read_part(trainable[side], t.paths)
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
        f = jnp.sum(activation(self.t.activation, z) * w1[:, :, None], axis=1)
        f = self.t.alpha * f
        if self.t.delta is not None:
            f = f + self.t.delta * b1[:, None]
        return z, f

    def grads(self, state: Any, x: Array, y: Array, weight: Array) -> Any:
        w0, w1, b1 = self._nets(state)
        z, f = self._forward(w0, w1, b1, x)
        r = (f - jnp.tile(y, (w0.shape[0] // 2, 1))) * weight  # dL/df, (nets, P)
        return self._backward(z, r, x)

    def pullback(self, state: Any, x: Array, cotangent: Array) -> Any:
        """The gradient for a given ``dL/df``, ``cotangent (block, 2, P)``: one GEMM for
        the hidden pre-activations, then the backward pass of :meth:`grads`."""
        w0 = self._nets(state)[0]
        z = jnp.einsum("njk,pk->njp", w0, x)
        return self._backward(z, cotangent.reshape(w0.shape[0], -1), x)

    def _backward(self, z: Array, r: Array, x: Array) -> Any:
        """First-layer, readout and output-bias gradients from the pre-activations ``z``
        ``(nets, n, P)`` and ``r = dL/df`` ``(nets, P)``."""
        g = activation_grad(self.t.activation, z, r[:, None, :])
        p = jnp.einsum("njp,pk->njk", g, x)
        if self.t.activation == "relu":
            readout = None  # from p: sum_b relu(z_jb) r_b = sum_k W0~_jk P_jk
        else:
            readout = jnp.sum(activation(self.t.activation, z) * r[:, None, :], axis=2)
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


def flops_per_member_step(batch: int, width: int, dim: int) -> float:
    """FLOPs of one update of one member of width ``n`` on ``B`` points of dimension ``d``.

    For each of its two networks (u and v): forward ``2Bdn`` (first layer) + ``2Bn``
    (readout); backward ``2Bdn`` (first-layer weight gradient) + ``2Bn`` (readout
    gradient) + ``2Bn`` (hidden-layer gradient); in all ``2 x Bn (4d + 6)``. Biases, the
    activation and the parameter update are not counted. This is the arithmetic of the
    one-hidden-layer update; deeper networks cost more per step.
    """
    return 2.0 * batch * width * (4 * dim + 6)
