"""No secret leaves as an error: a real `orch serve` (and its Ray workers) runs with planted
credentials in its environment and is fed manifests that fail in varied ways (a CSV in the data
root that quotes the credentials and is malformed, a path probe at /proc/self/environ, a model
base that is no model); the credentials appear in no HTTP answer, no server-sent event, no row
of any journal table, no line of the server's log and no `orch report` output. The redaction
itself (journal/redact.py) is checked first, without a server."""
from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import time
import uuid

import pytest

from orchestrator.journal import Event, EventKind
from orchestrator.journal.redact import LIMIT, MASK, bound_traceback, excerpt, quote, redact, redact_argv
from tests.api_server import Head, env, start_head, stop_head

pytest.importorskip("psutil")

SECRET = f"s3cr3t-{uuid.uuid4().hex}"
ACCOUNT_KEY = f"{uuid.uuid4().hex}{uuid.uuid4().hex}=="
API_TOKENS = [f"tok-{uuid.uuid4().hex}", f"tok-{uuid.uuid4().hex}"]
PLANTED = {
    "ORCH_TEST_SECRET_KEY": SECRET,
    "AZURE_STORAGE_CONNECTION_STRING": f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
                                       f"AccountKey={ACCOUNT_KEY};BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;",
    "ORCH_API_TOKENS": ",".join(API_TOKENS),
}
SECRETS = [SECRET, ACCOUNT_KEY, *API_TOKENS]
ENVIRON_DUMP = "\0".join(f"{k}={v}" for k, v in PLANTED.items())  # what /proc/self/environ would give


def leaks(text: str | bytes) -> list[str]:
    text = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return [s for s in SECRETS if s in text]


# ------------------------------------------------------------------ the redaction, in-process
def test_error_text_is_bounded_escaped_and_redacted(monkeypatch):
    for name, value in PLANTED.items():
        monkeypatch.setenv(name, value)
    text = (f"DataFormatError: x.csv:1: the header has {ENVIRON_DUMP}\x1b[2J\u202e and "
            f"postgresql://postgres:hunter2pw@db:5432/orch, https://acct.blob.core.windows.net/c?sv=1&sig=AbC%2Fd "
            f"SharedAccessSignature=sv=2020&sig=zz;  Authorization: Bearer abcdefgh12345678 " + "x" * 1000)
    shown = excerpt(text)
    assert len(shown) <= LIMIT and not leaks(shown)
    assert "hunter2pw" not in shown and "AbC%2Fd" not in shown and "abcdefgh12345678" not in shown
    assert "\x1b" not in shown and "\\x1b[2J" in shown and "\\u202e" in shown and "\\x00" in shown
    whole = redact(text)
    assert "postgres:***@db:5432/orch" in whole and "sig=***" in whole and "Bearer ***" in whole
    assert "SharedAccessSignature=***;" in whole and not leaks(whole) and "hunter2pw" not in whole
    # a secret is masked before the cut: no prefix of it survives at the edge
    edge = excerpt("e" * (LIMIT - 20) + SECRET)
    assert SECRET[:12] not in edge
    # short or ordinary values are not masked: errors stay readable
    monkeypatch.setenv("SOME_KEY", "short")
    assert redact("a short word, Basic shapes, token count 3") == "a short word, Basic shapes, token count 3"
    # input data quoted in a message: a short repr
    q = quote("line\n" * 100 + SECRET)
    assert q.startswith("'line\\nline") and len(q) < 120 and "\n" not in q
    tb = bound_traceback("Traceback (most recent call last):\n" + "  File x\n" * 500 + f"ValueError: {SECRET}\n")
    assert not leaks(tb) and len(tb.splitlines()) <= 61 and tb.endswith(f"ValueError: {MASK}")


def test_the_journal_bounds_every_error_it_is_given(monkeypatch):
    monkeypatch.setenv("ORCH_TEST_SECRET_KEY", SECRET)
    e = Event.for_trial("e1", "t1", EventKind.FAILED, "k", error=f"ValueError: {SECRET} " + "y" * 5000,
                        traceback=f"Traceback\n  File a\nValueError: {SECRET}")
    assert len(e.payload["error"]) <= LIMIT and not leaks(str(e.payload))
    w = Event("e1", EventKind.WARNED, "w", "t1", {"notice": "checkpoint_skipped", "reason": f"unreadable: {SECRET}",
                                                   "key": "trials/t1/ckpt"})
    assert not leaks(str(w.payload)) and w.payload["key"] == "trials/t1/ckpt"


def test_server_log_lines_and_tracebacks_are_redacted(monkeypatch):
    import io
    import logging

    from orchestrator.journal.redact import redact_logs

    monkeypatch.setenv("ORCH_TEST_LOG_KEY", "log-secret-" + uuid.uuid4().hex)
    secret = __import__("os").environ["ORCH_TEST_LOG_KEY"]
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    logger = logging.getLogger("orch-test-redaction")
    logger.addHandler(handler)
    monkeypatch.setattr(logger, "propagate", False)
    try:
        redact_logs([logger.name])
        logger.warning("opened %s", f"postgresql://u:{secret}@db/orch")
        try:
            raise RuntimeError(f"read {secret}")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    out = buf.getvalue()
    assert secret not in out and "Traceback" in out and out.count(MASK) == 2, out


def test_argv_is_shown_without_credentials():
    argv = ["orch", "serve", "--journal", "postgresql://postgres:pg-pass-123@h/db", "--token", API_TOKENS[0],
            "--journal-password=pg-pass-123", "--blobs=https://u:pg-pass-123@h/c", "--port", "8470", "m.yaml"]
    shown = " ".join(redact_argv(argv))
    assert "pg-pass-123" not in shown and API_TOKENS[0] not in shown
    assert shown.endswith("--port 8470 m.yaml") and "--token ***" in shown and "@h/db" in shown


