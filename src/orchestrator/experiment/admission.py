"""Sharing a cluster between the head's API tokens: quotas and priorities (no Ray here).

A token of `orch serve` may carry a tenant: a name, a priority and a quota of GPUs and CPUs held by
its running trials. Every experiment submitted with it carries the tenant in its plan (journaled,
so `orch resume` keeps it). Its coordinator then starts no trial without a grant from the
cluster's one admission book (actors/admission.py keeps it in a named actor):

- a tenant's running trials never hold more than its quota;
- granted trials never hold more than the cluster has, so a trial granted is a trial placed;
- pending trials are granted highest priority first; among equal priorities, to the tenant
  running the fewest trials, then to its experiment running the fewest, then to the oldest
  (fair shares: a small experiment is not queued behind a big sweep); each experiment's trials in
  its own order. The trial next in line that does not fit the cluster holds back every trial after
  it (no backfill: a big gang trial is not starved by small ones), while one held by its own
  tenant's quota holds back nobody else.

The book is soft state, rebuilt from what coordinators tell it: each `sync` says which of the
experiment's trials run and which wait, so a restarted book is whole again within one poll of every
coordinator, and an experiment whose coordinator stops syncing (killed with its node) is forgotten
after `stale_s`, freeing its share. Experiments run without a tenant (`orch run`, `orch submit`)
do not ask the book and are not counted against anyone's quota.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

STALE_S = 120.0  # a coordinator silent this long is gone: its grants are freed


@dataclass(frozen=True)
class Need:
    """What a trial (or a sum of them) holds: GPUs and CPUs, as Ray counts them."""
    gpus: float = 0.0
    cpus: float = 0.0

    def __add__(self, other: Need) -> Need:
        return Need(self.gpus + other.gpus, self.cpus + other.cpus)

    def times(self, n: int) -> Need:
        return Need(self.gpus * n, self.cpus * n)

    def within(self, limit: Quota) -> bool:
        eps = 1e-9  # fractional CPUs add up with rounding
        return all(lim is None or used <= lim + eps
                   for used, lim in ((self.gpus, limit.gpus), (self.cpus, limit.cpus)))

    def to_json(self) -> dict[str, float]:
        return {"gpus": self.gpus, "cpus": self.cpus}


@dataclass(frozen=True)
class Quota:
    """The most a tenant's running trials may hold; None: no limit on that resource."""
    gpus: float | None = None
    cpus: float | None = None

    @classmethod
    def parse(cls, text: str) -> Quota:
        """`gpus:4,cpus:16` (either part may be left out); ValueError saying what is wrong."""
        found: dict[str, float] = {}
        for part in text.split(","):
            key, sep, value = part.partition(":")
            if not sep or key not in ("gpus", "cpus") or key in found:
                raise ValueError(f"quota {text!r}: write gpus:N and/or cpus:N, comma-separated, each once")
            try:
                n = float(value)
            except ValueError:
                n = math.nan
            if not math.isfinite(n) or n < 0:
                raise ValueError(f"quota {text!r}: {key} must be a number, 0 or more")
            found[key] = n
        return cls(**found)

    def to_json(self) -> dict[str, float | None]:
        return {"gpus": self.gpus, "cpus": self.cpus}


@dataclass(frozen=True)
class Tenant:
    """Who an experiment runs for: the token's name (never the token), its priority and quota."""
    name: str
    priority: int = 0
    quota: Quota = Quota()

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "priority": self.priority, "quota": self.quota.to_json()}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any] | None) -> Tenant | None:
        if doc is None:
            return None
        return cls(doc["name"], int(doc.get("priority", 0)), Quota(**(doc.get("quota") or {})))


@dataclass
class _Asking:
    """One experiment as its coordinator last described it."""
    tenant: Tenant
    need: Need                      # per trial
    arrived: int                    # order of first sync: older experiments first among equals
    seen: float                     # clock at the last sync
    running: set[str] = field(default_factory=set)
    offered: set[str] = field(default_factory=set)   # granted, not yet reported running
    waiting: list[str] = field(default_factory=list)  # asking to start now, in the experiment's own order
    queued: int = 0                 # every trial of it not started yet (shown; only `waiting` is asked for)

    def holding(self) -> Need:
        return self.need.times(len(self.running | self.offered))


