"""The head's side of shared-cluster admission (experiment/admission.py): its tenants pushed to the
cluster's admission book, and the book's table read back for GET /v1/quotas and `orch status --quotas`."""
from __future__ import annotations

import logging
import threading
from typing import Any

from orchestrator.experiment.admission import Tenant

log = logging.getLogger(__name__)


def quota_table(address: str) -> list[dict[str, Any]]:
    """Per tenant: quota, priority, GPUs/CPUs its running trials hold, trials waiting, experiments."""
    from orchestrator.actors import admission
    from orchestrator.actors.cluster import connect

    connect(address)
    return admission.snapshot()


class TenantPublisher:
    """Pushes the head's tenants to the admission book in the background (a Ray call must not hold
    up the request that noticed the tokens file changed); the latest set always wins."""

    def __init__(self, address: str):
        self.address = address
        self._latest: list[Tenant] | None = None
        self._wake = threading.Condition()
        threading.Thread(target=self._loop, name="orch-tenants", daemon=True).start()

    def __call__(self, tenants: list[Tenant]) -> None:
        with self._wake:
            self._latest = list(tenants)
            self._wake.notify()

    def _loop(self) -> None:
        from orchestrator.actors import admission
        from orchestrator.actors.cluster import connect

        while True:
            with self._wake:
                while self._latest is None:
                    self._wake.wait()
                tenants, self._latest = self._latest, None
            try:
                connect(self.address)
                admission.publish_tenants(tenants)
                log.info("admission: %d tenant(s) published", len(tenants))
            except Exception as exc:  # noqa: BLE001 - experiments keep the tenant they were submitted with
                log.error("admission: could not publish the tenants (%s); experiments keep the quota and "
                          "priority they were submitted with until the next change", exc)
