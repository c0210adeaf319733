"""Ensemble gradient-descent throughput: :func:`suite.training.train_ensemble` (docs/theory.md §5).

``python -m analysis.bench.training`` times full-batch GD of an ensemble of M = 256
decoupled one-hidden-layer ReLU NNQS (NTK parameterisation, ``sw = sb = 1``) on
B = 256 train points of the TFIM 3x3 quench target, float32, at widths 1024 and 4096,
and compares, in the same process:

* **ours**: ``train_ensemble`` (the ``"fast"`` path it selects for this network); the
  per-step time is ``(t(S steps) - t(1 step)) / (S - 1)`` of whole calls, so member
  initialisation, transfers and the logged evaluation cancel out;
* **(a) baseline**: a straightforward ``jit`` of ``jax.vmap(jax.grad(loss))`` over the
  same members with the same loss, ``S`` steps in one ``fori_loop`` (no Python dispatch
  per step), parameters donated;
* **(b) matmul rate**: the best of several large square float32 ``jnp.dot``.

FLOPs are counted analytically per member-step (printed): for each of the two networks
(u and v) of width n on B points of dimension d, forward ``2Bdn`` (first layer) +
``2Bn`` (readout), backward ``2Bdn`` (first-layer weight gradient) + ``2Bn`` (readout
gradient) + ``2Bn`` (hidden-layer gradient), i.e. ``2 x Bn(4d + 6)``; biases, the
activation and the parameter update are not counted. "Where the time goes" is measured
by running the same blocked program truncated after the forward pass and after the
gradient (differences of per-step times), by timing one lane against the default lanes,
and by the cost of one logged evaluation (a run logged at every step minus one logged at
its end).

Every timing is the best of ``--repeats`` calls after a warm-up, each started when the
machine has been idle for 0.3 s (waiting at most 20 s); the load is printed before and
after. Other processes on a small machine still distort timings: compare only figures
from one quiet run. Figures only: this is not a test.
"""

from __future__ import annotations

import argparse
import functools
import os
import time
from collections.abc import Callable
from typing import Any

import suite  # noqa: F401  (first: enables JAX float64; the runs here cast to float32)

# isort: split

import jax
import jax.numpy as jnp
import numpy as np

from suite import networks as nw
from suite import training
from suite.targets import TFIMQuench, build_target
from suite.training import layout as blocks
from suite.training.engines import FastEngine, flops_per_member_step

N_TRAIN, SEED, DATA_SEED = 256, 0, 0
#: a learning rate well inside the stable range for every width (NTK parameterisation)
LEARNING_RATE = 0.5


def _cpu_times() -> tuple[int, int] | None:
    try:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
    except OSError:  # not Linux
        return None
    return sum(values), values[3] + values[4]


def wait_for_idle(timeout: float = 20.0, window: float = 0.3, busy: float = 0.05) -> None:
    """Wait (at most ``timeout`` s) until the machine was idle for ``window`` s.

    Other users' jobs on a small shared machine distort timings by tens of percent; each
    timed call starts in an idle moment (it can still be disturbed while it runs).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = _cpu_times()
        if before is None:
            return
        time.sleep(window)
        after = _cpu_times()
        assert after is not None
        total, idle = after[0] - before[0], after[1] - before[1]
        if total > 0 and 1 - idle / total < busy:
            return


def best_of(call: Callable[[], Any], repeats: int, idle_timeout: float = 20.0) -> float:
    """Seconds of the fastest of ``repeats`` calls after one warm-up.

    Each call waits (at most ``idle_timeout`` s, 0: not at all) for an idle moment.
    """
    jax.block_until_ready(call())
    seconds = []
    for _ in range(repeats):
        wait_for_idle(idle_timeout)
        start = time.perf_counter()
        jax.block_until_ready(call())
        seconds.append(time.perf_counter() - start)
    return min(seconds)


def matmul_rate(repeats: int) -> float:
    """Best float32 GFLOP/s of square ``jnp.dot`` (n = 2048 and 4096)."""
    best = 0.0
    for n in (2048, 4096):
        a = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
        b = jax.random.normal(jax.random.key(2), (n, n), jnp.float32)
        dot = jax.jit(jnp.dot)
        seconds = best_of(lambda a=a, b=b, dot=dot: dot(a, b), repeats)
        best = max(best, 2 * n**3 / seconds / 1e9)
    return best


def problem() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The TFIM 3x3 quench basis, its target and ``N_TRAIN`` random train indices."""
    target = build_target(TFIMQuench())
    x, phi = np.asarray(target.inputs), np.asarray(target.psi)
    rng = np.random.default_rng(DATA_SEED)
    return x, phi, np.sort(rng.choice(x.shape[0], N_TRAIN, replace=False))


