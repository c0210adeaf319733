"""Finite-width ensembles trained by full-batch gradient descent (docs/theory.md §3, §5).

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
losses of docs/theory.md §5 (:class:`EnsembleSummary`).

:func:`train_on_loss` trains the same way on any loss of :mod:`suite.losses` over the
whole basis (energy, infidelity, tomography; docs/theory.md §7.2): each step evaluates
every member on the basis, takes its function-space gradient ``(2 Re g, 2 Im g)`` in
float64 and pulls it back through the network (the engines' ``pullback``); it logs each
member's loss and observables and the same sums (:class:`LossEnsembleStats`), with the
same sharding, blocks, dtypes and checkpoints.

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
* **Steps and logs.** Two jitted programs: ``advance`` runs ``n`` updates in a
  ``fori_loop`` with a traced bound (the parameter buffers are donated: it returns the
  new parameters into them), and ``evaluate`` computes the statistics at the current
  step on device (psum over devices): ``(D,)`` sums and ``(m,)`` losses come back, never
  ``(m, D)``. The learning rate and the step counts are traced, so changing them does
  not recompile.
* **Slices and checkpoints** (:mod:`~suite.training.checkpoint`). A run is cut at every
  logged step and every ``ceil(last / SLICES)`` steps: one ``advance`` call per slice,
  one ``evaluate`` per logged step. Between slices the run offers its
  :class:`~suite.training.checkpoint.Checkpoints` a snapshot (parameters of the real
  members, the step, the results so far), and a run given a snapshot resumes from it.
  The cuts depend on the logged steps only, so a resumed run makes the calls of an
  uninterrupted one and ends with the same bits.

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

The package's modules: :mod:`~suite.training.statistics` (results and estimators),
:mod:`~suite.training.validation`, :mod:`~suite.training.fastpath` (recognition),
:mod:`~suite.training.layout` (blocks, lanes, chunks), :mod:`~suite.training.engines`
(the two updates), :mod:`~suite.training.checkpoint` (slices and snapshots) and
:mod:`~suite.training.ensemble` (the programs and the entry point).
"""

from suite.training.ensemble import Method, train_ensemble, train_on_loss
from suite.training.fastpath import Template, fast_template
from suite.training.layout import ACCELERATOR_BLOCK_ELEMENTS, BLOCK_ELEMENTS
from suite.training.statistics import (
    SUMS,
    EnsembleStats,
    EnsembleSummary,
    LossEnsembleStats,
    combine,
    jackknife_sem,
    leave_out,
    summarize,
)
from suite.training.validation import DTYPES

__all__ = [
    "ACCELERATOR_BLOCK_ELEMENTS",
    "BLOCK_ELEMENTS",
    "DTYPES",
    "SUMS",
    "EnsembleStats",
    "EnsembleSummary",
    "LossEnsembleStats",
    "Method",
    "Template",
    "combine",
    "fast_template",
    "jackknife_sem",
    "leave_out",
    "summarize",
    "train_ensemble",
    "train_on_loss",
]