# ------------------------------------------------------------------ a real head
@pytest.fixture(scope="module")
def head(tmp_path_factory) -> Head:
    h = start_head(tmp_path_factory.mktemp("secrets"), cpus=2, extra_env=PLANTED)
    yield h
    stop_head(h)


BASE = """\
name: {name}
model: {{variant: sd, base: {base}, resolution: 32}}
data: {{train: {train}}}
train: {{steps: 2, batch_size: 2, checkpoint_every: 2}}
resources: {{max_concurrent_trials: 1}}
"""
SHAPES = "{kind: shapes, captions: spatial, n: 8}"


def manifest(name: str, base: str = "tiny-random", train: str = SHAPES, extra: str = "") -> bytes:
    return (BASE.format(name=name, base=base, train=train) + extra).encode()


def sse(head: Head, eid: str, seconds: float = 3.0) -> bytes:
    """The event stream of an experiment as far as it goes in `seconds` (a failed trial leaves it
    unsettled, so the stream stays open)."""
    with socket.create_connection(("127.0.0.1", head.port), timeout=seconds) as s:
        s.sendall(f"GET /v1/experiments/{eid}/events HTTP/1.1\r\nHost: x\r\n"
                  f"Authorization: Bearer {head.token}\r\n\r\n".encode())
        data, end = b"", time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            data += chunk
    return data


def journal_rows(head: Head) -> str:
    db = head.journal_url.removeprefix("sqlite:///")
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        assert {"events", "experiments", "trials", "leases"} <= set(tables), tables
        return "\n".join(f"{t}: {row!r}" for t in tables for row in conn.execute(f'SELECT * FROM "{t}"'))


@pytest.mark.timeout(240)
def test_no_planted_secret_leaves_the_head(head, tmp_path):
    bodies: list[bytes] = []

    def call(method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        status, _, data = head.call(method, path, body)
        bodies.append(data)
        return status, data

    # A CSV inside the data root that quotes the environment in its header and lacks its columns.
    folder = head.data_root / "leaky-folder"
    folder.mkdir()
    (folder / "metadata.csv").write_text(f"caption,{SECRET},{ENVIRON_DUMP}\nhello,world\n")
    # A model base that is no model: its index names the secret as its pipeline.
    not_model = head.data_root / "not-a-model"
    not_model.mkdir()
    (not_model / "model_index.json").write_text(f'{{"_class_name": "{SECRET}", "note": "{ACCOUNT_KEY}"}}')
    (head.data_root / "bench.csv").write_text(f"Prompt;{SECRET}\n{ENVIRON_DUMP}\n")

    runtime = {
        "csv": manifest("leaky-csv", train=f"{{kind: imagefolder, root: {folder}}}"),
        "not-a-model": manifest("not-a-model", base=str(not_model)),
    }
    refused = {
        "environ-probe": manifest("environ-probe", extra=(
            f"eval: {{suites: [drawbench], clip: {head.data_root}, "
            f"drawbench: {{file: '{head.state_dir}/c://../../../../proc/self/environ'}}}}\n")),
        "drawbench-csv": manifest("drawbench-csv", extra=(
            f"eval: {{suites: [drawbench], drawbench: {{file: {head.data_root / 'bench.csv'}}}}}\n")),
    }
    answers = {}
    for label, body in refused.items():
        status, data = call("POST", "/v1/experiments", body)
        assert status == 422, (label, data)
        answers[label] = json.loads(data)
    probe = answers["environ-probe"]["errors"]
    assert [e for e in probe if e["path"] == "eval.drawbench.file"], probe  # refused, not read
    ids = {}
    for label, body in runtime.items():
        status, data = call("POST", "/v1/experiments", body)
        assert status == 201, (label, data)
        ids[label] = json.loads(data)["experiment_id"]

    deadline = time.monotonic() + 120
    for label, eid in ids.items():
        while True:
            status, data = call("GET", f"/v1/experiments/{eid}")
            trials = json.loads(data)["trials"]
            if trials and all(t["status"] == "failed" for t in trials):
                assert all(t["error"] and len(t["error"]) <= LIMIT for t in trials), trials
                break
            assert time.monotonic() < deadline and not any(t["status"] == "done" for t in trials), (label, trials)
            time.sleep(0.5)
    csv_error = json.loads(call("GET", f"/v1/experiments/{ids['csv']}")[1])["trials"][0]["error"]
    assert "metadata.csv:1" in csv_error and "missing column" in csv_error, csv_error  # still says what and where

    call("GET", "/v1/experiments")
    for eid in ids.values():
        for fmt in ("json", "csv", "table"):
            call("GET", f"/v1/experiments/{eid}/results?format={fmt}")
    streams = {label: sse(head, eid) for label, eid in ids.items()}
    assert all(b"event: failed" in s for s in streams.values()), streams

    out = tmp_path / "report"
    report = subprocess.run([sys.executable, "-m", "orchestrator.cli", "report", ids["csv"], "--out", str(out),
                             "--journal", head.journal_url], env=env(), capture_output=True, text=True, timeout=120)
    report_text = report.stdout + report.stderr + "".join(
        p.read_text(errors="replace") for p in out.rglob("*") if p.is_file() and p.suffix in (".html", ".json", ".csv"))

    for label, data in [*(("response", b) for b in bodies), *streams.items(), ("journal", journal_rows(head)),
                        ("report", report_text), ("server log", head.log.read_bytes())]:
        assert not leaks(data), (label, leaks(data))