def baseline(
    nnqs: nw.NNQS, x: np.ndarray, phi: np.ndarray, train: np.ndarray, members: int
) -> tuple[Callable[[int], Any], Callable[[Any], np.ndarray]]:
    """(a): ``run(steps)`` of jit(vmap(grad(loss))) GD, and the train losses of its result."""
    xt = jnp.asarray(x[train], jnp.float32)
    yr = jnp.asarray(phi[train].real, jnp.float32)
    yi = jnp.asarray(phi[train].imag, jnp.float32)
    params = nw.init_ensemble(nnqs, SEED, np.arange(members), x.shape[1])
    params = jax.tree.map(lambda a: a.astype(jnp.float32), params)
    lr = jnp.float32(LEARNING_RATE)

    def loss(trainable: Any, frozen: Any) -> jax.Array:
        u, v = nnqs.parts((trainable, frozen), xt)
        return (jnp.sum((u - yr) ** 2) + jnp.sum((v - yi) ** 2)) / (2 * xt.shape[0])

    @functools.partial(jax.jit, donate_argnums=(0,))
    def descend(trainable: Any, frozen: Any, steps: jax.Array) -> Any:
        def body(_: jax.Array, tr: Any) -> Any:
            g = jax.vmap(jax.grad(loss))(tr, frozen)
            return jax.tree.map(lambda p, q: p - lr * q, tr, g)

        return jax.lax.fori_loop(0, steps, body, trainable)

    def run(steps: int) -> Any:
        trainable = jax.tree.map(jnp.copy, params[0])
        return descend(trainable, params[1], jnp.int32(steps)), params[1]

    def losses(result: Any) -> np.ndarray:
        return 2 * np.asarray(jax.vmap(loss)(*result))  # (1/B) sum |psi - phi|^2

    return run, losses


def ours(
    nnqs: nw.NNQS, x: np.ndarray, phi: np.ndarray, train: np.ndarray, members: int
) -> Callable[..., training.EnsembleStats]:
    """``run(steps, log_steps)``: ``train_ensemble`` of ``members`` members, float32."""

    def run(steps: int, log_steps: list[int] | None = None) -> training.EnsembleStats:
        return training.train_ensemble(
            nnqs,
            x,
            phi,
            train,
            seed=SEED,
            members=range(members),
            learning_rate=LEARNING_RATE,
            log_steps=log_steps or [steps],
            dtype="float32",
        )

    return run


