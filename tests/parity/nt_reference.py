"""Reference kernels and predictions from neural-tangents (docs/theory.md §4-§5).

Runs ONLY in the pinned reference environment (neural-tangents 0.6.5, jax 0.4.25,
``make parity`` builds it); it must not import ``suite``, whose code needs current jax.
It writes one ``reference.npz`` holding the fixed inputs, a JSON description of every
case (``cases``) and neural-tangents' results, which ``tests/test_parity.py`` recomputes
with our code in the main environment.

Inputs (deterministic, stored in the file):

* ``spin9``: rows of the 512 spin configurations of 9 sites (the ``SpinBasis``
  convention: site ``i`` of state ``k`` is ``+1`` iff bit ``8 - i`` of ``k`` is 0), in
  the order of ``default_rng(1).permutation(512)``: ``x1`` rows 0-63, ``x2`` rows
  32-87 and the negatives of rows 0-7, so the Gram matrices hold coincident and
  antipodal pairs (the arc-cosine NTK's singular points, ``c = +-1``);
* ``hubbard8``: integer site states in ``0..3`` on 8 sites (several row norms: the
  labelled table route of ``suite.kernels.gram``), ``x1`` rows 0-39, ``x2`` rows 24-63;
* ``real9``: generic Gaussian rows with scales in ``[0.5, 2]`` (the direct route),
  ``x1`` and ``x2`` disjoint;
* ``dyadic9``: such rows rounded to multiples of 1/64, with coincident and antipodal
  pairs as in ``spin9``. At ``c = +-1`` the ReLU NTK is infinitely sensitive
  (``theta ~ sqrt(2 (1 - c))``): one rounding in ``|x|^2`` or ``x.x'`` moves it by
  ~1e-9. With generic reals neural-tangents itself misses the exact coincident value
  ``Theta(x, x)`` by up to 1.6e-9 where its ``sum(x**2)`` and ``x @ x`` differ in the
  last bit, so such pairs are tested on dyadic rows, whose statistics are exact.
* predictions: 48 train and 32 test spin configurations of 8 sites with Gaussian
  targets (depth 1, ``lr=1``), and 40 train and 25 test dyadic rows of 6 features with
  targets ``sin(x_0 + x_1^2)`` (depth 2, ``lr=0.5``); times ``TIMES`` (in steps, with
  ``inf``).

Cases: ReLU and Erf MLPs in NTK parameterisation at depth 1-3 with and without
biases (``b_std=None`` for ``sb=None``), ReLU MLPs in standard parameterisation,
CosNet, and ``gradient_descent_mse_ensemble`` predictions (``get='ntk'``, mean and
covariance) on spin and dyadic real inputs.

CosNet (docs/theory.md §3). Our feature is ``cos(z + b)``, ``b ~ U(-pi, pi)`` a trainable
phase, ``z = (s0/sqrt(d)) W0 x``. neural-tangents has deterministic phases only, so the
reference is ``Dense(w, W_std=s0, b_std=1) -> Sin(c=pi/4) -> Dense(1, W_std=s1,
b_std=None)``, the same kernel pair because for a centred Gaussian pair ``u, v`` and
any phase ``beta`` independent of it,
``E[sin(u+beta+c) sin(v+beta+c)] = (E cos(u-v) - cos(2c) E cos(u+v+2 beta)) / 2``
and ``E[cos(u+beta+c) cos(v+beta+c)] = (E cos(u-v) + cos(2c) E cos(u+v+2 beta)) / 2``:
with ``c = pi/4`` (``cos 2c = 0``) both are ``E cos(u-v)/2 = exp(-E(u-v)^2/2)/2``, which
are also our uniform-phase values (there ``E_b cos(u+v+2b) = 0``) for the NNGP and the
derivative kernel. The bias ``beta = b``
(``b_std=1``) drops out of ``u - v`` and so of the NNGP, and its gradient adds
``b_std^2 = 1`` to the pre-activation NTK: our ``+1`` for the trainable phase. With
frozen features (``train_features=False``) our NTK is the readout-only kernel, which is
the NNGP of this network.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from neural_tangents import predict, stax  # noqa: E402

#: hidden width given to neural-tangents (only standard parameterisation kernels use it)
WIDTH = 512
MLP_SETTINGS: tuple[tuple[float, float | None], ...] = (
    (1.0, 0.0),
    (1.0, None),
    (1.2, 0.0),
    (1.5, 0.1),
    (math.sqrt(2.0), 0.5),
)
ERF_SETTINGS: tuple[tuple[float, float | None], ...] = ((1.0, 0.0), (1.3, 0.4))
STANDARD_SETTINGS: tuple[tuple[float, float | None, int], ...] = (
    (1.0, 0.0, 64),
    (1.2, None, 16),
    (1.5, 0.3, 128),
)
COSNET_SETTINGS: tuple[tuple[float, float], ...] = ((0.5, 1.0), (1.0, 2.0), (3.0, 0.7))
#: denominator of the dyadic real inputs
DYADIC = 64
#: gradient-descent times in units of steps; ``inf`` is the converged limit
TIMES = (0.0, 1.0, 10.0, 100.0, 1000.0, math.inf)


def spin_configurations(n_sites: int) -> np.ndarray:
    """All ``2**n_sites`` spin rows, site ``i`` up (``+1``) iff bit ``n_sites-1-i`` is 0."""
    states = np.arange(2**n_sites, dtype=np.int64)
    bits = (states[:, None] >> (n_sites - 1 - np.arange(n_sites))) & 1
    return (1 - 2 * bits).astype(np.float64)


def make_inputs() -> dict[str, np.ndarray]:
    """The fixed inputs of every case (module docstring), keyed ``inputs/<set>/<x1|x2>``."""
    spins = spin_configurations(9)[np.random.default_rng(1).permutation(512)]
    hubbard = np.random.default_rng(2).integers(0, 4, size=(64, 8)).astype(np.float64)
    assert np.all(hubbard.sum(axis=1) > 0), "a zero row has no angle: choose another seed"
    rng = np.random.default_rng(3)
    real = rng.standard_normal((55, 9)) * rng.uniform(0.5, 2.0, size=(55, 1))
    rng = np.random.default_rng(7)
    dyadic = dyadic_rows(rng.standard_normal((40, 9)) * rng.uniform(0.5, 2.0, size=(40, 1)))

    spins8 = spin_configurations(8)[np.random.default_rng(4).permutation(256)]
    y_spin = np.random.default_rng(5).standard_normal((48, 1))
    real6 = dyadic_rows(np.random.default_rng(6).standard_normal((65, 6)))
    y_real = np.sin(real6[:40, :1] + real6[:40, 1:2] ** 2)
    return {
        "inputs/spin9/x1": spins[:64],
        "inputs/spin9/x2": np.concatenate([spins[32:88], -spins[:8]]),
        "inputs/hubbard8/x1": hubbard[:40],
        "inputs/hubbard8/x2": hubbard[24:64],
        "inputs/real9/x1": real[:30],
        "inputs/real9/x2": real[30:],
        "inputs/dyadic9/x1": dyadic[:30],
        "inputs/dyadic9/x2": np.concatenate([dyadic[15:30], -dyadic[:5], dyadic[30:]]),
        "inputs/spin8_train/x": spins8[:48],
        "inputs/spin8_test/x": spins8[48:80],
        "inputs/spin8_train/y": y_spin,
        "inputs/real6_train/x": real6[:40],
        "inputs/real6_test/x": real6[40:],
        "inputs/real6_train/y": y_real,
    }


def dyadic_rows(x: np.ndarray) -> np.ndarray:
    """``x`` rounded to multiples of 1/64: every ``|x|^2`` and ``x.x'`` is exact in float64.

    Not integer-valued, so ``gram`` takes the direct route; exact input statistics make
    coincident and antipodal pairs exact for both libraries (module docstring).
    """
    rows = np.round(x * DYADIC) / DYADIC
    assert np.all(np.abs(rows) < 16) and not np.all(rows == np.round(rows))
    return rows


def mlp_kernel_fn(spec: dict[str, Any]) -> Any:
    """neural-tangents ``kernel_fn`` of the MLP described by ``spec``."""
    activation = {"relu": stax.Relu, "erf": stax.Erf}[spec["activation"]]
    dense = {
        "W_std": spec["sw"],
        "b_std": spec["sb"],
        "parameterization": spec["parameterization"],
    }
    layers = []
    for _ in range(spec["depth"]):
        layers += [stax.Dense(spec["width"], **dense), activation()]
    return stax.serial(*layers, stax.Dense(1, **dense))[2]


def cosnet_kernel_fn(spec: dict[str, Any]) -> Any:
    """neural-tangents ``kernel_fn`` with our CosNet's kernels (module docstring)."""
    return stax.serial(
        stax.Dense(spec["width"], W_std=spec["s0"], b_std=1.0),
        stax.Sin(c=jnp.pi / 4),
        stax.Dense(1, W_std=spec["s1"], b_std=None),
    )[2]


