"""The entry point :func:`train_ensemble` and its compiled, sharded programs, run slice
by slice (:mod:`suite.training`, "Sharding", "Steps and logs" and "Slices and
checkpoints"; docs/theory.md §3, §5)."""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from suite.losses import Loss, real_gradient
from suite.networks import NNQS, init_ensemble
from suite.training.checkpoint import Checkpoints, Snapshot, check_snapshot, slice_bounds
from suite.training.engines import AutodiffEngine, FastEngine
from suite.training.fastpath import Template, fast_template
from suite.training.layout import (
    ACCELERATOR_BLOCK_ELEMENTS,
    BLOCK_ELEMENTS,
    Layout,
    chunk_rows,
    default_lanes,
    join_lanes,
    map_blocks,
    plan_layout,
    split_lanes,
    stack_chunks,
    sum_chunks,
    update_blocks,
)
from suite.training.statistics import SUMS, EnsembleStats, LossEnsembleStats
from suite.training.validation import (
    check_losses,
    check_network_inputs,
    check_run,
    validate_arguments,
)

Array = jax.Array
Method = Literal["auto", "fast", "autodiff"]
#: the mesh axis the members are sharded over
AXIS = "members"


@dataclass(frozen=True)
class _Programs:
    """The two jitted, sharded programs of a run: ``advance(state, lr, n, train) -> state``
    (``n`` updates; the state buffers are donated) and ``evaluate(state, valid, eval) ->
    (values (members, V), sums (5, P))`` at the current step (a supervised run's values
    are its train and test loss)."""

    advance: Callable[..., Any]
    evaluate: Callable[..., Any]


def _advance(block_step: Callable[[Any, Array, Any], Any], layout: Layout) -> Callable[..., Any]:
    """``advance(state, lr, n, train)``: ``n`` updates of every block of a device's
    members, ``block_step(block state, lr, train) -> block state``."""

    def advance(state: Any, lr: Array, n: Array, train: Any) -> Any:
        def step(_: Array, lanes: tuple[Any, ...]) -> tuple[Any, ...]:
            return tuple(
                update_blocks(lambda b: block_step(b, lr, train), lane, layout) for lane in lanes
            )

        return join_lanes(jax.lax.fori_loop(0, n, step, split_lanes(state, layout)))

    return advance


def _programs(engine: Any, layout: Layout, mesh: Mesh) -> _Programs:
    """The programs of a supervised run (:func:`train_ensemble`): ``advance(state, lr, n,
    (x, y, w) train chunks)``, the engine's MSE gradient chunk by chunk; ``evaluate``
    gives each member's train and test loss, and the sums."""

    def block_step(block_state: Any, lr: Array, train: Any) -> Any:
        grads = sum_chunks(lambda x, y, w: engine.grads(block_state, x, y, w), train)
        return engine.update(block_state, grads, lr)

    def evaluate(state: Any, valid: Array, evaluation: Any) -> Any:
        x_eval, phi_eval, w_fit, w_test = evaluation

        def block_values(block_state: Any, block_valid: Array) -> Any:
            u, v = stack_chunks(lambda x: engine.outputs(block_state, x), (x_eval,))
            u, v = u.astype(jnp.float64), v.astype(jnp.float64)
            du, dv = u - phi_eval[0], v - phi_eval[1]
            err = du * du + dv * dv
            return jnp.stack([err @ w_fit, err @ w_test], axis=1), _sums(u, v, block_valid)

        return _gather_values(block_values, layout, state, valid)

    return _shard(_advance(block_step, layout), evaluate, mesh)


def _shard(advance: Callable[..., Any], evaluate: Callable[..., Any], mesh: Mesh) -> _Programs:
    """The per-device ``advance`` and ``evaluate`` as jitted programs over the mesh
    (members sharded, data replicated; the state buffers donated to ``advance``)."""
    advance_sharded = jax.shard_map(
        advance, mesh=mesh, in_specs=(P(AXIS), P(), P(), P()), out_specs=P(AXIS)
    )
    evaluate_sharded = jax.shard_map(
        evaluate, mesh=mesh, in_specs=(P(AXIS), P(AXIS), P()), out_specs=(P(AXIS), P())
    )
    return _Programs(jax.jit(advance_sharded, donate_argnums=(0,)), jax.jit(evaluate_sharded))


