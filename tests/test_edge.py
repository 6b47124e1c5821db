"""The HTTP edge, byte by byte, against the real server with the production settings (the README's production
command): what a hostile or broken client sends gets a JSON error, and the worker's memory stays bounded."""

from __future__ import annotations

import base64
import json
import re
import shutil
import socket
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from conftest import PRODUCTION_BADGES
from fakes import image_bytes, with_itxt, zlib_bomb
from serving import REPO, Server, running, server_env

ADMIN_TOKEN = "edge-admin-token"
GUNICORN = [str(Path(sys.executable).parent / "gunicorn"), "-c", str(REPO / "gunicorn.conf.py")]
# The README's production command and `python main.py` (gevent workers), and gunicorn's plain `sync` worker class,
# which answers the requests gunicorn refuses through the same code. (gunicorn.conf.py patches the process for
# gevent as it loads, so a threaded worker class is no longer one it can run.)
COMMANDS = {"gunicorn": [*GUNICORN, "main:create_app()"],
            "python main.py": [sys.executable, str(REPO / "main.py")],
            "gunicorn sync": [*GUNICORN, "-k", "sync", "main:create_app()"]}
MIB = 1024 * 1024


@pytest.fixture(scope="module", params=list(COMMANDS))
def production(request, tmp_path_factory, sqlite_template) -> Iterator[Server]:
    """The service with the production settings (one worker, so its memory is the one measured), on a migrated
    database, started by each command."""
    folder = tmp_path_factory.mktemp("edge")
    shutil.copyfile(sqlite_template, folder / "app.db")
    env = server_env(folder, f"sqlite:///{folder / 'app.db'}", APP_ENV="production", ADMIN_TOKEN=ADMIN_TOKEN,
                     IMAGE_PROVIDER="local", TEXT_PROVIDER="local", WEB_CONCURRENCY="1", **PRODUCTION_BADGES)
    with running(env, folder, COMMANDS[request.param]) as server:
        yield server


def workers(server: Server) -> list[int]:
    """The pids of the server's worker processes (the children of gunicorn's master)."""
    pid = server.process.pid
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def peak_rss_mib(pid: int) -> float:
    """The most resident memory the process has ever used (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for process {pid}")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        assert self.headers.get("content-type") == "application/json", (self.status, self.headers, self.body[:300])
        return json.loads(self.body)


def send_raw(server: Server, request: bytes, *, then: bytes = b"") -> Answer:
    """Write `request` (and `then`, as a later write) to the server's socket, as bytes; read its first answer."""
    host, port = server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        try:
            sock.sendall(request)
            if then:
                sock.sendall(then)
        except (BrokenPipeError, ConnectionResetError):  # answered and closed before reading it all
            pass
        received = b""
        while b"\r\n\r\n" not in received or len(received) < _expected_length(received):
            try:
                part = sock.recv(65536)
            except ConnectionResetError:
                break
            if not part:
                break
            received += part
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return Answer(int(status_line.split()[1]), headers, body[:int(headers.get("content-length", len(body)))])


def _expected_length(received: bytes) -> int:
    head, _, _ = received.partition(b"\r\n\r\n")
    found = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return len(head) + 4 + int(found[1]) if found else sys.maxsize


def chunked(body: bytes, size: int = 65536) -> bytes:
    """`body` in the chunked transfer coding, with its last chunk."""
    return b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size])
                    for i in range(0, len(body), size)) + b"0\r\n\r\n"


def post_head(path: str, *extra: str) -> bytes:
    return "\r\n".join([f"POST {path} HTTP/1.1", "Host: 127.0.0.1", *extra, "", ""]).encode()


def test_a_chunked_body_over_the_limit_is_413_not_cut(production):
    over = json.dumps({"users": 1, "padding": "x" * MIB}).encode()
    answer = send_raw(production, post_head("/seedrandom", "Transfer-Encoding: chunked",
                                            "Content-Type: application/json",
                                            f"Authorization: Bearer {ADMIN_TOKEN}"), then=chunked(over))
    assert answer.status == 413
    assert answer.json()["code"] == "payload_too_large"

    within = json.dumps({"users": 0, "achievements": 0, "storefronts": 0}).encode()
    answer = send_raw(production, post_head("/seedrandom", "Transfer-Encoding: chunked", "Connection: close",
                                            "Content-Type: application/json",
                                            f"Authorization: Bearer {ADMIN_TOKEN}") + chunked(within, 7))
    assert answer.status == 201, answer.body
    assert answer.json()["users"] == 0


def test_a_content_length_over_the_limit_is_413_before_the_body_is_read(production):
    answer = send_raw(production, post_head("/verify", f"Content-Length: {MIB + 1}", "Content-Type: image/png"))
    assert answer.status == 413
    assert answer.json()["code"] == "payload_too_large"