def make_cases() -> list[dict[str, Any]]:
    """Every case, as the JSON-serialisable description both sides build their network from."""
    cases: list[dict[str, Any]] = []
    for inputs in ("spin9", "hubbard8", "real9", "dyadic9"):
        for depth in (1, 2, 3):
            for sw, sb in MLP_SETTINGS:
                cases.append(mlp_case(inputs, depth, "relu", sw, sb, "ntk", WIDTH))
        for depth in (1, 2):
            for sw, sb in ERF_SETTINGS:
                cases.append(mlp_case(inputs, depth, "erf", sw, sb, "ntk", WIDTH))
        for sw, sb, width in STANDARD_SETTINGS:
            cases.append(mlp_case(inputs, 2, "relu", sw, sb, "standard", width))
        for s0, s1 in COSNET_SETTINGS:
            for train_features in (True, False):
                name = f"cosnet_{inputs}_s0{s0}_s1{s1}_{'train' if train_features else 'frozen'}"
                cases.append(
                    {
                        "name": name,
                        "family": "cosnet",
                        "inputs": inputs,
                        "s0": s0,
                        "s1": s1,
                        "train_features": train_features,
                        "width": WIDTH,
                    }
                )
    for data, depth, sw, sb, lr in (("spin8", 1, 1.0, 0.0, 1.0), ("real6", 2, 1.5, 0.2, 0.5)):
        net = mlp_case(data, depth, "relu", sw, sb, "ntk", WIDTH)
        cases.append(
            {
                "name": f"predict_{data}_d{depth}",
                "family": "predict",
                "train": f"{data}_train",
                "test": f"{data}_test",
                "net": net,
                "learning_rate": lr,
                "times": list(TIMES),
            }
        )
    return cases


