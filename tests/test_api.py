"""The head's HTTP API, for real: `orch serve` on a loopback port over an embedded Ray (one CPU
slot) and a SQLite journal (a PostgreSQL one for the concurrency test's twin); requests over TCP;
the CLI's `--api` as a subprocess.

Tests share one server (its start is ~15 s of Ray) and run in file order: the ones that leave
coordinators running (the CLI round trip, the 100 concurrent submissions) come last but one, and
cancel what they started.
"""
from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from orchestrator.journal import EventKind, open_journal
from tests.api_server import Head, env, start_head, stop_head

pytest.importorskip("psutil")

MANIFEST = """\
name: {name}
model: {{variant: sd, base: tiny-random, resolution: 32}}
data: {{train: {{kind: shapes, captions: spatial, n: 8}}}}
train: {{steps: {steps}, batch_size: 2, checkpoint_every: 2}}
resources: {{max_concurrent_trials: 1}}
"""


def manifest(name: str, steps: int = 2, extra: str = "") -> bytes:
    return (MANIFEST.format(name=name, steps=steps) + extra).encode()


@pytest.fixture(scope="module")
def head(tmp_path_factory) -> Head:
    h = start_head(tmp_path_factory.mktemp("head"))
    yield h
    stop_head(h)


def journal_snapshot(head: Head) -> tuple:
    with open_journal(head.journal_url, create=False) as j:
        exps = [e.experiment_id for e in j.list_experiments()]
        n_events = len(j.events())
    files = sorted(p.name for p in head.state_dir.iterdir())
    return exps, n_events, files


ENDPOINTS = [("GET", "/v1/experiments"), ("GET", "/v1/experiments/e0123456789ab"),
             ("GET", "/v1/experiments/e0123456789ab/results?format=csv"),
             ("POST", "/v1/experiments/e0123456789ab/cancel"), ("GET", "/v1/experiments/e0123456789ab/events"),
             ("GET", "/openapi.json"), ("POST", "/v1/experiments")]


def test_every_endpoint_without_or_with_a_wrong_token_is_401_and_writes_nothing(head):
    before = journal_snapshot(head)
    body = manifest("auth-probe")  # valid: had the gate let it through, it would be journaled
    wrong = [None, "nope" * 8, head.token[:-1] + ("0" if head.token[-1] != "0" else "1"), head.token + "x", ""]
    for method, path in ENDPOINTS:
        for token in wrong:
            status, headers, data = head.call(method, path, body if method == "POST" else None, token=token)
            assert status == 401, (method, path, token, data)
            assert headers["www-authenticate"].startswith("Bearer")
        for raw in (f"Basic {head.token}", f"bearer{head.token}", head.token):
            status, _, _ = head.call(method, path, body if method == "POST" else None, token=None,
                                     headers={"Authorization": raw})
            assert status == 401, (method, path, raw)
    assert journal_snapshot(head) == before
    # /healthz is the one open path; the token works everywhere else
    assert head.call("GET", "/healthz", token=None)[0] == 200
    assert head.call("GET", "/v1/experiments")[0] == 200
    assert head.call("GET", "/v1/experiments/e0123456789ab")[0] == 404


