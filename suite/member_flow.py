"""Finite members on any loss, and each member's own linearisation (docs/theory.md §7).

For one member with parameters ``theta_0`` and its outputs ``(u, v)`` on the whole basis:

* the network itself trained by full-batch gradient descent,
  ``theta <- theta - eta dL/dtheta`` with ``dL/dtheta_p = 2 Re sum_x conj(g(x)) d_p psi(x)``
  (one vjp of ``(u, v)`` with cotangents ``(2 Re g, 2 Im g)``);
* its linearisation ``psi_lin(theta) = psi_0 + J_0 (theta - theta_0)`` (paper Eqs. 11-12)
  trained by the same rule, matrix-free: one jvp and one transposed jvp at ``theta_0``
  per step (``jax.linearize``), no ``D x D`` kernel.

The linearised member moves in function space exactly as its empirical QS-NTK at
initialisation prescribes (:func:`suite.kernel_flow.kernel_flow` with that kernel), so
the member against its linearisation measures kernel motion, and the linearisations
against the infinite-width ensemble measure kernel fluctuation. This is the reference
route (every member vmapped, float64, the whole basis each step); ensembles at scale go
through :func:`suite.training.train_on_loss`, which is tested against it.

:func:`linearised_flows` computes the same linearisations the other way round: each
member's ``2D x 2D`` empirical QS-NTK once, then the kernel flow, ``O(D^2)`` a step
whatever the width (up to :data:`KERNEL_ROUTE_DIMENSION` basis states).

:func:`frozen_kernel_flows` evolves each member's own initial function under a given
kernel instead (the infinite-width QS-NTK): paired with the member, it measures the
member's departure from infinite-width dynamics without the sampling noise of drawing
the initial functions (docs/theory.md §7.3).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from suite.kernel_flow import FlowLog, kernel_flow
from suite.kernels.empirical import empirical_qs_ntk
from suite.kernels.full_basis import BasisKernel, DensePairKernel
from suite.losses import Loss, real_gradient
from suite.networks import NNQS, Params
from suite.training.validation import check_learning_rate, check_steps

Array = jax.Array
#: the largest basis on which :func:`linearised_flows` builds each member's empirical
#: QS-NTK (a ``2D x 2D`` float64 matrix: 32 MiB at ``D = 1024``); beyond, parameter space
KERNEL_ROUTE_DIMENSION = 1024


def _descend(trainable: Params, gradient: Params, learning_rate: Array) -> Params:
    return jax.tree.map(lambda p, d: p - learning_rate * d, trainable, gradient)


@partial(jax.jit, static_argnames=("nnqs", "linearised"))
def _run(
    nnqs: NNQS,
    linearised: bool,
    params: Params,
    x: Array,
    loss: Loss,
    observables: Mapping[str, Loss],
    learning_rate: Array,
    counts: Array,
) -> dict[str, Array]:
    """Every member: the logged values after each of ``counts`` further steps, ``(M, T)``."""

    def member(own: Params) -> dict[str, Array]:
        trainable0, frozen = own

        def parts(trainable: Params) -> tuple[Array, Array]:
            return nnqs.parts((trainable, frozen), x)

        if linearised:
            outputs0, tangent = jax.linearize(parts, trainable0)
            transpose = jax.linear_transpose(tangent, trainable0)

            def outputs(trainable: Params) -> tuple[Array, Array]:
                moved = tangent(jax.tree.map(jnp.subtract, trainable, trainable0))
                return outputs0[0] + moved[0], outputs0[1] + moved[1]

            def gradient(trainable: Params) -> Params:
                u, v = outputs(trainable)
                return transpose(real_gradient(loss, u + 1j * v))[0]

        else:
            outputs = parts

            def gradient(trainable: Params) -> Params:
                (u, v), pullback = jax.vjp(parts, trainable)
                return pullback(real_gradient(loss, u + 1j * v))[0]

        def step(_: Array, trainable: Params) -> Params:
            return _descend(trainable, gradient(trainable), learning_rate)

        def segment(trainable: Params, count: Array) -> tuple[Params, dict[str, Array]]:
            trainable = jax.lax.fori_loop(0, count, step, trainable)
            u, v = outputs(trainable)
            psi = u + 1j * v
            return trainable, {name: watched.value(psi) for name, watched in observables.items()}

        return jax.lax.scan(segment, trainable0, counts)[1]

    return jax.vmap(member)(params)


def member_flows(
    nnqs: NNQS,
    params: Params,
    inputs: np.ndarray,
    loss: Loss,
    learning_rate: float,
    steps: Sequence[int] | np.ndarray,
    *,
    linearised: bool = False,
    observables: Mapping[str, Loss] | None = None,
) -> FlowLog:
    """Train each member of ``params`` (stacked on a leading member axis, e.g.
    :func:`suite.networks.init_ensemble`) on ``loss`` over the whole basis ``inputs``, or
    its linearisation at initialisation; ``values[name]`` is ``(T, M)`` as in
    :class:`suite.kernel_flow.FlowLog` (``final`` is empty: parameters are not kept)."""
    logged = check_steps(steps, "steps")
    check_learning_rate(learning_rate)
    watched = {"loss": loss, **(observables or {})}
    counts = jnp.asarray(np.diff(logged, prepend=0))
    x = jnp.asarray(inputs, dtype=jnp.float64)
    eta = jnp.asarray(learning_rate, dtype=jnp.float64)
    values = _run(nnqs, linearised, params, x, loss, watched, eta, counts)
    return FlowLog(logged, {name: np.asarray(v).T for name, v in values.items()}, np.empty((0,)))


def linearised_flows(
    nnqs: NNQS,
    params: Params,
    inputs: np.ndarray,
    loss: Loss,
    learning_rate: float,
    steps: Sequence[int] | np.ndarray,
    *,
    observables: Mapping[str, Loss] | None = None,
) -> FlowLog:
    """Each member's linearisation, as ``member_flows(..., linearised=True)`` (tested to
    ``1e-10``), by the kernel flow under its empirical QS-NTK at initialisation from its
    own initial function: one kernel per member (``D^2 P`` work), then ``O(D^2)`` a step
    instead of a jvp and its transpose through the network. Members run one at a time;
    above :data:`KERNEL_ROUTE_DIMENSION` basis states, :func:`member_flows`."""
    check_steps(steps, "steps")  # before any kernel is built
    check_learning_rate(learning_rate)
    x = jnp.asarray(inputs, dtype=jnp.float64)
    if x.shape[0] > KERNEL_ROUTE_DIMENSION:
        return member_flows(
            nnqs, params, inputs, loss, learning_rate, steps, linearised=True,
            observables=observables,
        )  # fmt: skip
    logs = []
    for member in range(jax.tree.leaves(params)[0].shape[0]):
        one = jax.tree.map(lambda leaf, i=member: leaf[i], params)
        blocks = empirical_qs_ntk(nnqs, one, x, x)
        matrix = jnp.block([[blocks.uu, blocks.uv], [blocks.vu, blocks.vv]])
        psi0 = nnqs.apply(one, x)[None]
        kernel = DensePairKernel(matrix, None)  # products only: no square root needed
        logs.append(kernel_flow(kernel, loss, psi0, learning_rate, steps, observables=observables))
    names = logs[0].values
    values = {name: np.concatenate([log.values[name] for log in logs], axis=1) for name in names}
    return FlowLog(logs[0].steps, values, np.empty((0,)))


def frozen_kernel_flows(
    nnqs: NNQS,
    params: Params,
    inputs: np.ndarray,
    kernel: BasisKernel,
    loss: Loss,
    learning_rate: float,
    steps: Sequence[int] | np.ndarray,
    *,
    observables: Mapping[str, Loss] | None = None,
) -> FlowLog:
    """Each member's own initial function ``psi_0`` (float64) evolved under the constant
    ``kernel`` (:func:`suite.kernel_flow.kernel_flow`), e.g. the infinite-width QS-NTK of
    :func:`suite.kernel_flow.tangent_kernel`: the infinite-width dynamics from the member's
    own start, its partner in the paired comparison of docs/theory.md §7.3."""
    check_steps(steps, "steps")
    check_learning_rate(learning_rate)
    x = jnp.asarray(inputs, dtype=jnp.float64)
    psi0 = jax.lax.map(lambda own: nnqs.apply(own, x), params)  # one member's activations
    return kernel_flow(kernel, loss, psi0, learning_rate, steps, observables=observables)
