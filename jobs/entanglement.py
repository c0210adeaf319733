"""The entanglement study (paper Fig. 1): finite-width NNQS ensembles against GP and Page.

For ``psi = f_R + i f_I`` (two independent networks of one architecture: CosNet,
GaussNet or a ReLU MLP) on ``N`` spins and every subsystem of the first
``N_A = 1 .. N/2`` sites (docs/theory.md §6, natural log):

* finite widths: per-member von Neumann and Renyi-2 entropies of the normalised
  states, their ensemble means (with standard errors), and the replica ratio
  ``-ln(mean Tr rho~_A^2 / mean (Tr rho~)^2)``, the quantity the GP estimate predicts;
* the GP estimate ``S2_bar`` of the same NNQS (Hamming closed form, :mod:`suite.replica`);
* the Page value (for ``S_vN``) and the Haar Renyi-2 value ``-ln((m + n)/(mn + 1))``;
* the crossover: CosNet at ``N_A = N/2`` against its ``s0``, finite width and GP.

Defaults (about 5 minutes on 2 cores): 12 spins, 100 members, widths 400, 1000 and
4000 (the paper's), CosNet with ``s0 = 10`` (kernel ``exp(-2 s0^2 h / N)`` between
configurations at Hamming distance ``h``: ``6e-8`` at ``h = 1``, i.e. nearly iid;
the paper's values were lost from our copy), GaussNet with ``s0 = 1, sb = 0``
(moderate: its finite-width statistics are lognormal, with fourth moments
``exp(4 s0^2)``), a one-hidden-layer ReLU MLP (``sw = sb = 1``). The result is one
JSON document for the analysis layer.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import jax
import numpy as np

from jobs.progress import progress_printer
from suite import networks
from suite.entanglement import (
    ensemble_entanglement,
    ensemble_summary,
    haar_purity,
    page_entropy,
)
from suite.layers import Kernel

ARCHITECTURES = get_args(networks.Architecture)
#: 2**14 amplitudes per member: the largest system the issue asks for
MAX_SITES = 14


@dataclass(frozen=True)
class EntanglementStudy:
    """Parameters of the study; the defaults produce Fig. 1 in about 5 minutes here."""

    n_sites: int = 12
    members: int = 100
    widths: tuple[int, ...] = (400, 1000, 4000)
    architectures: tuple[str, ...] = ARCHITECTURES
    cosnet_s0: float = 10.0
    cosnet_s1: float = 1.0
    gaussnet_s0: float = 1.0
    gaussnet_sb: float = 0.0
    relu_depth: int = 1
    scan_s0: tuple[float, ...] = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
    scan_width: int = 1000
    seed: int = 0
    chunk_entries: int = 2**25

    def __post_init__(self) -> None:
        _check_int("n_sites", self.n_sites, 2, MAX_SITES)
        _check_int("members", self.members, 2)
        _check_int("relu_depth", self.relu_depth, 1)
        _check_int("scan_width", self.scan_width, 1)
        _check_int("seed", self.seed, 0)
        _check_int("chunk_entries", self.chunk_entries, 1)
        if not self.widths or any(not _is_int(w) or w < 1 for w in self.widths):
            raise ValueError(
                f"widths must be a non-empty list of positive integers, got {self.widths}"
            )
        if not self.architectures or any(a not in ARCHITECTURES for a in self.architectures):
            raise ValueError(
                f"architectures must be a non-empty subset of {ARCHITECTURES}, "
                f"got {self.architectures}"
            )
        for name in ("cosnet_s0", "cosnet_s1", "gaussnet_s0"):
            if not _is_positive(getattr(self, name)):
                raise ValueError(f"{name} must be a positive number, got {getattr(self, name)!r}")
        if not (_is_number(self.gaussnet_sb) and self.gaussnet_sb >= 0):
            raise ValueError(f"gaussnet_sb must be a non-negative number, got {self.gaussnet_sb!r}")
        if any(not _is_positive(s0) for s0 in self.scan_s0):
            raise ValueError(f"scan_s0 must be a list of positive numbers, got {self.scan_s0}")

    @property
    def cuts(self) -> list[int]:
        """Subsystem sizes ``N_A = 1 .. N/2`` (A = the first ``N_A`` sites)."""
        return list(range(1, self.n_sites // 2 + 1))

    def nnqs(self, architecture: str, width: int, s0: float | None = None) -> networks.NNQS:
        """``psi = f_R + i f_I`` with two independent networks of ``architecture``."""
        if architecture == "cosnet":
            s0 = self.cosnet_s0 if s0 is None else s0
            part = networks.cosnet(width, s0, self.cosnet_s1)
        elif architecture == "gaussnet":
            part = networks.gaussnet(width, self.gaussnet_s0, sb=self.gaussnet_sb)
        else:
            part = networks.mlp(self.relu_depth, width, "relu")
        return networks.decoupled(part)

    def member_chunk(self, width: int) -> int:
        """Members evaluated together: about ``chunk_entries`` hidden activations."""
        return max(1, self.chunk_entries // (2**self.n_sites * width))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_positive(value: object) -> bool:
    return _is_number(value) and value > 0


def _check_int(name: str, value: object, minimum: int, maximum: int | None = None) -> None:
    if not (_is_int(value) and value >= minimum and (maximum is None or value <= maximum)):
        bound = f"in [{minimum}, {maximum}]" if maximum is not None else f">= {minimum}"
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}")


def gp_renyi2(nnqs: networks.NNQS, n_sites: int, cuts: list[int]) -> list[float]:
    """GP estimate ``S2_bar`` of an NNQS ensemble at infinite width (docs/theory.md §6).

    Covariance ``G = infinite(k)[0].hermitian()`` and pseudo-covariance ``.symmetric()``
    of its NNGP (zero for identical decoupled parts: a circular GP), Hamming closed form.
    """
    from suite.replica import hamming_renyi2  # Dask: only when a store is created

    def covariance(k: Kernel) -> jax.Array:
        return nnqs.infinite(k)[0].hermitian()

    def pseudo(k: Kernel) -> jax.Array:
        return nnqs.infinite(k)[0].symmetric()

    return hamming_renyi2(covariance, n_sites, cuts, pseudo)


def _finite(
    study: EntanglementStudy, nnqs: networks.NNQS, width: int, cuts: list[int]
) -> dict[str, Any]:
    tic = time.perf_counter()
    result = ensemble_entanglement(
        nnqs,
        study.n_sites,
        cuts,
        seed=study.seed,
        members=np.arange(study.members),
        member_chunk=study.member_chunk(width),
    )
    return {**ensemble_summary(result), "seconds": round(time.perf_counter() - tic, 2)}


def run_entanglement_study(
    study: EntanglementStudy | None = None,
    out: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the study; return the Fig. 1 data as a JSON-able dict, written to ``out`` if given.

    Keys: ``n_a``; ``page`` and ``haar_renyi2`` per ``N_A``; ``architectures``: per
    architecture ``gp_renyi2`` per ``N_A`` and, per width, the :func:`ensemble_summary`
    with ``page_gap`` (``mean S_vN / Page - 1``), ``gp_gap`` (``ratio_renyi2 -
    gp_renyi2``: the finite ensemble's replica ratio, not the mean of per-member
    ``S_2``, is what the GP predicts) and ``gp_z`` (``gp_gap`` in jackknife standard
    errors); ``crossover``: CosNet at ``N_A = N/2`` against ``s0``; ``acceptance``: the
    largest ``|page_gap|``, ``|gp_gap|`` and ``|gp_z|`` per architecture and width.
    """
    # over 60 lines: the quick command's whole study in order (GP, widths, s0 scan)
    study = EntanglementStudy() if study is None else study
    clock = time.perf_counter()
    say = progress_printer(progress)
    n_sites, cuts = study.n_sites, study.cuts
    dims = [(2**n_a, 2 ** (n_sites - n_a)) for n_a in cuts]
    page = [page_entropy(m, n) for m, n in dims]
    haar = [-math.log(haar_purity(m, n)) for m, n in dims]

    architectures: dict[str, Any] = {}
    acceptance: dict[str, Any] = {}
    for architecture in study.architectures:
        gp = gp_renyi2(study.nnqs(architecture, study.widths[0]), n_sites, cuts)
        finite = {}
        for width in study.widths:
            stats = _finite(study, study.nnqs(architecture, width), width, cuts)
            stats["page_gap"] = (np.array(stats["mean_von_neumann"]) / page - 1).tolist()
            stats["gp_gap"] = (np.array(stats["ratio_renyi2"]) - gp).tolist()
            stats["gp_z"] = (np.array(stats["gp_gap"]) / stats["sem_ratio_renyi2"]).tolist()
            finite[str(width)] = stats
            say(
                f"{architecture} width {width}: {stats['seconds']} s, max |S_vN/Page - 1| "
                f"{max(map(abs, stats['page_gap'])):.3g}, max |S2 - GP| "
                f"{max(map(abs, stats['gp_gap'])):.3g} ({max(map(abs, stats['gp_z'])):.2g} "
                "standard errors)"
            )
        architectures[architecture] = {"gp_renyi2": gp, "widths": finite}
        acceptance[architecture] = {
            width: {
                "max_abs_page_gap": max(map(abs, stats["page_gap"])),
                "max_abs_gp_gap": max(map(abs, stats["gp_gap"])),
                "max_abs_gp_z": max(map(abs, stats["gp_z"])),
            }
            for width, stats in finite.items()
        }

    half = n_sites // 2
    crossover: dict[str, Any] = {
        "n_a": half,
        "width": study.scan_width,
        "s0": list(study.scan_s0),
        "page": page[-1],
        "haar_renyi2": haar[-1],
        "gp_renyi2": [],
        "finite": [],
    }
    for s0 in study.scan_s0:
        nnqs = study.nnqs("cosnet", study.scan_width, s0)
        crossover["gp_renyi2"].append(gp_renyi2(nnqs, n_sites, [half])[0])
        stats = _finite(study, nnqs, study.scan_width, [half])
        crossover["finite"].append(
            {key: value[0] if isinstance(value, list) else value for key, value in stats.items()}
        )
        say(
            f"crossover s0 {s0}: S_vN {stats['mean_von_neumann'][0]:.4f}, S2 ratio "
            f"{stats['ratio_renyi2'][0]:.4f}, GP {crossover['gp_renyi2'][-1]:.4f} "
            f"(Page {page[-1]:.4f})"
        )

    result = {
        "study": dataclasses.asdict(study),
        "log": "natural",
        "n_sites": n_sites,
        "n_a": cuts,
        "page": page,
        "haar_renyi2": haar,
        "architectures": architectures,
        "crossover": crossover,
        "acceptance": acceptance,
        "seconds": round(time.perf_counter() - clock, 1),
    }
    if out is not None:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1))
    return result
