"""Start or join Ray: an embedded single-node cluster on free ports, or an existing cluster.

Ray's `ray start --head` defaults to 6379 (taken by Redis on this machine). `ray.init()` starting
a local head takes its GCS port from RAY_GCS_SERVER_PORT, so we pick a free port and set it
explicitly; every other port Ray opens is OS-chosen, except the dashboard agent's HTTP port,
which Ray keeps at 52365 and tolerates losing.

An embedded head's processes end with the driver, however it ends: Ray ties gcs_server and the
raylet to it, and a watchdog process (ray_watchdog.py) stops the rest of their tree (the raylet's
dashboard and runtime-env agents, workers) within seconds of the driver's exit, SIGKILL included.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil
import ray

# What every worker process needs: no hub downloads, no usage reporting.
# RAY_worker_niceness: Ray starts its workers at nice 15, so on a machine with any other busy
# process the trials, which are the job, starve (docs/measurements.md: the trainer actors' startup).
WORKER_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0",
              "RAY_worker_niceness": "0"}
# Every Ray head node has this resource (Ray Train pins its state actor with it): a coordinator asks
# for a sliver of it so it lives on the head, whose loss ends the cluster anyway, never on a
# worker node whose loss would take the sweep's supervisor with it.
HEAD_RESOURCE = "node:__internal_head__"
ON_HEAD = {"resources": {HEAD_RESOURCE: 0.001}}
_STANDARD = {"CPU", "GPU", "memory", "object_store_memory"}


@dataclass(frozen=True)
class ClusterInfo:
    address: str      # GCS address, what `orch submit --address` takes
    embedded: bool    # started by us (and stopped by `shutdown`)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_local(num_cpus: int | None = None, num_gpus: int | None = None) -> ClusterInfo:
    """An embedded Ray head in this process, on a free GCS port (never 6379).

    The head's processes, and so every worker, inherit this process's environment, so WORKER_ENV
    is set here rather than as a job runtime_env: a runtime_env costs each worker start a round
    trip to Ray's runtime-env agent for every actor (docs/measurements.md)."""
    if ray.is_initialized():
        return ClusterInfo(ray.get_runtime_context().gcs_address, embedded=False)
    for key, value in WORKER_ENV.items():
        os.environ[key] = value
    os.environ["RAY_GCS_SERVER_PORT"] = str(free_port())
    before = _children()
    try:
        # address="local": always a new embedded head. Without it ray.init joins whatever cluster
        # this machine started last (/tmp/ray/ray_current_cluster), e.g. another user's `ray start`.
        ctx = ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, num_gpus=num_gpus,
                       include_dashboard=False, log_to_driver=False, configure_logging=False)
    finally:
        os.environ.pop("RAY_GCS_SERVER_PORT", None)  # a later local head picks its own port
    _start_watchdog({pid: t for pid, t in _children().items() if before.get(pid) != t})
    return ClusterInfo(ctx.address_info["gcs_address"], embedded=True)


_watchdog: subprocess.Popen | None = None
WATCHDOG_WAIT_S = 15.0  # its SIGTERM grace and SIGKILL wait, and then some


def _children() -> dict[int, float]:
    """This process's children: pid -> start time (what tells a recycled pid apart)."""
    from orchestrator.journal.lease import process_start

    out = {}
    for p in psutil.Process().children():
        try:
            out[p.pid] = process_start(p.pid)
        except psutil.Error:
            continue
    return out


def _start_watchdog(head: dict[int, float]) -> None:
    """Watch the processes the head just started (the driver's new children) and their descendants."""
    global _watchdog
    if not head:
        return
    script = Path(__file__).with_name("ray_watchdog.py")
    # -I: run the file alone (no package, no Ray import); its own session, so a Ctrl-C or SIGHUP
    # meant for the driver's terminal does not end it before it has cleaned up.
    _watchdog = subprocess.Popen([sys.executable, "-I", str(script), str(os.getpid()),
                                  *(f"{pid}:{t}" for pid, t in sorted(head.items()))],
                                 stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True)


def _stop_watchdog() -> None:
    """After ray.shutdown: let the watchdog stop whatever of the head outlived it, and wait for that."""
    global _watchdog
    dog, _watchdog = _watchdog, None
    if dog is None:
        return
    dog.stdin.close()  # EOF: reap now
    try:
        dog.wait(timeout=WATCHDOG_WAIT_S)
    except subprocess.TimeoutExpired:
        dog.kill()
        dog.wait()


def connect(address: str) -> ClusterInfo:
    """Join a running cluster (`ray start --head --port=...` on the head). Its workers write their
    metrics to ORCH_METRICS_DIR (default /tmp/orch-metrics) on their node, where `orch metrics
    serve` exports them."""
    if not ray.is_initialized():
        metrics = {"PROMETHEUS_MULTIPROC_DIR": os.environ.get("ORCH_METRICS_DIR", "/tmp/orch-metrics")}
        ray.init(address=address, log_to_driver=False, configure_logging=False,
                 runtime_env={"env_vars": {**WORKER_ENV, **metrics}})
    return ClusterInfo(address, embedded=False)


def shutdown(info: ClusterInfo | None = None) -> None:
    """Stop the embedded head (every process it started is gone when this returns); a joined
    cluster is left running."""
    if info is not None and not info.embedded:
        return
    if ray.is_initialized():
        ray.shutdown()
    _stop_watchdog()


def node_placement() -> dict:
    """Where the calling worker runs: its node's id and address, whether it is the head, and the
    node's own resources (`accelerator_type:A100`, a custom label given with `ray start
    --resources`), and the process id."""
    node_id = ray.get_runtime_context().get_node_id()
    resources = next((n["Resources"] for n in ray.nodes() if n["NodeID"] == node_id), {})
    tags = sorted(k for k in resources if k not in _STANDARD and not k.startswith("node:"))
    return {"node_id": node_id, "node_ip": ray.util.get_node_ip_address(), "head": HEAD_RESOURCE in resources,
            "tags": tags, "pid": os.getpid()}


def cluster_slots(cpus_per_trial: float, gpus_per_trial: int) -> int:
    """How many trials fit in the cluster at once (at least one)."""
    res = ray.cluster_resources()
    if gpus_per_trial > 0:
        return max(1, int(res.get("GPU", 0) // gpus_per_trial))
    return max(1, int(res.get("CPU", 1) // cpus_per_trial))
