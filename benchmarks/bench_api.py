"""The head's HTTP API under load: a real `orch serve` (embedded Ray, SQLite journal) on loopback.

1. Requests from 1, 10 and 50 concurrent clients (each its own keep-alive connection):
   - resubmissions of manifests already there (200: answered from memory and the journal's lease
     and status); ORCH_BENCH_API_RESUBMITS requests (default 1000) per row;
   - reads of one experiment (GET /v1/experiments/{id}: its trials' states), as many;
   - new experiments (201: validate, confine, plan, journal, claim; the coordinator starts in the
     background); ORCH_BENCH_API_NEW requests, each a distinct manifest (default 50).
   Reported: requests/s over the wall time, p50 and p99 latency.
2. A 1,000-trial sweep (ORCH_BENCH_SWEEP_TRIALS) scheduled through the API: the POST (validate,
   expand, journal 1,000 trials, start the coordinator) and the time until the coordinator has
   journaled every trial `queued`, per trial.
Everything started is cancelled, and the server stopped, at the end.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_api.py
"""
from __future__ import annotations

import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from orchestrator.journal import EventKind, open_journal  # noqa: E402
from tests.api_server import Head, start_head, stop_head  # noqa: E402

CLIENTS = 50
MANIFEST = """\
name: {name}
model: {{variant: sd, base: tiny-random, resolution: 32}}
data: {{train: {{kind: shapes, captions: spatial, n: 8}}}}
train: {{steps: 200, batch_size: 2, checkpoint_every: 100}}
resources: {{max_concurrent_trials: 1}}
"""


def body(name: str, extra: str = "") -> bytes:
    return (MANIFEST.format(name=name) + extra).encode()


class Client(threading.local):
    """One keep-alive connection per client thread."""

    def __init__(self, head: Head):
        self.head, self.conn = head, None

    def post(self, data: bytes) -> tuple[int, dict, float]:
        return self.call(("POST", "/v1/experiments", data))

    def call(self, request: tuple[str, str, bytes | None]) -> tuple[int, dict, float]:
        method, path, data = request
        started = time.perf_counter()
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.head.port, timeout=600)
            try:
                self.conn.request(method, path, body=data, headers={"Authorization": f"Bearer {self.head.token}"})
                resp = self.conn.getresponse()
                answer = json.loads(resp.read())
                return resp.status, answer, time.perf_counter() - started
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")


def load(head: Head, bodies: list[bytes], expect: int, clients: int = CLIENTS) -> dict:
    """POST each body, `clients` at a time."""
    return calls(head, [("POST", "/v1/experiments", b) for b in bodies], expect, clients)


def calls(head: Head, requests: list[tuple[str, str, bytes | None]], expect: int, clients: int = CLIENTS) -> dict:
    client = Client(head)
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(client.call, requests))
    wall = time.perf_counter() - started
    bad = [(s, a) for s, a, _ in results if s != expect]
    if bad:
        raise SystemExit(f"expected {expect} for every submission, got {bad[:3]}")
    lat = sorted(t for _, _, t in results)
    return {"n": len(requests), "per_s": len(requests) / wall, "wall_s": wall,
            "p50_ms": 1000 * statistics.median(lat), "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))],
            "ids": {a.get("experiment_id") for _, a, _ in results} - {None}}


def cancel_all(head: Head, ids) -> None:
    for eid in ids:
        status, _ = head.json("POST", f"/v1/experiments/{eid}/cancel")
        assert status == 200, (eid, status)


def quiet(head: Head, timeout: float = 120) -> None:
    """Wait until no trial runs (cancelled coordinators have stopped their trainers)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, exps = head.json("GET", "/v1/experiments")
        if not any(e["counts"].get("running") or e["counts"].get("evaluating") for e in exps):
            return
        time.sleep(0.5)


def sweep(head: Head, n: int) -> dict:
    lrs = ", ".join(f"{1e-4 * (1 + i / n):.8e}" for i in range(n))
    data = body("bench-api-sweep", f"sweep: {{grid: {{train.lr: [{lrs}]}}}}\n")
    started = time.perf_counter()
    status, answer = head.json("POST", "/v1/experiments", data, timeout=600)
    posted = time.perf_counter() - started
    assert status == 201 and answer["trials"] == n, (status, answer)
    eid = answer["experiment_id"]
    with open_journal(head.journal_url, create=False) as j:
        while len({e.trial_id for e in j.events(eid, kinds=[EventKind.QUEUED])}) < n:
            if time.perf_counter() - started > 600:
                raise SystemExit("the sweep was not queued within 10 minutes")
            time.sleep(0.05)
    queued = time.perf_counter() - started
    cancel_all(head, [eid])
    return {"post_s": posted, "queued_s": queued, "ms_per_trial_post": 1000 * posted / n,
            "ms_per_trial_queued": 1000 * queued / n}


def main() -> None:
    resubmits = int(os.environ.get("ORCH_BENCH_API_RESUBMITS", 1000))
    new = int(os.environ.get("ORCH_BENCH_API_NEW", 50))
    n_sweep = int(os.environ.get("ORCH_BENCH_SWEEP_TRIALS", 1000))
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        head = start_head(Path(tmp) / "head", cpus=1)
        try:
            seeds = [body(f"bench-api-seed-{i}") for i in range(10)]
            ids = load(head, seeds, 201)["ids"]
            cancel_all(head, ids)  # 10 experiments to resubmit and read, not left training
            quiet(head)
            rows = []
            for clients in (1, 10, CLIENTS):
                rows.append((f"resubmitted (200), {clients} clients",
                             load(head, [seeds[i % len(seeds)] for i in range(resubmits)], 200, clients)))
            reads = [("GET", f"/v1/experiments/{eid}", None) for eid in sorted(ids)]
            for clients in (1, CLIENTS):
                rows.append((f"read one experiment (200), {clients} clients",
                             calls(head, [reads[i % len(reads)] for i in range(resubmits)], 200, clients)))
            for clients in (1, CLIENTS):  # new experiments: answered once journaled and claimed
                fresh = load(head, [body(f"bench-api-new-{clients}-{i}") for i in range(new)], 201, clients)
                rows.append((f"new experiment (201), {clients} clients", fresh))
                cancel_all(head, fresh["ids"])
                quiet(head)
            sw = sweep(head, n_sweep)
        finally:
            stop_head(head)
    print(f"orch serve on loopback, {os.cpu_count()} CPU(s), SQLite journal, embedded Ray; targets (issue 32): "
          f"p99 < 50 ms for reads and resubmissions at {CLIENTS} clients, a new experiment's 201 in < 100 ms")
    print(f"{'requests':<44}{'n':>6}{'per s':>9}{'p50 ms':>10}{'p99 ms':>10}")
    for label, r in rows:
        print(f"{label:<44}{r['n']:>6}{r['per_s']:>9.1f}{r['p50_ms']:>10.1f}{r['p99_ms']:>10.1f}")
    print(f"{n_sweep}-trial sweep through the API: POST {sw['post_s']:.2f} s ({sw['ms_per_trial_post']:.2f} ms/trial: "
          f"validate, expand, journal, start the coordinator); every trial queued after {sw['queued_s']:.2f} s "
          f"({sw['ms_per_trial_queued']:.2f} ms/trial)")


if __name__ == "__main__":
    main()
