"""core.cpu.take_turn: under gevent, a generation's stretches of Python go behind whatever else is ready, one per
pass of the loop, so a read arriving during a burst waits for one stretch, not for the whole burst."""

from __future__ import annotations

import json
import subprocess
import sys

from core.cpu import take_turn
from serving import REPO

SCRIPT = """
from gevent import monkey; monkey.patch_all()
import json, sys, time
import gevent
from core.cpu import take_turn

STRETCHES, STRETCH_S = 12, 0.01
log = []

def spin(seconds):  # CPU without a yield: a stretch of a generation's Python
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass

def heavy(name, turns):
    for _ in range(2):
        if turns:
            take_turn()
        log.append(name)
        spin(STRETCH_S)
        gevent.sleep(0.001)  # its next wait (a vendor call, a query)

def reader():  # another request, ready again 3 ms after each run: during any stretch it becomes ready to go on
    while True:
        gevent.sleep(0.003)
        log.append("reader")

def longest_run_of_heavy():
    longest = run = 0
    for name in log:
        run = run + 1 if name != "reader" else 0
        longest = max(longest, run)
    return longest

mode = sys.argv[1]
if mode in ("turns", "no-turns"):
    reading = gevent.spawn(reader)
    gevent.sleep(0.01)
    gevent.joinall([gevent.spawn(heavy, f"h{i}", mode == "turns") for i in range(STRETCHES)])
    reading.kill()
    print(json.dumps({"longest_run": longest_run_of_heavy(), "stretches": sum(n != "reader" for n in log)}))
elif mode == "never-idle":
    busy = gevent.spawn(lambda: [gevent.sleep(0) for _ in iter(int, 1)])  # a callback always pending
    timed_out = []
    def impatient():
        try:
            with gevent.Timeout(0.001):
                take_turn()
        except gevent.Timeout:
            timed_out.append(True)
        started = time.monotonic()
        gevent.sleep(0.3)  # no turn may wake it from this
        timed_out.append(time.monotonic() - started)
    others = [gevent.spawn(heavy, f"h{i}", True) for i in range(4)]
    late = gevent.spawn(impatient)
    gevent.joinall(others + [late], timeout=10)
    busy.kill()
    hub = gevent.get_hub()
    print(json.dumps({"done": sum(g.dead for g in others), "stretches": len(log), "timed_out": timed_out,
                      "still_waiting": len(hub.cpu_turns.waiting)}))
"""


def run(mode: str) -> dict:
    result = subprocess.run([sys.executable, "-c", SCRIPT, mode], cwd=REPO, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_ready_connection_runs_between_any_two_stretches():
    outcome = run("turns")
    assert outcome["stretches"] == 24
    assert outcome["longest_run"] == 1


def test_without_turns_the_stretches_run_back_to_back():
    # What the test above guards against: gevent runs every greenlet that is ready before it next polls for I/O.
    outcome = run("no-turns")
    assert outcome["stretches"] == 24
    assert outcome["longest_run"] >= 8


def test_a_loop_that_never_rests_still_gives_turns_and_a_timed_out_waiter_is_forgotten():
    outcome = run("never-idle")
    assert outcome["done"] == 4 and outcome["stretches"] == 8  # never starved
    assert outcome["timed_out"][0] is True
    assert outcome["timed_out"][1] >= 0.29  # its later sleep was not cut short by a turn meant for it
    assert outcome["still_waiting"] == 0


def test_without_gevent_it_returns_at_once():
    take_turn()  # this process is not patched: threads share the CPU without it
