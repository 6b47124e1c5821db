"""What one shared rate-limit hit costs: the database storage (SQLite, PostgreSQL) against Redis and memory.

    .venv/bin/python bench/shared_counts.py [--postgres URL] [--redis URL] [--hits 2000] [--threads 8]

Each hit is what flask-limiter does per generating request: one `incr` on the client's window. Prints hits per
second and the median and 99th percentile latency, alone and from several threads at once. SQLite runs in a
temporary file; PostgreSQL in a schema made for the run and dropped after; Redis keys are deleted after.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from limits.storage import storage_from_string  # noqa: E402
from sqlalchemy import create_engine, make_url  # noqa: E402
from sqlalchemy.pool import NullPool  # noqa: E402

from core import schema as migrations  # noqa: E402
from core import shared_counters  # noqa: E402
from core.db import make_engine  # noqa: E402


def measure(storage, hits: int, threads: int) -> tuple[float, float, float]:
    """Hits per second, median and p99 latency in ms, for `hits` increments spread over `threads`."""
    key = f"bench/{uuid.uuid4().hex}"
    latencies: list[float] = []

    def hit(_):
        started = time.perf_counter()
        storage.incr(key, 60)
        latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(hit, range(hits)))
    elapsed = time.perf_counter() - started
    assert storage.get(key) == hits, "lost increments"
    storage.clear(key)
    latencies.sort()
    return hits / elapsed, statistics.median(latencies) * 1000, latencies[int(len(latencies) * 0.99)] * 1000


def database_storage(url: str):
    engine = make_engine(url)
    return storage_from_string(f"{shared_counters.DATABASE_SCHEME}://", engine=engine), engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", help="a PostgreSQL URL (postgresql+psycopg://...) to bench on")
    parser.add_argument("--redis", help="a Redis URL to bench on")
    parser.add_argument("--hits", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        sqlite_url = f"sqlite:///{folder}/bench.db"
        migrations.upgrade(sqlite_url)
        stores = [("memory", storage_from_string("memory://"), None)]
        storage, engine = database_storage(sqlite_url)
        stores.append(("sqlite", storage, engine))
        schema = None
        if args.postgres:
            schema = f"bench_{uuid.uuid4().hex[:8]}"
            admin = create_engine(args.postgres, poolclass=NullPool)
            with admin.begin() as connection:
                connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
            url = make_url(args.postgres).update_query_dict({"options": f"-csearch_path={schema}"})
            url = url.render_as_string(hide_password=False)
            migrations.upgrade(url)
            storage, engine = database_storage(url)
            stores.append(("postgresql", storage, engine))
        if args.redis:
            stores.append(("redis", storage_from_string(args.redis), None))
        try:
            for name, storage, _engine in stores:
                for threads in (1, args.threads):
                    rate, median, p99 = measure(storage, args.hits, threads)
                    rows.append((name, threads, rate, median, p99))
        finally:
            for _name, _storage, engine in stores:
                if engine is not None:
                    engine.dispose()
            if schema:
                with admin.begin() as connection:
                    connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
                admin.dispose()

    print(f"{'store':<11} {'threads':>7} {'hits/s':>9} {'median ms':>10} {'p99 ms':>8}")
    for name, threads, rate, median, p99 in rows:
        print(f"{name:<11} {threads:>7} {rate:>9.0f} {median:>10.2f} {p99:>8.2f}")


if __name__ == "__main__":
    main()