def test_verify_cannot_exhaust_the_workers_memory(production):
    verify = production.url("/verify")
    assert requests.post(verify, json={"credential": "x"}, timeout=30).status_code == 422  # warm
    (worker,) = workers(production)
    before = peak_rss_mib(worker)

    bomb = with_itxt(image_bytes((1, 1)), "openbadgecredential", zlib_bomb(1000), compressed=True)
    assert len(bomb) < MIB  # 1,000 MiB once inflated, under the body limit on the wire
    nested = "[" * 50_000
    as_jwt = f"{b64url(nested.encode())}.{b64url(nested.encode())}.c2ln"
    attacks = [(bomb, "image/png")] * 4 + [(as_jwt, "application/jwt"), (nested, "application/json"),
                                           (json.dumps({"credential": as_jwt}), "application/json")]

    def send(attack):
        body, content_type = attack
        return requests.post(verify, data=body, headers={"Content-Type": content_type}, timeout=60)

    with ThreadPoolExecutor(max_workers=len(attacks)) as pool:  # at once, as an attacker would
        answers = list(pool.map(send, attacks))
    for answer in answers:
        assert answer.status_code in (400, 422), answer.text[:300]
        assert answer.headers["Content-Type"] == "application/json"
        assert answer.json()["code"] in ("no_credential", "invalid_json")
    assert [answer.status_code for answer in answers[:4]] == [422] * 4
    assert "inflates to more than 1024 KiB" in answers[0].json()["error"]
    grown = peak_rss_mib(worker) - before
    assert grown < 64, f"the worker's peak memory grew by {grown:.0f} MiB"
    assert workers(production) == [worker]  # the same worker, never killed or restarted


# --- what gunicorn refuses before the app sees it -------------------------------------------------


def get_head(target: str, *headers: str) -> bytes:
    return "\r\n".join([f"GET {target} HTTP/1.1", "Host: 127.0.0.1", *headers, "Connection: close", "", ""]).encode()


def assert_json_error(answer: Answer, status: int, code: str) -> None:
    assert answer.status == status, (answer.status, answer.body[:300])
    assert answer.json()["code"] == code
    assert answer.json()["error"]
    assert b"<html" not in answer.body.lower()


def test_a_request_line_too_long_is_json_414(production):
    assert_json_error(send_raw(production, get_head("/view-all-achievement?x=" + "a" * 10_000)), 414, "uri_too_long")


@pytest.mark.parametrize("headers", [["X-Padding: " + "a" * 10_240],  # one header of 10 KB
                                     [f"X-Many-{i}: a" for i in range(200)]])  # too many
def test_headers_too_large_are_json_431(production, headers):
    assert_json_error(send_raw(production, get_head("/view-all-achievement", *headers)), 431, "headers_too_large")


@pytest.mark.parametrize("request_bytes", [
    b"GET /view-all-achievement HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bad: a\x01b\r\n\r\n",  # a control character
    b"GET /view-all-achievement HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bad: a\x00b\r\n\r\n",  # NUL
    b"GET /view all HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",  # a space in the target
    b"G\x01T / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",  # a malformed method
    b"GET / HTTP/9.9\r\nHost: 127.0.0.1\r\n\r\n",  # no such version
    b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",  # a space in a header name
    b"POST /verify HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
])
def test_a_malformed_request_is_json_400(production, request_bytes):
    assert_json_error(send_raw(production, request_bytes), 400, "bad_request")


def test_the_server_still_answers_after_refusing(production):
    assert requests.get(production.url("/view-all-achievement"), timeout=10).status_code == 200


# --- the public URL is configuration --------------------------------------------------------------


def test_a_host_header_never_reaches_a_credential_a_page_or_a_link(production):
    evil = {"Host": "evil.example", "X-Forwarded-Host": "evil.example"}
    admin = {**evil, "Authorization": f"Bearer {ADMIN_TOKEN}"}

    def call(method: str, path: str, **kwargs) -> requests.Response:
        response = requests.request(method, production.url(path), timeout=60, **kwargs)
        assert response.status_code < 400, (path, response.status_code, response.text[:300])
        assert b"evil.example" not in response.content, path
        assert "evil.example" not in str(response.headers), path
        return response

    if requests.get(production.url("/users/1/achievements/1/credential"), timeout=30).status_code == 404:
        call("POST", "/seed-specific", headers=admin)
        call("POST", "/seedrandom", headers=admin, json={"users": 0, "achievements": 1, "storefronts": 0})
        call("POST", "/add-achievement?user_id=1&achievement_id=1", headers=evil)
    credential = call("GET", "/users/1/achievements/1/credential", headers=evil).json()
    assert credential["issuer"]["id"] == "https://badges.example/issuer"
    assert credential["credentialStatus"]["statusListCredential"].startswith("https://badges.example/status/")
    for path in ("/users/1/achievements/1/credential?format=jwt", "/users/1/achievements/1/credential?format=ldp",
                 "/users/1/achievements/1/badge.png", "/issuer", "/status/1", "/.well-known/jwks.json",
                 "/achievements/1", "/share/1/1", "/gallery", "/openapi.json", "/docs"):
        call("GET", path, headers=evil)
    assert call("GET", "/openapi.json", headers=evil).json()["servers"] == [{"url": "https://badges.example"}]
    job = call("POST", "/gen-achievement-image?date=31 Oct&product=soju", headers={**evil, "Prefer": "respond-async"})
    assert job.headers["Location"].startswith("/jobs/")  # relative: the client's own origin
