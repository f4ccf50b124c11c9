"""The grading page as graders use it: real Chromium (selenium) against `orch grade serve`, two
graders at once, one stop-and-continue, one re-submission; the tallies `orch grade results`
prints are what the clicks said. And the grading JSON API is behind the token, alone and on the head."""
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
from orchestrator.eval.spatial import wilson_interval
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


@pytest.fixture(scope="module")
def server(task):
    """`orch grade serve` as a person starts it: a fresh token, one link per grader."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "ORCH_API_TOKENS"}
    env.update(PYTHONPATH=str(SRC), OPENBLAS_NUM_THREADS="1", HF_HUB_OFFLINE="1", COLUMNS="400")
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "grade", "serve", task["id"], "--journal",
                             task["url"], "--port", str(port), "--grader", "alice", "--grader", "bob"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    links = {}
    while len(links) < 2:
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
    yield {"port": port, "links": links, "token": links["alice"].split("#token=")[1]}
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
    body = {"match": [True, False], "ranking": [0, 1]}
    return [("GET", "/v1/grading/tasks", None), ("GET", f"/v1/grading/tasks/{task_id}?grader=eve", None),
            ("GET", f"/v1/grading/tasks/{task_id}/items/0?grader=eve", None),
            ("PUT", f"/v1/grading/tasks/{task_id}/items/0?grader=eve", body),
            ("GET", f"/v1/grading/tasks/{task_id}/results?format=json", None)]


def test_grading_api_needs_the_token(task, server):
    for method, path, body in endpoints(task["id"]):
        for token in (None, "x" * 32, server["token"] + "x"):
            assert call(server["port"], method, path, token, body)[0] == 401, (method, path, token)
    assert call(server["port"], "GET", "/v1/grading/tasks", server["token"])[0] == 200
    assert call(server["port"], "GET", "/v1/grading/tasks/gnope?grader=eve", server["token"])[0] == 404
    status, page = call(server["port"], "GET", "/grade")  # the open shell holds no data
    assert status == 200 and task["id"].encode() not in page and task["trial"].encode() not in page


def test_grading_api_on_the_head_needs_the_token(task, tmp_path):
    import uvicorn

    from orchestrator.api.app import HeadSettings, create_app
    from orchestrator.api.auth import TokenSource

    token = "t" * 40
    head = create_app(HeadSettings(state_dir=tmp_path, journal_url=task["url"], ray_address="unused",
                                   tokens=TokenSource(env=token)))
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
        status, data = call(port, "GET", f"/v1/grading/tasks/{task['id']}?grader=eve", token)
        assert status == 200 and json.loads(data)["items"] == 3
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
    rep = runner.invoke(app, ["report", task["eid"], "--out", out, "--journal", task["url"], "--blobs", str(task["blobs"])])
    assert rep.exit_code == 0, rep.stderr
    html = (Path(out) / "index.html").read_text()
    assert f"task {task['id']}" in html and "agreement (κ): 0.333" in html and "no-grading" not in html