# long: the three truncated programs share the engine, layout and chunks built here
def phases(
    nnqs: nw.NNQS, x: np.ndarray, phi: np.ndarray, train: np.ndarray, members: int
) -> dict[str, Callable[[int], Any]]:
    """The blocked program of ``train_ensemble`` truncated after each phase (one device).

    Each truncated step feeds a negligible multiple of its result back into the state,
    so nothing is hoisted out of the step loop.
    """
    template = training.fast_template(nnqs, x.shape[1])
    assert template is not None
    engine = FastEngine(template)
    lanes = blocks.default_lanes(jax.local_devices()[:1])
    layout = blocks.plan_layout(members, 1, N_TRAIN, x.shape[0], template.width, None, lanes)
    params = nw.init_ensemble(nnqs, SEED, np.arange(layout.padded), x.shape[1])
    state = blocks.split_lanes(engine.state(params, jnp.float32), layout)
    x_engine = engine.inputs(x)[train].astype(np.float32)
    xc = blocks.chunk_rows(x_engine, layout.train_chunk, layout.n_train_chunks)
    yc = np.moveaxis(
        blocks.chunk_rows(
            np.stack([phi.real, phi.imag])[:, train].T.astype(np.float32),
            layout.train_chunk,
            layout.n_train_chunks,
        ),
        -1,
        1,
    )
    wc = blocks.chunk_rows(
        np.full(N_TRAIN, 1 / N_TRAIN, np.float32), layout.train_chunk, layout.n_train_chunks, 0.0
    )
    lr = jnp.float32(LEARNING_RATE)
    tiny = jnp.float32(1e-30)

    def nudge(block: Any, value: jax.Array) -> Any:
        w0, w1, b1 = block
        return w0, w1, b1 + tiny * jnp.sum(value)

    def forward(block: Any) -> Any:
        def one(xb: jax.Array, yb: jax.Array, wb: jax.Array) -> jax.Array:
            return engine._forward(*engine._nets(block), xb)[1]

        return nudge(block, blocks.sum_chunks(one, (xc, yc, wc)))

    def gradient(block: Any) -> Any:
        grads = blocks.sum_chunks(lambda *c: engine.grads(block, *c), (xc, yc, wc))
        return nudge(block, grads[0])

    def step(block: Any) -> Any:
        grads = blocks.sum_chunks(lambda *c: engine.grads(block, *c), (xc, yc, wc))
        return engine.update(block, grads, lr)

    def program(fn: Callable[[Any], Any]) -> Callable[[int], Any]:
        @jax.jit
        def run(s: Any, steps: jax.Array) -> Any:
            def body(_: jax.Array, s: Any) -> Any:
                return tuple(blocks.update_blocks(fn, lane, layout) for lane in s)

            return jax.lax.fori_loop(0, steps, body, s)

        return lambda steps: run(state, jnp.int32(steps))

    return {"forward": program(forward), "gradient": program(gradient), "step": program(step)}


def per_step(
    run: Callable[[int], Any], steps: int, repeats: int, idle_timeout: float = 20.0
) -> float:
    """``(t(steps) - t(1)) / (steps - 1)``, each the best of ``repeats`` (:func:`best_of`)."""
    many = best_of(lambda: run(steps), repeats, idle_timeout)
    return (many - best_of(lambda: run(1), repeats, idle_timeout)) / (steps - 1)


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


