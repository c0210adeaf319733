"""The infinite-width ensemble on any loss: kernel flow of NNGP-sampled functions
(docs/theory.md §7).

At infinite width an NNQS trained by gradient descent is linear in its parameters
with a constant tangent kernel, so each member moves in function space by

    psi <- psi - eta (ThetaH g + Theta conj g),     g = dL/d conj(psi),

exactly, for one discrete step of size ``eta`` (:func:`discrete_flow`), or continuously,
``d psi/dt = -eta (ThetaH g + Theta conj g)`` with ``t`` counting steps
(:func:`continuous_flow`, an adaptive Dormand-Prince solver with error control). In the
real coordinates ``(u, v)`` of ``psi = u + i v`` this is ``-eta K (dL/du, dL/dv)`` with
``K`` the stacked tangent kernel (a :class:`~suite.kernels.full_basis.BasisKernel`) and
``(dL/du, dL/dv) = (2 Re g, 2 Im g)``: the full QS-NTK block form, so coupled networks
work too.

The initial functions are exact draws from the NNGP on the basis
(:func:`~suite.kernels.full_basis.sample_functions`); each evolves on its own. For a
nonlinear loss the mean of the evolved functions is not the evolution of the mean.

Everything here is float64.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.ode import odeint

from suite.hilbert import SpinBasis
from suite.kernels.full_basis import BasisKernel, DensePairKernel, sample_functions
from suite.kernels.gram import gram
from suite.kernels.walsh import WalshPairKernel, hamming_profile
from suite.losses import Loss, real_gradient
from suite.networks import NNQS
from suite.training.validation import check_learning_rate, check_steps

Array = jax.Array
Route = Literal["auto", "walsh", "dense"]
#: power iterations of the learning-rate rule
RULE_ITERATIONS = 64
#: a logged loss rising by more than this fraction of the loss scale marks a member unstable
MONOTONE_RTOL = 1e-9


def basis_kernels(
    nnqs: NNQS, inputs: np.ndarray, route: Route = "auto"
) -> tuple[BasisKernel, BasisKernel]:
    """The infinite-width NNGP and tangent kernels of ``nnqs`` on the whole basis ``inputs``.

    ``route="walsh"`` needs the full spin basis in :class:`~suite.hilbert.SpinBasis`
    order; ``"auto"`` takes it whenever the inputs are that basis, and the dense
    ``2D x 2D`` kernels otherwise.
    """
    inputs = np.asarray(inputs, dtype=np.float64)
    n_sites = inputs.shape[1]
    full_spin_basis = _is_full_spin_basis(inputs)
    if route not in ("auto", "walsh", "dense"):
        raise ValueError(f"route must be 'auto', 'walsh' or 'dense', got {route!r}")
    if route == "walsh" and not full_spin_basis:
        raise ValueError("route='walsh' needs the inputs of a full SpinBasis, in its order")
    if route == "dense" or not full_spin_basis:
        nngp, ntk = gram(nnqs.infinite, inputs, inputs)
        return DensePairKernel.from_blocks(nngp), DensePairKernel.from_blocks(ntk)
    return walsh_kernels(nnqs, n_sites)


def tangent_kernel(nnqs: NNQS, inputs: np.ndarray) -> BasisKernel:
    """The infinite-width QS-NTK of ``nnqs`` alone on the basis ``inputs``, for products
    (:func:`kernel_flow` from given functions): as :func:`basis_kernels` with
    ``route="auto"``, but a dense kernel without the square root (and its
    eigendecomposition) that sampling needs."""
    inputs = np.asarray(inputs, dtype=np.float64)
    if _is_full_spin_basis(inputs):
        return walsh_kernels(nnqs, inputs.shape[1])[1]
    return DensePairKernel.from_blocks(gram(nnqs.infinite, inputs, inputs)[1], with_root=False)


def _is_full_spin_basis(inputs: np.ndarray) -> bool:
    """Whether ``inputs`` are the full :class:`~suite.hilbert.SpinBasis`, in its order."""
    n_sites = inputs.shape[1]
    return inputs.shape[0] == 1 << n_sites and np.array_equal(
        inputs, SpinBasis(n_sites, max_dimension=inputs.shape[0]).inputs()
    )


def walsh_kernels(nnqs: NNQS, n_sites: int) -> tuple[WalshPairKernel, WalshPairKernel]:
    """The NNGP and tangent kernels of ``nnqs`` on the full basis of ``n_sites`` spins, from
    their Hamming profiles alone (``O(N^2)`` work; nothing of size ``D`` is built)."""
    nngp, ntk = hamming_profile(nnqs.infinite, n_sites)
    return (
        WalshPairKernel.from_profiles(nngp, n_sites),
        WalshPairKernel.from_profiles(ntk, n_sites),
    )


def _real_gradient(loss: Loss, u: Array, v: Array) -> tuple[Array, Array]:
    """:func:`~suite.losses.real_gradient` of every member (rows)."""
    return jax.vmap(lambda psi: real_gradient(loss, psi))(u + 1j * v)


def velocity(
    kernel: BasisKernel, loss: Loss, learning_rate: Array, u: Array, v: Array
) -> tuple[Array, Array]:
    """``d(u, v)/dt = -eta K (dL/du, dL/dv)``, i.e. ``-eta (ThetaH g + Theta conj g)``."""
    du, dv = kernel.apply(*_real_gradient(loss, u, v))
    return -learning_rate * du, -learning_rate * dv


@partial(jax.jit, donate_argnums=(0, 1))
def _advance(
    u: Array, v: Array, kernel: BasisKernel, loss: Loss, learning_rate: Array, count: Array
):
    def step(_: Array, state: tuple[Array, Array]) -> tuple[Array, Array]:
        du, dv = velocity(kernel, loss, learning_rate, *state)
        return state[0] + du, state[1] + dv

    return jax.lax.fori_loop(0, count, step, (u, v))


@partial(jax.jit, static_argnames=("rtol", "atol"))
def _integrate(
    u: Array,
    v: Array,
    kernel: BasisKernel,
    loss: Loss,
    learning_rate: Array,
    times: Array,
    rtol: float,
    atol: float,
) -> tuple[Array, Array]:
    def rhs(
        state: tuple[Array, Array], _: Array, kernel: BasisKernel, loss: Loss, eta: Array
    ) -> tuple[Array, Array]:
        return velocity(kernel, loss, eta, *state)

    path = odeint(rhs, (u, v), times, kernel, loss, learning_rate, rtol=rtol, atol=atol)
    return path[0][-1], path[1][-1]


@jax.jit
def _observe(u: Array, v: Array, losses: Mapping[str, Loss]) -> dict[str, Array]:
    psi = u + 1j * v
    return {name: jax.vmap(loss.value)(psi) for name, loss in losses.items()}


@dataclass(frozen=True)
class FlowLog:
    """Values of the loss and of other observables per logged step and member.

    ``values[name]`` has shape ``(T, M)``; ``"loss"`` is the trained loss. A member is
    ``stable`` when its loss is finite and non-increasing along the logged steps, as
    gradient descent below its stability bound guarantees (a rise counts when it exceeds
    ``MONOTONE_RTOL`` times the larger of the previous and the initial loss magnitude,
    so rounding at a converged zero loss does not).
    """

    steps: np.ndarray
    values: dict[str, np.ndarray]
    final: np.ndarray  # (M, D) complex, the functions at the last logged step

    @property
    def stable(self) -> np.ndarray:
        loss = self.values["loss"]
        scale = np.maximum(np.abs(loss[:-1]), np.abs(loss[:1]))
        rises = np.diff(loss, axis=0) > MONOTONE_RTOL * scale
        return np.all(np.isfinite(loss), axis=0) & ~np.any(rises, axis=0)


def kernel_flow(
    kernel: BasisKernel,
    loss: Loss,
    psi0: Array | np.ndarray,
    learning_rate: float,
    steps: Sequence[int] | np.ndarray,
    *,
    discrete: bool = True,
    observables: Mapping[str, Loss] | None = None,
    rtol: float = 1e-10,
    atol: float = 1e-12,
) -> FlowLog:
    """Evolve the functions ``psi0`` ``(M, D)`` under the constant ``kernel`` on ``loss``.

    Exact discrete gradient-descent steps, or the continuous flow (``discrete=False``)
    integrated with relative and absolute tolerances ``rtol``, ``atol`` per logged
    interval. ``observables`` are other losses (e.g. an infidelity to the exact ground
    state) logged alongside ``"loss"``.
    """
    logged = check_steps(steps, "steps")
    check_learning_rate(learning_rate)
    psi = jnp.asarray(psi0, dtype=jnp.complex128)
    if psi.ndim != 2 or psi.shape[1] != kernel.dimension:
        raise ValueError(f"psi0 must have shape (members, {kernel.dimension}), got {psi.shape}")
    watched = {"loss": loss, **(observables or {})}
    eta = jnp.asarray(learning_rate, dtype=jnp.float64)
    u, v = psi.real, psi.imag
    records: list[dict[str, Array]] = []
    position = 0
    for step in logged:
        if step > position:
            if discrete:
                u, v = _advance(u, v, kernel, loss, eta, jnp.asarray(step - position))
            else:
                times = jnp.asarray([position, step], dtype=jnp.float64)
                u, v = _integrate(u, v, kernel, loss, eta, times, rtol=rtol, atol=atol)
            position = int(step)
        records.append(_observe(u, v, watched))
    values = {name: np.stack([np.asarray(r[name]) for r in records]) for name in watched}
    return FlowLog(logged, values, np.asarray(u + 1j * v))


def infinite_ensemble(
    nngp: BasisKernel,
    ntk: BasisKernel,
    loss: Loss,
    seed: int,
    members: int,
    learning_rate: float,
    steps: Sequence[int] | np.ndarray,
    *,
    chunk: int = 256,
    keep_final: bool = False,
    **flow: object,
) -> FlowLog:
    """The infinite-width ensemble: ``members`` NNGP draws (member ``i`` from
    ``(seed, i)``) evolved by :func:`kernel_flow`, ``chunk`` members at a time.

    Memory is a few ``(chunk, D)`` arrays whatever ``members`` is. ``final`` is kept
    only with ``keep_final`` (it is ``(members, D)``); otherwise it is empty.
    """
    if not (isinstance(members, int) and members > 0):
        raise ValueError(f"members must be a positive integer, got {members!r}")
    if not (isinstance(chunk, int) and chunk > 0):
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    logs = []
    for start in range(0, members, chunk):
        psi0 = sample_functions(nngp, seed, range(start, min(start + chunk, members)))
        log = kernel_flow(ntk, loss, psi0, learning_rate, steps, **flow)  # type: ignore[arg-type]
        logs.append(log if keep_final else FlowLog(log.steps, log.values, log.final[:0]))
    values = {
        name: np.concatenate([log.values[name] for log in logs], axis=1) for name in logs[0].values
    }
    return FlowLog(logs[0].steps, values, np.concatenate([log.final for log in logs]))


def _preconditioned_hessian(
    kernel: BasisKernel, loss: Loss, u: Array, v: Array, p: Array, q: Array
) -> tuple[Array, Array]:
    """``A (p, q)`` with ``A = K^(1/2) Hess L(u, v) K^(1/2)``, row by row (docs/theory.md §7.1)."""
    root_p, root_q = kernel.apply_root(p, q)
    tangent = jax.jvp(lambda a, b: _real_gradient(loss, a, b), (u, v), (root_p, root_q))[1]
    return kernel.apply_root(*tangent)


@jax.jit
def _curvature(
    kernel: BasisKernel, loss: Loss, u: Array, v: Array, start: tuple[Array, Array]
) -> Array:
    """Power iteration on ``K^(1/2) Hess L K^(1/2)`` per member: its largest |eigenvalue|."""

    def iterate(_: int, state: tuple[Array, Array, Array]) -> tuple[Array, Array, Array]:
        p, q, _ = state
        hp, hq = _preconditioned_hessian(kernel, loss, u, v, p, q)
        rayleigh = jnp.sum(p * hp + q * hq, axis=-1)
        norm = jnp.sqrt(jnp.sum(hp**2 + hq**2, axis=-1, keepdims=True))
        return hp / norm, hq / norm, rayleigh

    p, q = start
    norm = jnp.sqrt(jnp.sum(p**2 + q**2, axis=-1, keepdims=True))
    init = (p / norm, q / norm, jnp.zeros(p.shape[0]))
    return jnp.abs(jax.lax.fori_loop(0, RULE_ITERATIONS, iterate, init)[2])


def learning_rate_bound(
    kernel: BasisKernel, loss: Loss, psi0: Array | np.ndarray, chunk: int = 256
) -> float:
    """The stability bound ``eta_max = 2 / max_i rho_i`` of gradient descent at initialisation.

    ``rho_i`` is the largest magnitude of an eigenvalue of ``K^(1/2) Hess L(psi_i) K^(1/2)``
    for member ``i`` of ``psi0`` ``(M, D)`` (the kernel-preconditioned curvature of the
    loss in the real coordinates ``(u, v)``; :data:`RULE_ITERATIONS` power iterations,
    ``chunk`` members at a time). For the MSE this is ``2B / lambda_max(Theta(X, X))``
    (docs/theory.md §5); for a nonlinear loss it is the local bound at the initial
    functions (docs/theory.md §7.1).
    """
    psi = jnp.asarray(psi0, dtype=jnp.complex128)
    largest = 0.0
    for start in range(0, psi.shape[0], chunk):
        part = psi[start : start + chunk]
        noise = jax.random.normal(jax.random.key(start), (2, *part.shape), dtype=jnp.float64)
        rho = _curvature(kernel, loss, part.real, part.imag, (noise[0], noise[1]))
        largest = max(largest, float(jnp.max(rho)))
    return 2.0 / largest


#: largest basis whose preconditioned Hessian :func:`floor_spectrum` builds densely
#: (a ``2D x 2D`` symmetric eigenproblem per member)
SPECTRUM_DIMENSION = 512


@jax.jit
def _floor_spectrum(kernel: BasisKernel, loss: Loss, point: Array) -> Array:
    """The eigenvalues of ``K^(1/2) Hess L K^(1/2)`` at one ``point`` ``(D,)``, ascending."""
    size = point.shape[0]
    identity = jnp.eye(2 * size, dtype=jnp.float64)
    at = jnp.broadcast_to(point, (2 * size, size))
    rows = _preconditioned_hessian(
        kernel, loss, at.real, at.imag, identity[:, :size], identity[:, size:]
    )
    matrix = jnp.concatenate(rows, axis=-1)
    return jnp.linalg.eigvalsh(0.5 * (matrix + matrix.T))


def floor_spectrum(
    kernel: BasisKernel, loss: Loss, floor_state: np.ndarray, psi: Array | np.ndarray
) -> np.ndarray:
    """The kernel-preconditioned spectrum at the loss's floor, per member (docs/theory.md §7.1).

    For member ``i`` of ``psi`` ``(M, D)``: the eigenvalues, ascending, of
    ``A = K^(1/2) Hess L(z_i) K^(1/2)`` (``2D`` of them) at ``z_i``, the floor state
    nearest the member, ``<floor|psi_i> / <floor|floor> floor`` (its phase and norm; for
    the scale- and phase-invariant losses of the suite every such multiple is a minimum).
    Near the floor one discrete step multiplies the error's component along eigenvector
    ``k`` by ``1 - eta lambda_k``: the zero eigenvalues are directions that do not move
    (the norm and phase, and any the kernel cannot reach), the smallest positive one sets
    the asymptotic rate while ``eta lambda_max <= 2 - eta lambda_min``. A member that is
    not finite (diverged) or has no overlap with the floor gets a row of NaN. Dense, up
    to :data:`SPECTRUM_DIMENSION` basis states.
    """
    floor = np.asarray(floor_state, dtype=np.complex128)
    psi = np.asarray(psi, dtype=np.complex128)
    if floor.ndim != 1 or psi.ndim != 2 or psi.shape[1] != floor.size:
        raise ValueError(
            f"floor_state must be (D,) and psi (M, D), got {floor.shape} and {psi.shape}"
        )
    if floor.size > SPECTRUM_DIMENSION or kernel.dimension != floor.size:
        raise ValueError(
            f"floor_state must have the kernel's dimension, at most {SPECTRUM_DIMENSION} "
            f"basis states, got {floor.size} (kernel dimension {kernel.dimension})"
        )
    overlaps = psi @ floor.conj() / np.vdot(floor, floor).real
    spectra = np.full((psi.shape[0], 2 * floor.size), np.nan)
    for member, overlap in enumerate(overlaps):
        if np.isfinite(overlap) and abs(overlap) > 0:
            nearest = jnp.asarray(overlap * floor)
            spectra[member] = np.asarray(_floor_spectrum(kernel, loss, nearest))
    return spectra


#: an eigenvalue of the floor spectrum within this fraction of the largest is a zero mode
ZERO_MODE_RTOL = 1e-10


def spectrum_rates(spectrum: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per member of a :func:`floor_spectrum` ``(..., 2D)``: the number of zero modes
    (``|lambda| <= ZERO_MODE_RTOL * lambda_max``), the smallest positive eigenvalue beyond
    them and the largest (NaN, and no zero modes, for a member without a spectrum)."""
    spectrum = np.asarray(spectrum, dtype=np.float64)
    largest = spectrum.max(axis=-1)
    zero = np.abs(spectrum) <= ZERO_MODE_RTOL * largest[..., None]
    positive = np.where(zero | (spectrum < 0), np.inf, spectrum)
    smallest = np.where(np.isnan(largest), np.nan, positive.min(axis=-1))
    return zero.sum(axis=-1), smallest, largest


def contraction(learning_rate: float, smallest: np.ndarray, largest: np.ndarray) -> np.ndarray:
    """``max_k |1 - eta lambda_k|`` over the positive eigenvalues of a floor spectrum (the
    extremes suffice): one step near the floor multiplies the error's amplitude by at
    most this, so a quadratic loss falls by its square a step; 1 or more does not converge."""
    return np.maximum(np.abs(1 - learning_rate * smallest), np.abs(1 - learning_rate * largest))