def _sums(u: Array, v: Array, weights: Array) -> Array:
    """The five sufficient statistics ``(5, P)`` of a block's outputs ``(block, P)``,
    each member weighted (0 for padded copies)."""
    w = weights[:, None]
    return jnp.stack(
        [
            jnp.sum(w * u, axis=0),
            jnp.sum(w * v, axis=0),
            jnp.sum(w * u * u, axis=0),
            jnp.sum(w * v * v, axis=0),
            jnp.sum(w * u * v, axis=0),
        ]
    )


def _gather_values(
    block_values: Callable[[Any, Array], tuple[Array, Array]], layout: Layout, state: Any,
    valid: Array,
) -> tuple[Array, Array]:  # fmt: skip
    """``block_values(block state, block weights) -> (values (block, V), sums (5, P))``
    over a device's blocks: the values of its members ``(members, V)`` and the sums over
    all devices."""
    outs = [
        map_blocks(block_values, layout, lane, v)
        for lane, v in zip(split_lanes(state, layout), split_lanes(valid, layout), strict=True)
    ]
    values = jnp.concatenate([o[0].reshape(-1, o[0].shape[-1]) for o in outs])
    return values, jax.lax.psum(sum(jnp.sum(o[1], axis=0) for o in outs), AXIS)


def _loss_programs(engine: Any, layout: Layout, mesh: Mesh, n_points: int) -> _Programs:
    """The programs of a run on a whole-basis loss (:func:`train_on_loss`).

    ``advance(state, lr, n, (x_basis, loss))``: per block, the outputs on every basis
    point (chunked), the function-space gradient ``(2 Re g, 2 Im g)`` of each member in
    float64, and the engine's pullback of it, chunk by chunk. ``evaluate(state, valid,
    (x_basis, watched))``: each watched loss's value per member (``watched`` a tuple: a
    dict's order would not survive tracing), and the sums.
    """
    padded_points = layout.train_chunk * layout.n_train_chunks

    def functions(block_state: Any, x_basis: Array) -> Array:
        u, v = stack_chunks(lambda x: engine.outputs(block_state, x), (x_basis,))
        return u[:, :n_points].astype(jnp.float64) + 1j * v[:, :n_points].astype(jnp.float64)

    def block_step(block_state: Any, lr: Array, train: Any) -> Any:
        x_basis, loss = train
        du, dv = jax.vmap(lambda psi: real_gradient(loss, psi))(functions(block_state, x_basis))
        cotangent = jnp.stack([du, dv], axis=1).astype(x_basis.dtype)  # (block, 2, D)
        cotangent = jnp.pad(cotangent, ((0, 0), (0, 0), (0, padded_points - n_points)))
        cotangent = cotangent.reshape(*cotangent.shape[:2], layout.n_train_chunks, -1)
        grads = sum_chunks(
            lambda x, r: engine.pullback(block_state, x, r),
            (x_basis, jnp.moveaxis(cotangent, 2, 0)),
        )
        return engine.update(block_state, grads, lr)

    def evaluate(state: Any, valid: Array, evaluation: Any) -> Any:
        x_basis, watched = evaluation

        def block_values(block_state: Any, block_valid: Array) -> Any:
            psi = functions(block_state, x_basis)
            values = jnp.stack([jax.vmap(w.value)(psi) for w in watched], axis=1)
            return values, _sums(psi.real, psi.imag, block_valid)

        return _gather_values(block_values, layout, state, valid)

    return _shard(_advance(block_step, layout), evaluate, mesh)


