"""What the gunicorn master does before forking (ops/prefork.py): build the lazy parts once, give back start-up code."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

from serving import REPO

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/smaps_rollup"), reason="needs Linux's /proc")

# In a process of its own: a file of 16 MiB mapped read-only and read through (its pages now count in this process's
# PSS, as a compiled library's code does once it has run), beside memory that must keep its contents.
RELEASE = textwrap.dedent("""
    import json, mmap, os, sys
    from ops import prefork

    path = sys.argv[1]
    with open(path, "wb") as file:
        file.write(bytes(range(256)) * (16 << 12))
    with open(path, "rb") as file:
        code = mmap.mmap(file.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
    with open(path, "r+b") as file:
        written = mmap.mmap(file.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    written[:5] = b"mine!"  # a private change: dropping this page would lose it
    heap = mmap.mmap(-1, 4 << 20)
    heap[:] = b"h" * (4 << 20)
    total = sum(code[offset] for offset in range(0, len(code), 4096))
    before = prefork.file_pss()
    released = prefork.release_startup_code()
    after = prefork.file_pss()
    print(json.dumps({"before": before, "after": after, "released": released, "total": total,
                      "code": code[:3].hex(), "written": written[:5].decode(), "heap": heap[-1:].decode(),
                      "sum_again": sum(code[offset] for offset in range(0, len(code), 4096))}))
""")


def test_the_master_gives_back_read_only_file_pages_and_nothing_else(tmp_path):
    result = subprocess.run([sys.executable, "-c", RELEASE, str(tmp_path / "code.bin")], cwd=REPO,
                            capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["released"] >= 15 << 20  # the 16 MiB read-only mapping, read by this process alone
    assert seen["after"] <= seen["before"] - (15 << 20)
    # Nothing lost: the reclaimed pages read back from the file, the changed page and anonymous memory are untouched.
    assert (seen["code"], seen["sum_again"]) == ("000102", seen["total"])
    assert (seen["written"], seen["heap"]) == ("mine!", "h")


# In a process of its own, since mappers are configured once per process: before and after build_lazy_parts.
LAZY_PARTS = textwrap.dedent("""
    import json, sys
    from sqlalchemy import inspect
    import models
    from main import create_app
    from ops import prefork

    app = create_app({"TESTING": True, "DATABASE_URL": "sqlite:///" + sys.argv[1], "IMAGE_DIR": sys.argv[2]})
    mappers = [inspect(models.Achievement), inspect(models.User)]
    before = [mapper.configured for mapper in mappers]
    prefork.build_lazy_parts(app)
    print(json.dumps({"before": before, "after": [mapper.configured for mapper in mappers],
                      "route": app.url_map.bind("localhost").match("/healthz")[0]}))
    app.extensions["engine"].dispose()
""")


def test_the_lazy_parts_are_built_before_any_request(tmp_path, sqlite_template):
    result = subprocess.run([sys.executable, "-c", LAZY_PARTS, str(sqlite_template), str(tmp_path / "images")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.splitlines()[-1])
    assert (seen["before"], seen["after"]) == ([False, False], [True, True])
    assert seen["route"] == "ops.check_health"


def test_the_server_master_gives_back_its_start_up_code_before_forking(tmp_path, sqlite_template):
    """gunicorn.conf.py releases the master's start-up code before it forks the workers, which then serve. (How much
    it gives back depends on what else maps the same libraries: a test process that imported the app shares most of
    those pages, so the amount is the unit test's above.)"""
    import shutil

    import requests

    from serving import running, server_env

    shutil.copyfile(sqlite_template, tmp_path / "app.db")
    with running(server_env(tmp_path, f"sqlite:///{tmp_path / 'app.db'}"), tmp_path) as server:
        assert requests.get(server.url("/view-all-achievement"), timeout=10).status_code == 200
        log = server.log()
    released = re.search(r"Start-up code given back to the system: \d+ MB", log)
    assert released, log
    assert released.start() < log.index("Booting worker"), log
