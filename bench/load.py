"""A bounded load test: the service under gunicorn on SQLite and on PostgreSQL, many concurrent clients, a table.

    .venv/bin/python bench/load.py                    # 10 s per database, 32 clients
    .venv/bin/python bench/load.py --seconds 30 --clients 64 --database sqlite

For each database it starts `python main.py` (gunicorn and gunicorn.conf.py) on a free loopback port and a
database of its own (a temporary SQLite file; a PostgreSQL schema dropped at the end), seeds demo data, then
lets every client send requests across the read and write routes, PNG downloads included, until the time or
the request budget runs out. It prints requests, errors (expected: none), requests per second and latency
percentiles, per database and per route, and checks that /metrics counted every request. It only ever talks to
127.0.0.1, and exits non-zero when any request failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

REPO = Path(__file__).resolve().parent.parent
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SEED = {"users": 50, "achievements": 30, "storefronts": 100}
# (weight, name): how often each kind of request is sent.
MIX = [(20, "recommendations"), (15, "achievement list"), (15, "achievement PNG"), (15, "storefront PNG"),
       (10, "user storefronts"), (5, "user achievements"), (10, "award"), (8, "assign"), (2, "generate badge")]


@dataclass
class Results:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    samples: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, name: str, seconds: float, error: str | None) -> None:
        with self.lock:
            self.latencies[name].append(seconds)
            if error:
                self.errors[name] += 1
                if len(self.samples) < 5:
                    self.samples.append(f"{name}: {error}")

    @property
    def count(self) -> int:
        return sum(len(values) for values in self.latencies.values())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(folder: Path, database_url: str, args) -> tuple[subprocess.Popen, str, Path]:
    port = free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith(("TEST_", "PROMETHEUS_"))}
    env.update({"DATABASE_URL": database_url, "IMAGE_DIR": str(folder / "images"), "HOST": "127.0.0.1",
                "PORT": str(port), "APP_ENV": "development", "ADMIN_TOKEN": "", "GENERATION_RATE_LIMIT": "",
                "IMAGE_PROVIDER": "local", "TEXT_PROVIDER": "local"})
    if args.workers:
        env["WEB_CONCURRENCY"] = str(args.workers)
    if args.connections:
        env["WORKER_CONNECTIONS"] = str(args.connections)
    log_path = folder / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, str(REPO / "main.py")], cwd=folder, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited:\n{log_path.read_text()}")
        try:
            if requests.get(f"{base}/healthz", timeout=2).status_code == 200:
                return process, base, log_path
        except requests.ConnectionError:
            time.sleep(0.1)
    stop_server(process)
    raise RuntimeError("the server did not start within 60 s")


def stop_server(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def seed(base: str) -> dict[str, list]:
    """Demo data, and the ids the clients pick from."""
    response = requests.post(f"{base}/seedrandom", json=SEED, timeout=120)
    response.raise_for_status()
    achievements = [a["id"] for a in requests.get(f"{base}/view-all-achievement", timeout=30).json()["achievements"]]
    users, storefronts = [], []
    for user_id in range(1, SEED["users"] + 1):
        listed = requests.get(f"{base}/get-all-user-storefront-image?user_id={user_id}", timeout=30).json()
        users.append(user_id)
        storefronts += [(user_id, item["id"]) for item in listed["storefronts"]]
    return {"users": users, "achievements": achievements, "storefronts": storefronts}


def request_for(name: str, ids: dict[str, list], rng: random.Random) -> tuple[str, str, dict | None, set[int]]:
    """(method, path, JSON body, acceptable statuses) of one request of kind `name`."""
    user = rng.choice(ids["users"])
    achievement = rng.choice(ids["achievements"])
    if name == "recommendations":
        return "GET", f"/get-recommendations?user_id={user}", None, {200}
    if name == "achievement list":
        return "GET", f"/view-all-achievement?limit=20&offset={rng.randrange(10)}", None, {200}
    if name == "achievement PNG":
        return "GET", f"/get-achievement-image?achievement_id={achievement}", None, {200}
    if name == "storefront PNG":
        owner, storefront = rng.choice(ids["storefronts"])
        return "GET", f"/download-user-storefront-image?user_id={owner}&storefront_id={storefront}", None, {200}
    if name == "user storefronts":
        return "GET", f"/get-all-user-storefront-image?user_id={user}", None, {200}
    if name == "user achievements":
        return "GET", f"/view-all-achievement-user?user_id={user}", None, {200}
    if name == "award":
        return "POST", f"/add-achievement?user_id={user}&achievement_id={achievement}", None, {200, 201}
    if name == "assign":
        chosen = rng.sample(ids["achievements"], rng.randint(0, 4))
        return "POST", "/assign-achievements-to-user", {"user_id": user, "achievement_list": chosen}, {200}
    if name == "generate badge":
        return "POST", "/gen-achievement-image", {"date": f"{rng.randint(1, 28)} Oct", "product": "soju"}, {200}
    raise ValueError(name)


def client(base: str, ids: dict[str, list], results: Results, stop_at: float, budget: threading.Semaphore,
           seed_value: int) -> None:
    rng = random.Random(seed_value)
    names = [name for weight, name in MIX for _ in range(weight)]
    with requests.Session() as session:
        while time.monotonic() < stop_at and budget.acquire(blocking=False):
            name = rng.choice(names)
            method, path, body, ok = request_for(name, ids, rng)
            started = time.perf_counter()
            try:
                response = session.request(method, base + path, json=body, timeout=120)
                response.content  # noqa: B018 - read the whole body, PNGs included
                error = None if response.status_code in ok else f"{response.status_code} {response.text[:200]}"
            except requests.RequestException as exc:
                error = f"{type(exc).__name__}: {exc}"
            results.record(name, time.perf_counter() - started, error)


def counted_by_metrics(base: str) -> float:
    """Every request /metrics has counted so far, over all workers."""
    body = requests.get(f"{base}/metrics", timeout=30).text
    return sum(sample.value for family in text_string_to_metric_families(body) for sample in family.samples
               if sample.name == "http_requests_total")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000 if ordered else 0.0


def run(database: str, database_url: str, args) -> dict:
    with tempfile.TemporaryDirectory(prefix="futurepast-bench-") as tmp:
        folder = Path(tmp)
        if database == "sqlite":
            database_url = f"sqlite:///{folder / 'app.db'}"
        process, base, log_path = start_server(folder, database_url, args)
        try:
            ids = seed(base)
            before = counted_by_metrics(base)
            results = Results()
            budget = threading.Semaphore(args.max_requests)
            stop_at = time.monotonic() + args.seconds
            threads = [threading.Thread(target=client, args=(base, ids, results, stop_at, budget, n))
                       for n in range(args.clients)]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.perf_counter() - started
            counted = counted_by_metrics(base) - before - 1  # minus the /metrics call that read `before`
        finally:
            stop_server(process)
        if results.errors:
            print(f"--- {database}: sample errors, then the end of the server log", file=sys.stderr)
            print("\n".join(results.samples), file=sys.stderr)
            print("\n".join(log_path.read_text(errors="replace").splitlines()[-30:]), file=sys.stderr)
    return {"database": database, "results": results, "elapsed": elapsed, "metrics_counted": counted}


def postgres_schema_url(base_url: str) -> tuple[str, str] | None:
    """A new schema on `base_url` and a URL that uses it, or None when PostgreSQL does not answer."""
    if make_url(base_url).host not in ("127.0.0.1", "localhost", "::1", None):
        raise SystemExit("bench/load.py only talks to 127.0.0.1")
    schema = f"bench_{os.getpid()}_{secrets.token_hex(3)}"
    engine = create_engine(base_url, poolclass=NullPool, connect_args={"connect_timeout": 5})
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    except OperationalError:
        return None
    finally:
        engine.dispose()
    url = make_url(base_url).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False), schema


def drop_schema(base_url: str, schema: str) -> None:
    engine = create_engine(base_url, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        engine.dispose()


def print_report(runs: list[dict]) -> None:
    header = f"{'database':<11}{'route':<19}{'requests':>9}{'errors':>8}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}"
    print(header)
    print("-" * len(header))
    for run_ in runs:
        results, elapsed = run_["results"], run_["elapsed"]
        everything = [value for values in results.latencies.values() for value in values]
        for name, values in sorted(results.latencies.items()):
            print(f"{'':<11}{name:<19}{len(values):>9}{results.errors.get(name, 0):>8}{len(values) / elapsed:>9.1f}"
                  f"{percentile(values, 0.5):>9.1f}{percentile(values, 0.95):>9.1f}")
        print(f"{run_['database']:<11}{'all':<19}{len(everything):>9}{sum(results.errors.values()):>8}"
              f"{len(everything) / elapsed:>9.1f}{percentile(everything, 0.5):>9.1f}"
              f"{percentile(everything, 0.95):>9.1f}")
        agree = "agrees" if int(run_["metrics_counted"]) == len(everything) else "DISAGREES"
        print(f"{'':<11}/metrics counted {int(run_['metrics_counted'])} requests: {agree}")
        print()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10, help="how long the clients send, per database")
    parser.add_argument("--max-requests", type=int, default=50_000, help="at most this many requests per database")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients")
    parser.add_argument("--workers", type=int, help="gunicorn workers (default: gunicorn.conf.py's)")
    parser.add_argument("--connections", type=int, help="connections per worker (default: gunicorn.conf.py's)")
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--postgres-url", default=os.environ.get("TEST_DATABASE_URL") or DEFAULT_POSTGRES,
                        help="a PostgreSQL on 127.0.0.1; the bench works in a schema of its own, dropped after")
    args = parser.parse_args()
    if not (0 < args.seconds <= 600 and 0 < args.clients <= 512 and 0 < args.max_requests <= 1_000_000):
        parser.error("keep it bounded: --seconds 1-600, --clients 1-512, --max-requests up to 1000000")

    runs = []
    if args.database in ("sqlite", "both"):
        runs.append(run("sqlite", "", args))
    if args.database in ("postgresql", "both"):
        schema = postgres_schema_url(args.postgres_url)
        if schema is None:
            print(f"PostgreSQL at {make_url(args.postgres_url).render_as_string()} does not answer: skipped\n")
        else:
            url, name = schema
            try:
                runs.append(run("postgresql", url, args))
            finally:
                drop_schema(args.postgres_url, name)
    print_report(runs)
    print(json.dumps({r["database"]: {"requests": r["results"].count, "errors": sum(r["results"].errors.values())}
                      for r in runs}))
    failed = any(r["results"].errors or int(r["metrics_counted"]) != r["results"].count for r in runs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
