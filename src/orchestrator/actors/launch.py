"""A driver's Ray half of running an experiment: start or join Ray, create the experiment's
coordinator actor, and talk to it in plain calls, so the application layer (orchestrator.app)
never touches Ray itself.

Ray is imported inside the functions: importing this module (and the app facade above it) costs
nothing until a run actually starts.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from orchestrator.journal.ownership import Ownership, hand_over

from .names import NAMESPACE

if TYPE_CHECKING:
    from orchestrator.experiment.plan import SweepPlan


def _coordinator(plan: SweepPlan, journal_url: str | None, *, retry_failed: bool, restart_missing: bool,
                 ownership: Ownership, detached: bool):
    from .cluster import ON_HEAD
    from .coordinator import ExperimentCoordinator

    opts: dict[str, Any] = {"name": f"coordinator-{plan.experiment_id}", "namespace": NAMESPACE,
                            "get_if_exists": True, **ON_HEAD}
    if detached:  # it outlives this driver: the lease is handed over and the coordinator keeps it
        opts["lifetime"] = "detached"
        ownership = hand_over(ownership)
    return ExperimentCoordinator.options(**opts).remote(plan.to_json(), journal_url,
                                                        retry_failed=retry_failed, restart_missing=restart_missing,
                                                        ownership=ownership, adopt=detached)


class RunningSweep:
    """A sweep this driver runs: its coordinator's `run` started, and the questions the driver asks
    while it waits (finished yet? progress, notices), as plain calls."""

    def __init__(self, actor: Any):
        self._actor = actor
        self._done = actor.run.remote()

    def finished(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds; True once the coordinator's run has returned."""
        import ray

        return bool(ray.wait([self._done], timeout=timeout)[0])

    def outcome(self) -> dict[str, Any]:
        """What the run returned (its `lease_lost` / `journal_unavailable` keys say how it ended)."""
        import ray

        return ray.get(self._done)

    def progress(self) -> dict[str, dict[str, Any]]:
        """Trial id -> its step, status and latest loss."""
        import ray

        return ray.get(self._actor.progress.remote())

    def notices(self, since: int) -> list[dict[str, Any]]:
        """The trainers' fallback notices from the `since`-th on."""
        import ray

        return ray.get(self._actor.notices.remote(since))

    def preempt(self) -> None:
        """Ask the coordinator to have every running trainer checkpoint and stop (returns at once)."""
        self._actor.preempt.remote()

    def kill(self) -> None:
        import ray

        ray.kill(self._actor)


@contextmanager
def local_ray(num_cpus: int | None) -> Iterator[None]:
    """An embedded Ray head for the duration of the block (every process it started is gone after)."""
    from .cluster import shutdown, start_local

    info = start_local(num_cpus=num_cpus)
    try:
        yield
    finally:
        shutdown(info)


def start_sweep(plan: SweepPlan, journal_url: str | None, ownership: Ownership, *, retry_failed: bool,
                restart_missing: bool) -> RunningSweep:
    """The experiment's coordinator on this driver's Ray, running; it ends with the driver."""
    return RunningSweep(_coordinator(plan, journal_url, retry_failed=retry_failed, restart_missing=restart_missing,
                                     ownership=ownership, detached=False))


def start_detached(plan: SweepPlan, journal_url: str | None, address: str, ownership: Ownership, *,
                   retry_failed: bool = False, restart_missing: bool = False) -> None:
    """Join the cluster at `address` and start a detached coordinator that owns the experiment from
    now on; returns once the actor has its `run`.

    A call made before the actor is up waits in this process and would be lost when it exits (a
    fixed half-second sleep was too short on a loaded head): calls from one caller are sent in
    order, so an answer to the next one means `run` has left."""
    import ray

    from .cluster import connect

    connect(address)
    coord = _coordinator(plan, journal_url, retry_failed=retry_failed, restart_missing=restart_missing,
                         ownership=ownership, detached=True)
    coord.run.remote()
    ray.get(coord.experiment_id.remote(), timeout=120)
