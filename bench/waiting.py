"""Waiting is free: generations, reads, slow clients and jobs at 5 s per vendor call, side by side with the first
version of this API, in one run; prints one table.

    .venv/bin/python bench/waiting.py [--latency 5] [--quick] [--streams-only] [--celery-only]

The first version is rebuilt from git history (`git archive` of its commit) and served as it was, by `python
main.py` (Werkzeug, a thread per request). This service runs as the README runs it: `python main.py` (gunicorn's
gevent workers, gunicorn.conf.py's defaults), jobs in process, then with one Celery worker started by the README's
command. Both generate through bench/vendor_stub.py (a process of its own) on SQLite. Clients come from one
selector thread per burst (tests/serving.Burst), so that the clients are never what is measured. Last, 1,000 event
streams are held open for 30 s on jobs whose vendor takes minutes: the server's CPU while nothing else happens, reads
meanwhile, and how much its memory (PSS) grew.
"""

from __future__ import annotations

import argparse
import os
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from bench.run import process_tree, tree_cpu_s, tree_pss, wait_until  # noqa: E402
from core import schema  # noqa: E402
from serving import Burst, free_port, running, send_one_more_byte, server_env, stop, vendor_stub  # noqa: E402
from test_faults import readme_celery_command, shell_env  # noqa: E402

FIRST_VERSION = "1413592"  # the first version whose text and image providers both call their vendors
GENERATE = "/gen-achievement-image?date=31%20Oct&product=soju"  # a text call, then an image call
READ = "/view-all-achievement?limit=20"
BROKER = os.environ.get("BENCH_CELERY_BROKER_URL", "redis://127.0.0.1:6379/3")
rows: list[tuple[str, str, str, str]] = []


def row(scenario: str, first: str, this: str, target: str) -> None:
    rows.append((scenario, first, this, target))
    print(f"  {scenario}: first version {first} | this service {this} | target {target}", flush=True)


def providers(stub_url: str) -> dict[str, str]:
    return {"IMAGE_PROVIDER": "clipdrop", "CLIPDROP_API_KEY": "bench", "CLIPDROP_API_URL": stub_url,
            "TEXT_PROVIDER": "openai", "OPENAI_API_KEY": "sk-bench", "OPENAI_BASE_URL": f"{stub_url}/v1",
            "PROVIDER_RETRIES": "0", "PROVIDER_TIMEOUT_S": "120",
            "IMAGE_CACHE_TTL_S": "0"}  # every generation makes its own image call, as in the first version