class AdmissionBook:
    """Who may start which trial now. `capacity`: the cluster's totals (None: unbounded, so only
    quotas hold trials back); `tenants`: the head's current tenants by name, which override the
    quota and priority an experiment was submitted with (an edited tokens file applies at once)."""

    def __init__(self, capacity: Quota | None = None, *, stale_s: float = STALE_S,
                 clock: Callable[[], float] = time.monotonic):
        self.capacity, self.stale_s, self.clock = capacity, stale_s, clock
        self.tenants: dict[str, Tenant] = {}
        self._asking: dict[str, _Asking] = {}
        self._arrivals = 0

    def set_tenants(self, tenants: Iterable[Tenant]) -> None:
        self.tenants = {t.name: t for t in tenants}

    def set_capacity(self, capacity: Quota | None) -> None:
        self.capacity = capacity

    def tenant(self, submitted: Tenant) -> Tenant:
        return self.tenants.get(submitted.name, submitted)

    def sync(self, experiment_id: str, tenant: Tenant, need: Need, waiting: list[str],
             running: Iterable[str], queued: int | None = None) -> list[str]:
        """The experiment's state now: its trials `running`, those `waiting` to start now in its own
        order (as many as it has room for), and how many are `queued` in all (default: the waiting).
        Returns the waiting trials it may start now, in that order; each is counted as held until a
        later sync names it neither running nor waiting."""
        now = self.clock()
        a = self._asking.get(experiment_id)
        if a is None:
            a = self._asking[experiment_id] = _Asking(tenant, need, self._arrivals, now)
            self._arrivals += 1
        a.tenant, a.need, a.seen = tenant, need, now
        a.running = set(running)
        a.waiting = [t for t in waiting if t not in a.running]
        a.offered = {t for t in a.offered if t in a.waiting}
        a.queued = len(a.waiting) if queued is None else max(queued, len(a.waiting))
        self._forget_stale(now)
        self._grant()
        return [t for t in a.waiting if t in a.offered]

    def release(self, experiment_id: str) -> None:
        """The experiment's coordinator has finished: nothing of it is held or waits any more."""
        self._asking.pop(experiment_id, None)

    def _forget_stale(self, now: float) -> None:
        for eid in [e for e, a in self._asking.items() if now - a.seen > self.stale_s]:
            del self._asking[eid]

    def _grant(self) -> None:
        """Grant waiting trials one at a time: always to the highest priority; among equals, to the
        tenant running the fewest trials, then its experiment running the fewest, then the oldest
        (a one-trial experiment is not queued behind a 1,000-trial sweep of the same priority)."""
        held: dict[str, Need] = {}     # by tenant
        count: dict[str, int] = {}     # running trials, by tenant and by experiment
        total = Need()
        for eid, a in self._asking.items():
            name, holding = a.tenant.name, a.holding()
            held[name] = held.get(name, Need()) + holding
            n = len(a.running | a.offered)
            count[name], count[eid] = count.get(name, 0) + n, n
            total = total + holding
        queues = {eid: [t for t in a.waiting if t not in a.offered] for eid, a in self._asking.items()}
        asking = {eid for eid, q in queues.items() if q}

        def rank(eid: str) -> tuple:
            a = self._asking[eid]
            return -self.tenant(a.tenant).priority, count[a.tenant.name], count[eid], a.arrived

        while asking:
            eid = min(asking, key=rank)
            a = self._asking[eid]
            quota = self.tenant(a.tenant).quota
            if not (held[a.tenant.name] + a.need).within(quota):
                asking.discard(eid)  # its tenant is at its quota: it waits, others go on
                continue
            if self.capacity is not None and not (total + a.need).within(self.capacity):
                return  # the cluster is full for the next in line: nobody after it jumps the queue
            a.offered.add(queues[eid].pop(0))
            held[a.tenant.name] = held[a.tenant.name] + a.need
            count[a.tenant.name] += 1
            count[eid] += 1
            total = total + a.need
            if not queues[eid]:
                asking.discard(eid)

    def snapshot(self) -> list[dict[str, Any]]:
        """Per tenant: its quota and priority, what its running trials hold, how many wait, and its
        experiments; highest priority first."""
        rows: dict[str, dict[str, Any]] = {}
        for t in self.tenants.values():
            rows[t.name] = self._row(t)
        for eid, a in sorted(self._asking.items(), key=lambda kv: kv[1].arrived):
            t = self.tenant(a.tenant)
            row = rows.setdefault(t.name, self._row(t))
            holding = a.holding()
            row["running"]["gpus"] += holding.gpus
            row["running"]["cpus"] += holding.cpus
            row["running"]["trials"] += len(a.running | a.offered)
            row["waiting_trials"] += a.queued - len(a.offered)
            row["experiments"].append({"experiment_id": eid, "running_trials": len(a.running | a.offered),
                                       "waiting_trials": a.queued - len(a.offered)})
        return sorted(rows.values(), key=lambda r: (-r["priority"], r["name"]))

    @staticmethod
    def _row(t: Tenant) -> dict[str, Any]:
        return {"name": t.name, "priority": t.priority, "quota": t.quota.to_json(),
                "running": {"gpus": 0.0, "cpus": 0.0, "trials": 0}, "waiting_trials": 0, "experiments": []}
