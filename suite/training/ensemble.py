"""The entry point :func:`train_ensemble` and its compiled, sharded programs, run slice
by slice (:mod:`suite.training`, "Sharding", "Steps and logs" and "Slices and
checkpoints"; docs/theory.md §3, §5)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

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
from suite.training.statistics import EnsembleStats
from suite.training.validation import validate_arguments

Array = jax.Array
Method = Literal["auto", "fast", "autodiff"]
#: the mesh axis the members are sharded over
AXIS = "members"


@dataclass(frozen=True)
class _Programs:
    """The two jitted, sharded programs of a run: ``advance(state, lr, n, train) -> state``
    (``n`` updates; the state buffers are donated) and ``evaluate(state, valid, eval) ->
    (train loss, test loss, sums)`` at the current step."""

    advance: Callable[..., Any]
    evaluate: Callable[..., Any]


def _programs(engine: Any, layout: Layout, mesh: Mesh) -> _Programs:
    def advance(state: Any, lr: Array, n: Array, train: Any) -> Any:
        x_train, y_train, w_train = train

        def block_step(block_state: Any) -> Any:
            grads = sum_chunks(
                lambda x, y, w: engine.grads(block_state, x, y, w), (x_train, y_train, w_train)
            )
            return engine.update(block_state, grads, lr)

        def step(_: Array, lanes: tuple[Any, ...]) -> tuple[Any, ...]:
            return tuple(update_blocks(block_step, lane, layout) for lane in lanes)

        return join_lanes(jax.lax.fori_loop(0, n, step, split_lanes(state, layout)))

    def evaluate(state: Any, valid: Array, evaluation: Any) -> Any:
        x_eval, phi_eval, w_fit, w_test = evaluation

        def block_stats(block_state: Any, block_valid: Array) -> Any:
            u, v = stack_chunks(lambda x: engine.outputs(block_state, x), (x_eval,))
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

        outs = [
            map_blocks(block_stats, layout, lane, v)
            for lane, v in zip(split_lanes(state, layout), split_lanes(valid, layout), strict=True)
        ]
        fit = jnp.concatenate([o[0].reshape(-1) for o in outs])
        test = jnp.concatenate([o[1].reshape(-1) for o in outs])
        return fit, test, jax.lax.psum(sum(jnp.sum(o[2], axis=0) for o in outs), AXIS)

    advance_sharded = jax.shard_map(
        advance, mesh=mesh, in_specs=(P(AXIS), P(), P(), P()), out_specs=P(AXIS)
    )
    evaluate_sharded = jax.shard_map(
        evaluate, mesh=mesh, in_specs=(P(AXIS), P(AXIS), P()), out_specs=(P(AXIS), P(AXIS), P())
    )
    return _Programs(jax.jit(advance_sharded, donate_argnums=(0,)), jax.jit(evaluate_sharded))


@functools.lru_cache(maxsize=32)
def _compiled(engine_key: Any, layout: Layout, devices: tuple[Any, ...]) -> _Programs:
    engine = (
        FastEngine(engine_key) if isinstance(engine_key, Template) else AutodiffEngine(engine_key)
    )
    mesh = Mesh(np.array(devices), (AXIS,))
    return _programs(engine, layout, mesh)


def _width_estimate(nnqs: NNQS, in_dim: int) -> int:
    """Hidden units per network, for block sizes (parameters per member / (2 (d + 2)))."""
    shapes = jax.eval_shape(lambda: nnqs.init(jax.random.key(0), in_dim))
    size = sum(math.prod(s.shape) for s in jax.tree.leaves(shapes))
    return max(1, size // (2 * (in_dim + 2)))


def _constants(
    engine: Any, layout: Layout, x: np.ndarray, phi: np.ndarray, train: np.ndarray, np_compute: Any
) -> tuple[np.ndarray, ...]:
    """The run's data, rounded to the compute dtype once, in the layout's chunks: train
    inputs, targets and weights; evaluation inputs and targets; the train and test
    weights of the logged losses (``(x_train, y_train, w_train, x_eval, phi_eval,
    w_fit, w_test)``, as the program takes them)."""
    n_points, n_train = x.shape[0], train.size
    x_run = x.astype(np_compute).astype(np.float64)
    phi_run = np.stack([phi.real, phi.imag]).astype(np_compute).astype(np.float64)
    x_engine = engine.inputs(x_run)
    x_train = chunk_rows(
        x_engine[train].astype(np_compute), layout.train_chunk, layout.n_train_chunks
    )
    y_train = chunk_rows(
        phi_run[:, train].T.astype(np_compute), layout.train_chunk, layout.n_train_chunks
    )
    y_train = np.moveaxis(y_train, -1, 1)  # (chunks, 2, chunk)
    w_train = chunk_rows(
        np.full(n_train, 1.0 / n_train, np_compute), layout.train_chunk, layout.n_train_chunks, 0.0
    )
    x_eval = chunk_rows(x_engine.astype(np_compute), layout.eval_chunk, layout.n_eval_chunks)
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
    # over 60 lines: the run in order (validate, pick the update, lay out, place, run),
    # each step a call; splitting it further would only pass its dozen locals around
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
    in_dim = x.shape[1]
    template = fast_template(nnqs, in_dim) if method != "autodiff" else None
    if method == "fast" and template is None:
        raise ValueError(
            "method='fast' needs a decoupled NNQS of two identical one-hidden-layer networks "
            "(relu, erf or cos; nothing frozen); use method='auto' or 'autodiff'"
        )
    engine: Any = FastEngine(template) if template is not None else AutodiffEngine(nnqs)
    width = template.width if template is not None else _width_estimate(nnqs, in_dim)

    n_points, n_train = x.shape[0], train.size
    devices_used = tuple(jax.local_devices()[:n_devices])
    on_cpu = devices_used[0].platform == "cpu"
    layout = plan_layout(
        *(ids.size, n_devices, n_train, n_points, width, block, default_lanes(devices_used)),
        block_elements=BLOCK_ELEMENTS if on_cpu else ACCELERATOR_BLOCK_ELEMENTS,
    )
    compute = jnp.float32 if dtype == "float32" else jnp.float64
    np_compute = np.float32 if dtype == "float32" else np.float64

    # members padded with copies of the last one; padded copies have weight 0
    padded = np.concatenate([ids, np.full(layout.padded - ids.size, ids[-1])])
    valid = (np.arange(layout.padded) < ids.size).astype(np.float64)

    consts = _constants(engine, layout, x, phi, train, np_compute)
    mesh = Mesh(np.array(devices_used), (AXIS,))
    member_sharding = NamedSharding(mesh, P(AXIS))
    replicated = NamedSharding(mesh, P())
    run = _Run(
        _compiled(template if template is not None else nnqs, layout, devices_used),
        "fast" if template is not None else "autodiff",
        ids.size,
        member_sharding,
        jax.device_put(valid, member_sharding),
        jax.device_put(np.asarray(learning_rate, np_compute), replicated),
        jax.device_put(consts[:3], replicated),
        jax.device_put(consts[3:], replicated),
    )

    def initial() -> Any:
        return engine.state(init_ensemble(nnqs, seed, padded, in_dim), compute)

    with jax.default_matmul_precision("highest"):  # float32 is float32, not TF32 on GPUs
        train_loss, test_loss, sums = run.slices(initial, steps, n_points, checkpoints)
    return EnsembleStats(
        members=ids,
        steps=steps,
        train_loss=train_loss,
        test_loss=test_loss,
        sum_u=sums[:, 0],
        sum_v=sums[:, 1],
        sum_uu=sums[:, 2],
        sum_vv=sums[:, 3],
        sum_uv=sums[:, 4],
    )


@dataclass(frozen=True)
class _Run:
    """A laid-out run: its programs, which update it uses, its members (``count``, before
    padding) and the device arrays every slice takes."""

    programs: _Programs
    engine: str
    count: int
    member_sharding: NamedSharding
    valid: Array
    lr: Array
    train: Any
    evaluation: Any

    def slices(
        self, initial: Callable[[], Any], steps: np.ndarray, n_points: int,
        checkpoints: Checkpoints | None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
        """Run from the ``initial()`` state at step 0, or from the checkpoints' snapshot,
        to the last logged step, slice by slice
        (:func:`~suite.training.checkpoint.slice_bounds`); the results at ``steps``: train
        and test losses ``(L, m)`` and sums ``(L, 5, D)``, float64."""
        bounds = slice_bounds(steps)
        shapes = jax.eval_shape(initial)
        like = [
            jax.ShapeDtypeStruct((self.count, *leaf.shape[1:]), leaf.dtype)
            for leaf in jax.tree.leaves(shapes)
        ]

        def accept(snapshot: Snapshot) -> str | None:
            return check_snapshot(snapshot, self.engine, like, bounds, steps, n_points)

        snapshot = checkpoints.restore(accept) if checkpoints is not None else None
        if snapshot is None:
            state: Any = initial()
            fit: list[np.ndarray] = []
            test: list[np.ndarray] = []
            sums: list[np.ndarray] = []
            start = 0
        else:
            saved = [_pad(leaf, s.shape[0]) for leaf, s in
                     zip(snapshot.state, jax.tree.leaves(shapes), strict=True)]  # fmt: skip
            state = jax.tree.unflatten(jax.tree.structure(shapes), saved)
            fit, test = list(snapshot.train_loss), list(snapshot.test_loss)
            sums = list(snapshot.sums)
            start = int(np.searchsorted(bounds, snapshot.step))
        state = jax.device_put(state, self.member_sharding)
        logged = set(steps.tolist())
        if snapshot is None and 0 in logged:
            self._log(state, n_points, fit, test, sums)
        for done, bound in zip(bounds[start:-1], bounds[start + 1 :], strict=True):
            state = self.programs.advance(state, self.lr, np.int32(bound - done), self.train)
            jax.block_until_ready(state)
            if int(bound) in logged:
                self._log(state, n_points, fit, test, sums)
            if checkpoints is not None:
                checkpoints.reached(int(bound), len(fit), functools.partial(
                    self._snapshot, state, int(bound), n_points, fit, test, sums
                ))  # fmt: skip
        return np.stack(fit), np.stack(test), np.stack(sums)

    def _log(
        self, state: Any, n_points: int, fit: list[Any], test: list[Any], sums: list[Any]
    ) -> None:
        """Append the results at the current step (the members', the basis's)."""
        f, t, s = self.programs.evaluate(state, self.valid, self.evaluation)
        fit.append(np.asarray(f, np.float64)[: self.count])
        test.append(np.asarray(t, np.float64)[: self.count])
        sums.append(np.asarray(s, np.float64)[:, :n_points])

    def _snapshot(
        self, state: Any, step: int, n_points: int, fit: list[Any], test: list[Any],
        sums: list[Any],
    ) -> Snapshot:  # fmt: skip
        leaves = tuple(np.asarray(leaf)[: self.count] for leaf in jax.tree.leaves(state))
        empty = np.zeros((0, self.count))
        return Snapshot(
            step,
            self.engine,
            leaves,
            np.stack(fit) if fit else empty,
            np.stack(test) if test else empty,
            np.stack(sums) if sums else np.zeros((0, 5, n_points)),
        )


def _pad(saved: np.ndarray, size: int) -> np.ndarray:
    """A saved leaf of the run's members padded to ``size`` with copies of the last one
    (as :func:`train_ensemble` pads the members it initialises)."""
    if size == saved.shape[0]:
        return saved
    return np.concatenate([saved, np.repeat(saved[-1:], size - saved.shape[0], axis=0)])