def _engine(engine_key: Template | NNQS) -> FastEngine | AutodiffEngine:
    """The fast update of a recognised template, else autodiff through the network."""
    return (
        FastEngine(engine_key) if isinstance(engine_key, Template) else AutodiffEngine(engine_key)
    )


@functools.lru_cache(maxsize=32)
def _compiled(
    engine_key: Template | NNQS, layout: Layout, devices: tuple[Any, ...],
    loss_points: int | None = None,
) -> _Programs:  # fmt: skip
    """The programs of a supervised run, or (``loss_points``: the basis size) of a run on
    a whole-basis loss."""
    mesh = Mesh(np.array(devices), (AXIS,))
    if loss_points is None:
        return _programs(_engine(engine_key), layout, mesh)
    return _loss_programs(_engine(engine_key), layout, mesh, loss_points)


def _width_estimate(nnqs: NNQS, in_dim: int) -> int:
    """Hidden units per network, for block sizes (parameters per member / (2 (d + 2)))."""
    shapes = jax.eval_shape(lambda: nnqs.init(jax.random.key(0), in_dim))
    size = sum(math.prod(s.shape) for s in jax.tree.leaves(shapes))
    return max(1, size // (2 * (in_dim + 2)))


def _engine_inputs(engine: Any, x: np.ndarray, np_compute: Any) -> np.ndarray:
    """The basis as the engine takes it, in the compute dtype: ``x`` rounded to that dtype
    first, so that float32 runs see float32 configurations."""
    return engine.inputs(x.astype(np_compute).astype(np.float64)).astype(np_compute)


def _constants(
    engine: Any, layout: Layout, x: np.ndarray, phi: np.ndarray, train: np.ndarray, np_compute: Any
) -> tuple[np.ndarray, ...]:
    """The run's data, rounded to the compute dtype once, in the layout's chunks: train
    inputs, targets and weights; evaluation inputs and targets; the train and test
    weights of the logged losses (``(x_train, y_train, w_train, x_eval, phi_eval,
    w_fit, w_test)``, as the program takes them)."""
    n_points, n_train = x.shape[0], train.size
    phi_run = np.stack([phi.real, phi.imag]).astype(np_compute).astype(np.float64)
    x_engine = _engine_inputs(engine, x, np_compute)
    x_train = chunk_rows(x_engine[train], layout.train_chunk, layout.n_train_chunks)
    y_train = chunk_rows(
        phi_run[:, train].T.astype(np_compute), layout.train_chunk, layout.n_train_chunks
    )
    y_train = np.moveaxis(y_train, -1, 1)  # (chunks, 2, chunk)
    w_train = chunk_rows(
        np.full(n_train, 1.0 / n_train, np_compute), layout.train_chunk, layout.n_train_chunks, 0.0
    )
    x_eval = chunk_rows(x_engine, layout.eval_chunk, layout.n_eval_chunks)
    eval_size = layout.eval_chunk * layout.n_eval_chunks
    phi_eval = np.zeros((2, eval_size))
    phi_eval[:, :n_points] = phi_run
    test = np.setdiff1d(np.arange(n_points), train)
    w_fit = np.zeros(eval_size)
    w_fit[train] = 1.0 / n_train
    w_test = np.zeros(eval_size)
    if test.size:
        w_test[test] = 1.0 / test.size
    return x_train, y_train, w_train, x_eval, phi_eval, w_fit, w_test


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
    checkpoints: Checkpoints | None = None,
) -> EnsembleStats:
    """Train ensemble ``members`` of ``nnqs`` by full-batch GD on ``inputs[train_index]``.

    ``inputs (D, d)`` is the whole basis, ``target (D,)`` the wavefunction ``phi``;
    ``learning_rate`` is ``eta`` for ``L = (1/(2B)) sum_train |psi - phi|^2``; the
    results are logged at ``log_steps`` (strictly ascending, 0 = initialisation). Member
    ``i`` starts from ``nnqs.init(member_keys(seed, [i])[0], d)`` whatever the sharding.
    ``devices`` (default: all local devices) split the members; ``method`` picks the
    update (``"auto"``: the fast path when :func:`fast_template` recognises ``nnqs``);
    ``block`` overrides the members per on-device block; ``checkpoints`` resume the run
    from a snapshot and are offered one after every slice
    (:mod:`suite.training.checkpoint`). Every argument is validated (``ValueError``
    naming it) before any work. See the module docstring.
    """
    x, phi, train, ids, steps, n_devices = validate_arguments(
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
    plan = _plan(nnqs, x, ids, train.size, n_devices, dtype, method, block)
    consts = _constants(plan.engine, plan.layout, x, phi, train, plan.np_compute)
    run = plan.run(plan.programs(), learning_rate, consts[:3], consts[3:], 2)
    with jax.default_matmul_precision("highest"):  # float32 is float32, not TF32 on GPUs
        values, sums = run.slices(plan.initial(seed), steps, x.shape[0], checkpoints)
    return EnsembleStats(ids, steps, values[:, 0], values[:, 1], *_sum_fields(sums))


def train_on_loss(
    nnqs: NNQS,
    inputs: np.ndarray,
    loss: Loss,
    *,
    seed: int,
    members: Sequence[int] | np.ndarray,
    learning_rate: float,
    log_steps: Sequence[int],
    observables: Mapping[str, Loss] | None = None,
    dtype: str = "float64",
    devices: int | None = None,
    method: Method = "auto",
    block: int | None = None,
    checkpoints: Checkpoints | None = None,
) -> LossEnsembleStats:
    """Train ensemble ``members`` of ``nnqs`` by full-batch GD on a whole-basis ``loss``.

    ``loss`` is any loss of :mod:`suite.losses` on the basis ``inputs (D, d)`` (energy,
    infidelity, tomography, the MSE); every step computes each member's outputs on the
    whole basis, its function-space gradient ``(2 Re g, 2 Im g)`` (float64) and pulls it
    back through the network: ``theta <- theta - eta dL/dtheta`` (docs/theory.md §7).
    ``observables`` are further losses logged with ``"loss"`` (e.g. an infidelity to the
    exact ground state). Everything else is as in :func:`train_ensemble`: member ``i``
    from ``(seed, i)``, sharding over ``devices``, the fast update of one-hidden-layer
    networks (its ``pullback``), ``dtype``, blocks and checkpoints. Every argument is
    validated before any work.
    """
    x = check_network_inputs(nnqs, inputs)
    watched = check_losses(loss, observables, x.shape[0])
    ids, steps, n_devices = check_run(
        seed, members, learning_rate, log_steps, dtype, devices, method, block
    )
    n_points = x.shape[0]
    plan = _plan(nnqs, x, ids, n_points, n_devices, dtype, method, block)
    layout = plan.layout
    x_engine = _engine_inputs(plan.engine, x, plan.np_compute)
    x_basis = chunk_rows(x_engine, layout.train_chunk, layout.n_train_chunks)
    # placed once: the loss is also the first watched value (a Hamiltonian at D = 2^20 is
    # a few hundred MB)
    x_basis, watched_placed = plan.replicate((x_basis, tuple(watched.values())))
    run = plan.run(
        plan.programs(n_points),
        learning_rate,
        (x_basis, watched_placed[0]),
        (x_basis, watched_placed),
        len(watched),
        label=_loss_label(watched),
    )
    with jax.default_matmul_precision("highest"):
        values, sums = run.slices(plan.initial(seed), steps, n_points, checkpoints)
    named = {name: values[:, k] for k, name in enumerate(watched)}
    return LossEnsembleStats(ids, steps, named, *_sum_fields(sums))


def _loss_label(watched: Mapping[str, Loss]) -> str:
    """What a run on a loss logs, for its snapshots: each watched value's name, loss type
    and a SHA-256 of its arrays, so that a snapshot of another problem is not resumed."""
    parts = []
    for name, loss in watched.items():
        digest = hashlib.sha256(str(jax.tree.structure(loss)).encode())
        for leaf in jax.tree.leaves(loss):
            digest.update(np.ascontiguousarray(leaf).tobytes())
        parts.append(f"{name}={type(loss).__name__}:{digest.hexdigest()[:16]}")
    return ", ".join(parts)


def _sum_fields(sums: np.ndarray) -> tuple[np.ndarray, ...]:
    """The five sums ``(L, 5, D)`` as the fields of the stats, in :data:`SUMS` order."""
    return tuple(sums[:, k] for k in range(len(SUMS)))


@dataclass(frozen=True)
class _Plan:
    """How a run's members are updated and laid out (the common part of the two entry
    points): the update (its ``template`` if fast), the layout over the devices, the
    compute dtype, and the members padded with copies of the last one (weight 0)."""

    nnqs: NNQS
    template: Template | None
    engine: Any
    layout: Layout
    devices: tuple[Any, ...]
    dtype: str
    ids: np.ndarray
    in_dim: int

    @property
    def np_compute(self) -> Any:
        return np.float32 if self.dtype == "float32" else np.float64

    def programs(self, loss_points: int | None = None) -> _Programs:
        key = self.template if self.template is not None else self.nnqs
        return _compiled(key, self.layout, self.devices, loss_points)

    def initial(self, seed: int) -> Callable[[], Any]:
        padded = np.concatenate([self.ids, np.full(self.layout.padded - self.ids.size,
                                                   self.ids[-1])])  # fmt: skip
        return lambda: self.engine.state(init_ensemble(self.nnqs, seed, padded, self.in_dim),
                                         self.np_compute)  # fmt: skip

    @property
    def mesh(self) -> Mesh:
        return Mesh(np.array(self.devices), (AXIS,))

    def replicate(self, tree: Any) -> Any:
        """``tree`` on every device of the run (arrays already there are not copied)."""
        return jax.device_put(tree, NamedSharding(self.mesh, P()))

    def run(
        self, programs: _Programs, learning_rate: float, train: Any, evaluation: Any,
        n_values: int, label: str | None = None,
    ) -> _Run:  # fmt: skip
        """The laid-out run; its snapshots name the update, and ``label`` (what a run on a
        loss logs) after it."""
        members = NamedSharding(self.mesh, P(AXIS))
        valid = (np.arange(self.layout.padded) < self.ids.size).astype(np.float64)
        update = "fast" if self.template is not None else "autodiff"
        return _Run(
            programs,
            update if label is None else f"{update} on {label}",
            self.ids.size,
            n_values,
            members,
            jax.device_put(valid, members),
            self.replicate(np.asarray(learning_rate, self.np_compute)),
            self.replicate(train),
            self.replicate(evaluation),
        )


def _plan(
    nnqs: NNQS, x: np.ndarray, ids: np.ndarray, n_train: int, n_devices: int, dtype: str,
    method: Method, block: int | None,
) -> _Plan:  # fmt: skip
    """Pick the update (``method``) and lay out ``ids`` over ``n_devices`` devices for
    gradients over ``n_train`` points of the basis ``x``."""
    in_dim = x.shape[1]
    template = fast_template(nnqs, in_dim) if method != "autodiff" else None
    if method == "fast" and template is None:
        raise ValueError(
            "method='fast' needs a decoupled NNQS of two identical one-hidden-layer networks "
            "(relu, erf or cos; nothing frozen); use method='auto' or 'autodiff'"
        )
    width = template.width if template is not None else _width_estimate(nnqs, in_dim)
    devices_used = tuple(jax.local_devices()[:n_devices])
    on_cpu = devices_used[0].platform == "cpu"
    layout = plan_layout(
        *(ids.size, n_devices, n_train, x.shape[0], width, block, default_lanes(devices_used)),
        block_elements=BLOCK_ELEMENTS if on_cpu else ACCELERATOR_BLOCK_ELEMENTS,
    )
    return _Plan(nnqs, template, _engine(template if template is not None else nnqs), layout,
                 devices_used, dtype, ids, in_dim)  # fmt: skip


@dataclass(frozen=True)
class _Run:
    """A laid-out run: its programs, which update it uses, its members (``count``, before
    padding), the number of per-member values it logs, and the device arrays every slice
    takes."""

    programs: _Programs
    engine: str
    count: int
    n_values: int
    member_sharding: NamedSharding
    valid: Array
    lr: Array
    train: Any
    evaluation: Any

    def slices(
        self, initial: Callable[[], Any], steps: np.ndarray, n_points: int,
        checkpoints: Checkpoints | None,
    ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """Run from the ``initial()`` state at step 0, or from the checkpoints' snapshot,
        to the last logged step, slice by slice
        (:func:`~suite.training.checkpoint.slice_bounds`); the results at ``steps``:
        per-member values ``(L, V, m)`` and sums ``(L, 5, D)``, float64."""
        bounds = slice_bounds(steps)
        shapes = jax.eval_shape(initial)
        like = [
            jax.ShapeDtypeStruct((self.count, *leaf.shape[1:]), leaf.dtype)
            for leaf in jax.tree.leaves(shapes)
        ]

        def accept(snapshot: Snapshot) -> str | None:
            return check_snapshot(
                snapshot, self.engine, like, bounds, steps, self.n_values, n_points
            )

        snapshot = checkpoints.restore(accept) if checkpoints is not None else None
        if snapshot is None:
            state: Any = initial()
            values: list[np.ndarray] = []
            sums: list[np.ndarray] = []
            start = 0
        else:
            saved = [_pad(leaf, s.shape[0]) for leaf, s in
                     zip(snapshot.state, jax.tree.leaves(shapes), strict=True)]  # fmt: skip
            state = jax.tree.unflatten(jax.tree.structure(shapes), saved)
            values, sums = list(snapshot.values), list(snapshot.sums)
            start = int(np.searchsorted(bounds, snapshot.step))
        state = jax.device_put(state, self.member_sharding)
        logged = set(steps.tolist())
        if snapshot is None and 0 in logged:
            self._log(state, n_points, values, sums)
        for done, bound in zip(bounds[start:-1], bounds[start + 1 :], strict=True):
            state = self.programs.advance(state, self.lr, np.int32(bound - done), self.train)
            jax.block_until_ready(state)
            if int(bound) in logged:
                self._log(state, n_points, values, sums)
            if checkpoints is not None:
                checkpoints.reached(int(bound), len(values), functools.partial(
                    self._snapshot, state, int(bound), n_points, values, sums
                ))  # fmt: skip
        return np.stack(values), np.stack(sums)

    def _log(self, state: Any, n_points: int, values: list[Any], sums: list[Any]) -> None:
        """Append the results at the current step (the members', the basis's)."""
        v, s = self.programs.evaluate(state, self.valid, self.evaluation)
        values.append(np.asarray(v, np.float64)[: self.count].T)
        sums.append(np.asarray(s, np.float64)[:, :n_points])

    def _snapshot(
        self, state: Any, step: int, n_points: int, values: list[Any], sums: list[Any]
    ) -> Snapshot:
        leaves = tuple(np.asarray(leaf)[: self.count] for leaf in jax.tree.leaves(state))
        return Snapshot(
            step,
            self.engine,
            leaves,
            np.stack(values) if values else np.zeros((0, self.n_values, self.count)),
            np.stack(sums) if sums else np.zeros((0, 5, n_points)),
        )


def _pad(saved: np.ndarray, size: int) -> np.ndarray:
    """A saved leaf of the run's members padded to ``size`` with copies of the last one
    (as :func:`train_ensemble` pads the members it initialises)."""
    if size == saved.shape[0]:
        return saved
    return np.concatenate([saved, np.repeat(saved[-1:], size - saved.shape[0], axis=0)])
