"""Generation at the vendors' cost, not ours: this service side by side with the first version, in one run.

    .venv/bin/python bench/vendor_cost.py            # about 6 minutes; needs nginx and wrk (Debian packages)
    .venv/bin/python bench/vendor_cost.py --storefronts 2000 --pairs 20     # a shorter cache row

The first version is the repository's first commit whose `python main.py` serves the whole API and calls the
vendors (`git log --reverse`: FIRST_VERSION), exported with `git archive` into a temporary folder and started as a
process of its own, on its own SQLite file and image folder. This service is started by the README's production
command, `python main.py` (gunicorn.conf.py). Both call the same vendor stub (bench/vendor_stub.py: Clipdrop for
pictures, an OpenAI-compatible server for achievement text), and each figure is measured on both, one after the
other, in the same run:

- server time per achievement at 0 s of vendor latency: the CPU time of the server's process tree over
  CPU_RUNS achievements in a row, each a new request (another product, so never a cached picture), divided by
  the count;
- BURST achievements at once at 1 s per vendor call (a text call, then a picture): the wall time until the last;
- the compat PNG route (`/get-achievement-image`), CLIENTS keep-alive connections with wrk, requests per second,
  beside the least a Python app on the same gevent workers does to send that file (FLOOR_APP);
- `/images/{sha}.png` through the shipped deploy/nginx.conf against nginx sending the same file alone;
- PSS of each server's process tree after all of the above;
- the image cache: STOREFRONTS requests of `/gen-new-storefront-images`, from as many users spread over PAIRS
  distinct (theme, products) lists, CACHE_CLIENTS at a time; the vendor calls the ledger (`/usage`) and the stub
  counted, and the cached answers.

Prints one table and writes it to bench/out/vendor_cost.md. Everything talks to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import vendor_stub  # noqa: E402
from bench.run import (  # noqa: E402
    REQUEST_TIMEOUT_S,
    DeadlineReached,
    Row,
    ScenarioError,
    Service,
    clean_up,
    commit,
    expect,
    free_port,
    ms,
    on_deadline,
    process_tree,
    publish,
    scenario_shipped_nginx,
    stop_process,
    tree_cpu_s,
    tree_pss,
    verdict,
    wait_until,
    wrk,
)

# `git log --reverse`: 67dbb17 lays the foundation, 4f49ebb serves the API on the local providers only, e3c22d7 is the
# first commit that calls the vendors (Clipdrop, Stability AI, OpenAI), and 5de96e6 adds the stub they are timed with.
FIRST_VERSION = "e3c22d7"
CPU_RUNS = int(os.environ.get("BENCH_CPU_RUNS", "20"))
BURST, BURST_RUNS, VENDOR_LATENCY_S = 8, 3, 1.0
STOREFRONTS, PAIRS, CACHE_CLIENTS = 10_000, 100, 16
THEMES = ("tech", "food", "fashion", "home", "sports")
DEADLINE_S = 1200


class FirstVersion(Service):
    """The first version's `python main.py` (Flask's own server), from its commit, in a folder of its own."""

    name = "the first version"

    def __init__(self, workdir: Path, stub_url: str) -> None:
        self.workdir = workdir / "first-version"
        self.workdir.mkdir()
        archive = subprocess.run(["git", "archive", FIRST_VERSION], cwd=ROOT, capture_output=True, check=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(self.workdir, filter="data")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.workdir / "server.log"
        env = {key: value for key, value in os.environ.items() if not key.startswith(("OPENAI_", "FLASK_"))}
        env.update({"HOST": "127.0.0.1", "PORT": str(self.port), "DATABASE_URL": f"sqlite:///{self.workdir / 'app.db'}",
                    "IMAGE_DIR": str(self.workdir / "images"), "CLIPDROP_API_KEY": "bench",
                    "CLIPDROP_API_URL": stub_url, "OPENAI_API_KEY": "bench", "OPENAI_BASE_URL": f"{stub_url}/v1",
                    "PROVIDER_RETRIES": "0", "PROVIDER_TIMEOUT_S": "30", "PYTHONPATH": str(self.workdir)})
        self.process = subprocess.Popen([sys.executable, "main.py"], cwd=self.workdir, env=env, start_new_session=True,
                                        stdout=self.log_path.open("wb"), stderr=subprocess.STDOUT)
        self.http = requests.Session()
        try:
            wait_until(lambda: self.get("/view-all-achievement").status_code == 200, 60, "the first version")
        except BaseException:
            self.stop()
            raise


def achievement_path(index: int) -> str:
    """A new achievement request each time: another product, so another prompt, never a cached picture."""
    return f"/gen-achievement-image?date=31%20Oct&product=soju%20{index}"


def cpu_per_achievement(server, start: int) -> float:
    """Seconds of the server's CPU per achievement, CPU_RUNS in a row at vendor latency 0."""
    expect(server.post(achievement_path(start)), 200)  # warms the connection and the first-call paths
    pids = server.pids()
    before = tree_cpu_s(pids)
    for index in range(start + 1, start + 1 + CPU_RUNS):
        expect(server.post(achievement_path(index)), 200)
    return (tree_cpu_s(pids) - before) / CPU_RUNS


