"""Jobs benchmark: 50 async generations at 1 s vendor latency, in-process runner and Celery side by side.

    .venv/bin/python bench/jobs.py [--jobs 50] [--latency 1.0] [--broker redis://127.0.0.1:6379/14]

For each runner: start the vendor stub and the service (`python main.py`, gunicorn, 2 workers x JOB_WORKERS=4), plus,
for Celery, 2 worker processes of 4 pool processes each (the same 8 slots); submit every job with
`Prefer: respond-async` at once, follow them to their end, and print jobs per second and the p50/p95 time from
submission to done (the jobs' own `created_at`/`finished_at`). Checks that every job succeeded and that no job
saved twice. Everything talks to 127.0.0.1 only; DATABASE_URL (default: an SQLite file) is used as given.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import vendor_stub  # noqa: E402
from bench.run import wait_until  # noqa: E402
from tests.serving import free_port, stop  # noqa: E402

SLOTS_PER_PROCESS = 4
PROCESSES = 2
DEADLINE_S = 300


def start(command: list[str], env: dict[str, str], workdir: Path, name: str) -> subprocess.Popen:
    log = open(workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


@contextmanager
def service(workdir: Path, stub_url: str, broker: str | None):
    """The service, and with a broker its Celery workers; yields the base URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEST_", "PROMETHEUS_"))}
    env.update({
        "PYTHONPATH": str(ROOT), "HOST": "127.0.0.1", "PORT": str(port), "WEB_CONCURRENCY": str(PROCESSES),
        "DATABASE_URL": os.environ.get("DATABASE_URL") or f"sqlite:///{workdir / 'app.db'}",
        "IMAGE_DIR": str(workdir / "images"), "JOB_WORKERS": str(SLOTS_PER_PROCESS),
        "IMAGE_PROVIDER": "clipdrop", "CLIPDROP_API_KEY": "bench", "CLIPDROP_API_URL": stub_url,
        "CELERY_BROKER_URL": broker or "",
    })
    processes = [start([sys.executable, str(ROOT / "main.py")], env, workdir, "service")]
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: requests.get(f"{base}/healthz", timeout=2).ok, 60, "the service")
        if broker:
            for number in range(PROCESSES):
                processes.append(start(
                    [sys.executable, "-m", "celery", "-A", "worker", "worker", "--concurrency", str(SLOTS_PER_PROCESS),
                     "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--hostname",
                     f"bench{number}-{os.getpid()}@%h"], env, workdir, f"worker{number}"))
            wait_until(lambda: all("ready." in (workdir / f"worker{n}.log").read_text(errors="replace")
                                   for n in range(PROCESSES)), 60, "the Celery workers")
        yield base
    finally:
        for process in processes:
            stop(process)


def run(base: str, count: int) -> dict:
    """Submit `count` jobs at once and follow them to their end."""
    users = requests.post(f"{base}/seed-specific", timeout=30).json()["users"]
    themes = ("tech", "food", "fashion")
    urls = [f"{base}/gen-new-storefront-images?user_id={users[i % 3]['id']}&shop_theme={themes[i // 3 % 3]}"
            for i in range(count)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(lambda url: requests.post(url, headers={"Prefer": "respond-async"}, timeout=30),
                                urls))
    assert all(answer.status_code == 202 for answer in answers), [a.status_code for a in answers]
    ids = [answer.json()["id"] for answer in answers]
    pending, jobs = set(ids), {}
    deadline = time.monotonic() + DEADLINE_S
    while pending and time.monotonic() < deadline:
        for job_id in list(pending):
            job = requests.get(f"{base}/jobs/{job_id}", timeout=30).json()
            if job["status"] in {"succeeded", "failed", "canceled"}:
                jobs[job_id] = job
                pending.discard(job_id)
        time.sleep(0.2)
    if pending:
        raise SystemExit(f"{len(pending)} jobs did not end within {DEADLINE_S} s")
    created = {i: datetime.fromisoformat(j["created_at"]) for i, j in jobs.items()}
    finished = {i: datetime.fromisoformat(j["finished_at"]) for i, j in jobs.items()}
    to_done = sorted((finished[i] - created[i]).total_seconds() for i in jobs)
    span = (max(finished.values()) - min(created.values())).total_seconds()
    storefront_ids = [s["id"] for j in jobs.values() if j["result"] for s in j["result"]["storefronts"]]
    return {
        "succeeded": sum(j["status"] == "succeeded" for j in jobs.values()),
        "storefronts": len(storefront_ids), "distinct": len(set(storefront_ids)),
        "jobs_per_s": count / span, "p50_s": statistics.median(to_done),
        "p95_s": to_done[max(0, int(round(0.95 * len(to_done))) - 1)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/14")
    args = parser.parse_args()
    stub = vendor_stub.start(latency_s=args.latency)
    rows = []
    try:
        for name, broker in (("in-process", None), ("celery", args.broker)):
            with tempfile.TemporaryDirectory(prefix=f"bench-jobs-{name}-") as folder, \
                    service(Path(folder), stub.url, broker) as base:
                stub.calls.clear()
                result = run(base, args.jobs)
                result["vendor_calls"] = stub.calls["clipdrop"]
                rows.append((name, result))
    finally:
        stub.shutdown()
    print(f"{args.jobs} async storefront jobs, vendor latency {args.latency:.1f} s, "
          f"{PROCESSES} processes x {SLOTS_PER_PROCESS} slots")
    print(f"{'runner':<11} {'ok':>4} {'saved':>6} {'calls':>6} {'jobs/s':>7} {'p50 s':>6} {'p95 s':>6}")
    for name, r in rows:
        print(f"{name:<11} {r['succeeded']:>4} {r['distinct']:>6} {r['vendor_calls']:>6} {r['jobs_per_s']:>7.2f} "
              f"{r['p50_s']:>6.2f} {r['p95_s']:>6.2f}")
    for name, r in rows:
        if r["succeeded"] != args.jobs or r["distinct"] != args.jobs or r["storefronts"] != args.jobs:
            raise SystemExit(f"{name}: not every job succeeded exactly once: {r}")


if __name__ == "__main__":
    main()
