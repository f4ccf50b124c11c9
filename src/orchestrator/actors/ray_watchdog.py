"""Stops the Ray processes an embedded head started once the driver that started them is gone.

Ray ties the head's gcs_server, raylet and log monitor to the driver (PR_SET_PDEATHSIG), but the
raylet's own children, the dashboard and runtime-env agents (and any worker still starting), are
orphaned when it dies, and they wait a minute or more on the dead GCS before giving up. This
process, started by `cluster.start_local` right after the head, keeps a list of the head's process
tree (polled: the agents and workers are not our children) and, when the driver closes its end
of our stdin (a normal shutdown, a crash or SIGKILL: the kernel closes it) or stops being our
parent, terminates what is left of that tree: SIGTERM, then SIGKILL after a short grace.

Run as a script (`python ray_watchdog.py DRIVER_PID PID:START_TIME ...`), not as a module: it must
start in a fraction of a second, without importing this package or Ray. Processes are known by pid
and start time, so a recycled pid is never killed.
"""
from __future__ import annotations

import os
import select
import signal
import sys
import time

import psutil

POLL_S = 0.5         # how often the tree is listed; a process born and orphaned in between is missed
TERM_GRACE_S = 2.0   # between SIGTERM and SIGKILL
KILL_WAIT_S = 5.0


def _start_time(p: psutil.Process) -> float:
    """When `p` started, in a form no clock change moves: on Linux its start in clock ticks since
    boot, as journal.lease.process_start reads it (this script imports nothing of the package);
    psutil's create_time adds the wall-clock boot time, which a VM's clock sync moves."""
    try:
        with open(f"/proc/{p.pid}/stat", "rb") as f:
            return float(f.read().rsplit(b")", 1)[1].split()[19])
    except FileNotFoundError:
        if os.path.exists("/proc/self/stat"):
            raise psutil.NoSuchProcess(p.pid) from None
    return round(p.create_time(), 2)


def _same(pid: int, start: float) -> psutil.Process | None:
    """The live process `pid` if it is still the one that started at `start` (not a recycled pid)."""
    try:
        p = psutil.Process(pid)
        if abs(_start_time(p) - start) < 0.05 and p.status() != psutil.STATUS_ZOMBIE:
            return p
    except psutil.Error:
        pass
    return None


def refresh(tracked: dict[int, float]) -> None:
    """Add every live descendant of the tracked processes."""
    for pid, start in list(tracked.items()):
        p = _same(pid, start)
        if p is None:
            continue
        try:
            for child in p.children(recursive=True):
                tracked.setdefault(child.pid, _start_time(child))
        except psutil.Error:
            continue


def reap(tracked: dict[int, float]) -> list[int]:
    """Terminate what is left of the tracked processes; returns the pids that had to be signalled."""
    refresh(tracked)  # children of the ones still alive, born since the last poll
    live = [p for p in (_same(pid, start) for pid, start in tracked.items()) if p is not None]
    for p in live:
        _signal(p, signal.SIGTERM)
    rest = _wait_gone(live, TERM_GRACE_S)
    for p in rest:
        _signal(p, signal.SIGKILL)
    _wait_gone(rest, KILL_WAIT_S)
    return [p.pid for p in live]


def _signal(p: psutil.Process, sig: int) -> None:
    try:
        p.send_signal(sig)
    except psutil.Error:
        pass


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until the processes are gone (a zombie is gone: its parent may never reap it)."""
    end = time.monotonic() + timeout
    while True:
        alive = []
        for p in procs:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.Error:
                pass
        if not alive or time.monotonic() >= end:
            return alive
        time.sleep(0.05)
        procs = alive


def watch(driver: int, tracked: dict[int, float]) -> None:
    """Poll until the driver is gone (stdin at EOF, or we were re-parented), then reap."""
    stdin = sys.stdin.fileno()
    while os.getppid() == driver:
        refresh(tracked)
        ready, _, _ = select.select([stdin], [], [], POLL_S)
        if ready and not os.read(stdin, 4096):
            break
    reap(tracked)


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the driver's to handle, not ours
    driver = int(argv[1])
    tracked = {}
    for item in argv[2:]:
        pid, _, start = item.partition(":")
        tracked[int(pid)] = float(start)
    watch(driver, tracked)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