def burst(server, stub: vendor_stub.VendorStub, start: int) -> list[float]:
    """BURST achievements at once, each vendor call answering after VENDOR_LATENCY_S: seconds until the last."""

    def one(index: int) -> int:
        with requests.Session() as http:
            return http.post(server.url + achievement_path(index), timeout=REQUEST_TIMEOUT_S).status_code

    times = []
    stub.latency_s = VENDOR_LATENCY_S
    try:
        with ThreadPoolExecutor(BURST) as pool:
            for run in range(BURST_RUNS):
                first = start + run * BURST
                began = time.perf_counter()
                statuses = list(pool.map(one, range(first, first + BURST)))
                times.append(time.perf_counter() - began)
                if set(statuses) != {200}:
                    raise ScenarioError(f"a burst answered {sorted(statuses)}")
    finally:
        stub.latency_s = 0.0
    return times


def compat_png_rate(server) -> float:
    """Requests per second of `/get-achievement-image?achievement_id=1`, wrk's CLIENTS connections."""
    return statistics.median(wrk(server.url + "/get-achievement-image?achievement_id=1", server.pids()).rate
                             for _ in range(3))


# The least any Python app on gunicorn's gevent workers does to send a file: open it, answer with its size, hand it to
# the server's sendfile (the kernel's, ops/gevent_sendfile.py). What Flask, the database look-up, the request's log
# line and metrics add on top is what separates the compat route from this.
FLOOR_APP = '''
import os

from ops import gevent_sendfile

gevent_sendfile.install()
PATH = os.environ["FLOOR_FILE"]


def app(environ, start_response):
    file = open(PATH, "rb")
    start_response("200 OK", [("Content-Type", "image/png"), ("Content-Length", str(os.fstat(file.fileno()).st_size))])
    return environ["wsgi.file_wrapper"](file)
'''


def floor_rate(workdir: Path, ours: Service) -> float:
    """Requests per second of FLOOR_APP sending the compat route's file, on as many gevent workers as ours."""
    sha256 = ours.get("/get-achievement-image?achievement_id=1").headers["ETag"].strip('"')
    folder = workdir / "floor"
    folder.mkdir()
    (folder / "floor.py").write_text(FLOOR_APP)
    port = free_port()
    env = {**os.environ, "FLOOR_FILE": str(next((workdir / "images").rglob(f"{sha256}.png"))),
           "PYTHONPATH": f"{folder}:{ROOT}"}
    process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", "2", "--reuse-port", "-b",
                                f"127.0.0.1:{port}", "floor:app"], cwd=folder, env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_until(lambda: requests.get(url, timeout=2).status_code == 200, 30, "the floor app")
        return statistics.median(wrk(url, process_tree(process.pid)).rate for _ in range(3))
    finally:
        stop_process(process)