@contextmanager
def first_version(stub_url: str, folder: Path):
    """The first version's code, from git, served by its own `python main.py`; its base URL."""
    code = folder / "first-version"
    code.mkdir()
    archive = subprocess.run(["git", "archive", FIRST_VERSION], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(code)], input=archive, check=True)
    env = {**os.environ, **providers(stub_url), "PORT": str(free_port()), "DATABASE_URL": f"sqlite:///{code}/app.db",
           "IMAGE_DIR": str(code / "images")}
    with open(folder / "first-version.log", "wb") as log:
        process = subprocess.Popen([sys.executable, "main.py"], cwd=code, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{env['PORT']}"
    try:
        wait_until(lambda: requests.get(base + READ, timeout=2).status_code == 200, 60, "the server")
        yield base
    finally:
        stop(process)


@contextmanager
def this_service(stub_url: str, folder: Path, **settings: str):
    (folder / "service").mkdir(exist_ok=True)
    database = folder / "service" / f"app-{len(list(folder.glob('service/*.db')))}.db"
    schema.upgrade(f"sqlite:///{database}")
    env = server_env(folder / "service", f"sqlite:///{database}", **providers(stub_url), **settings)
    env.pop("WEB_CONCURRENCY")  # gunicorn.conf.py's default, as the README runs it
    with running(env, folder / "service") as server:
        yield server.base_url, env, server.process.pid


class Reads:
    """GET READ every `every_s` from a thread of its own while a burst runs; each read's time, or None unanswered."""

    def __init__(self, base: str, every_s: float = 0.25, timeout_s: float = 10) -> None:
        self.base, self.every_s, self.timeout_s = base, every_s, timeout_s
        self.times: list[float | None] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        session = requests.Session()
        while not self.stopping.wait(self.every_s):
            started = time.monotonic()
            try:
                ok = session.get(self.base + READ, timeout=self.timeout_s).status_code == 200
            except requests.RequestException:
                ok = False
            self.times.append(time.monotonic() - started if ok else None)

    def stop(self) -> str:
        self.stopping.set()
        self.thread.join()
        answered = sorted(t for t in self.times if t is not None)
        if not answered:
            return f"0 of {len(self.times)} answered"
        p99 = answered[min(len(answered) - 1, int(0.99 * len(answered)))]
        return (f"{len(answered)} of {len(self.times)} answered, p99 {p99 * 1000:.0f} ms, "
                f"max {answered[-1] * 1000:.0f} ms")


def burst(base: str, count: int, path: str = GENERATE, headers: dict | None = None) -> tuple[float, int, str]:
    """`count` POSTs of `path` at once, reads meanwhile: wall time until the last answer, 200s, the reads."""
    reads = Reads(base)
    answers = Burst(base, "POST", path, count, headers, timeout_s=300).wait()
    wall = max(seconds for _, seconds in answers)
    return wall, sum(status in (200, 202) for status, _ in answers), reads.stop()


def one_generation(base: str) -> float:
    started = time.monotonic()
    assert requests.post(base + GENERATE, timeout=120).status_code == 200
    return time.monotonic() - started


def slow_clients(base: str, count: int = 200, hold_s: float = 8) -> tuple[str, int]:
    """`count` clients sending their headers a byte at a time for `hold_s`: the reads meanwhile, and how many of them
    the server had closed by then."""
    host, port = base.removeprefix("http://").split(":")
    socks = [socket.create_connection((host, int(port)), timeout=5) for _ in range(count)]
    reads = Reads(base)
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 500
    closed: set[socket.socket] = set()
    started, sent = time.monotonic(), 0
    while time.monotonic() - started < hold_s:
        sent = send_one_more_byte(socks, request, sent, closed)
        time.sleep(0.2)
    for sock in socks:  # a closed connection reads as EOF (or a reset)
        sock.settimeout(0.01)
        try:
            if sock.recv(1) == b"":
                closed.add(sock)
        except (TimeoutError, BlockingIOError):
            pass
        except OSError:
            closed.add(sock)
        sock.close()
    return reads.stop(), len(closed)


class Streams:
    """`count` event streams (`GET /jobs/{id}/events`) held open from one selector thread: how many answered 200,
    and how many the server has ended."""

    def __init__(self, base: str, job_ids: list[str], count: int) -> None:
        host, port = base.removeprefix("http://").split(":")
        self.selector = selectors.DefaultSelector()
        for index in range(count):
            sock = socket.create_connection((host, int(port)))
            sock.sendall(f"GET /jobs/{job_ids[index % len(job_ids)]}/events HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ, [b""])
        self.count, self.ended = count, 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.is_set():
            for key, _ in self.selector.select(timeout=0.2):
                try:
                    chunk = key.fileobj.recv(65536)
                except OSError:
                    chunk = b""
                if chunk:
                    key.data[0] = (key.data[0] + chunk)[:64]  # the status line is all that is kept
                else:
                    self.selector.unregister(key.fileobj)
                    self.ended += 1

    def answered(self) -> int:
        return sum(key.data[0].startswith(b"HTTP/1.1 200") for key in self.selector.get_map().values())

    def close(self) -> None:
        self.stopping.set()
        self.thread.join()
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()
        self.selector.close()


def held_streams(folder: Path, count: int, hold_s: float) -> None:
    """`count` event streams held `hold_s` on jobs that stay running (a vendor that takes minutes): the server's CPU
    while nothing else happens (the first half), reads meanwhile (the second half), and its memory."""
    with vendor_stub(10 * hold_s) as slow_stub, this_service(slow_stub, folder) as (base, _env, pid):
        answers = Burst(base, "POST", GENERATE, 10, {"Prefer": "respond-async"}).wait()
        assert [status for status, _ in answers] == [202] * 10, answers
        job_ids = [job["id"] for job in requests.get(f"{base}/jobs?limit=10", timeout=10).json()["jobs"]]
        pids = process_tree(pid)
        memory_before = tree_pss(pids)
        streams = Streams(base, job_ids, count)
        wait_until(lambda: streams.answered() >= count, 60, f"{count} streams answered")
        cpu_before, idle_started = tree_cpu_s(pids), time.monotonic()
        time.sleep(hold_s / 2)
        idle_cpu = (tree_cpu_s(pids) - cpu_before) / (time.monotonic() - idle_started)
        reads = Reads(base)
        time.sleep(hold_s / 2)
        reads_figure = reads.stop()
        memory_growth = tree_pss(process_tree(pid)) - memory_before
        still_open = count - streams.ended
        streams.close()
    row(f"{count} open event streams held {hold_s:.0f} s", "",
        f"{still_open} of {count} open at the end; reads {reads_figure}; CPU while idle {100 * idle_cpu:.1f}% of one "
        f"core; memory +{memory_growth / 1e6:.0f} MB", "reads p99 < 100 ms, idle CPU < 10%, memory < +150 MB")


def async_jobs(base: str, count: int) -> tuple[float, int]:
    """`count` respond-async jobs submitted at once: time until every one has succeeded, and how many did."""
    started = time.monotonic()
    answers = Burst(base, "POST", GENERATE, count, {"Prefer": "respond-async"}).wait()
    assert all(status == 202 for status, _ in answers), answers[:3]
    session = requests.Session()
    while time.monotonic() - started < 300:
        unfinished = [job for status in ("queued", "running")
                      for job in session.get(f"{base}/jobs?status={status}&limit=1000", timeout=30).json()["jobs"]]
        if not unfinished:
            took = time.monotonic() - started
            newest = session.get(f"{base}/jobs?limit={count}", timeout=30).json()["jobs"]  # these, the last made
            return took, sum(job["status"] == "succeeded" for job in newest)
        time.sleep(0.5)
    return float("nan"), 0


@contextmanager
def celery_worker(env: dict[str, str], log_path: Path):
    """One Celery worker started by the README's command, as written, from a shell with the venv's bin/ first."""
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(["bash", "-c", readme_celery_command()], cwd=ROOT, env=shell_env(env),
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: "ready." in log_path.read_text(errors="replace"), 60, "the Celery worker")
        yield
    finally:
        stop(worker)


def side_by_side(stub_url: str, folder: Path, hundred: int, many: int, jobs: int, streams: int) -> float:
    """Every scenario but Celery's; the time of one generation on this service."""
    with first_version(stub_url, folder) as first:
        single_first = one_generation(first)
        first_wall, first_ok, first_reads = burst(first, hundred)
    with this_service(stub_url, folder) as (base, _env, _pid):
        single = one_generation(base)
        row("one generation", f"{single_first:.1f} s", f"{single:.1f} s", "")
        wall, ok, reads = burst(base, hundred)
        row(f"{hundred} generations at once: all answered after", f"{first_wall:.1f} s ({first_ok} ok)",
            f"{wall:.1f} s ({ok} ok), {wall / first_wall:.2f}x", "<= 1.2x the first version")
        row("  reads during them", first_reads, reads, "p99 < 100 ms, none unanswered")
        wall, ok, reads = burst(base, many)
        row(f"{many} generations at once: all answered after", "", f"{wall:.1f} s ({ok} ok), "
            f"{wall / single:.1f}x one generation", "<= 3x one generation")
        row("  reads during them", "", reads, "p99 < 100 ms")
        reads, closed = slow_clients(base)
        row("200 clients sending headers a byte at a time (8 s)", "",
            f"reads {reads}; {closed} of 200 closed by the server", "reads < 100 ms, closed after a timeout")
        took, succeeded = async_jobs(base, jobs)
        row(f"{jobs} respond-async jobs, in-process runner", "", f"{took:.1f} s ({succeeded} succeeded), "
            f"{took / single:.1f}x one generation", "<= 3x one generation")
    held_streams(folder, streams, 30)
    return single


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=5.0, help="seconds per vendor call")
    parser.add_argument("--quick", action="store_true", help="smaller bursts (a smoke run)")
    parser.add_argument("--celery-only", action="store_true", help="only the respond-async jobs on Celery")
    parser.add_argument("--streams-only", action="store_true", help="only the held event streams")
    args = parser.parse_args()
    hundred, many, jobs, streams = (20, 50, 20, 100) if args.quick else (100, 500, 200, 1000)
    folder = Path(tempfile.mkdtemp(prefix="bench-waiting-"))
    print(f"vendor latency {args.latency:g} s per call; an achievement is a text call, then an image call", flush=True)
    try:
        if args.streams_only:
            held_streams(folder, streams, 30)
            return print_table()
        with vendor_stub(args.latency) as stub_url:
            if not args.celery_only:
                single = side_by_side(stub_url, folder, hundred, many, jobs, streams)
            else:
                with this_service(stub_url, folder) as (base, _env, _pid):
                    single = one_generation(base)
            queue = f"bench-waiting-{os.getpid()}"
            with this_service(stub_url, folder, CELERY_BROKER_URL=BROKER, CELERY_QUEUE=queue) as (base, env, _pid):
                with celery_worker({**env, "PORT": ""}, folder / "worker.log"):
                    took, succeeded = async_jobs(base, jobs)
                    row(f"{jobs} respond-async jobs, one Celery worker (README's command)", "",
                        f"{took:.1f} s ({succeeded} succeeded), {took / single:.1f}x one generation",
                        "<= 3x one generation")
                    # The same burst as above, the generations' work now on the Celery worker's loop, not the web's.
                    wall, ok, reads = burst(base, hundred)
                    row(f"{hundred} generations at once, one Celery worker: all answered after", "",
                        f"{wall:.1f} s ({ok} ok)", "")
                    row("  reads during them", "", reads, "p99 < 100 ms, none unanswered")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return print_table()


def print_table() -> int:
    print("\n| scenario | first version (Werkzeug) | this service | target |\n|---|---|---|---|")
    for scenario, first_figure, figure, target in rows:
        print(f"| {scenario} | {first_figure} | {figure} | {target} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
