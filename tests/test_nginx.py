"""The shipped nginx configuration in front of `python main.py`, both for real: /images/ served by nginx from
IMAGE_DIR, the compat PNG routes handed to nginx with X-Accel-Redirect because nginx asks for it, everything else
proxied, and nginx's own errors in the service's JSON shape."""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from bench import nginx
from serving import Server, free_port, running, server_env

pytestmark = pytest.mark.skipif(nginx.binary() is None, reason="nginx is not installed (apt-get install -y nginx)")
ACCEL_PREFIX = "/_images/"


@dataclass
class Deployment:
    service: Server
    front: str
    image_dir: Path
    achievement: dict

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(self.front + path, timeout=30, **kwargs)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory) -> Iterator[Deployment]:
    folder = tmp_path_factory.mktemp("nginx")
    env = server_env(folder, f"sqlite:///{folder / 'app.db'}", IMAGE_PROVIDER="local", TEXT_PROVIDER="local",
                     TRUSTED_PROXIES="1", WEB_CONCURRENCY="1")
    port = free_port()
    with running(env, folder) as service, \
            nginx.running(folder, port, f"127.0.0.1:{env['PORT']}", Path(env["IMAGE_DIR"])):
        front = f"http://127.0.0.1:{port}"
        response = requests.post(f"{front}/gen-achievement-image?date=31 Oct&product=soju", timeout=60)
        assert response.status_code == 200, response.text
        yield Deployment(service, front, Path(env["IMAGE_DIR"]), response.json())


def stored_file(deployment: Deployment, src: str) -> Path:
    sha256 = src.removeprefix("/images/").removesuffix(".png")
    return deployment.image_dir / sha256[:2] / f"{sha256}.png"


def test_images_are_sent_by_nginx_from_the_folder(deployment):
    src = deployment.achievement["image_src"]
    response = deployment.get(src)
    assert response.status_code == 200
    assert response.content == stored_file(deployment, src).read_bytes()
    sha256 = hashlib.sha256(response.content).hexdigest()
    assert src == f"/images/{sha256}.png"
    assert response.headers["Content-Type"] == "image/png"
    assert response.headers["ETag"] == f'"{sha256}"'
    assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert "X-Request-ID" not in response.headers  # the service never saw it

    again = deployment.get(src, headers={"If-None-Match": f'"{sha256}"'})
    assert (again.status_code, again.content, again.headers["ETag"]) == (304, b"", f'"{sha256}"')


def test_unknown_images_get_the_services_json_404(deployment):
    for path in (f"/images/{'0' * 64}.png", "/images/not-a-hash.png"):
        response = deployment.get(path)
        assert response.status_code == 404
        assert response.json()["code"] == "image_not_found"


def test_compat_route_is_found_by_the_service_and_sent_by_nginx(deployment):
    url = deployment.achievement["image_url"]
    sha256 = deployment.achievement["image_src"].removeprefix("/images/").removesuffix(".png")
    image_dir = deployment.image_dir.resolve()
    asked = requests.get(deployment.service.url(url), timeout=30, headers={  # what nginx sends the service
        "X-Sendfile-Type": "X-Accel-Redirect", "X-Accel-Mapping": f"/elsewhere/=/_x/, {image_dir}/={ACCEL_PREFIX}"})
    assert asked.status_code == 200
    assert asked.content == b""
    assert asked.headers["X-Accel-Redirect"] == f"{ACCEL_PREFIX}{sha256[:2]}/{sha256}.png"

    response = deployment.get(url)
    assert response.status_code == 200
    assert response.content == stored_file(deployment, deployment.achievement["image_src"]).read_bytes()
    assert response.headers["Content-Type"] == "image/png"
    assert response.headers["ETag"] == f'"{sha256}"'
    assert "X-Accel-Redirect" not in response.headers
    assert "X-Request-ID" in response.headers  # found by the service

    cached = deployment.get(url, headers={"If-None-Match": f'"{sha256}"'})
    assert cached.status_code == 304


def test_the_internal_locations_are_closed_to_clients(deployment):
    sha256 = deployment.achievement["image_src"].removeprefix("/images/").removesuffix(".png")
    for path in (f"{ACCEL_PREFIX}{sha256[:2]}/{sha256}.png", "/_errors/bad_gateway"):
        response = deployment.get(path)
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"


def test_another_method_on_an_image_is_the_services_json_405(deployment):
    response = requests.post(deployment.front + deployment.achievement["image_src"], timeout=30)
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"


