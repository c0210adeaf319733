"""The training-dynamics study (paper Figs. 2-3): finite ensembles against infinite width.

For one quench target, one architecture family and a grid of widths and train-set
sizes: the infinite-width loss curves (continuous time and exact discrete steps,
and t = inf) and those of GD-trained finite-width ensembles at the same logged
steps, their relative deviations and the exponent of the deviation's fall with
width (docs/theory.md §5). The result is one JSON document for the analysis layer.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from jobs.progress import progress_printer
from suite import networks
from suite.supervised import (
    CURVES,
    LossCurves,
    Problem,
    TargetScale,
    after_initialisation,
    convergence_step,
    infinite_width_curve_sets,
    log_steps,
    relative_deviation,
    scale_target,
    split_problem,
    width_exponent,
)
from suite.targets import Target, build_target, make_spec, target_summary
from suite.training import summarize, train_ensemble


@dataclass(frozen=True)
class DynamicsStudy:
    """Parameters of the study; the defaults are the reduced (minutes on 2 cores) version."""

    model: Literal["tfim", "hubbard"] = "tfim"
    target: dict[str, Any] = field(default_factory=dict)
    kind: networks.NNQSKind = "decoupled"
    depth: int = 1
    activation: networks.Activation = "relu"
    widths: tuple[int, ...] = (64, 256, 1024)
    train_size: int = 128
    train_sizes: tuple[int, ...] = (16, 32, 64, 128, 256)
    lr_factor: float = 0.5
    members: int = 64
    log_points: int = 16
    max_steps: int | None = 2000
    tolerance: float = 1e-3
    target_scale: TargetScale = "unit-rms"
    dtype: Literal["float32", "float64"] = "float32"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("widths", "train_sizes"):
            values = getattr(self, name)
            if not values or any(not isinstance(v, int) or v < 1 for v in values):
                raise ValueError(f"{name} must be a non-empty list of positive integers")
        if not (0 < self.lr_factor < 2):
            raise ValueError(
                f"lr_factor must be in (0, 2) (units of eta_max), got {self.lr_factor}"
            )
        if self.members < 2:
            raise ValueError(f"members must be at least 2, got {self.members}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be positive or None, got {self.max_steps}")

    def nnqs(self, width: int) -> networks.NNQS:
        return mlp_nnqs(self.kind, self.activation, self.depth, width)


@functools.cache
def mlp_nnqs(kind: str, activation: str, depth: int, width: int) -> networks.NNQS:
    """The NNQS of ``kind`` over ReLU/erf MLPs of ``depth`` hidden layers of ``width``.

    The same object for the same settings, so compiled training code is reused.
    """
    if kind == "decoupled":
        return networks.decoupled(networks.mlp(depth, width, activation))
    trunk = networks.mlp_trunk(depth, width, activation)
    if kind == "shared_trunk":
        return networks.shared_trunk(trunk)
    if kind == "complex_output":
        return networks.complex_output(trunk)
    raise ValueError(f"kind must be one of decoupled, shared_trunk, complex_output; got {kind!r}")


def finite_curves(
    study: DynamicsStudy, problem: Problem, width: int, learning_rate: float, steps: np.ndarray
) -> LossCurves:
    """Loss curves of a GD-trained ensemble of ``study.members`` networks of ``width``.

    The loss of the mean is the unbiased estimate (the loss of the sample mean less
    the ensemble variance over ``M - 1``): the plain one is biased upward by ``Var/M``.
    """
    stats = train_ensemble(
        study.nnqs(width),
        problem.inputs,
        problem.phi,
        problem.train,
        seed=study.seed,
        members=np.arange(study.members),
        learning_rate=learning_rate,
        log_steps=steps,
        dtype=study.dtype,
    )
    summary = summarize(stats, problem.phi, problem.train)
    return LossCurves(
        summary.steps.astype(float),
        summary.train_loss_of_mean_debiased,
        summary.train_mean_of_losses,
        summary.test_loss_of_mean_debiased,
        summary.test_mean_of_losses,
    )


def _problem(study: DynamicsStudy, target: Target, train_size: int) -> Problem:
    """The supervised problem on ``target`` with ``train_size`` random train points."""
    phi = scale_target(target.psi, study.target_scale)
    # infinite-width kernels do not depend on the width: any width builds the same maps
    nnqs = study.nnqs(study.widths[0])
    return split_problem(nnqs, target.inputs, phi, train_size, study.seed)


def run_dynamics_study(study: DynamicsStudy, progress: bool = True) -> dict[str, Any]:
    """Run the study: Fig. 2 (curves at ``train_size``) and Fig. 3 (losses vs train size)."""
    # over 60 lines: the quick command's whole study in order (curves, Fig. 2, Fig. 3)
    clock = time.perf_counter()
    say = progress_printer(progress)
    target = build_target(make_spec(study.model, **study.target))
    summary = target_summary(target)
    problem = _problem(study, target, study.train_size)
    eta_max = problem.eta_max
    learning_rate = study.lr_factor * eta_max
    step = convergence_step(problem, learning_rate, study.tolerance)
    max_step = step if study.max_steps is None else min(step, study.max_steps)
    steps = log_steps(max_step, study.log_points)
    continuous, discrete, limit = infinite_width_curve_sets(
        problem,
        [
            (learning_rate, steps, False),
            (learning_rate, steps, True),
            (learning_rate, np.asarray([np.inf]), False),
        ],
    )
    say(
        f"target {summary['name']}: eta_max {eta_max:.4g}, converged at step {step}, "
        f"logging {len(steps)} steps up to {max_step}"
    )

    finite: dict[str, Any] = {}
    for width in study.widths:
        tic = time.perf_counter()
        curves = finite_curves(study, problem, width, learning_rate, steps)
        trained = after_initialisation(curves)
        finite[str(width)] = {
            "curves": curves.as_dict(),
            "deviation_continuous": relative_deviation(trained, after_initialisation(continuous)),
            "deviation_discrete": relative_deviation(trained, after_initialisation(discrete)),
            "deviation_at_initialisation": {
                name: float(abs(getattr(curves, name)[0] / getattr(continuous, name)[0] - 1))
                for name in CURVES
            },
            "seconds": round(time.perf_counter() - tic, 2),
        }
        say(
            f"width {width}: {finite[str(width)]['seconds']} s, max deviation "
            f"{max(finite[str(width)]['deviation_continuous'].values()):.3g}"
        )
    exponents = (
        {
            name: width_exponent(
                study.widths, [finite[str(w)]["deviation_continuous"][name] for w in study.widths]
            )
            for name in CURVES
        }
        if len(study.widths) > 1
        else {}
    )

    final: dict[str, Any] = {
        "train_sizes": list(study.train_sizes),
        "infinite_t_final": [],
        "infinite_t_inf": [],
        "finite": {str(w): [] for w in study.widths},
    }
    for size in study.train_sizes:
        sized = _problem(study, target, size)
        rate = study.lr_factor * sized.eta_max
        at_end = np.asarray([float(max_step)])
        at_end_and_inf = infinite_width_curve_sets(
            sized, [(rate, at_end, False), (rate, np.asarray([np.inf]), False)]
        )
        for key, curves in zip(("infinite_t_final", "infinite_t_inf"), at_end_and_inf, strict=True):
            final[key].append(_total_loss(curves, size, sized.phi.size))
        for width in study.widths:
            curves = finite_curves(study, sized, width, rate, np.asarray([0, max_step]))
            final["finite"][str(width)].append(_total_loss(curves, size, sized.phi.size, -1))
        say(f"train size {size}: done")

    return {
        "study": dataclasses.asdict(study),
        "target": summary,
        "eta_max": eta_max,
        "learning_rate": learning_rate,
        "convergence_step": step,
        "steps": steps.tolist(),
        "infinite": {
            "continuous": continuous.as_dict(),
            "discrete": discrete.as_dict(),
            "t_inf": limit.as_dict(),
        },
        "finite": finite,
        "deviation_exponent_vs_width": exponents,
        "total_loss_vs_train_size": final,
        "seconds": round(time.perf_counter() - clock, 1),
    }


def _total_loss(curves: LossCurves, train_size: int, dimension: int, index: int = 0) -> float:
    """Mean of the losses over the whole basis (train and test weighted by their sizes)."""
    test_size = dimension - train_size
    total = train_size * curves.train_mean_of_losses[index]
    if test_size:
        total += test_size * curves.test_mean_of_losses[index]
    return float(total / dimension)


def write_json(result: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    return path