def add_shoppers(database: Path, count: int, pairs: int) -> list[tuple[int, str]]:
    """`count` users, each with one theme and four products, the lists spread over `pairs` distinct ones: straight
    into the service's SQLite file (the API seeds only random or fixed users). Their (id, theme)."""
    lists = [(THEMES[i % len(THEMES)], [f"product {i}-{k}" for k in range(4)]) for i in range(pairs)]
    with sqlite3.connect(database) as connection:
        first = (connection.execute("SELECT COALESCE(MAX(id), 0) FROM users").fetchone()[0] or 0) + 1
        rows = [(f"shopper {n}", json.dumps({lists[n % pairs][0]: lists[n % pairs][1]}), "2026-12-03 00:00:00",
                 f"00000000-0000-4000-8000-{n:012d}") for n in range(count)]
        connection.executemany("INSERT INTO users (name, recommendations, created_at, subject_key) VALUES (?, ?, ?, ?)",
                               rows)
    return [(first + n, lists[n % pairs][0]) for n in range(count)]


def storefront_usage(service: Service) -> dict[str, int]:
    """Today's vendor calls and cached pictures of `/gen-new-storefront-images`, as the ledger's `/usage` says."""
    usage = expect(service.get("/usage", params={"group_by": "route"}), 200)
    route = next((g for g in usage["groups"] if g["key"] == "/gen-new-storefront-images"), {})
    return {"calls": route.get("calls", 0), "cached": route.get("cached", 0)}


