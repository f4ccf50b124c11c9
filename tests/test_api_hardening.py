"""What a hostile client can hold on `orch serve`, for real: a server with short deadlines
(headers 2 s, body 3 s, two event streams per token) on a loopback port, raw sockets that stall
or trickle, and the security headers on every kind of answer (the grading page also in Chromium)."""
from __future__ import annotations

import base64
import hashlib
import http.client
import json
import re
import select
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from orchestrator.api.server import HttpLimits
from orchestrator.journal import open_journal
from tests.api_server import Head, start_head, stop_head

pytest.importorskip("psutil")

HEADER_S, BODY_S, SSE_N = 2.0, 3.0, 2
SLACK_S = 2.0
SECURITY = {"x-content-type-options": "nosniff", "x-frame-options": "DENY", "referrer-policy": "no-referrer"}
MANIFEST = """\
name: followed
model: {variant: sd, base: tiny-random, resolution: 32}
data: {train: {kind: shapes, captions: spatial, n: 8}}
train: {steps: 200, batch_size: 2}
"""


@pytest.fixture(scope="module")
def head(tmp_path_factory) -> Head:
    h = start_head(tmp_path_factory.mktemp("hardening"),
                   args=("--header-timeout", str(HEADER_S), "--body-timeout", str(BODY_S),
                         "--sse-per-token", str(SSE_N)))
    yield h
    stop_head(h)


def connect(head: Head) -> socket.socket:
    return socket.create_connection(("127.0.0.1", head.port), timeout=10)


def until_closed(sock: socket.socket, deadline: float) -> bytes:
    """Everything the server sends until it closes the connection; fails if it is open at `deadline`."""
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"connection still open; received {data[:80]!r}")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def trickle(head: Head, headers: str, declared: int, stop_after_s: float) -> tuple[bytes, float]:
    """Send `headers` (a POST declaring `declared` body bytes), then the body at 1 byte/s until
    the server closes: (all it sent, seconds from the headers to the close)."""
    sock = connect(head)
    try:
        sock.sendall(f"{headers}Content-Length: {declared}\r\n\r\n".encode())
        start, data, sent = time.monotonic(), b"", 0
        while time.monotonic() - start < stop_after_s:
            if sent < declared:
                try:
                    sock.send(b"x")
                    sent += 1
                except OSError:  # closed by the server between two bytes
                    return data + until_closed(sock, time.monotonic() + 1), time.monotonic() - start
            if select.select([sock], [], [], 1.0)[0]:
                chunk = sock.recv(65536)
                if not chunk:
                    return data, time.monotonic() - start
                data += chunk
        raise AssertionError(f"still open {stop_after_s} s after the headers; received {data[:80]!r}")
    except ConnectionResetError:
        return data, time.monotonic() - start
    finally:
        sock.close()


def assert_secured(headers: dict[str, str], html: bool = False) -> str:
    for name, value in SECURITY.items():
        assert headers.get(name) == value, (name, headers)
    csp = headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    if not html:
        assert csp.startswith("default-src 'none';")
    return csp


# ------------------------------------------------------------------ headers that never end
def test_the_defaults_bound_every_read():
    limits = HttpLimits()
    assert 0 < limits.header_timeout_s <= 10 and 0 < limits.body_timeout_s <= 10 and limits.max_connections > 0


def test_bad_limits_are_exit_2_naming_the_flag(tmp_path):
    from typer.testing import CliRunner

    from orchestrator.cli import app

    r = CliRunner().invoke(app, ["serve", "--header-timeout", "0", "--body-timeout", "-1", "--max-connections", "0",
                                 "--sse-per-token", "0", "--state-dir", str(tmp_path)])
    assert r.exit_code == 2
    for flag in ("--header-timeout 0:", "--body-timeout -1:", "--max-connections 0:", "--sse-per-token 0:"):
        assert flag in r.stderr, r.stderr


def test_200_connections_that_never_finish_their_headers_are_closed_within_the_timeout(head):
    opened = time.monotonic()
    silent = [connect(head) for _ in range(100)]
    partial = [connect(head) for _ in range(100)]
    for s in partial:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # no blank line: the headers never end
    deadline = time.monotonic() + HEADER_S + SLACK_S
    try:
        assert not select.select(silent + partial, [], [], HEADER_S - 0.8)[0]  # nothing closed early
        answers = [until_closed(s, deadline) for s in silent + partial]
    finally:
        for s in silent + partial:
            s.close()
    assert time.monotonic() - opened < HEADER_S + SLACK_S + 1
    assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers), {a[:40] for a in answers}
    assert head.call("GET", "/healthz", token=None, timeout=10)[0] == 200  # and it still serves


