"""Tier policy and the fair-share arithmetic of the claim (pure, no I/O).

A :class:`TierPolicy` maps each tier to a priority offset and a fair-share
weight. The rule the claim follows, per queue:

* Within a tier, jobs go in (priority, user_round, run_at, id) order; the
  tier's offset is added to a message's priority when it is stored. A job sent
  with a user_id gets the next round of its user, at least the tier's current
  round (migration 0006), so users' backlogs interleave one job per user per
  round and a user's first job never waits behind another user's backlog.
* Across tiers, each consumer runs stride scheduling: every tier has a *pass*
  (claims served divided by its weight), and a claim takes the ready jobs with
  the smallest ``pass + rank / weight``, where rank numbers a tier's ready jobs
  1, 2, 3... So while every tier has work waiting, claims split in proportion
  to the weights (6:3:1 by default); a tier with no ready work takes no share
  and its share goes to the others; and when it gets work again it starts at
  the current pass, with no hoarded credit and no debt.
* Hence no tier starves: under saturation a tier with weight w receives at
  least w / (sum of the active weights) of the claims, so a job that has k jobs
  of its own tier ahead of it waits for at most about k * (sum of weights) / w
  claims, whatever the other tiers hold.

Jobs sent without a tier form the untiered class (``""``) with
:data:`UNTIERED_WEIGHT`, so system work (periodic jobs, reports) is not starved
either.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from receiptq.settings import Settings

#: The class of jobs sent without a tier.
UNTIERED = ""
#: Fair-share weight of untiered jobs.
UNTIERED_WEIGHT = 6.0


class TierError(ValueError):
    """An unknown tier, or a malformed tier policy."""


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    weight: float
    priority_offset: int


@dataclass(frozen=True)
class TierPolicy:
    tiers: tuple[Tier, ...]
    untiered_weight: float = UNTIERED_WEIGHT

    @classmethod
    def parse(cls, spec: str) -> TierPolicy:
        """``"enterprise:6:0,pro:3:10,free:1:20"`` (weight and offset optional: 1 and 0)."""
        tiers = []
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            name, *rest = part.split(":")
            try:
                weight = float(rest[0]) if rest else 1.0
                offset = int(rest[1]) if len(rest) > 1 else 0
            except ValueError:
                raise TierError(
                    f"tier {part!r}: weight must be a number, offset an integer"
                ) from None
            if not name.replace("_", "").replace("-", "").isalnum() or len(rest) > 2:
                raise TierError(f"tier {part!r}: use name[:weight[:priority_offset]]")
            if not 0 < weight < 1e6:
                raise TierError(f"tier {name!r}: the weight must be above 0")
            tiers.append(Tier(name, weight, offset))
        if not tiers or len({t.name for t in tiers}) != len(tiers):
            raise TierError(f"tier policy {spec!r} must name at least one tier, each once")
        return cls(tuple(tiers))

    @classmethod
    def from_env(cls, settings: Settings | None = None) -> TierPolicy:
        """The policy of ``settings.tiers`` (default: the environment's ``RECEIPTQ_TIERS``)."""
        return cls.parse((settings or Settings.from_env()).tiers)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tiers)

    def get(self, name: str) -> Tier:
        for tier in self.tiers:
            if tier.name == name:
                return tier
        raise TierError(f"unknown tier {name!r}; known tiers: {', '.join(self.names)}")

    def weight(self, tier: str) -> float:
        """The fair-share weight of a claim class (unknown classes get the smallest weight)."""
        if tier == UNTIERED:
            return self.untiered_weight
        for t in self.tiers:
            if t.name == tier:
                return t.weight
        return min(t.weight for t in self.tiers)

    def effective_priority(self, priority: int, tier: str | None) -> int:
        return priority if not tier else priority + self.get(tier).priority_offset

    def classes(self, seen: Iterable[str] = ()) -> list[str]:
        """The claim classes: untiered, every policy tier, and any other tier seen in the queue."""
        known = [UNTIERED, *self.names]
        return known + sorted(set(seen) - set(known))


class StrideState:
    """One consumer's passes per claim class (see the module docstring)."""

    def __init__(self) -> None:
        self.passes: dict[str, float] = {}
        #: Classes found queued that the policy does not name (e.g. a removed tier).
        self.seen: set[str] = set()
        #: Classes that had no ready job at the last claim (None before the first).
        self.idle: set[str] | None = None

    def passes_for(self, classes: Sequence[str]) -> list[float]:
        """Current passes; a class seen for the first time starts at the smallest pass."""
        floor = min(self.passes.values(), default=0.0)
        return [self.passes.setdefault(c, floor) for c in classes]

    def charge(
        self, claimed: Mapping[str, int], idle: Iterable[str], weights: Mapping[str, float]
    ) -> None:
        """Advance the classes that got jobs by jobs / weight; lift idle classes.

        ``idle`` are the classes that had no ready job at the claim. Lifting them
        to the smallest pass among the classes with work keeps an idle class from
        banking credit: when it has work again it competes from the current pass,
        not from where it stopped. A class with work that lost this round keeps
        its pass, so it wins a later one.
        """
        floor = min(self.passes.values(), default=0.0)
        for cls, count in claimed.items():
            self.passes[cls] = self.passes.get(cls, floor) + count / weights[cls]
        idle = self.idle = set(idle)
        busy = [p for c, p in self.passes.items() if c not in idle]
        if busy:
            level = min(busy)
            for cls in idle:
                self.passes[cls] = max(self.passes.get(cls, level), level)
        low = min(self.passes.values(), default=0.0)
        if low > 1e6:  # only differences matter: keep the numbers small
            self.passes = {c: p - low for c, p in self.passes.items()}


def quotas(
    classes: Sequence[str],
    passes: Sequence[float],
    weights: Sequence[float],
    limit: int,
    idle: Iterable[str] | None = None,
) -> list[int]:
    """How many ready jobs each class takes in a claim of ``limit``.

    The classes not idle at the last claim share the ``limit`` slots by the
    stride selection (the ``limit`` smallest keys ``pass + rank / weight``); an
    idle class gets 1, a probe that tells whether it has work again (so a claim
    may take up to one job more per idle class than ``limit``). Before the first
    claim (``idle`` None) every class counts as busy. The claim takes exactly
    these counts, in the class's own order (above); a class that
    returns nothing is idle at the next claim.
    """
    idle = set() if idle is None else set(idle)
    keys = sorted(
        (pass_ + rank / weight, i)
        for i, (cls, pass_, weight) in enumerate(zip(classes, passes, weights, strict=True))
        if cls not in idle
        for rank in range(1, limit + 1)
    )[:limit]
    counts = [1 if cls in idle else 0 for cls in classes]
    for _, i in keys:
        counts[i] += 1
    return counts
