"""Ensemble results and their estimators: per-shard sufficient statistics, the merge
of shards, and the ensemble mean, variance and losses (docs/theory.md §5, §7)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np

from suite.training.validation import check_train_index


class _MemberSums:
    """What the results of a shard share: its ``members (m,)``, the logged ``steps
    (L,)``, per-member values (:attr:`PER_MEMBER` fields, member axis 1) and the sums
    ``sum_u``, ``sum_v``, ``sum_uu``, ``sum_vv``, ``sum_uv`` ``(L, D)`` float64 over its
    members at every basis point."""

    PER_MEMBER: tuple[str, ...] = ()
    # declared for the properties below; the dataclasses declare them as fields, in the
    # positional order of their constructors
    members: np.ndarray
    steps: np.ndarray
    sum_u: np.ndarray
    sum_v: np.ndarray
    sum_uu: np.ndarray
    sum_vv: np.ndarray
    sum_uv: np.ndarray

    @property
    def count(self) -> int:
        """Number of members ``m``."""
        return int(self.members.size)

    @property
    def sum_psi(self) -> np.ndarray:
        """``sum_members psi = sum_u + i sum_v``, ``(L, D)`` complex."""
        return self.sum_u + 1j * self.sum_v

    @property
    def sum_abs2(self) -> np.ndarray:
        """``sum_members |psi|^2 = sum_uu + sum_vv``, ``(L, D)``."""
        return self.sum_uu + self.sum_vv


@dataclass(frozen=True)
class EnsembleStats(_MemberSums):
    """One shard's results of a supervised run: per-member losses and the sums.

    ``train_loss``, ``test_loss`` ``(L, m)`` float64, ``(1/|S|) sum_{x in S} |psi(x) -
    phi(x)|^2`` per member (zeros if the test set is empty); the rest as
    :class:`_MemberSums`.
    """

    PER_MEMBER = ("train_loss", "test_loss")
    members: np.ndarray
    steps: np.ndarray
    train_loss: np.ndarray
    test_loss: np.ndarray
    sum_u: np.ndarray
    sum_v: np.ndarray
    sum_uu: np.ndarray
    sum_vv: np.ndarray
    sum_uv: np.ndarray


@dataclass(frozen=True)
class LossEnsembleStats(_MemberSums):
    """One shard's results of a run on a whole-basis loss (docs/theory.md §7).

    ``values[name] (L, m)`` float64: ``"loss"`` (the trained loss) and each logged
    observable per member, laid out as :attr:`suite.kernel_flow.FlowLog.values`; the
    rest as :class:`_MemberSums`.
    """

    PER_MEMBER = ("values",)
    members: np.ndarray
    steps: np.ndarray
    values: dict[str, np.ndarray]
    sum_u: np.ndarray
    sum_v: np.ndarray
    sum_uu: np.ndarray
    sum_vv: np.ndarray
    sum_uv: np.ndarray


#: the sufficient statistics of an ensemble, in the order of the store's ``sum`` arrays
SUMS = ("sum_u", "sum_v", "sum_uu", "sum_vv", "sum_uv")
Stats = TypeVar("Stats", EnsembleStats, LossEnsembleStats)


def _per_member(parts: Sequence[Any], pick: Any = None) -> Any:
    """Per-member arrays (member axis 1), or dicts of them: concatenated across ``parts``,
    or (one part and ``pick``, a mask or index) the members picked."""
    if isinstance(parts[0], dict):
        return {key: _per_member([p[key] for p in parts], pick) for key in parts[0]}
    if pick is not None:
        return parts[0][:, pick]
    return np.concatenate(parts, axis=1)


def combine(shards: Sequence[Stats]) -> Stats:
    """Merge shards of one ensemble: members and per-member values concatenated, sums
    added.

    The shards must be of one kind, with the same logged steps and basis size and
    disjoint members.
    """
    shards = list(shards)
    if not shards:
        raise ValueError("shards must contain at least one EnsembleStats or LossEnsembleStats")
    first = shards[0]
    for s in shards[1:]:
        if type(s) is not type(first):
            raise ValueError(f"shards must be of one kind: {type(first).__name__} vs "
                             f"{type(s).__name__}")  # fmt: skip
        if not np.array_equal(s.steps, first.steps):
            raise ValueError(f"steps must match across shards: {first.steps} vs {s.steps}")
        if isinstance(s, LossEnsembleStats) and set(s.values) != set(first.values):
            raise ValueError(f"shards must log the same values: {sorted(first.values)} vs "
                             f"{sorted(s.values)}")  # fmt: skip
        if s.sum_u.shape != first.sum_u.shape:
            raise ValueError(
                f"shards must cover the same basis: sums of shape {first.sum_u.shape} "
                f"vs {s.sum_u.shape}"
            )
    members = np.concatenate([s.members for s in shards])
    if np.unique(members).size != members.size:
        raise ValueError("shards must have disjoint members")
    sums = {name: functools.reduce(np.add, [getattr(s, name) for s in shards]) for name in SUMS}
    values = {name: _per_member([getattr(s, name) for s in shards]) for name in first.PER_MEMBER}
    return replace(first, members=members, steps=first.steps.copy(), **values, **sums)


def leave_out(total: Stats, part: Stats) -> Stats:
    """The ensemble ``total`` without its shard ``part`` (the inverse of :func:`combine`):
    ``part``'s members and their values removed, its sums subtracted."""
    keep = ~np.isin(total.members, part.members)
    if keep.sum() != total.count - part.count:
        raise ValueError("part's members must all be members of total")
    sums = {name: getattr(total, name) - getattr(part, name) for name in SUMS}
    values = {name: _per_member([getattr(total, name)], keep) for name in total.PER_MEMBER}
    return replace(total, members=total.members[keep], steps=total.steps.copy(), **values, **sums)


