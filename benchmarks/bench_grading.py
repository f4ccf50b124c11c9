"""The grading page over loopback: a real `orch grade serve` (SQLite journal, local blob store)
on a task of tiny models, timed as a grader meets it.

1. Page load: the shell (GET /grade), the grader's progress and the first item (its images as
   data: URIs), on one keep-alive connection; and in headless Chromium, from navigation to the
   first item on screen.
2. Time to next item: submitting a grade (PUT, journaled) and receiving the next item; and in
   Chromium, from the Enter key to the next item on screen.
Reported: p50 and p99 (HTTP, ORCH_BENCH_GRADING_N rounds, default 200) and the median of the
browser rounds (the task's items; --no-browser skips them).

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_grading.py [--prompts 24] [--no-browser]
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from _timing import pct  # noqa: E402
from tests.api_server import free_port  # noqa: E402
from tests.grading_fixtures import finished_experiment  # noqa: E402

TOKEN = "bench-grading-" + "0" * 24


def build(root: Path, prompts: int) -> tuple[str, str]:
    import torch

    from orchestrator.app.grading import build as build_task
    from orchestrator.eval.grading_task import Generation

    torch.set_num_threads(1)
    url, _, eid, _ = finished_experiment(root)
    doc, _ = build_task(url, [eid], shapes=prompts, generation=Generation(steps=4))
    return url, doc["task_id"]


def serve(url: str, task: str, port: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OPENBLAS_NUM_THREADS": "1"}
    tokens = Path(url.removeprefix("sqlite:///")).with_name("tokens")
    tokens.write_text(f"{TOKEN} graders=*\n")  # an operator's token: the bench grades as many graders
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "grade", "serve", task, "--journal", url,
                             "--port", str(port), "--tokens", str(tokens)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    deadline = time.monotonic() + 120
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/grade")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


class Client:
    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def call(self, method: str, path: str, body=None) -> bytes:
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        self.conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        r = self.conn.getresponse()
        data = r.read()
        if r.status != 200:
            raise RuntimeError(f"{method} {path}: {r.status} {data[:200]!r}")
        return data


def http_rounds(port: int, task: str, items: int, n: int) -> tuple[list[float], list[float]]:
    c = Client(port)
    load, nxt = [], []
    base = f"/v1/grading/tasks/{task}"
    for r in range(n):
        grader = f"bench{r}"
        t0 = time.perf_counter()
        c.call("GET", "/grade")
        first = json.loads(c.call("GET", f"{base}?grader={grader}"))["next"]
        c.call("GET", f"{base}/items/{first}?grader={grader}")
        load.append(time.perf_counter() - t0)
        item = r % items
        t0 = time.perf_counter()
        out = json.loads(c.call("PUT", f"{base}/items/{item}?grader={grader}",
                                {"match": [True, False], "ranking": [1, 0], "replaces": 0}))
        if out["next"] is not None:
            c.call("GET", f"{base}/items/{out['next']}?grader={grader}")
        nxt.append(time.perf_counter() - t0)
    return load, nxt


def browser_rounds(port: int, task: str, items: int) -> tuple[float, list[float]]:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.fixtures_browser import new_browser, quit_browser

    drv = new_browser()
    try:
        def shown(text):
            WebDriverWait(drv, 60, poll_frequency=0.005).until(lambda d: text in d.find_element(By.ID, "progress").text)

        t0 = time.perf_counter()
        drv.get(f"http://127.0.0.1:{port}/grade?task={task}&grader=browser#token={TOKEN}")
        shown(f"item 1 / {items}")
        load = time.perf_counter() - t0
        nxt = []
        for i in range(items - 1):
            ActionChains(drv).send_keys("1", "22", "a").perform()
            t0 = time.perf_counter()
            ActionChains(drv).send_keys("\n").perform()
            shown(f"item {i + 2} / {items}")
            nxt.append(time.perf_counter() - t0)
        return load, nxt
    finally:
        quit_browser(drv)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("ORCH_BENCH_GRADING_N", 200)))
    ap.add_argument("--browser", action=argparse.BooleanOptionalAction, default=True)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-grading-") as tmp:
        url, task = build(Path(tmp) / "exp", args.prompts)
        port = free_port()
        proc = serve(url, task, port)
        try:
            load, nxt = http_rounds(port, task, args.prompts, args.rounds)
            print(f"grading task {task}: 2 models x {args.prompts} items (32 px PNGs as data: URIs)")
            print(f"HTTP page load (shell + progress + first item), n={len(load)}: "
                  f"p50 {pct(load, .5) * 1e3:.1f} ms, p99 {pct(load, .99) * 1e3:.1f} ms")
            print(f"HTTP time to next item (PUT grade + GET next), n={len(nxt)}: "
                  f"p50 {pct(nxt, .5) * 1e3:.1f} ms, p99 {pct(nxt, .99) * 1e3:.1f} ms")
            if args.browser:
                bload, bnext = browser_rounds(port, task, args.prompts)
                print(f"Chromium page load to first item on screen: {bload * 1e3:.0f} ms")
                print(f"Chromium Enter to next item on screen, n={len(bnext)}: median "
                      f"{statistics.median(bnext) * 1e3:.1f} ms, max {max(bnext) * 1e3:.1f} ms")
        finally:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(30)


if __name__ == "__main__":
    main()
