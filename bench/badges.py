"""Badge benchmarks: latency of the credential, baked PNG, verify, status list and share routes, and a full list.

    .venv/bin/python bench/badges.py [--requests 200] [--full-list]

Starts the service as production runs it (`python main.py`: gunicorn) on a temporary SQLite database, awards a
badge through the API, then times each route sequentially and prints p50/p95 in milliseconds. With `--full-list`,
it also fills one status list (131,072 credentials, 1% revoked at random) and times building and reading it.
Everything talks to 127.0.0.1 only, and everything it starts is stopped.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import requests
from sqlalchemy import insert

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from badges import status  # noqa: E402
from core.db import make_engine  # noqa: E402
from models import BadgeCredential, User  # noqa: E402
from serving import running, server_env  # noqa: E402


def timed(call, count: int) -> tuple[float, float]:
    """p50 and p95 of `count` calls, in milliseconds."""
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


def routes(count: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-badges-") as folder:
        folder = Path(folder)
        env = server_env(folder, f"sqlite:///{folder / 'app.db'}", WEB_CONCURRENCY="1")
        with running(env, folder) as server:
            for path, body in [("/seed-specific", None), ("/seedrandom", {"users": 0, "achievements": 1,
                                                                           "storefronts": 4}),
                               ("/add-achievement", {"user_id": 1, "achievement_id": 1})]:
                requests.post(server.url(path), json=body, timeout=60).raise_for_status()
            http = requests.Session()
            base = "/users/1/achievements/1"
            png = http.get(server.url(f"{base}/badge.png")).content
            token = http.get(server.url(f"{base}/credential?format=jwt")).text
            ldp = http.get(server.url(f"{base}/credential?format=ldp")).json()

            def get(path):
                return lambda: http.get(server.url(path)).raise_for_status()

            cases = {
                "GET credential (JSON)": get(f"{base}/credential"),
                "GET credential (VC-JWT)": get(f"{base}/credential?format=jwt"),
                "GET credential (embedded proof)": get(f"{base}/credential?format=ldp"),
                "GET badge.png (baked)": get(f"{base}/badge.png"),
                "GET /get-achievement-image (plain, reference)": get("/get-achievement-image?achievement_id=1"),
                "POST /verify (PNG)": lambda: http.post(server.url("/verify"), data=png,
                                                        headers={"Content-Type": "image/png"}).raise_for_status(),
                "POST /verify (JWT)": lambda: http.post(server.url("/verify"),
                                                        json={"credential": token}).raise_for_status(),
                "POST /verify (embedded proof)": lambda: http.post(server.url("/verify"), json=ldp).raise_for_status(),
                "GET /status/1": get("/status/1"),
                "GET /share/1/1": get("/share/1/1"),
                "GET /gallery": get("/gallery"),
            }
            print(f"{'route':48} {'p50 ms':>8} {'p95 ms':>8}   ({count} sequential requests, 1 worker)")
            for name, call in cases.items():
                call()  # warm up
                p50, p95 = timed(call, count)
                print(f"{name:48} {p50:8.2f} {p95:8.2f}")


def full_list() -> None:
    """Build and read a status list whose 131,072 entries are all issued, 1% of them revoked."""
    with tempfile.TemporaryDirectory(prefix="bench-badges-") as folder:
        from core import schema

        url = f"sqlite:///{folder}/app.db"
        schema.upgrade(url)
        engine = make_engine(url)
        now, rng = datetime.now(UTC), random.Random(12)
        with engine.begin() as connection:
            connection.execute(insert(User), [{"name": "bench", "recommendations": {}, "created_at": now}])
            connection.exec_driver_sql("INSERT INTO achievements (name, description, occasion, product_type, "
                                       "created_at) VALUES ('a', 'b', 'c', 'd', CURRENT_TIMESTAMP)")
            connection.execute(insert(BadgeCredential), [
                {"serial": serial, "id": f"{serial:036d}", "user_id": 1, "achievement_id": 1, "salt": "s",
                 "issued_at": now, "revoked_at": now if rng.random() < 0.01 else None}
                for serial in range(1, status.LIST_SIZE)])
        from sqlalchemy.orm import Session

        with Session(engine) as session:
            p50, p95 = timed(lambda: status.encode_list(status.status_bits(session, 1)), 20)
            encoded = status.encode_list(status.status_bits(session, 1))
            one = timed(lambda: status.status_bit(session, 4242), 200)
        decoded = timed(lambda: status.decode_list(encoded), 20)
        engine.dispose()
        print(f"{'full status list: build + gzip + base64url':48} {p50:8.2f} {p95:8.2f}   "
              f"(encodedList {len(encoded):,} characters)")
        print(f"{'full status list: decode':48} {decoded[0]:8.2f} {decoded[1]:8.2f}")
        print(f"{'full status list: one bit, as /verify reads it':48} {one[0]:8.2f} {one[1]:8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--full-list", action="store_true")
    args = parser.parse_args()
    routes(args.requests)
    if args.full_list:
        full_list()


if __name__ == "__main__":
    main()