def mlp_case(
    inputs: str,
    depth: int,
    activation: str,
    sw: float,
    sb: float | None,
    parameterization: str,
    width: int,
) -> dict[str, Any]:
    """Description of one MLP kernel case."""
    return {
        "name": f"{activation}_{parameterization}_{inputs}_d{depth}_sw{sw:.4g}_sb{sb}_w{width}",
        "family": "mlp",
        "inputs": inputs,
        "depth": depth,
        "activation": activation,
        "sw": sw,
        "sb": sb,
        "parameterization": parameterization,
        "width": width,
    }


def run_case(case: dict[str, Any], data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """neural-tangents' results for one case, keyed ``<name>/<quantity>``."""
    name = case["name"]
    if case["family"] in ("mlp", "cosnet"):
        kernel_fn = mlp_kernel_fn(case) if case["family"] == "mlp" else cosnet_kernel_fn(case)
        x1, x2 = data[f"inputs/{case['inputs']}/x1"], data[f"inputs/{case['inputs']}/x2"]
        k = kernel_fn(x1, x2, ("nngp", "ntk"))
        # frozen CosNet features: only the readout trains, its NTK is the NNGP (docstring)
        ntk = k.ntk if case.get("train_features", True) else k.nngp
        return {f"{name}/nngp": np.asarray(k.nngp), f"{name}/ntk": np.asarray(ntk)}
    predict_fn = predict.gradient_descent_mse_ensemble(
        mlp_kernel_fn(case["net"]),
        data[f"inputs/{case['train']}/x"],
        data[f"inputs/{case['train']}/y"],
        learning_rate=case["learning_rate"],
    )
    mean, cov = predict_fn(
        t=jnp.asarray(case["times"]),
        x_test=data[f"inputs/{case['test']}/x"],
        get="ntk",
        compute_cov=True,
    )
    return {f"{name}/mean": np.asarray(mean)[..., 0], f"{name}/cov": np.asarray(cov)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for reference.npz")
    args = parser.parse_args()
    data = make_inputs()
    cases = make_cases()
    results = dict(data)
    for case in cases:
        results.update(run_case(case, data))
    bad = [key for key, value in results.items() if not np.all(np.isfinite(value))]
    if bad:
        raise RuntimeError(f"non-finite reference values in {bad}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "reference.npz"
    np.savez(path, cases=np.asarray(json.dumps(cases)), **results)
    print(f"wrote {len(cases)} cases to {path}")


if __name__ == "__main__":
    main()
