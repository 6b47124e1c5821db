"""The shipped nginx configuration in front of `python main.py`, both for real: /images/ served by nginx from
IMAGE_DIR, the compat PNG routes handed to nginx with X-Accel-Redirect, everything else proxied."""

from __future__ import annotations

import hashlib
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
                     IMAGE_ACCEL_REDIRECT=ACCEL_PREFIX, TRUSTED_PROXIES="1", WEB_CONCURRENCY="1")
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
    direct = requests.get(deployment.service.url(url), timeout=30)
    sha256 = deployment.achievement["image_src"].removeprefix("/images/").removesuffix(".png")
    assert direct.status_code == 200
    assert direct.content == b""
    assert direct.headers["X-Accel-Redirect"] == f"{ACCEL_PREFIX}{sha256[:2]}/{sha256}.png"

    response = deployment.get(url)
    assert response.status_code == 200
    assert response.content == stored_file(deployment, deployment.achievement["image_src"]).read_bytes()
    assert response.headers["Content-Type"] == "image/png"
    assert response.headers["ETag"] == f'"{sha256}"'
    assert "X-Accel-Redirect" not in response.headers
    assert "X-Request-ID" in response.headers  # found by the service

    cached = deployment.get(url, headers={"If-None-Match": f'"{sha256}"'})
    assert cached.status_code == 304


def test_the_internal_location_is_closed_to_clients(deployment):
    sha256 = deployment.achievement["image_src"].removeprefix("/images/").removesuffix(".png")
    assert deployment.get(f"{ACCEL_PREFIX}{sha256[:2]}/{sha256}.png").status_code == 404


def test_the_rest_is_proxied(deployment):
    response = deployment.get("/view-all-achievement")
    assert response.status_code == 200
    assert [a["image_src"] for a in response.json()["achievements"]] == [deployment.achievement["image_src"]]
