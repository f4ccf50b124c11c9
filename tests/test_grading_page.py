"""The grading page as graders use it: real Chromium (selenium) against `orch grade serve`, two
graders at once, one stop-and-continue, one re-submission; the tallies `orch grade results`
prints are what the clicks said. And the grading JSON API is behind the token, alone and on the head;
a grader's token grades as that grader only; a grade names the revision it replaces (stale: 409)."""
from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.eval.grading_task import blind_order
from orchestrator.eval.stats import wilson_interval
from tests.api_server import free_port
from tests.fixtures_browser import new_browser, quit_browser
from tests.grading_fixtures import finished_experiment

SRC = Path(__file__).resolve().parents[1] / "src"
runner = CliRunner()
LETTERS = "abcdefghijklmnopqrstuvwxyz"
# What each grader means (by model), finally; alice first grades item 0 otherwise, then re-submits.
ALICE = {0: ({"base": True, "trial": True}, "trial"), 1: ({"base": False, "trial": True}, "trial"),
         2: ({"base": False, "trial": False}, "base")}
ALICE_FIRST_0 = ({"base": False, "trial": True}, "base")
BOB = {0: ({"base": True, "trial": False}, "trial"), 1: ({"base": False, "trial": True}, "trial"),
       2: ({"base": True, "trial": False}, "base")}


@pytest.fixture(scope="module")
def task(tmp_path_factory, torch_one_thread):
    url, blobs, eid, tid = finished_experiment(tmp_path_factory.mktemp("grading") / "exp")
    built = runner.invoke(app, ["grade", "build", eid, "--shapes", "3", "--steps", "2", "--journal", url,
                                "--format", "json"])
    assert built.exit_code == 0, built.stderr
    doc = json.loads(built.stdout)
    assert doc["models"] == ["base", tid] and doc["items"] == 3
    return {"url": url, "blobs": blobs, "eid": eid, "id": doc["task_id"], "trial": tid, "models": doc["models"]}


API_TOKEN = "api-" + "9" * 36  # $ORCH_API_TOKENS: the whole API, grades as nobody