def test_headers_sent_a_byte_at_a_time_are_cut_off_too(head):
    """Slowloris: bytes keep arriving, but the headers do not complete in time."""
    sock = connect(head)
    start = time.monotonic()
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        while not select.select([sock], [], [], 0.3)[0]:
            assert time.monotonic() - start < HEADER_S + SLACK_S, "still open"
            try:
                sock.send(b"a")
            except OSError:
                break
        assert until_closed(sock, start + HEADER_S + SLACK_S).startswith(b"HTTP/1.1 408 ")
    finally:
        sock.close()
    assert HEADER_S - 0.5 < time.monotonic() - start < HEADER_S + SLACK_S


def test_a_kept_alive_connections_next_request_has_the_same_deadline(head):
    sock = connect(head)
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = b""
        while b'"ok"' not in first:
            first += sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 ")
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # the next request starts, and stalls
        start = time.monotonic()
        while time.monotonic() - start < HEADER_S + SLACK_S and not select.select([sock], [], [], 0.5)[0]:
            sock.send(b"b")  # a byte now and then: the idle keep-alive timer alone would never fire
        assert until_closed(sock, start + HEADER_S + SLACK_S).startswith(b"HTTP/1.1 408 ")
    finally:
        sock.close()


# ------------------------------------------------------------------ bodies that never end
def test_20_bodies_trickled_at_one_byte_a_second_get_408_and_are_closed(head):
    post = f"POST /v1/experiments HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {head.token}\r\n" \
           "Content-Type: application/yaml\r\n"
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda _: trickle(head, post, 1000, BODY_S + SLACK_S + 3), range(20)))
    for raw, took in results:
        status, headers, body = parse(raw)
        assert status == 408 and headers["connection"] == "close", raw[:200]
        assert json.loads(body)["detail"] == f"request body not received within {BODY_S:g} s"
        assert_secured(headers)
        assert BODY_S - 0.5 < took < BODY_S + SLACK_S
    assert head.call("GET", "/v1/experiments", timeout=10)[0] == 200


def test_an_answer_before_the_body_closes_the_connection(head):
    """401 comes before the body is read; the unread rest cannot then hold the connection."""
    raw, took = trickle(head, "POST /v1/experiments HTTP/1.1\r\nHost: x\r\n", 1000, SLACK_S + 3)
    status, headers, _ = parse(raw)
    assert status == 401 and headers["connection"] == "close" and took < SLACK_S
    assert_secured(headers)
    raw, took = trickle(head, "GET /healthz HTTP/1.1\r\nHost: x\r\n", 1000, SLACK_S + 3)  # a body nobody reads
    assert parse(raw)[0] == 200 and parse(raw)[1]["connection"] == "close" and took < SLACK_S


def test_a_whole_body_in_time_is_still_served_on_a_kept_alive_connection(head):
    conn = http.client.HTTPConnection("127.0.0.1", head.port, timeout=30)
    try:
        for _ in range(2):
            conn.request("POST", "/v1/experiments", body=b"name: [", headers={"Authorization": f"Bearer {head.token}"})
            resp = conn.getresponse()
            assert resp.status == 422 and resp.getheader("connection") != "close"
            resp.read()
    finally:
        conn.close()


# ------------------------------------------------------------------ event streams per token
@pytest.fixture(scope="module")
def unsettled(head, tmp_path_factory) -> str:
    """An experiment journaled with queued trials and no coordinator: its stream never ends by itself."""
    from orchestrator.experiment.plan import plan_sweep

    f = tmp_path_factory.mktemp("followed") / "m.yaml"
    f.write_text(MANIFEST)
    plan = plan_sweep(f)
    with open_journal(head.journal_url, create=False) as j:
        j.register_experiment(plan.experiment_id, plan.name, plan.record())
        j.register_trials(plan.experiment_id, {t.id: t.config for t in plan.trials})
    return plan.experiment_id