def jackknife_sem(leave_one_out: np.ndarray) -> np.ndarray:
    """Jackknife standard error of an estimate from its ``g`` leave-one-(group-)out values
    along axis 0: ``sqrt((g - 1)/g sum_i (theta_(i) - mean theta_(.))^2)``; NaN when
    ``g < 2``."""
    values = np.asarray(leave_one_out, dtype=float)
    groups = values.shape[0]
    if groups < 2:
        return np.full(values.shape[1:], np.nan)
    spread = values - values.mean(axis=0)
    return np.sqrt((groups - 1) / groups * np.sum(spread**2, axis=0))


@dataclass(frozen=True)
class EnsembleSummary:
    """Ensemble mean, variance and losses of M members at the logged steps (docs/theory.md §5).

    * ``mean (L, D)`` complex: the sample mean of ``psi``.
    * ``variance (L, D)``: ``Var u + Var v`` with the **population** normalisation ``1/M``
      (the theory's ``Var psi_t``; the sample estimate of it is biased by ``(M-1)/M``).
    * ``*_mean_of_losses (L,)``: mean over members of the member losses (estimates
      ``L_ens``, Eq. 17/18); exactly ``*_loss_of_mean + mean over the set of variance``.
    * ``*_loss_of_mean (L,)``: loss of the sample mean (estimates ``L_mean``, Eq. 16). For
      iid members ``E|mean - phi|^2 = |mu - phi|^2 + Var/M``: biased upward.
    * ``*_loss_of_mean_debiased (L,)``: ``loss_of_mean - (1/|S|) sum_S variance / (M-1)``,
      an exactly unbiased estimate of ``L_mean`` (``E[variance] = (M-1)/M Var``); NaN when
      ``M = 1``.

    Over an empty test set every test quantity is 0.
    """

    steps: np.ndarray
    count: int
    mean: np.ndarray
    variance: np.ndarray
    train_mean_of_losses: np.ndarray
    test_mean_of_losses: np.ndarray
    train_loss_of_mean: np.ndarray
    test_loss_of_mean: np.ndarray
    train_loss_of_mean_debiased: np.ndarray
    test_loss_of_mean_debiased: np.ndarray


def summarize(stats: EnsembleStats, target: np.ndarray, train_index: np.ndarray) -> EnsembleSummary:
    """Mean, population variance and ensemble losses of ``stats`` (see :class:`EnsembleSummary`)."""
    dim = stats.sum_u.shape[1]
    phi = np.asarray(target)
    if phi.shape != (dim,):
        raise ValueError(f"target must have shape ({dim},), got {phi.shape}")
    train = check_train_index(train_index, dim)
    count = stats.count
    mean = stats.sum_psi / count
    variance = np.maximum(stats.sum_abs2 / count - np.abs(mean) ** 2, 0.0)
    test = np.setdiff1d(np.arange(dim), train)
    error = np.abs(mean - phi) ** 2

    def average(values: np.ndarray, subset: np.ndarray) -> np.ndarray:
        if subset.size == 0:
            return np.zeros(values.shape[0])
        return values[:, subset].mean(axis=1)

    correction = 1.0 / (count - 1) if count > 1 else np.nan
    train_lom, test_lom = average(error, train), average(error, test)
    test_debiased = test_lom - average(variance, test) * correction if test.size else test_lom
    return EnsembleSummary(
        steps=stats.steps.copy(),
        count=count,
        mean=mean,
        variance=variance,
        train_mean_of_losses=stats.train_loss.mean(axis=1),
        test_mean_of_losses=stats.test_loss.mean(axis=1),
        train_loss_of_mean=train_lom,
        test_loss_of_mean=test_lom,
        train_loss_of_mean_debiased=train_lom - average(variance, train) * correction,
        test_loss_of_mean_debiased=test_debiased,
    )
