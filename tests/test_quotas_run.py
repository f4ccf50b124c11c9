"""Quotas and priorities end to end: a real `orch serve` over an embedded Ray that declares 3 GPUs it
does not have, three tenants in its tokens file, probe-variant sweeps (orchestrator.testing) of
1-GPU trials submitted over HTTP. From the journal's timeline: the capped tenant never runs more
trials than its quota, the cluster never more than its GPUs, and once the high-priority sweep is
in the admission book no lower-priority trial starts while one of its trials waits. The table
shows in GET /v1/quotas, `orch status --quotas` and the experiment's record."""
from __future__ import annotations

import json
import secrets
import subprocess
import time

import pytest

from orchestrator.journal import EventKind, open_journal
from tests.api_server import env, start_head, stop_head
from tests.test_actors_cli import ORCH
from tests.test_multinode import wait_for

PROBE_ENV = {"ORCH_VARIANT_PLUGINS": "orchestrator.testing.probe_variant", "ORCH_PROBE_STEP_S": "0.1"}
GPUS = 3


def sweep(name: str, n: int) -> bytes:
    lrs = ", ".join(f"{(i + 1) * 1e-3:.1e}" for i in range(n))
    return f"""\
name: {name}
model: {{variant: probe, base: tiny-random, resolution: 32}}
data: {{train: {{kind: shapes, captions: spatial, n: 8}}}}
train: {{steps: 30, batch_size: 2, lr: 1.0e-3, warmup_steps: 0, checkpoint_every: 30, seed: 0}}
sweep: {{grid: {{train.lr: [{lrs}]}}}}
eval: {{suites: []}}
resources: {{gpus_per_trial: 1, cpus_per_trial: 0.5}}
""".encode()


@pytest.fixture
def head(tmp_path):
    h = start_head(tmp_path / "head", cpus=4, args=("--gpus", str(GPUS)), extra_env=PROBE_ENV)
    yield h
    stop_head(h)


def test_quotas_and_priorities_on_a_head_with_fake_gpus(head, tmp_path):
    alice, bob = secrets.token_hex(16), secrets.token_hex(16)
    # edited while the head runs: the tenants reach the admission book without a restart
    head.tokens_file.write_text(f"{head.token} name=others\n{alice} name=alice quota=gpus:1\n"
                                f"{bob} name=bob priority=5\n")

    def submit(token: str, body: bytes) -> str:
        status, doc = head.json("POST", "/v1/experiments", body, token=token)
        assert status == 201, doc
        return doc["experiment_id"]

    def table() -> dict[str, dict]:
        status, rows = head.json("GET", "/v1/quotas")
        assert status == 200, rows
        return {r["name"]: r for r in rows}

    tenants = wait_for(lambda: (lambda t: t if {"alice", "bob", "others"} <= set(t) else None)(table()), 240,
                       "the tenants in the book")
    assert tenants["alice"]["quota"] == {"gpus": 1.0, "cpus": None} and tenants["bob"]["priority"] == 5

    a = submit(alice, sweep("alice-sweep", 3))
    c = submit(head.token, sweep("others-sweep", 5))
    seen_alice = []

    def full() -> bool:
        t = table()
        seen_alice.append(t["alice"]["running"]["gpus"])
        return sum(r["running"]["gpus"] for r in t.values()) == GPUS

    wait_for(full, 240, "the cluster full", every=0.3)
    b = submit(bob, sweep("bob-sweep", 2))
    wait_for(lambda: any(e["experiment_id"] == b for e in table()["bob"]["experiments"]), 240,
             "bob's sweep in the book", every=0.3)
    time.sleep(1.0)  # a grant made before bob's first ask is journaled within this
    with open_journal(head.journal_url, create=False) as j:
        known_at = max(e.seq for e in j.events())

    def settled() -> bool:
        with open_journal(head.journal_url, create=False) as j:
            return all(j.experiment_state(e).status.value == "done" for e in (a, b, c))

    wait_for(settled, 400, "every sweep done", every=1.0)
    assert max(seen_alice) <= 1

    # The journal's timeline: a trial holds its GPU from `running` until training ends (`evaluating`).
    owner = {a: "alice", b: "bob", c: "others"}
    with open_journal(head.journal_url, create=False) as j:
        events = sorted((e for eid in owner for e in j.events(eid) if e.trial_id), key=lambda e: e.seq)
    holding: dict[str, set] = {"alice": set(), "bob": set(), "others": set()}
    bob_waiting = {(e.experiment_id, e.trial_id) for e in events if e.experiment_id == b}  # sweeps share trial ids
    late_lower_starts = []
    for e in events:
        who = owner[e.experiment_id]
        if e.kind is EventKind.RUNNING:
            if who != "bob" and e.seq > known_at and bob_waiting:
                late_lower_starts.append((who, e.trial_id))
            holding[who].add((e.experiment_id, e.trial_id))
            bob_waiting.discard((e.experiment_id, e.trial_id))
        elif e.kind in (EventKind.EVALUATING, EventKind.DONE, EventKind.FAILED, EventKind.CANCELLED):
            holding[who].discard((e.experiment_id, e.trial_id))
        assert len(holding["alice"]) <= 1, f"alice over her 1-GPU quota at seq {e.seq}"
        assert sum(map(len, holding.values())) <= GPUS, f"more trials than GPUs at seq {e.seq}"
    assert not late_lower_starts, f"lower-priority trials started while bob's waited: {late_lower_starts}"
    # ... and it was a real contest: bob's trials did wait for GPUs others still queued for
    bob_starts = [e.seq for e in events if e.experiment_id == b and e.kind is EventKind.RUNNING]
    lower_after = [e.seq for e in events if e.experiment_id != b and e.kind is EventKind.RUNNING and e.seq > known_at]
    assert bob_starts and min(bob_starts) > known_at and lower_after and max(bob_starts) < min(lower_after)

    # whom each experiment ran for, in its record and in `orch status`
    status, detail = head.json("GET", f"/v1/experiments/{a}")
    assert status == 200 and detail["tenant"] == {"name": "alice", "priority": 0, "quota": {"gpus": 1.0, "cpus": None}}
    out = subprocess.run([*ORCH, "status", b, "--api", head.url], env=env(ORCH_API_TOKEN=head.token),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "for bob, priority 5" in out.stdout, out.stdout + out.stderr
    out = subprocess.run([*ORCH, "status", "--quotas", "--api", head.url, "--format", "json"],
                         env=env(ORCH_API_TOKEN=head.token), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["alice"]["quota"]["gpus"] == 1 and rows["bob"]["priority"] == 5
    assert all(r["running"]["trials"] == 0 and r["experiments"] == [] for r in rows.values())  # all released