def follow(head: Head, eid: str, token: str) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    conn = http.client.HTTPConnection("127.0.0.1", head.port, timeout=30)
    conn.request("GET", f"/v1/experiments/{eid}/events", headers={"Authorization": f"Bearer {token}"})
    return conn, conn.getresponse()


def test_event_streams_are_capped_per_token(head, unsettled):
    other = "o" * 8 + hashlib.sha256(b"other").hexdigest()[:24]
    with open(head.tokens_file, "a") as f:
        f.write(f"{other}\n")
    opened = []
    try:
        for _ in range(SSE_N):
            opened.append(follow(head, unsettled, head.token))
            assert opened[-1][1].status == 200
            assert opened[-1][1].getheader("content-type").startswith("text/event-stream")
        conn, over = follow(head, unsettled, head.token)
        body = json.loads(over.read())
        conn.close()
        assert over.status == 429 and over.getheader("retry-after") == "5"
        assert "already follows 2 event streams" in body["detail"] and "--sse-per-token" in body["detail"]
        # the same token with other spacing is still the same token
        conn, spelled = follow(head, unsettled, f" {head.token}  ")
        conn.close()
        assert spelled.status == 429
        opened.append(follow(head, unsettled, other))  # another token still gets in
        assert opened[-1][1].status == 200
        first = opened.pop(0)
        first[0].close()  # one stream ends: its slot is free again (once the server sees the close)
        deadline = time.monotonic() + 10
        while True:
            conn, again = follow(head, unsettled, head.token)
            opened.append((conn, again))
            if again.status == 200 or time.monotonic() > deadline:
                break
            again.read()
            time.sleep(0.3)
        assert again.status == 200
    finally:
        for conn, _ in opened:
            conn.close()


# ------------------------------------------------------------------ security headers
def test_every_kind_of_answer_carries_the_security_headers(head):
    status, headers, page = head.call("GET", "/grade", token=None)
    assert status == 200 and headers["content-type"].startswith("text/html")
    csp = assert_secured(headers, html=True)
    script = re.search(rb"<script>(.*?)</script>", page, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(script).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in csp  # exactly the page's own script, nothing inline else
    assert "img-src data:" in csp and "connect-src 'self'" in csp and "default-src 'none'" in csp
    for path, token in (("/healthz", None), ("/v1/experiments", "default"), ("/v1/experiments", None),
                        ("/v1/experiments/e0123456789ab", "default")):
        status, headers, _ = head.call("GET", path, token=token)
        assert status in (200, 401, 404), (path, status)
        assert headers["content-type"] == "application/json"
        assert_secured(headers)


def test_the_grading_page_runs_under_its_policy_in_chromium(head):
    from selenium.webdriver.common.by import By

    from tests.fixtures_browser import new_browser, quit_browser

    drv = new_browser()
    try:
        drv.get(f"{head.url}/grade")
        form = drv.find_element(By.ID, "login")
        assert form.is_displayed()  # its script ran (no task in the link: it asks)
        assert drv.execute_script("return getComputedStyle(document.body).marginTop") == "24px"  # its style applied
        injected = drv.execute_script(
            "const s = document.createElement('script'); s.textContent = 'window.injected = 1';"
            "document.body.append(s); return window.injected === undefined;")
        assert injected  # a script that is not the page's own does not run
    finally:
        quit_browser(drv)


def test_the_report_page_carries_its_own_policy(tmp_path):
    """A file, not served: the policy is a <meta>; it names the page's own <style> by hash."""
    import html

    from orchestrator.report.build import write_report
    from orchestrator.report.collect import ReportData
    from orchestrator.results import ResultsTable
    from tests.fixtures_browser import new_browser, quit_browser

    data = ReportData("e0123456789ab", "csp", "done", ResultsTable("e0123456789ab", "csp", [], [], []), [],
                      "name: csp\n", "m.yaml")
    page = write_report(data, tmp_path / "report").read_text()
    csp = html.unescape(re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', page).group(1))
    style = re.search(r"<style>(.*?)</style>", page, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    assert csp.startswith("default-src 'none';") and f"style-src 'sha256-{digest}'" in csp
    assert "script-src" not in csp and "img-src 'self'" in csp and "<script" not in page
    drv = new_browser()
    try:
        drv.get((tmp_path / "report" / "index.html").as_uri())
        assert drv.execute_script("return getComputedStyle(document.body).maxWidth") == "1200px"  # style allowed
    finally:
        quit_browser(drv)