def test_the_token_is_checked_before_the_body_is_read(head):
    """Headers that promise a body which never comes: answered at once (401, or 413 when the
    declared size is over the limit), not after waiting for the body."""
    import socket

    for token, size, expect in (("wrong-token-" + "0" * 20, 4096, b" 401 "), (head.token, 2 << 20, b" 413 ")):
        with socket.create_connection(("127.0.0.1", head.port), timeout=10) as sock:
            sock.sendall(f"POST /v1/experiments HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                         f"Content-Length: {size}\r\n\r\n".encode())
            started = time.monotonic()
            first = sock.recv(200)
            assert expect in first.split(b"\r\n")[0], first
            assert time.monotonic() - started < 5


def test_tokens_file_is_reread_so_editing_it_adds_and_revokes(head):
    second = "s3cond-token-" + "7" * 20
    head.tokens_file.write_text(f"{head.token}\n{second}  # ops laptop\n")
    assert head.call("GET", "/v1/experiments", token=second)[0] == 200
    head.tokens_file.write_text(f"# revoked the ops laptop\n{head.token}\n")
    assert head.call("GET", "/v1/experiments", token=second)[0] == 401
    assert head.call("GET", "/v1/experiments")[0] == 200


def test_a_same_size_in_place_edit_with_the_mtime_put_back_still_revokes(head):
    """The file's content is what counts (sha256 per request), not (mtime, size, inode): overwriting a
    token with as many other bytes in place and restoring the mtime revokes it at the next request."""
    import os

    second = "s3cond-token-" + "8" * 20
    head.tokens_file.write_text(f"{head.token}\n{second}\n")
    assert head.call("GET", "/v1/experiments", token=second)[0] == 200
    before = os.stat(head.tokens_file)
    with open(head.tokens_file, "r+b") as f:  # same inode, same size
        f.seek(len(head.token) + 1)
        f.write(b"#" + second[1:].encode())  # the line is a comment now
    os.utime(head.tokens_file, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(head.tokens_file)
    assert (after.st_mtime_ns, after.st_size, after.st_ino) == (before.st_mtime_ns, before.st_size, before.st_ino)
    assert head.call("GET", "/v1/experiments", token=second)[0] == 401
    assert head.call("GET", "/v1/experiments")[0] == 200
    # a bound grading line: the grading API only, as its grader
    grader = "gr4der-token-" + "9" * 20
    head.tokens_file.write_text(f"{head.token}\n{grader} graders=gina\n")
    status, _, data = head.call("GET", "/v1/experiments", token=grader)
    assert status == 403 and b"grading token" in data
    assert head.call("GET", "/v1/grading/tasks/gnope?grader=gina", token=grader)[0] == 404
    assert head.call("GET", "/v1/grading/tasks/gnope?grader=bob", token=grader)[0] == 403
    assert head.call("GET", "/v1/grading/tasks/gnope?grader=bob")[0] == 403  # an API token grades as nobody
    head.tokens_file.write_text(f"{head.token}\n")


def test_a_bad_tokens_line_names_file_and_line_never_its_text(tmp_path):
    from orchestrator.api.auth import TokenError, TokenSource

    secret = "s3cret-" + "z" * 20
    for line, says in ((f"{secret} extra", "options are graders=, name=, quota=, priority= after the token"),
                       (f"{secret} quota=gpus:2,gpus:3", "each once"),
                       (f"{secret} quota=tpus:2", "write gpus:N and/or cpus:N"),
                       (f"{secret} quota=gpus:-1", "gpus must be a number, 0 or more"),
                       (f"{secret} priority=high", "priority= is an integer"),
                       (f"{secret} name=a/b", "name= is 1-64 letters"),
                       (f"{secret} priority=1 priority=2", "priority= is given twice"),
                       (f"{secret} graders=al quota=gpus:1", "a grading token (graders=NAME,...) cannot submit"),
                       (f"{secret} graders=al,b/d", "a grader name is 1-64 letters"),
                       (f"{secret} graders=", "a grader name is 1-64 letters"),
                       ("short", "at least 16 characters")):
        f = tmp_path / "tokens"
        f.write_text(f"# ops\n{secret}x\n{line}\n")
        with pytest.raises(TokenError) as err:
            TokenSource(f, env="")
        assert f"{f}:3" in str(err.value) and says in str(err.value), str(err.value)
        assert secret not in str(err.value) and "short" not in str(err.value)
    f.write_text(f"{secret}\n{secret} graders=al\n")
    with pytest.raises(TokenError, match=":2: this token is already on an earlier line"):
        TokenSource(f, env="")


def test_a_body_over_the_manifest_limit_is_413_declared_or_chunked(head):
    before = journal_snapshot(head)
    big = manifest("too-big") + b"# " + b"x" * (1 << 20) + b"\n"
    status, _, data = head.call("POST", "/v1/experiments", big)
    assert status == 413, data
    conn = http.client.HTTPConnection("127.0.0.1", head.port, timeout=60)  # no Content-Length: counted
    try:
        conn.request("POST", "/v1/experiments", body=iter([big[i:i + 65536] for i in range(0, len(big), 65536)]),
                     headers={"Authorization": f"Bearer {head.token}"}, encode_chunked=True)
    except BrokenPipeError:
        pass  # the head answered 413 and closed before the upload ended: its answer is read below
    assert conn.getresponse().status == 413
    conn.close()
    assert journal_snapshot(head) == before


def test_a_bad_manifest_is_422_with_file_field_and_line(head, tmp_path):
    before = journal_snapshot(head)
    bad = manifest("bad-one").replace(b"steps: 2,", b"steps: -3,")
    status, answer = head.json("POST", "/v1/experiments", bad)
    assert status == 422
    assert answer["valid"] is False
    assert {"file": "manifest", "path": "train.steps", "line": 4} == {k: answer["errors"][0][k]
                                                                       for k in ("file", "path", "line")}
    for junk in (b"", b"\xff\xfe", b"name: [unclosed", b"just a string"):
        status, answer = head.json("POST", "/v1/experiments", junk)
        assert status == 422 and answer["errors"], (junk, answer)
    # the CLI prints the head's issues against the local file, exit 2, as `orch validate` does
    f = tmp_path / "bad.yaml"
    f.write_bytes(bad)
    r = subprocess.run([sys.executable, "-m", "orchestrator.cli", "submit", str(f), "--api", head.url],
                       env=env(ORCH_API_TOKEN=head.token), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert f"{f}:4: train.steps:" in r.stderr.replace("\n", "")
    assert journal_snapshot(head) == before


def test_deep_nesting_and_escaped_control_characters_are_422_with_their_line(head):
    """Each was a 500 (PyYAML's composer recursing 100,000 deep) or accepted (`"\\0"`), before."""
    before = journal_snapshot(head)
    deep = manifest("deep", extra="description: " + "[" * 100_000 + "]" * 100_000 + "\n")
    started = time.perf_counter()
    status, answer = head.json("POST", "/v1/experiments", deep)
    assert status == 422 and time.perf_counter() - started < 5, answer
    assert [(e["line"], e["message"]) for e in answer["errors"]] == [(6, "nested deeper than 32 levels")], answer
    status, answer = head.json("POST", "/v1/experiments", manifest("ctrl", extra='description: "\\0\\x07\\u202e"\n'))
    assert status == 422 and [(e["path"], e["line"]) for e in answer["errors"]] == [("description", 6)], answer
    assert journal_snapshot(head) == before


def test_paths_outside_the_data_roots_are_422_naming_field_and_line(head, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (head.data_root / "link-out").symlink_to(outside)
    cases = {
        "dotdot": ("data: {train: {kind: imagefolder, root: ../../../etc}}", "data.train.root", 3),
        "absolute": (f"data: {{train: {{kind: imagefolder, root: {outside}}}}}", "data.train.root", 3),
        "symlink": (f"data: {{train: {{kind: imagefolder, root: {head.data_root}/link-out}}}}", "data.train.root", 3),
        "blobs": (f"storage: {{blobs: {outside}/blobs}}", "storage.blobs", 6),
        "options": ("data: {train: {kind: imagefolder, root: " + str(head.data_root)
                    + ", options: {questions: ../../x.json}}}", "data.train.options.questions", 3),
    }
    before = journal_snapshot(head)
    for label, (line, field, lineno) in cases.items():
        text = manifest(f"escape-{label}").decode()
        if line.startswith("data:"):
            text = text.replace(text.splitlines()[2], line)
        else:
            text += line + "\n"
        status, answer = head.json("POST", "/v1/experiments", text.encode())
        assert status == 422, (label, answer)
        hits = [e for e in answer["errors"] if e["path"] == field]
        assert hits and hits[0]["line"] == lineno, (label, answer)
        assert "outside" in hits[0]["message"] or "leaves" in hits[0]["message"]
    # a swept path points at its sweep entry
    swept = manifest("escape-swept").decode() + f"sweep: {{grid: {{model.base: [tiny-random, {outside}]}}}}\n"
    status, answer = head.json("POST", "/v1/experiments", swept.encode())
    assert status == 422 and [(e["path"], e["line"]) for e in answer["errors"]] == [("model.base", 6)], answer
    # a path outside is refused without being probed: same answer whether it exists or not
    a = head.json("POST", "/v1/experiments", manifest("probe").replace(b"base: tiny-random", b"base: /etc"))[1]
    b = head.json("POST", "/v1/experiments", manifest("probe").replace(b"base: tiny-random", b"base: /no/such"))[1]
    assert "outside" in a["errors"][0]["message"] and "outside" in b["errors"][0]["message"]
    # inside a data root, the ordinary checks run (here: it does not exist)
    inside = manifest("inside").replace(b"base: tiny-random", f"base: {head.data_root}/no-model".encode())
    status, answer = head.json("POST", "/v1/experiments", inside)
    assert status == 422 and "not found" in answer["errors"][0]["message"], answer
    assert journal_snapshot(head) == before


def cli(head: Head, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args, "--api", head.url],
                          env=env(ORCH_API_TOKEN=head.token), capture_output=True, text=True, timeout=timeout)


def test_cli_submits_follows_and_reads_results_through_the_api(head, tmp_path):
    f = tmp_path / "cli.yaml"
    f.write_bytes(manifest("cli-run"))
    r = cli(head, "submit", str(f))
    assert r.returncode == 0, r.stderr
    eid = r.stdout.split("experiment ")[1].split()[0]
    again = cli(head, "submit", str(f))
    assert again.returncode == 0 and "already submitted" in again.stdout and eid in again.stdout
    follow = cli(head, "status", eid, "--follow", "--format", "json", timeout=240)
    assert follow.returncode == 0, follow.stderr
    kinds = [json.loads(line)["kind"] for line in follow.stdout.splitlines()]
    assert kinds[0] == "submitted" and kinds[-1] == "done" and "checkpointed" in kinds, kinds
    status = cli(head, "status", eid, "--format", "json")
    record = json.loads(status.stdout)[0]
    assert record["status"] == "done" and record["trials"][0]["status"] == "done"
    results = cli(head, "results", eid, "--format", "json")
    assert results.returncode == 0 and json.loads(results.stdout)["rows"][0]["status"] == "done"
    assert cli(head, "results", eid, "--format", "csv").stdout.startswith("n_trials,status")
    # resumable stream: from a seq, only what came after
    status, _, data = head.call("GET", f"/v1/experiments/{eid}/events?after=3")
    ids = [int(line[4:]) for line in data.decode().splitlines() if line.startswith("id: ")]
    assert status == 200 and ids and min(ids) == 4 and data.decode().rstrip().endswith('data: {"settled": true}')
    unknown = cli(head, "cancel", "e000000000000")
    assert unknown.returncode == 2 and "404" in unknown.stderr
    wrong = subprocess.run([sys.executable, "-m", "orchestrator.cli", "status", "--api", head.url],
                           env=env(ORCH_API_TOKEN="w" * 32), capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2 and "401" in wrong.stderr


def test_a_registered_but_never_scheduled_experiment_is_scheduled_by_the_next_submission(head, tmp_path):
    """As if the head had journaled it and died before starting its coordinator."""
    from orchestrator.experiment.plan import plan_sweep

    f = tmp_path / "orphan.yaml"
    f.write_bytes(manifest("orphan", steps=200))
    plan = plan_sweep(f)
    with open_journal(head.journal_url, create=False) as j:
        assert j.register_experiment(plan.experiment_id, plan.name, plan.record())
        j.register_trials(plan.experiment_id, {t.id: t.config for t in plan.trials})
    status, answer = head.json("POST", "/v1/experiments", f.read_bytes())
    assert status == 200 and answer["experiment_id"] == plan.experiment_id and answer["scheduled"], answer
    status, again = head.json("POST", "/v1/experiments", f.read_bytes())
    assert status == 200 and not again["scheduled"]  # it has an owner now
    with open_journal(head.journal_url, create=False) as j:
        deadline = time.monotonic() + 120
        while not j.events(plan.experiment_id, kinds=[EventKind.SUBMITTED]) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert len(j.events(plan.experiment_id, kinds=[EventKind.SUBMITTED])) == 1
    assert head.json("POST", f"/v1/experiments/{plan.experiment_id}/cancel")[0] == 200


def test_100_concurrent_submissions_of_20_manifests_make_exactly_20_experiments(head):
    # On the head's default SQLite journal, the harder case for concurrent writers; the journal's
    # own tests race processes and threads on PostgreSQL too (tests/test_journal.py).
    concurrent_submissions(head)


def concurrent_submissions(head: Head) -> None:
    """100 concurrent POSTs of 20 distinct manifests: exactly 20 experiments, each scheduled once."""
    bodies = [manifest(f"concurrent-{i:02d}", steps=200) for i in range(20)]
    before = set(journal_snapshot(head)[0])
    order = [bodies[i % 20] for i in range(100)]

    def post(body):
        return head.json("POST", "/v1/experiments", body, timeout=300)

    started = time.monotonic()
    with ThreadPoolExecutor(100) as pool:
        answers = list(pool.map(post, order))
    took = time.monotonic() - started
    codes = Counter(s for s, _ in answers)
    assert codes == {201: 20, 200: 80}, (codes, [a for s, a in answers if s not in (200, 201)][:3])
    by_body: dict[bytes, set] = {}
    for body, (_, a) in zip(order, answers):
        by_body.setdefault(body, set()).add(a["experiment_id"])
    assert all(len(ids) == 1 for ids in by_body.values())  # the same manifest, the same id, every time
    ids = {i for s in by_body.values() for i in s}
    assert len(ids) == 20 and sum(a["scheduled"] for _, a in answers) == 20
    with open_journal(head.journal_url, create=False) as j:
        assert set(e.experiment_id for e in j.list_experiments()) - before == ids
        for eid in ids:  # each scheduled once: one coordinator, one `submitted`
            deadline = time.monotonic() + 120
            while not j.events(eid, kinds=[EventKind.SUBMITTED]) and time.monotonic() < deadline:
                time.sleep(0.5)
            assert len(j.events(eid, kinds=[EventKind.SUBMITTED])) == 1, eid
            assert len(j.experiment_state(eid).trials) == 1
    # each body stored once, under its digest, as the head wrote it out for the workers
    import hashlib
    stored = {p.name for p in head.state_dir.glob("*.yaml")}
    assert {f"{hashlib.sha256(b).hexdigest()}.yaml" for b in bodies} <= stored
    assert not list(head.state_dir.glob(".incoming-*"))
    for eid in ids:  # stop them: the next test should not pay for 20 sweeps
        status, answer = head.json("POST", f"/v1/experiments/{eid}/cancel")
        assert status == 200 and answer["experiment_id"] == eid
    print(f"100 concurrent submissions in {took:.1f} s ({head.journal_url.split(':')[0]})")


# ------------------------------------------------------------ the OpenAPI contract (schemathesis)
schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402


# schemathesis' pytest loader (from_fixture) fails on pytest 9 ('Function' has no '_nodeid'): each
# operation's strategy is driven by hypothesis directly instead, with the same checks.
def test_every_operation_keeps_to_the_openapi_document(head):
    """No 5xx; status codes, content types, headers and bodies as documented; bounded to 25 cases
    an operation, derandomized."""
    from hypothesis import given
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    auth = {"Authorization": f"Bearer {head.token}"}
    schema = schemathesis.openapi.from_url(f"{head.url}/openapi.json", headers=auth, timeout=30)
    operations = [r.ok() for r in schema.get_all_operations()]
    assert {f"{o.method.upper()} {o.path}" for o in operations} >= {
        "POST /v1/experiments", "GET /v1/experiments", "GET /v1/experiments/{experiment_id}",
        "GET /v1/experiments/{experiment_id}/results", "POST /v1/experiments/{experiment_id}/cancel",
        "GET /v1/experiments/{experiment_id}/events", "GET /healthz"}
    seen: Counter = Counter()
    settled = [e["experiment_id"] for e in head.json("GET", "/v1/experiments")[1]
               if e["status"] in ("done", "cancelled") and not {"running", "evaluating"} & set(e["counts"])][:3]
    for op in operations:
        # A manifest's validity (files, the capability table) is more than a JSON Schema of a YAML
        # string can say: a schema-valid body may be refused with 422, as documented.
        excluded = [positive_data_acceptance] if op.path == "/v1/experiments" and op.method == "post" else []

        @given(case=op.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None)
        def conforms(case):  # called just below, within this iteration: op and excluded are current
            response = case.call_and_validate(base_url=head.url, headers=auth, timeout=60,
                                              excluded_checks=excluded)  # noqa: B023
            seen[(op.path, response.status_code)] += 1  # noqa: B023

        conforms()
        # and on the experiments the earlier tests left (settled ones: a live event stream runs on)
        if "{experiment_id}" in op.path:
            for eid in settled:
                for query in ({"format": "csv"}, {"format": "table"}, {}) if op.path.endswith("/results") else ({},):
                    response = op.Case(path_parameters={"experiment_id": eid}, query=query).call_and_validate(
                        base_url=head.url, headers=auth, timeout=60)
                    seen[(op.path, response.status_code)] += 1
    assert seen[("/v1/experiments", 422)] > 0 and seen[("/v1/experiments/{experiment_id}", 404)] > 0, seen
