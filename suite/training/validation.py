"""Argument checks of :func:`suite.training.train_ensemble`: each names the argument and
what was expected, before any work starts."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from suite.networks import NNQS

#: compute dtypes of a run (losses and sums are float64 either way)
DTYPES = ("float32", "float64")


def is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_train_index(train_index: Any, dim: int) -> np.ndarray:
    index = np.asarray(train_index)
    if index.ndim != 1 or index.size == 0:
        raise ValueError(f"train_index must be a non-empty 1-d array, got shape {index.shape}")
    if not np.issubdtype(index.dtype, np.integer):
        raise ValueError(f"train_index must hold integers, got dtype {index.dtype}")
    if index.min() < 0 or index.max() >= dim:
        raise ValueError(
            f"train_index out of range [0, {dim}): min {index.min()}, max {index.max()}"
        )
    if np.unique(index).size != index.size:
        raise ValueError("train_index has duplicate entries")
    return index.astype(np.int64)


def check_learning_rate(learning_rate: Any) -> float:
    """``learning_rate`` as a float if it is a positive finite real number (a Python or
    NumPy scalar, or a 0-d real array), else ``ValueError``."""
    value = np.asarray(learning_rate) if not isinstance(learning_rate, bool) else None
    if not (
        value is not None
        and value.ndim == 0
        and (np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer))
        and math.isfinite(float(value))
        and float(value) > 0
    ):
        raise ValueError(f"learning_rate must be a positive finite number, got {learning_rate!r}")
    return float(value)


def check_steps(steps: Any, name: str = "log_steps") -> np.ndarray:
    """``steps`` as int64 if they are strictly ascending integers in ``[0, 2^31)``, else a
    ``ValueError`` naming the argument ``name``."""
    array = np.asarray(steps)
    if array.ndim != 1 or array.size == 0 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must be a non-empty 1-d sequence of integers, got {steps!r}")
    if array.min() < 0:
        raise ValueError(f"{name} must be non-negative, got {array.tolist()}")
    if np.any(np.diff(array) <= 0):
        raise ValueError(f"{name} must be strictly ascending, got {array.tolist()}")
    if array.max() >= 2**31:
        raise ValueError(f"{name} must be below 2^31")
    return array.astype(np.int64)


def check_network_inputs(nnqs: Any, inputs: Any) -> np.ndarray:
    """``inputs (D, d)`` as float64 for the network ``nnqs``."""
    if not isinstance(nnqs, NNQS):
        raise ValueError(f"nnqs must be a suite.networks.NNQS, got {type(nnqs).__name__}")
    x = np.asarray(inputs)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"inputs must be a non-empty 2-d array (D, d), got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.number) and not np.iscomplexobj(x)):
        raise ValueError(f"inputs must be real numbers, got dtype {x.dtype}")
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("inputs has non-finite entries")
    return x


def check_run(
    seed: Any,
    members: Any,
    learning_rate: Any,
    log_steps: Any,
    dtype: Any,
    devices: Any,
    method: Any,
    block: Any,
) -> tuple[np.ndarray, np.ndarray, int]:
    """The run arguments every ensemble entry point shares, checked: ``(member ids, log
    steps, devices)``."""
    if not is_int(seed):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    ids = np.asarray(members)
    if ids.ndim != 1 or ids.size == 0:
        raise ValueError(f"members must be a non-empty 1-d sequence, got shape {ids.shape}")
    if not np.issubdtype(ids.dtype, np.integer) or ids.min() < 0 or ids.max() >= 2**32:
        raise ValueError("members must be integers in [0, 2^32)")
    if np.unique(ids).size != ids.size:
        raise ValueError("members must be distinct")
    check_learning_rate(learning_rate)
    steps = check_steps(log_steps)
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    available = len(jax.local_devices())
    if devices is None:
        n_devices = available
    elif not is_int(devices) or not 1 <= devices <= available:
        raise ValueError(f"devices must be an integer in [1, {available}], got {devices!r}")
    else:
        n_devices = int(devices)
    if method not in ("auto", "fast", "autodiff"):
        raise ValueError(f"method must be 'auto', 'fast' or 'autodiff', got {method!r}")
    if block is not None and not (is_int(block) and block >= 1):
        raise ValueError(f"block must be a positive integer or None, got {block!r}")
    return ids.astype(np.int64), steps, n_devices


def validate_arguments(
    nnqs: Any,
    inputs: Any,
    target: Any,
    train_index: Any,
    seed: Any,
    members: Any,
    learning_rate: Any,
    log_steps: Any,
    dtype: Any,
    devices: Any,
    method: Any,
    block: Any,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """The arguments of :func:`suite.training.train_ensemble`, checked and normalised:
    ``(inputs float64, target complex128, train index, member ids, log steps, devices)``.
    Each failure is a ``ValueError`` naming the argument and what was expected."""
    x = check_network_inputs(nnqs, inputs)
    phi = np.asarray(target)
    if phi.shape != (x.shape[0],):
        raise ValueError(f"target must have shape ({x.shape[0]},), got {phi.shape}")
    if not np.issubdtype(phi.dtype, np.number) or not np.all(np.isfinite(phi)):
        raise ValueError("target must hold finite numbers")
    phi = phi.astype(np.complex128)
    train = check_train_index(train_index, x.shape[0])
    ids, steps, n_devices = check_run(
        seed, members, learning_rate, log_steps, dtype, devices, method, block
    )
    return x, phi, train, ids, steps, n_devices


def check_losses(loss: Any, observables: Any, dimension: int) -> dict[str, Any]:
    """``{"loss": loss, **observables}`` if each is a loss of a wavefunction of shape
    ``(dimension,)`` (a ``value`` returning a real scalar and a ``gradient`` of the
    wavefunction's shape; :mod:`suite.losses`), else ``ValueError`` naming it."""
    if observables is None:
        observables = {}
    if not isinstance(observables, Mapping) or "loss" in observables:
        raise ValueError(
            "observables must be a mapping of names (other than 'loss') to losses, "
            f"got {observables!r}"
        )
    watched = {"loss": loss, **observables}
    psi = jax.ShapeDtypeStruct((dimension,), np.complex128)
    for name, candidate in watched.items():
        label = "loss" if name == "loss" else f"observables[{name!r}]"
        leaves, treedef = jax.tree.flatten(candidate)
        if not (
            callable(getattr(candidate, "value", None))
            and callable(getattr(candidate, "gradient", None))
            and treedef.num_nodes > 1  # a registered pytree (its arrays are the leaves)
            and all(isinstance(leaf, (np.ndarray, jax.Array)) for leaf in leaves)
        ):
            raise ValueError(
                f"{label} must be a loss of suite.losses (a pytree of arrays with value "
                f"and gradient), got {candidate!r}"
            )
        try:
            value = jax.eval_shape(candidate.value, psi)
            gradient = jax.eval_shape(candidate.gradient, psi)
        except Exception as error:  # the loss's arrays do not fit this basis
            raise ValueError(
                f"{label} does not apply to a wavefunction on this basis of {dimension} "
                f"states: {type(error).__name__}: {error}"
            ) from None
        if value.shape != () or gradient.shape != (dimension,):
            raise ValueError(
                f"{label} must give a scalar value and a gradient of shape ({dimension},) "
                f"on this basis, got {value.shape} and {gradient.shape}"
            )
    return watched
