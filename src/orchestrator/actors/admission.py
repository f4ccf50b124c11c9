"""The cluster's admission book (experiment/admission.py) in one named, detached actor, and the
plain calls the head and the coordinators make to it.

One per cluster: `orch-admission` in the coordinators' namespace, on the head node, created by
whoever asks first. It reads the cluster's GPUs and CPUs itself (nodes join and leave), at most
every CAPACITY_TTL_S. Lost with the head node it is recreated on the next call, and rebuilds from
the coordinators' syncs; the head pushes its tenants again whenever its tokens file changes, and
after a lost actor, at its next push.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import ray

from orchestrator.experiment.admission import AdmissionBook, Need, Quota, Tenant

from .cluster import ON_HEAD
from .names import NAMESPACE

log = logging.getLogger(__name__)
NAME = "orch-admission"
CAPACITY_TTL_S = 2.0


@ray.remote(num_cpus=0, max_restarts=-1)
class AdmissionActor:
    def __init__(self) -> None:
        self.book = AdmissionBook()
        self._capacity_at = -CAPACITY_TTL_S

    def _refresh(self) -> None:
        if time.monotonic() - self._capacity_at >= CAPACITY_TTL_S:
            res = ray.cluster_resources()
            self.book.set_capacity(Quota(gpus=res.get("GPU", 0.0), cpus=res.get("CPU", 0.0)))
            self._capacity_at = time.monotonic()

    def sync(self, experiment_id: str, tenant: dict, need: dict, waiting: list[str], running: list[str],
             queued: int) -> list[str]:
        self._refresh()
        return self.book.sync(experiment_id, Tenant.from_json(tenant), Need(**need), waiting, running, queued)

    def release(self, experiment_id: str) -> None:
        self.book.release(experiment_id)

    def set_tenants(self, tenants: list[dict]) -> None:
        self.book.set_tenants([Tenant.from_json(t) for t in tenants])

    def snapshot(self) -> list[dict[str, Any]]:
        self._refresh()
        return self.book.snapshot()


def admission() -> Any:
    """The cluster's admission actor (created if nobody has yet). Needs a connected Ray."""
    return AdmissionActor.options(name=NAME, namespace=NAMESPACE, get_if_exists=True, lifetime="detached",
                                  **ON_HEAD).remote()


class Admission:
    """A coordinator's side: ask for grants, say what runs, let go at the end."""

    def __init__(self, experiment_id: str, tenant: Tenant, need: Need):
        self.experiment_id, self.tenant, self.need = experiment_id, tenant.to_json(), need.to_json()
        self._actor = admission()
        self._unreachable = False

    def sync(self, waiting: list[str], running: list[str], queued: int, timeout: float = 5.0) -> list[str]:
        """The trials granted; none while the book cannot be reached (said once per outage): waiting
        is the side that cannot break a quota."""
        try:
            granted = ray.get(self._actor.sync.remote(self.experiment_id, self.tenant, self.need, waiting, running,
                                                      queued), timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - the actor lost with its node is recreated below
            if not self._unreachable:
                log.warning("experiment %s: the admission book is unreachable (%s); no trial starts until it "
                            "answers", self.experiment_id, exc)
            self._unreachable = True
            self._actor = admission()
            return []
        if self._unreachable:
            log.warning("experiment %s: the admission book answers again", self.experiment_id)
            self._unreachable = False
        return granted

    def release(self) -> None:
        try:
            ray.get(self._actor.release.remote(self.experiment_id), timeout=10)
        except Exception:  # noqa: BLE001 - the book forgets a silent experiment after STALE_S anyway
            pass


def publish_tenants(tenants: list[Tenant]) -> None:
    """The head's tenants, now (they override what each experiment was submitted with)."""
    ray.get(admission().set_tenants.remote([t.to_json() for t in tenants]), timeout=30)


def snapshot() -> list[dict[str, Any]]:
    """Per tenant: quota, priority, what runs and what waits (AdmissionBook.snapshot)."""
    return ray.get(admission().snapshot.remote(), timeout=30)