@pytest.fixture(scope="module")
def server(task):
    """`orch grade serve` as a person starts it: a fresh token per grader, one link each."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "ORCH_API_TOKENS"}
    env.update(PYTHONPATH=str(SRC), OPENBLAS_NUM_THREADS="1", HF_HUB_OFFLINE="1", COLUMNS="400",
               ORCH_API_TOKENS=API_TOKEN)
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "grade", "serve", task["id"], "--journal",
                             task["url"], "--port", str(port), "--grader", "alice", "--grader", "bob",
                             "--grader", "carol"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    links = {}
    while len(links) < 3:
        line = proc.stdout.readline()
        assert line, f"orch grade serve ended: {proc.wait()}"
        if "/grade?" in line:
            links[line.split("grader=")[1].split("#")[0]] = line.strip()
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe drained
    deadline = time.monotonic() + 60
    while True:
        try:
            if call(port, "GET", "/grade")[0] == 200:
                break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    tokens = {name: link.split("#token=")[1] for name, link in links.items()}
    assert len(set(tokens.values())) == 3  # one token per grader
    yield {"port": port, "links": links, "token": tokens["alice"], "tokens": tokens}
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def call(port, method, path, token=None, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if body is not None:
        headers["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def endpoints(task_id):
    body = {"match": [True, False], "ranking": [0, 1], "replaces": 0}
    return [("GET", "/v1/grading/tasks", None), ("GET", f"/v1/grading/tasks/{task_id}?grader=eve", None),
            ("GET", f"/v1/grading/tasks/{task_id}/items/0?grader=eve", None),
            ("PUT", f"/v1/grading/tasks/{task_id}/items/0?grader=eve", body),
            ("GET", f"/v1/grading/tasks/{task_id}/results?format=json", None)]


def test_grading_api_needs_the_token(task, server):
    for method, path, body in endpoints(task["id"]):
        for token in (None, "x" * 32, server["token"] + "x"):
            assert call(server["port"], method, path, token, body)[0] == 401, (method, path, token)
    assert call(server["port"], "GET", f"/v1/grading/tasks/{task['id']}?grader=alice", server["token"])[0] == 200
    assert call(server["port"], "GET", "/v1/grading/tasks/gnope?grader=alice", server["token"])[0] == 404
    assert call(server["port"], "GET", "/v1/grading/tasks", API_TOKEN)[0] == 200
    status, page = call(server["port"], "GET", "/grade")  # the open shell holds no data
    assert status == 200 and task["id"].encode() not in page and task["trial"].encode() not in page


def grades_of(task, grader):
    from orchestrator.journal import open_journal

    with open_journal(task["url"], create=False) as j:
        return [(g.item, g.revision, g.match) for g in j.grades(task["id"], grader)]


def test_a_graders_token_grades_only_as_that_grader(task, server):
    """Every route naming a grader checks the token: alice's token can neither read bob's blind order
    nor write his grades; an API token grades as nobody; the task list and results need an API token."""
    port, alice, tid = server["port"], server["token"], task["id"]
    body = {"match": [True, True], "ranking": [1, 0], "replaces": 0}
    before = grades_of(task, "bob")
    for method, path, payload in (("GET", f"/v1/grading/tasks/{tid}?grader=bob", None),
                                  ("GET", f"/v1/grading/tasks/{tid}/items/0?grader=bob", None),
                                  ("PUT", f"/v1/grading/tasks/{tid}/items/0?grader=bob", body),
                                  ("PUT", "/v1/grading/tasks/gnope/items/0?grader=bob", body)):
        for token in (alice, API_TOKEN):
            status, data = call(port, method, path, token, payload)
            assert status == 403, (method, path, token, data)
            assert "may not grade as 'bob'" in json.loads(data)["detail"]
    assert grades_of(task, "bob") == before  # nothing written
    for path in ("/v1/grading/tasks", f"/v1/grading/tasks/{tid}/results?format=json"):
        status, data = call(port, "GET", path, alice)
        assert status == 403 and "API token" in json.loads(data)["detail"]
        assert call(port, "GET", path, API_TOKEN)[0] == 200
    status, data = call(port, "GET", f"/v1/grading/tasks/{tid}/items/1?grader=alice", alice)
    assert status == 200 and json.loads(data)["index"] == 1


def test_the_head_binds_graders_to_tokens_from_its_file(task, tmp_path):
    """On the head: the tokens file's `graders=` lines, `orch grade link` appending one (it works at
    once; deleting the line revokes it), an operator's `graders=*`, an API token grading as nobody,
    and a grader's token reaching nothing but grading."""
    import uvicorn

    from orchestrator.api.app import HeadSettings, create_app
    from orchestrator.api.auth import TokenSource

    api, operator, eve = "t" * 40, "o" * 40, "e" * 40
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{api}  # the operator's API token\n{operator} graders=*\n{eve} graders=eve,eve2\n")
    head = create_app(HeadSettings(state_dir=tmp_path, journal_url=task["url"], ray_address="unused",
                                   tokens=TokenSource(tokens, env="")))
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(head, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    tid = task["id"]
    try:
        while not srv.started:
            time.sleep(0.05)
        progress = f"/v1/grading/tasks/{tid}?grader="
        asked = ((eve, "eve"), (eve, "eve2"), (eve, "alice"), (api, "eve"), (operator, "alice"))
        assert [call(port, "GET", progress + who, tok)[0] for tok, who in asked] == [200, 200, 403, 403, 200]
        status, data = call(port, "GET", "/v1/experiments", eve)  # a grader's token: grading only
        assert status == 403 and "grading token" in json.loads(data)["detail"]
        assert call(port, "GET", "/v1/experiments", api)[0] == 200
        made = runner.invoke(app, ["grade", "link", tid, "--grader", "dora", "--tokens", str(tokens),
                                   "--url", f"http://127.0.0.1:{port}/"])
        assert made.exit_code == 0, made.stderr
        link = made.stdout.strip()
        assert link.startswith(f"http://127.0.0.1:{port}/grade?task={tid}&grader=dora#token=")
        dora = link.split("#token=")[1]
        lines = tokens.read_text().splitlines()
        assert lines[:3] == [f"{api}  # the operator's API token", f"{operator} graders=*", f"{eve} graders=eve,eve2"]
        assert lines[3].startswith(f"{dora} graders=dora")
        assert call(port, "GET", progress + "dora", dora)[0] == 200  # re-read at once
        assert call(port, "GET", progress + "eve", dora)[0] == 403
        tokens.write_text("\n".join(lines[:3]) + "\n")  # revoke dora's link
        assert call(port, "GET", progress + "dora", dora)[0] == 401
        bad = runner.invoke(app, ["grade", "link", tid, "--grader", "x y", "--tokens", str(tokens)])
        assert bad.exit_code == 2 and "a grader name is" in bad.stderr
        broken = tmp_path / "broken"
        broken.write_text("short\n")
        bad = runner.invoke(app, ["grade", "link", tid, "--grader", "dora", "--tokens", str(broken)])
        assert bad.exit_code == 2 and f"{broken}:1" in bad.stderr and broken.read_text() == "short\n"
    finally:
        srv.should_exit = True
        thread.join(10)


def test_grading_api_on_the_head_needs_the_token(task, tmp_path):
    import uvicorn

    from orchestrator.api.app import HeadSettings, create_app
    from orchestrator.api.auth import TokenSource

    token = "t" * 40
    head = create_app(HeadSettings(state_dir=tmp_path, journal_url=task["url"], ray_address="unused",
                                   tokens=TokenSource(env=f"{token}")))
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(head, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    try:
        while not srv.started:
            time.sleep(0.05)
        for method, path, body in endpoints(task["id"]):
            assert call(port, method, path, None, body)[0] == 401
            assert call(port, method, path, "w" * 40, body)[0] == 401
        status, data = call(port, "GET", "/v1/grading/tasks", token)
        assert status == 200 and json.loads(data)[0]["items"] == 3
        assert call(port, "GET", "/grade")[0] == 200
    finally:
        srv.should_exit = True
        thread.join(10)


# ------------------------------------------------------------------ the browser
def by_model(task, name):
    return task["trial"] if name == "trial" else "base"


def slots(task, grader, item, match, best):
    """Which slot shows which model for this grader and item: the page's blind order."""
    order = blind_order(task["id"], grader, item, 2)
    shown = [task["models"][m] for m in order]
    return [match["trial" if m == task["trial"] else "base"] for m in shown], shown.index(by_model(task, best))


def wait_for(drv, element_id, text, timeout=30):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(drv, timeout).until(lambda d: text in d.find_element(By.ID, element_id).text)


def keys(drv, *ks):
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(drv).send_keys(*ks).perform()


def grade_by_keys(drv, task, grader, item, want, fresh=True):
    """1..n toggle "matches" (unset -> yes -> no), a letter ranks that image next, Enter submits."""
    match, best = slots(task, grader, item, *want)
    for s, yes in enumerate(match):
        keys(drv, str(s + 1) if yes else str(s + 1) * 2)
    keys(drv, LETTERS[best])  # with two images, the other is ranked second by itself
    keys(drv, "\n")


def grade_by_clicks(drv, task, grader, item, want):
    from selenium.webdriver.common.by import By

    match, best = slots(task, grader, item, *want)
    for s, yes in enumerate(match):
        for _ in range(1 if yes else 2):
            drv.find_element(By.ID, f"match-{s}").click()
    drv.find_element(By.ID, f"img-{best}").click()
    drv.find_element(By.ID, "submit").click()


def test_two_graders_grade_through_the_page(task, server, artifacts_dir):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    alice, bob = new_browser(), new_browser()
    try:
        alice.get(server["links"]["alice"])
        bob.get(server["links"]["bob"])
        wait_for(alice, "progress", "item 1 / 3")
        wait_for(bob, "progress", "item 1 / 3")
        body = alice.find_element(By.TAG_NAME, "body").text
        assert task["trial"] not in body and "base" not in body  # blind: no model named
        assert len(alice.find_elements(By.CSS_SELECTOR, "#images img")) == 2
        grade_by_keys(alice, task, "alice", 0, ALICE_FIRST_0)
        wait_for(alice, "progress", "item 2 / 3")
        for item in range(3):  # bob, at the same time, with the mouse
            grade_by_clicks(bob, task, "bob", item, BOB[item])
            wait_for(bob, "progress", f"graded {item + 1} / 3")
        wait_for(bob, "status", "all items graded")
        grade_by_keys(alice, task, "alice", 1, ALICE[1])
        wait_for(alice, "progress", "item 3 / 3")
        quit_browser(alice)  # alice stops here...
        alice = new_browser()
        alice.get(server["links"]["alice"])  # ...and continues: the page resumes at her first ungraded item
        wait_for(alice, "progress", "item 3 / 3 · graded 2 / 3")
        grade_by_keys(alice, task, "alice", 2, ALICE[2])
        wait_for(alice, "status", "all items graded")
        keys(alice, Keys.ARROW_LEFT, Keys.ARROW_LEFT)  # quick presses: two items back
        wait_for(alice, "progress", "item 1 / 3")
        wait_for(alice, "status", "graded (revision 1)")
        # re-grade item 0: flip what differs, rank again
        old, _ = slots(task, "alice", 0, *ALICE_FIRST_0)
        new, best = slots(task, "alice", 0, *ALICE[0])
        for s in range(2):
            if old[s] != new[s]:
                keys(alice, str(s + 1))
        keys(alice, Keys.BACKSPACE, LETTERS[best], "\n")
        wait_for(alice, "status", "all items graded")
        keys(alice, Keys.ARROW_RIGHT)
        wait_for(alice, "progress", "item 2 / 3")
        keys(alice, Keys.ARROW_LEFT)
        wait_for(alice, "status", "graded (revision 2)")
        alice.save_screenshot(str(artifacts_dir / "grading_page.png"))
    finally:
        quit_browser(alice)
        quit_browser(bob)

    result = runner.invoke(app, ["grade", "results", task["id"], "--journal", task["url"], "--format", "json"])
    assert result.exit_code == 0, result.stderr
    got = json.loads(result.stdout)
    # by hand, from the clicks' meaning (alice's first grade of item 0 replaced, not added):
    # base matches 1,0,0 + 1,0,1 = 3/6; trial 1,1,0 + 0,1,0 = 3/6; base ranked first on item 2 by both
    base, trial = got["rows"]
    assert (base["model"], base["n"], base["match_rate"], base["mean_rank"]) == ("base", 6, 0.5, pytest.approx(10 / 6))
    assert (trial["n"], trial["match_rate"], trial["mean_rank"]) == (6, 0.5, pytest.approx(8 / 6))
    assert (base["ci_low"], base["ci_high"]) == pytest.approx(wilson_interval(3, 6))
    assert got["preference"] == [[None, pytest.approx(1 / 3)], [pytest.approx(2 / 3), None]]
    # labels item x model: alice [1,1, 0,1, 0,0], bob [1,0, 0,1, 1,0]: po 4/6, pe 1/2 -> kappa 1/3
    assert got["kappa"] == pytest.approx(1 / 3) and got["graders"] == ["alice", "bob"]
    assert got["agreement"]["items"] == 3 and got["agreement"]["labels"] == 6
    table = runner.invoke(app, ["grade", "results", task["id"], "--journal", task["url"]])
    assert "kappa 0.333" in table.stdout and "n = 3 items" in table.stdout
    csv = runner.invoke(app, ["grade", "results", task["id"], "--journal", task["url"], "--format", "csv"])
    assert csv.stdout.splitlines()[1].startswith("base,6,0.500,")
    # the experiment's report carries the same tallies, found through the journal
    out = task["url"].removeprefix("sqlite:///").rsplit("/", 1)[0] + "/report"
    rep = runner.invoke(app, ["report", task["eid"], "--out", out, "--journal", task["url"],
                              "--blobs", str(task["blobs"])])
    assert rep.exit_code == 0, rep.stderr
    html = (Path(out) / "index.html").read_text()
    assert f"task {task['id']}" in html and "agreement (κ): 0.333" in html and "no-grading" not in html


def test_a_grade_names_the_revision_it_replaces(task, server):
    """No silent overwrite: `replaces` is required; a stale one is 409 with the current revision; a
    retried request is a no-op. (After the browser test: carol's grades are not in its tallies.)"""
    port, carol = server["port"], server["tokens"]["carol"]
    item = f"/v1/grading/tasks/{task['id']}/items/2?grader=carol"
    yes, no = {"match": [True, True], "ranking": [0, 1]}, {"match": [False, False], "ranking": [1, 0]}
    status, data = call(port, "PUT", item, carol, yes)
    assert status == 422 and "replaces" in data.decode()
    assert call(port, "PUT", item, carol, {**yes, "replaces": -1})[0] == 422
    assert grades_of(task, "carol") == []
    status, data = call(port, "PUT", item, carol, {**yes, "replaces": 0})
    assert status == 200 and json.loads(data)["revision"] == 1 and json.loads(data)["stored"]
    status, data = call(port, "PUT", item, carol, {**yes, "replaces": 0})  # the same request retried
    assert status == 200 and json.loads(data) == {"revision": 1, "stored": False, "next": 0}
    status, data = call(port, "PUT", item, carol, {**no, "replaces": 0})  # a second tab that showed no grade
    assert status == 409 and json.loads(data)["revision"] == 1 and "revision 1" in json.loads(data)["detail"]
    status, data = call(port, "GET", item, carol)
    assert json.loads(data)["grade"]["revision"] == 1
    status, data = call(port, "PUT", item, carol, {**no, "replaces": 1})
    assert status == 200 and json.loads(data)["revision"] == 2
    status, data = call(port, "PUT", item, carol, {**yes, "replaces": 1})  # the first tab, still at 1
    assert status == 409 and json.loads(data)["revision"] == 2
    assert [(i, r) for i, r, _ in grades_of(task, "carol")] == [(2, 2)]
