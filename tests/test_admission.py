"""The admission book (experiment/admission.py): quotas hold, priorities order, the cluster is never
over-granted, a silent coordinator's share comes back, and the head's tenants override."""
from __future__ import annotations

import pytest

from orchestrator.experiment.admission import AdmissionBook, Need, Quota, Tenant

GPU = Need(gpus=1, cpus=1)


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def trials(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def test_a_tenant_never_holds_more_than_its_quota():
    book = AdmissionBook(Quota(gpus=8, cpus=64))
    alice = Tenant("alice", quota=Quota(gpus=2))
    todo = trials("a", 5)
    assert book.sync("A", alice, GPU, todo, []) == ["a0", "a1"]
    # asking again before starting them: the same two, nothing more
    assert book.sync("A", alice, GPU, todo, []) == ["a0", "a1"]
    assert book.sync("A", alice, GPU, todo[2:], ["a0", "a1"]) == []
    # one ends: exactly one more, the next in the experiment's order
    assert book.sync("A", alice, GPU, todo[2:], ["a1"]) == ["a2"]
    # her second experiment shares the quota
    assert book.sync("A2", alice, GPU, ["x0"], []) == []
    # both of hers end: one slot each, the experiment running fewer going first
    assert book.sync("A", alice, GPU, todo[3:], []) == ["a3"]
    assert book.sync("A2", alice, GPU, ["x0"], []) == ["x0"]


def test_equal_priorities_share_fairly():
    """A one-trial experiment is not queued behind a big sweep of the same priority: a freed GPU
    goes to the tenant running fewer trials (then the experiment running fewer)."""
    book = AdmissionBook(Quota(gpus=2, cpus=64))
    big = Tenant("big")
    assert book.sync("B", big, GPU, trials("b", 100), []) == ["b0", "b1"]
    assert book.sync("S", Tenant("small"), GPU, ["s0"], []) == []
    assert book.sync("B", big, GPU, trials("b", 100)[2:], ["b1"]) == []   # b0 ended: small runs nothing
    assert book.sync("S", Tenant("small"), GPU, ["s0"], []) == ["s0"]
    # within one tenant too: its second experiment gets the next GPU before its first gets a third
    assert book.sync("B", big, GPU, trials("b", 100)[2:], []) == ["b2"]    # b1 ended
    assert book.sync("B2", big, GPU, ["c0"], []) == []                     # full: b2 and s0
    book.sync("S", Tenant("small"), GPU, [], [])                           # s0 ended
    assert book.sync("B", big, GPU, trials("b", 100)[3:], ["b2"]) == []
    assert book.sync("B2", big, GPU, ["c0"], []) == ["c0"]


def test_cpu_quota_and_fractional_cpus():
    book = AdmissionBook(Quota(gpus=0, cpus=8))
    t = Tenant("t", quota=Quota(cpus=1.5))
    half = Need(gpus=0, cpus=0.5)
    assert book.sync("E", t, half, trials("e", 5), []) == ["e0", "e1", "e2"]  # 3 x 0.5 = 1.5 exactly


def test_a_freed_gpu_goes_to_the_higher_priority_experiment_first():
    book = AdmissionBook(Quota(gpus=2, cpus=64))
    low, high = Tenant("low"), Tenant("high", priority=10)
    assert book.sync("L", low, GPU, trials("l", 4), []) == ["l0", "l1"]
    assert book.sync("H", high, GPU, trials("h", 2), []) == []   # the cluster is full
    # l0 ends: low asks first, but the GPU is high's
    assert book.sync("L", low, GPU, ["l2", "l3"], ["l1"]) == []
    assert book.sync("H", high, GPU, trials("h", 2), []) == ["h0"]
    assert book.sync("L", low, GPU, ["l2", "l3"], []) == []       # l1 ended too: h1's turn
    assert book.sync("H", high, GPU, ["h1"], ["h0"]) == ["h1"]
    assert book.sync("H", high, GPU, [], ["h0"]) == []
    assert book.sync("L", low, GPU, ["l2", "l3"], []) == ["l2"]   # h1 finished: low goes on


def test_equal_priorities_go_oldest_experiment_first():
    book = AdmissionBook(Quota(gpus=1, cpus=64))
    a, b = Tenant("a"), Tenant("b")
    assert book.sync("first", a, GPU, ["f0", "f1"], []) == ["f0"]
    assert book.sync("second", b, GPU, ["s0"], []) == []
    assert book.sync("second", b, GPU, ["s0"], []) == []
    book.sync("first", a, GPU, ["f1"], [])                         # f0 ended; f1 is older than s0
    assert book.sync("second", b, GPU, ["s0"], []) == []


def test_a_tenant_at_its_quota_holds_back_nobody_else():
    book = AdmissionBook(Quota(gpus=4, cpus=64))
    capped = Tenant("capped", priority=10, quota=Quota(gpus=1))
    assert book.sync("C", capped, GPU, trials("c", 3), []) == ["c0"]
    assert book.sync("O", Tenant("other"), GPU, trials("o", 5), []) == ["o0", "o1", "o2"]


def test_no_backfill_past_a_trial_the_cluster_cannot_fit():
    """A 2-GPU gang trial waiting first is not starved by 1-GPU trials behind it."""
    book = AdmissionBook(Quota(gpus=3, cpus=64))
    assert book.sync("S", Tenant("s"), GPU, ["s0", "s1"], []) == ["s0", "s1"]
    gang = Need(gpus=2, cpus=2)
    assert book.sync("G", Tenant("g", priority=5), gang, ["g0"], []) == []     # 1 free, needs 2
    assert book.sync("S", Tenant("s"), GPU, ["s2"], ["s0", "s1"]) == []         # the free GPU waits for g0
    assert book.sync("S", Tenant("s"), GPU, ["s2"], ["s1"]) == []
    assert book.sync("G", Tenant("g", priority=5), gang, ["g0"], []) == ["g0"]


def test_the_cluster_is_never_over_granted():
    book = AdmissionBook(Quota(gpus=3, cpus=64))
    got = [book.sync(e, Tenant(e), GPU, trials(e, 3), []) for e in ("x", "y", "z")]
    assert sum(map(len, got)) == 3 and got[0] == ["x0", "x1", "x2"]


def test_a_silent_coordinator_is_forgotten_and_its_share_freed():
    clock = Clock()
    book = AdmissionBook(Quota(gpus=1, cpus=64), stale_s=60, clock=clock)
    assert book.sync("dead", Tenant("a"), GPU, ["d0"], []) == ["d0"]
    clock.t = 59
    assert book.sync("live", Tenant("b"), GPU, ["l0"], []) == []
    clock.t = 61
    assert book.sync("live", Tenant("b"), GPU, ["l0"], []) == ["l0"]
    assert [r["name"] for r in book.snapshot()] == ["b"]


def test_release_frees_at_once():
    book = AdmissionBook(Quota(gpus=1, cpus=64))
    assert book.sync("A", Tenant("a"), GPU, ["a0"], []) == ["a0"]
    book.release("A")
    assert book.sync("B", Tenant("b"), GPU, ["b0"], []) == ["b0"]


def test_the_heads_tenants_override_what_an_experiment_was_submitted_with():
    book = AdmissionBook(Quota(gpus=8, cpus=64))
    submitted = Tenant("alice", quota=Quota(gpus=1))
    assert book.sync("A", submitted, GPU, trials("a", 4), []) == ["a0"]
    book.set_tenants([Tenant("alice", priority=3, quota=Quota(gpus=3))])  # the tokens file was edited
    assert book.sync("A", submitted, GPU, trials("a", 4)[1:], ["a0"]) == ["a1", "a2"]
    [row] = book.snapshot()
    assert row["priority"] == 3 and row["quota"] == {"gpus": 3, "cpus": None}
    # a lowered quota stops nothing that runs; it only holds back new starts
    book.set_tenants([Tenant("alice", quota=Quota(gpus=1))])
    assert book.sync("A", submitted, GPU, ["a3"], ["a0", "a1", "a2"]) == []


def test_snapshot_says_what_runs_and_waits_per_tenant():
    book = AdmissionBook(Quota(gpus=2, cpus=64))
    book.set_tenants([Tenant("idle", priority=1, quota=Quota(gpus=4, cpus=8))])
    book.sync("A", Tenant("a", quota=Quota(gpus=1)), GPU, trials("a", 2), [], queued=7)
    book.sync("B", Tenant("b", priority=9), Need(gpus=1, cpus=0.5), ["b0"], [])
    rows = {r["name"]: r for r in book.snapshot()}
    assert [r["name"] for r in book.snapshot()] == ["b", "idle", "a"]  # highest priority first
    assert rows["a"]["running"] == {"gpus": 1, "cpus": 1, "trials": 1} and rows["a"]["waiting_trials"] == 6
    assert rows["b"]["running"] == {"gpus": 1, "cpus": 0.5, "trials": 1} and rows["b"]["waiting_trials"] == 0
    assert rows["idle"]["running"]["trials"] == 0 and rows["idle"]["experiments"] == []
    assert rows["a"]["experiments"] == [{"experiment_id": "A", "running_trials": 1, "waiting_trials": 6}]


def test_quota_text_and_tenant_json():
    assert Quota.parse("gpus:4,cpus:16") == Quota(4, 16) and Quota.parse("cpus:2.5") == Quota(None, 2.5)
    for bad in ("gpus", "gpus:x", "gpus:1,gpus:2", "tpus:1", "gpus:-1", "gpus:inf", ""):
        with pytest.raises(ValueError, match="quota"):
            Quota.parse(bad)
    t = Tenant("vision", 7, Quota(gpus=8))
    assert Tenant.from_json(t.to_json()) == t and Tenant.from_json(None) is None


def test_tokens_file_tenants(tmp_path):
    import hashlib

    from orchestrator.api.auth import TokenError, TokenSource

    a1, a2, ops, grader, plain, env = ("a1" * 10, "a2" * 10, "op" * 10, "gr" * 10, "pl" * 10, "en" * 10)
    f = tmp_path / "tokens"
    f.write_text(f"{a1} name=alice quota=gpus:2,cpus:8 priority=5\n{a2} priority=5 name=alice quota=gpus:2,cpus:8\n"
                 f"{ops} graders=* name=ops priority=9\n{grader} graders=gina\n{plain}\n")
    source = TokenSource(f, env=env)
    told: list = []
    source.listen(told.append)
    who = {t.decode(): p for t, p in source.current()}
    assert who[a1].tenant == who[a2].tenant == Tenant("alice", 5, Quota(2, 8))   # one tenant, two tokens
    assert who[ops].tenant == Tenant("ops", 9) and who[ops].graders is None
    assert who[grader].tenant is None and not who[grader].api
    default = "token-" + hashlib.sha256(plain.encode()).hexdigest()[:8]
    assert who[plain].tenant == Tenant(default) and who[env].tenant.name.startswith("token-")
    assert {t.name for t in told[0]} == {"alice", "ops", default, who[env].tenant.name}
    # an edit that changes a quota is told; one that changes nothing of the tenants is not
    f.write_text(f.read_text().replace("gpus:2", "gpus:4"))
    source.current()
    assert len(told) == 2 and Tenant("alice", 5, Quota(4, 8)) in told[1]
    f.write_text(f.read_text() + "# a comment\n")
    source.current()
    assert len(told) == 2
    f.write_text(f"{a1} name=alice priority=5\n{a2} name=alice priority=6\n")
    with pytest.raises(TokenError, match=r"tokens:2: name=alice has another quota or priority at .*tokens:1"):
        TokenSource(f, env="")
