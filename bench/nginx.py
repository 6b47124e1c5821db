"""The shipped deploy/nginx.conf, run for real on loopback ports and temporary folders (tests and benchmarks)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "deploy" / "nginx.conf"
# The values the shipped file marks for the operator to change, as written there.
SHIPPED_UPSTREAM = "server 127.0.0.1:5000;"
SHIPPED_LISTEN = "listen 80;"
SHIPPED_IMAGE_DIR = "/srv/futurepast/instance/images/"


def binary() -> str | None:
    """The nginx executable, or None when the Debian package is not installed."""
    return shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def render_site(port: int, upstream: str, image_dir: Path, changes: dict[str, str] | None = None) -> str:
    """The shipped site file with its three marked values replaced, and any other `changes` (text -> text); each
    must be found, so drift fails loudly."""
    text = SITE.read_text()
    for old, new in ((SHIPPED_UPSTREAM, f"server {upstream};"), (SHIPPED_LISTEN, f"listen 127.0.0.1:{port};"),
                     (SHIPPED_IMAGE_DIR, f"{Path(image_dir).resolve()}/"), *(changes or {}).items()):
        if old not in text:
            raise ValueError(f"{SITE} no longer contains {old!r}")
        text = text.replace(old, new)
    return text


def main_conf(prefix: Path, site: Path) -> str:
    """A minimal nginx.conf that includes `site`, with every path inside `prefix` (no root-owned folder needed)."""
    # The service writes files 0644, but a root-run nginx drops its workers to nobody, who may not enter tmp folders.
    user = "user root;" if os.geteuid() == 0 else ""
    temp_paths = "\n".join(f"    {kind}_temp_path {prefix}/{kind};"
                           for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""{user}
worker_processes {min(os.cpu_count() or 1, 2)};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log off;
    keepalive_requests 1000000;
{temp_paths}
    include {site};
}}
"""


@contextmanager
def running(folder: Path, port: int, upstream: str, image_dir: Path,
            changes: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """nginx with the shipped site (with `changes`, see `render_site`) on 127.0.0.1:`port` in front of `upstream`,
    stopped on exit."""
    found = binary()
    if found is None:
        raise FileNotFoundError("nginx is not installed (apt-get install -y nginx)")
    prefix = Path(folder) / "nginx"
    prefix.mkdir(parents=True, exist_ok=True)
    site = prefix / "futurepast.conf"
    site.write_text(render_site(port, upstream, image_dir, changes))
    conf = prefix / "nginx.conf"
    conf.write_text(main_conf(prefix, site))
    process = subprocess.Popen([found, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log"),
                                "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            if process.poll() is not None:
                raise ChildProcessError(f"nginx exited: {process.stderr.read().decode(errors='replace')}")
            try:
                requests.get(f"http://127.0.0.1:{port}/_nginx_ready", timeout=2)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        process.stderr.close()