# long: one report read top to bottom, each figure printed where it is measured
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--members", type=int, default=256)
    parser.add_argument("--steps", type=int, default=6, help="steps per timed call (>= 2)")
    parser.add_argument("--baseline-steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=4, help="timed calls after a warm-up")
    args = parser.parse_args(argv)
    if args.steps < 2 or args.baseline_steps < 2:
        parser.error("--steps and --baseline-steps must be at least 2")

    print(
        f"jax {jax.__version__}, devices {jax.devices()}, XLA_FLAGS={os.environ.get('XLA_FLAGS')!r}"
    )
    print(load())
    peak = matmul_rate(args.repeats)
    print(f"(b) float32 matmul rate (best square jnp.dot): {peak:.1f} GFLOP/s")
    x, phi, train = problem()
    d = x.shape[1]
    print(
        f"problem: TFIM 3x3 target, D = {x.shape[0]}, d = {d}, B = {N_TRAIN}, "
        f"M = {args.members}, float32, lr = {LEARNING_RATE}"
    )
    print(
        "FLOPs per member-step = 2 nets x B n (4 d + 6)  [forward 2Bdn + 2Bn, backward "
        "2Bdn + 2Bn + 2Bn]"
    )
    rows = []
    for width in args.widths:
        nnqs = nw.decoupled(nw.mlp(1, width))
        flops = flops_per_member_step(N_TRAIN, width, d)
        run_ours = ours(nnqs, x, phi, train, args.members)
        t_ours = per_step(run_ours, args.steps, args.repeats)
        run_base, base_losses = baseline(nnqs, x, phi, train, args.members)
        t_base = best_of(lambda rb=run_base: rb(args.baseline_steps), 1) / args.baseline_steps
        # same members, same loss: the losses after the same number of steps agree
        ref = base_losses(run_base(args.baseline_steps))
        got = run_ours(args.baseline_steps).train_loss[-1]
        agreement = float(np.max(np.abs(got - ref) / np.abs(ref)))
        blocks.LANES = 1
        t_one_lane = per_step(run_ours, args.steps, args.repeats)
        blocks.LANES = None
        parts = phases(nnqs, x, phi, train, args.members)
        t_fwd, t_grad, t_step = (per_step(parts[k], args.steps, args.repeats) for k in parts)
        logged = list(range(args.steps + 1))  # every step logged: args.steps extra evaluations
        t_log = (
            best_of(lambda r=run_ours, lg=logged: r(args.steps, lg), args.repeats)
            - best_of(lambda r=run_ours: r(args.steps), args.repeats)
        ) / args.steps
        layout = blocks.plan_layout(
            args.members,
            1,
            N_TRAIN,
            x.shape[0],
            width,
            None,
            blocks.default_lanes(jax.local_devices()[:1]),
        )
        rate = args.members / t_ours
        rows.append((width, rate, rate * flops / 1e9, args.members / t_base))
        print(
            f"\nwidth {width}: {flops / 1e6:.1f} MFLOP per member-step; blocks of "
            f"{layout.block} members x {layout.train_chunk} points "
            f"({layout.n_blocks} blocks in {layout.lanes} lanes, {layout.n_train_chunks} "
            "point chunks)"
        )
        print(
            f"  ours      {t_ours * 1e3:8.1f} ms/step  {rate:8.0f} member-steps/s  "
            f"{rate * flops / 1e9:6.1f} GFLOP/s  = {rate * flops / 1e9 / peak:5.1%} of (b)"
        )
        print(
            f"  (a) vmap  {t_base * 1e3:8.1f} ms/step  {args.members / t_base:8.0f} "
            f"member-steps/s  {args.members / t_base * flops / 1e9:6.1f} GFLOP/s   "
            f"ours / (a) = {t_base / t_ours:.1f}x"
        )
        print(
            f"  train losses after {args.baseline_steps} steps, ours vs (a): max relative "
            f"difference {agreement:.1e}"
        )
        print(
            f"  where the time goes (per step, same blocked program truncated): forward "
            f"(Z = W X~^T GEMM, relu-readout) {t_fwd * 1e3:.1f} ms ({t_fwd / t_step:.0%}); "
            f"backward (G = r relu'(Z), P = G X~ GEMM) {(t_grad - t_fwd) * 1e3:.1f} ms "
            f"({(t_grad - t_fwd) / t_step:.0%}); update {(t_step - t_grad) * 1e3:.1f} ms "
            f"({(t_step - t_grad) / t_step:.0%}); lanes: {layout.lanes} -> 1 lane "
            f"{t_one_lane * 1e3:.1f} ms/step ({t_one_lane / t_ours:.2f}x); one logged "
            f"evaluation (all {x.shape[0]} points: losses and sums) {t_log * 1e3:.1f} ms"
        )
    print("\nsummary (goals: >= 3x (a), >= 40% of (b))")
    print(f"{'width':>6} {'member-steps/s':>15} {'GFLOP/s':>8} {'% of (b)':>9} {'x (a)':>6}")
    for width, rate, gflops, base_rate in rows:
        print(
            f"{width:>6} {rate:>15.0f} {gflops:>8.1f} {gflops / peak:>9.1%} "
            f"{rate / base_rate:>6.1f}"
        )
    print(load())


if __name__ == "__main__":
    main()