def storefront_cache(service: Service, stub: vendor_stub.VendorStub, count: int, pairs: int) -> Row:
    """`count` storefront requests over `pairs` distinct (theme, products): the vendor calls and the cached ones."""
    row = Row(f"{count:,} storefront requests over {pairs} distinct (theme, products), {CACHE_CLIENTS} at a time",
              reference=f"{pairs} distinct pictures", target=f"{pairs} vendor calls, {count - pairs:,} cached")
    shoppers = add_shoppers(service.workdir / "app.db", count, pairs)
    calls_before, ledger_before = stub.calls["clipdrop"], storefront_usage(service)

    def one(shopper: tuple[int, str]) -> bool:
        user_id, theme = shopper
        answer = http.post(f"{service.url}/gen-new-storefront-images?user_id={user_id}&shop_theme={theme}",
                           timeout=REQUEST_TIMEOUT_S)
        if answer.status_code != 200:
            raise ScenarioError(f"a storefront answered {answer.status_code}: {answer.text[:200]}")
        return answer.json()["storefronts"][0]["cached"]

    http = requests.Session()
    http.mount("http://", requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=CACHE_CLIENTS))
    began = time.perf_counter()
    with ThreadPoolExecutor(CACHE_CLIENTS) as pool:
        cached = sum(pool.map(one, shoppers))
    seconds = time.perf_counter() - began
    ledger = {key: value - ledger_before[key] for key, value in storefront_usage(service).items()}
    vendor = stub.calls["clipdrop"] - calls_before
    row.figure = f"{ledger['calls']} vendor calls, {ledger['cached']:,} cached"
    row.met = verdict(ledger["calls"] == vendor == pairs and ledger["cached"] == cached == count - pairs)
    row.note = (f"the stub answered {vendor} picture calls; {cached:,} answers said cached; "
                f"{count / seconds:,.0f} requests/s ({seconds:.0f} s)")
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storefronts", type=int, default=STOREFRONTS)
    parser.add_argument("--pairs", type=int, default=PAIRS)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (databases, images, logs)")
    args = parser.parse_args()
    signal.signal(signal.SIGALRM, on_deadline)
    signal.alarm(DEADLINE_S)  # whatever happens, the run ends, with the rows measured so far
    started, load_before = time.monotonic(), os.getloadavg()[0]
    workdir = Path(tempfile.mkdtemp(prefix="futurepast-vendor-cost-"))
    stub = vendor_stub.start(latency_s=0.0)
    vendor_stub.noisy_png(1024, 1024)  # made before any timing
    rows: list[Row] = []
    first = ours = None
    try:
        first, ours = FirstVersion(workdir, stub.url), Service(workdir, stub.url)
        # Server time per achievement: ours, then the first version's, then ours again (drift hits both).
        mine = [cpu_per_achievement(ours, 0)]
        theirs = cpu_per_achievement(first, 0)
        mine.append(cpu_per_achievement(ours, 100))
        figure = min(mine)
        rows.append(Row(f"server time per achievement, vendor latency 0 (CPU of the process tree, {CPU_RUNS} in a row)",
                        figure=ms(figure), reference=f"{ms(theirs)} (first version)", ratio=f"{figure / theirs:.2f}x",
                        target="<= 1.5x", met=verdict(figure <= 1.5 * theirs),
                        note="ours: " + ", ".join(ms(m) for m in mine)))
        mine_b, theirs_b = burst(ours, stub, 1000), burst(first, stub, 1000)
        figure, reference = statistics.median(mine_b), statistics.median(theirs_b)
        rows.append(Row(f"{BURST} achievements at once, {VENDOR_LATENCY_S:.0f} s per vendor call (median of "
                        f"{BURST_RUNS})", figure=f"{figure:.2f} s", reference=f"{reference:.2f} s (first version)",
                        ratio=f"{figure / reference:.2f}x", target="<= 1.1x", met=verdict(figure <= 1.1 * reference),
                        note="runs: " + ", ".join(f"{a:.2f}/{b:.2f} s" for a, b in zip(mine_b, theirs_b, strict=True))))
        mine_r, theirs_r, floor_r = compat_png_rate(ours), compat_png_rate(first), floor_rate(workdir, ours)
        rows.append(Row("compat PNG route `/get-achievement-image`, 8 connections (wrk)",
                        figure=f"{mine_r:,.0f} req/s", reference=f"{theirs_r:,.0f} req/s (first version)",
                        ratio=f"{mine_r / theirs_r:.1f}x", target=">= 5x", met=verdict(mine_r >= 5 * theirs_r),
                        note="the same achievement's badge, a 1024x1024 PNG of the stub, on both; a minimal WSGI app "
                             f"sending the same file on two gevent workers: {floor_r:,.0f} req/s "
                             f"({floor_r / theirs_r:.1f}x the first version)"))
        user = expect(ours.post("/seed-specific"), 201)["users"][0]
        made = expect(ours.post(f"/gen-new-storefront-images?user_id={user['id']}&shop_theme=tech"), 200)
        nginx_rows = scenario_shipped_nginx(ours, stub.url, made)
        rows.append(nginx_rows[0])
        mine_p, theirs_p = tree_pss(ours.pids()), tree_pss(first.pids())
        rows.append(Row("PSS of the server's processes after the runs above", figure=f"{mine_p / 1e6:.0f} MB",
                        reference=f"{theirs_p / 1e6:.0f} MB (first version)", target="< 200 MB",
                        met=verdict(mine_p < 200e6), note="sum of Pss in /proc/<pid>/smaps_rollup over the tree"))
        first.stop()
        rows.append(storefront_cache(ours, stub, args.storefronts, args.pairs))
    except (ScenarioError, DeadlineReached) as error:
        rows.append(Row("the rest of the run", figure="error", met="error", note=str(error)))
    finally:
        signal.alarm(0)
        for server in (first, ours):
            if server is not None:
                server.stop()
        clean_up(stub, workdir, args.keep)
    return publish("vendor_cost.md", f"Commit {commit()} against the first version {FIRST_VERSION}", started,
                   load_before, rows)


if __name__ == "__main__":
    sys.exit(main())
