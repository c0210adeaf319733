"""The quick-start demo: build a target, evaluate its kernels, print a summary.

Everything here is a small, fixed-size run of library calls (docs/theory.md §2, §4, §5):
the default TFIM quench target, the infinite-width QS-NTK of the paper's
decoupled ReLU NNQS between the whole basis and a random train set (discrete fast
path), the empirical QS-NTK of one finite network against it, the train-set
spectrum and the infinite-width test loss it predicts.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import numpy as np

from suite import networks
from suite.dynamics import max_learning_rate, predict_gd, train_spectrum
from suite.kernels.empirical import empirical_qs_ntk
from suite.kernels.gram import diagonal, gram
from suite.targets import TFIMQuench, build_target, target_summary


def run_demo(
    train_size: int = 128, width: int = 1024, depth: int = 1, seed: int = 0
) -> dict[str, Any]:
    """Run the demo and return its summary (plain JSON types)."""
    clock = time.perf_counter()
    target = build_target(TFIMQuench())
    inputs, psi = target.inputs, target.psi
    dimension = inputs.shape[0]
    if not 0 < train_size < dimension:
        raise ValueError(f"train_size must be in [1, {dimension - 1}], got {train_size}")
    rng = np.random.default_rng(seed)
    train = np.sort(rng.choice(dimension, train_size, replace=False))
    test = np.setdiff1d(np.arange(dimension), train)

    nnqs = networks.decoupled(networks.mlp(depth=depth, width=width))
    nngp, ntk = gram(nnqs.infinite, inputs, inputs[train])
    theta = np.asarray(ntk.uu)  # decoupled, identical parts: each part's NTK
    kernel = np.asarray(nngp.uu)
    spectrum = train_spectrum(theta[train])
    eta = 0.5 * max_learning_rate(spectrum)

    variance_test = np.asarray(diagonal(nnqs.infinite, inputs[test])[0].uu)

    def test_loss(t: float) -> float:
        """Mean of the losses on the test set (docs/theory.md §5): |mu - phi|^2 + Var u + Var v."""
        mean, variance = predict_gd(
            theta[train],
            theta[test],
            kernel[train],
            kernel[test],
            variance_test,
            psi[train],
            eta,
            [t],
        )
        return float(np.mean(np.abs(mean[0] - psi[test]) ** 2 + 2 * variance[0]))

    params = nnqs.init(jax.random.key(seed), inputs.shape[1])
    empirical = empirical_qs_ntk(nnqs, params, inputs[train], inputs[train])
    infinite_h = 2 * theta[train]
    deviation = np.linalg.norm(np.asarray(empirical.hermitian()) - infinite_h) / np.linalg.norm(
        infinite_h
    )
    return {
        "target": target_summary(target),
        "network": {"kind": nnqs.kind, "depth": depth, "width": width, "activation": "relu"},
        "train_size": train_size,
        "ntk_train_spectrum": {"min": spectrum.smallest, "max": spectrum.largest},
        "learning_rate": eta,
        "infinite_width_test_loss": {"t=0": test_loss(0.0), "t=inf": test_loss(float("inf"))},
        "empirical_vs_infinite_hermitian_ntk": float(deviation),
        "seconds": round(time.perf_counter() - clock, 2),
    }
