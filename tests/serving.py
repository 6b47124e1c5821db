"""Run the service for real, as `python main.py` or gunicorn, on a free loopback port, for tests that need processes."""

from __future__ import annotations

import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 60


@dataclass
class Server:
    base_url: str
    process: subprocess.Popen
    log_path: Path

    def url(self, path: str) -> str:
        return self.base_url + path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, pattern: str, count: int = 1) -> list[str]:
        """The matches of `pattern` in the log, once there are `count` of them (or the start timeout has passed)."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while len(found := re.findall(pattern, self.log())) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return found

    def tail(self, lines: int = 40) -> str:
        """The end of the server's log, for a failing assertion's message."""
        return "\n".join(self.log().splitlines()[-lines:])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_env(folder: Path, database_url: str, **settings: str) -> dict[str, str]:
    """The environment of a server on `database_url` with its images in `folder`, and nothing of the caller's."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("TEST_", "PROMETHEUS_"))}
    env.update({"DATABASE_URL": database_url, "IMAGE_DIR": str(folder / "images"), "HOST": "127.0.0.1",
                "PORT": str(free_port()), "PYTHONPATH": str(REPO), "WEB_CONCURRENCY": "2"})
    env.update(settings)
    return env


def start(command: list[str], env: dict[str, str], folder: Path) -> tuple[subprocess.Popen, Path]:
    """Start `command` in its own process group in `folder` (so a developer's `.env` stays out), logging to a file."""
    log_path = folder / f"server-{env['PORT']}.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(command, cwd=folder, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    return process, log_path


@contextmanager
def running(env: dict[str, str], folder: Path, command: list[str] | None = None) -> Iterator[Server]:
    """The service started with `command` (default `python main.py`), ready to answer, stopped afterwards."""
    command = command or [sys.executable, str(REPO / "main.py")]
    process, log_path = start(command, env, folder)
    server = Server(f"http://127.0.0.1:{env['PORT']}", process, log_path)
    try:
        wait_until_ready(server)
        yield server
    finally:
        stop(process)


def wait_until_ready(server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"the server exited with {server.process.returncode}:\n{server.log()}")
        try:
            if requests.get(server.url("/healthz"), timeout=2).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):  # not listening yet, or slow on a loaded machine
            pass
        time.sleep(0.1)
    raise AssertionError(f"the server did not answer within {START_TIMEOUT_S} s:\n{server.log()}")


def stop(process: subprocess.Popen) -> int:
    """Stop the server we started, gracefully (SIGTERM to its process group), and return its exit status."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode


def send_one_more_byte(socks, request: bytes, sent: int, closed: set) -> int:
    """One more byte of `request`'s headers to each socket not yet in `closed` (those the server closed are added
    to it), never the end of them; the count sent so far, for the next call."""
    for sock in socks:
        if sock not in closed:
            try:
                sock.send(request[sent:sent + 1])
            except OSError:
                closed.add(sock)
    return min(sent + 1, len(request) - 1)


class Burst:
    """`count` HTTP requests sent at once on connections of their own, from one background thread (a selector, not a
    thread per client: the clients must not be what is slow); each answer's status and when it ended."""

    def __init__(self, base_url: str, method: str, path: str, count: int, headers: dict[str, str] | None = None,
                 timeout_s: float = 120) -> None:
        host, port = base_url.removeprefix("http://").split(":")
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Length: 0", "Connection: close",
                 *(f"{name}: {value}" for name, value in (headers or {}).items())]
        self.request = ("\r\n".join(lines) + "\r\n\r\n").encode()
        self.address, self.count, self.timeout_s = (host, int(port)), count, timeout_s
        self.started = time.monotonic()
        self.answers: list[tuple[int | None, float]] = []  # (status or None when cut, seconds since the start)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        for _ in range(self.count):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(self.address)
            selector.register(sock, selectors.EVENT_WRITE, [b""])
        deadline = self.started + self.timeout_s
        while selector.get_map() and time.monotonic() < deadline:
            for key, events in selector.select(timeout=0.5):
                sock, received = key.fileobj, key.data
                try:
                    if events & selectors.EVENT_WRITE:
                        sock.sendall(self.request)  # small: the kernel's buffer takes it at once
                        selector.modify(sock, selectors.EVENT_READ, received)
                        continue
                    chunk = sock.recv(65536)
                except OSError:  # refused or reset: no answer
                    chunk = b""
                if chunk:
                    received[0] += chunk
                    continue
                selector.unregister(sock)
                sock.close()
                status = received[0][9:12]
                self.answers.append((int(status) if status.isdigit() else None, time.monotonic() - self.started))
        for key in list(selector.get_map().values()):
            key.fileobj.close()
            self.answers.append((None, time.monotonic() - self.started))
        selector.close()

    def wait(self) -> list[tuple[int | None, float]]:
        """Every answer, once all have come (or the timeout has passed)."""
        self.thread.join()
        return self.answers


@contextmanager
def vendor_stub(latency_s: float) -> Iterator[str]:
    """bench/vendor_stub.py in a process of its own (so that it competes with the test for no lock), answering after
    `latency_s`; its URL."""
    port = free_port()
    process = subprocess.Popen([sys.executable, str(REPO / "bench" / "vendor_stub.py"), "--port", str(port),
                                "--latency", str(latency_s)], stdout=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise AssertionError("the vendor stub did not start") from None
                time.sleep(0.05)
        yield url
    finally:
        stop(process)
