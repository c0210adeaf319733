"""Parity with neural-tangents 0.6.5: kernels (docs/theory.md §4) and predictions
(docs/theory.md §5).

The reference ``reference.npz`` comes from ``tests/parity/nt_reference.py`` run in the
pinned neural-tangents environment (``make parity``); it holds the inputs, a JSON list
of cases and neural-tangents' results. This module rebuilds every case with our code
and compares in float64: kernels to ``1e-10`` and predictions to ``1e-8``, relative to
the largest reference magnitude. The directory comes from ``NNQS_PARITY_DIR``
(default ``.parity/`` at the repository root); a missing file is a failure.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from suite.dynamics import predict_gd
from suite.kernels.gram import gram, is_integer_valued
from suite.layers import Layer
from suite.networks import cosnet, mlp

pytestmark = pytest.mark.parity

ROOT = Path(__file__).resolve().parents[1]
KERNEL_RTOL = 1e-10
PREDICTION_RTOL = 1e-8
#: the case groups the reference must contain: activation-parameterisation or family
KERNEL_GROUPS = ("relu-ntk", "erf-ntk", "relu-standard", "cosnet")

Reference = tuple[list[dict[str, Any]], dict[str, np.ndarray]]


def load_reference() -> Reference:
    """The cases and arrays of ``reference.npz``; the calling test fails (not skips) without it."""
    path = Path(os.environ.get("NNQS_PARITY_DIR", ROOT / ".parity")) / "reference.npz"
    if not path.is_file():
        pytest.fail(
            f"{path} is missing: run `make parity` (it builds the neural-tangents "
            "environment and writes the reference)",
            pytrace=False,
        )
    return _read(path)


@functools.cache
def _read(path: Path) -> Reference:
    with np.load(path) as npz:
        data = {key: npz[key] for key in npz.files}
    return json.loads(str(data.pop("cases"))), data


def group(case: dict[str, Any]) -> str:
    """The group of a kernel case: ``<activation>-<parameterization>`` or its family."""
    if case["family"] == "mlp":
        return f"{case['activation']}-{case['parameterization']}"
    return case["family"]


def network(case: dict[str, Any]) -> Layer:
    """Our network for a case of ``nt_reference.py``."""
    if case["family"] == "cosnet":
        return cosnet(case["width"], case["s0"], case["s1"], case["train_features"])
    return mlp(
        case["depth"],
        case["width"],
        case["activation"],
        case["sw"],
        case["sb"],
        case["parameterization"],
    )


def relative_difference(ours: Any, ref: np.ndarray) -> float:
    """``max |ours - ref| / max |ref|`` in float64."""
    ours = np.asarray(ours, dtype=np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float(np.max(np.abs(ours - ref)) / np.max(np.abs(ref)))


def report(errors: dict[str, float], rtol: float) -> str:
    """The largest differences, worst first, for an assertion message."""
    worst = sorted(errors.items(), key=lambda item: -item[1])[:8]
    lines = [f"{value:.3e}  {key}" for key, value in worst]
    failing = sum(value > rtol for value in errors.values())
    return f"{failing} of {len(errors)} above {rtol:g}; largest:\n" + "\n".join(lines)


@pytest.mark.parametrize("kernel_group", KERNEL_GROUPS)
def test_kernels_match_neural_tangents(kernel_group: str) -> None:
    """NNGP and NTK Gram matrices, by every route ``gram`` offers for the inputs."""
    cases, data = load_reference()
    selected = [c for c in cases if c["family"] != "predict" and group(c) == kernel_group]
    assert selected, f"the reference has no {kernel_group} case: rerun `make parity`"
    errors = {}
    for case in selected:
        x1, x2 = data[f"inputs/{case['inputs']}/x1"], data[f"inputs/{case['inputs']}/x2"]
        methods = ["direct"]
        if is_integer_valued(x1) and is_integer_valued(x2):
            methods.append("table")
        net = network(case)
        for method in methods:
            k = gram(net.kernel, x1, x2, method=method)
            for quantity in ("nngp", "ntk"):
                ref = data[f"{case['name']}/{quantity}"]
                key = f"{case['name']} {method} {quantity}"
                errors[key] = relative_difference(getattr(k, quantity), ref)
    worst = max(errors.values())
    assert worst <= KERNEL_RTOL, report(errors, KERNEL_RTOL)


def test_predictions_match_neural_tangents() -> None:
    """Ensemble mean and covariance of gradient descent (``get='ntk'``) at several times."""
    cases, data = load_reference()
    selected = [c for c in cases if c["family"] == "predict"]
    assert selected, "the reference has no prediction case: rerun `make parity`"
    errors = {}
    for case in selected:
        x_train = data[f"inputs/{case['train']}/x"]
        x_test = data[f"inputs/{case['test']}/x"]
        y_train = data[f"inputs/{case['train']}/y"][:, 0]
        net = network(case["net"])
        train_train = gram(net.kernel, x_train, x_train)
        test_train = gram(net.kernel, x_test, x_train)
        test_test = gram(net.kernel, x_test, x_test)
        mean, cov = predict_gd(
            train_train.ntk,
            test_train.ntk,
            train_train.nngp,
            test_train.nngp,
            test_test.nngp,
            y_train,
            case["learning_rate"],
            np.asarray(case["times"]),
        )
        errors[f"{case['name']} mean"] = relative_difference(mean, data[f"{case['name']}/mean"])
        errors[f"{case['name']} cov"] = relative_difference(cov, data[f"{case['name']}/cov"])
    worst = max(errors.values())
    assert worst <= PREDICTION_RTOL, report(errors, PREDICTION_RTOL)