def test_the_rest_is_proxied(deployment):
    response = deployment.get("/view-all-achievement")
    assert response.status_code == 200
    assert [a["image_src"] for a in response.json()["achievements"]] == [deployment.achievement["image_src"]]


def test_a_client_that_reaches_the_service_directly_gets_the_bytes(deployment):
    """Offload only when the proxy asks: without both headers, or with a mapping that holds no image, the bytes."""
    url = deployment.achievement["image_url"]
    png = stored_file(deployment, deployment.achievement["image_src"]).read_bytes()
    for headers in ({}, {"X-Sendfile-Type": "X-Accel-Redirect"}, {"X-Accel-Mapping": f"/={ACCEL_PREFIX}"},
                    {"X-Sendfile-Type": "X-Sendfile", "X-Accel-Mapping": f"/={ACCEL_PREFIX}"},
                    {"X-Sendfile-Type": "X-Accel-Redirect", "X-Accel-Mapping": "/elsewhere/=/_images/"}):
        direct = requests.get(deployment.service.url(url), headers=headers, timeout=30)
        assert direct.status_code == 200, headers
        assert direct.content == png, headers
        assert "X-Accel-Redirect" not in direct.headers


def test_a_client_cannot_ask_nginx_for_another_mapping(deployment):
    url = deployment.achievement["image_url"]
    response = deployment.get(url, headers={"X-Sendfile-Type": "X-Accel-Redirect", "X-Accel-Mapping": "/=/etc/"})
    assert response.status_code == 200
    assert response.content == stored_file(deployment, deployment.achievement["image_src"]).read_bytes()


# --- nginx's own errors, as JSON ------------------------------------------------------------------


def raw(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """`request` written as bytes to nginx; its answer's status, headers and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        received = b""
        while part := sock.recv(65536):
            received += part
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    return int(status_line.split()[1]), {k.strip().lower(): v.strip() for k, _, v in
                                         (line.partition(":") for line in lines)}, body


def assert_json_error(status: int, headers: dict[str, str], body: bytes, expected: int, code: str) -> None:
    assert (status, headers.get("content-type")) == (expected, "application/json"), (status, headers, body[:200])
    error = json.loads(body)
    assert error["code"] == code
    assert error["error"]


def front_port(deployment: Deployment) -> int:
    return int(deployment.front.rsplit(":", 1)[1])


def test_a_body_too_large_is_nginx_json_413(deployment):
    response = requests.post(deployment.front + "/verify", data=b"x" * (1024 * 1024 + 1),
                             headers={"Content-Type": "image/png"}, timeout=30)
    assert_json_error(response.status_code, {"content-type": response.headers["Content-Type"]}, response.content,
                      413, "payload_too_large")


@pytest.mark.parametrize(("request_bytes", "status", "code"), [
    (b"GET /view-all-achievement?x=" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 10_240 + b"\r\n\r\n", 431, "headers_too_large"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Bad: a\x00b\r\n\r\n", 400, "bad_request"),
    (b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_request"),
    (b"GET / HTTP/1.1\r\n\r\n", 400, "bad_request"),  # HTTP/1.1 without Host
])
def test_a_request_nginx_refuses_is_json(deployment, request_bytes, status, code):
    assert_json_error(*raw(front_port(deployment), request_bytes), status, code)


def test_the_service_down_or_too_slow_is_json_502_or_504(tmp_path):
    down_port, front = free_port(), free_port()
    with nginx.running(tmp_path / "down", front, f"127.0.0.1:{down_port}", tmp_path):  # nobody listens there
        response = requests.get(f"http://127.0.0.1:{front}/view-all-achievement", timeout=30)
        assert_json_error(response.status_code, {"content-type": response.headers["Content-Type"]},
                          response.content, 502, "bad_gateway")
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        front = free_port()
        with nginx.running(tmp_path / "slow", front, f"127.0.0.1:{silent.getsockname()[1]}", tmp_path,
                           changes={"proxy_read_timeout 900s;": "proxy_read_timeout 1s;"}):
            response = requests.get(f"http://127.0.0.1:{front}/view-all-achievement", timeout=30)
            assert_json_error(response.status_code, {"content-type": response.headers["Content-Type"]},
                              response.content, 504, "gateway_timeout")


def test_the_services_own_errors_pass_through_untouched(deployment):
    response = deployment.get("/get-recommendations?user_id=abc")
    assert response.status_code == 400
    assert response.json()["field"] == "user_id"
    assert "X-Request-ID" in response.headers  # the service's answer, not nginx's
