"""Operations plumbing: a request id and a log line per request, and Prometheus metrics that add up across workers."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from urllib.parse import quote

from flask import Flask, Response, g, request

from core.errors import ContentRejected, ProviderBusy

log = logging.getLogger("futurepast.requests")

REQUEST_ID_HEADER = "X-Request-ID"
# A client's request id is kept when it is this safe to echo and to log; otherwise the service makes one.
CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
PROVIDER_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)


@dataclass(frozen=True)
class CallContext:
    """Whom provider calls are made for: the route and request that asked, and the job that runs them."""

    route: str | None = None
    request_id: str | None = None
    job_id: str | None = None


# Set for each request, and by whatever runs a job (another thread or process) from the job's row: every provider
# call's log line and ledger row read it. A new thread starts with the default: copy the context into it.
call_context: ContextVar[CallContext | None] = ContextVar("call_context", default=None)


def current_call() -> CallContext:
    """The context of the provider calls made now; empty outside any request or job."""
    return call_context.get() or CallContext()


class Metrics:
    """The service's metrics: in this process, or under gunicorn in files that every worker writes."""

    def __init__(self) -> None:
        # prometheus_client picks in-process or multiprocess storage when first imported, from
        # PROMETHEUS_MULTIPROC_DIR: importing it here, in the worker, lets gunicorn.conf.py set that first.
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # empty means unset, as for every setting
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        import prometheus_client as prom
        from prometheus_client import values

        self.prom = prom
        self.multiprocess = values.ValueClass is not values.MutexValue
        self.registry = prom.CollectorRegistry()
        self.requests = prom.Counter(
            "http_requests", "Requests answered, by route and status.", ["method", "route", "status"],
            registry=self.registry)
        self.request_seconds = prom.Histogram(
            "http_request_duration_seconds", "Time to answer a request, by route.", ["method", "route"],
            registry=self.registry)
        self._request_series: dict[tuple[str, str, int], tuple] = {}
        self.generations = prom.Counter(
            "generations", "Calls to generation providers, by kind, provider and outcome.",
            ["kind", "provider", "outcome"], registry=self.registry)
        self.provider_in_flight = prom.Gauge(
            "provider_calls_in_flight", "Calls to a generation provider under way now.", ["provider"],
            multiprocess_mode="livesum", registry=self.registry)
        self.provider_waiting = prom.Gauge(
            "provider_calls_waiting", "Calls waiting for a slot of a provider (<PROVIDER>_MAX_IN_FLIGHT).",
            ["provider"], multiprocess_mode="livesum", registry=self.registry)
        self.provider_seconds = prom.Histogram(
            "provider_latency_seconds", "Time a generation provider took, retries included.", ["kind", "provider"],
            buckets=PROVIDER_BUCKETS, registry=self.registry)
        # Labelled, so the metric only appears once a provider has told us: never a made-up 0.
        self.credits = prom.Gauge(
            "provider_credits_remaining", "Credits left at a provider, as its last answer said.", ["provider"],
            multiprocess_mode="mostrecent", registry=self.registry)
        self.provider_cost = prom.Counter(
            "provider_cost_usd", "Cost of provider calls in USD, from the price table.", ["provider"],
            registry=self.registry)
        self.budget_remaining = prom.Gauge(
            "budget_remaining_usd", "What is left of today's generation budget (UTC), in USD.",
            multiprocess_mode="mostrecent", registry=self.registry)
        # Counted by gunicorn's workers (gunicorn.conf.py): idle keep-alive connections and slow clients included.
        self.open_connections = prom.Gauge(
            "http_open_connections", "Client connections open now to the service's workers.",
            multiprocess_mode="livesum", registry=self.registry)
        # Called before each scrape: figures kept in shared storage (credits, budget) are set from it then.
        self.refreshers: list[Callable[[], None]] = []

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        key = (request.method, route, status)
        counted = self._request_series.get(key)
        if counted is None:  # labels() checks and locks on each call: on every request, a twentieth of a PNG GET
            counted = self._request_series[key] = (self.requests.labels(key[0], route, str(status)),
                                                   self.request_seconds.labels(key[0], route))
        counted[0].inc()
        counted[1].observe(seconds)

    @contextmanager
    def watch_provider(self, kind: str, provider: str) -> Iterator[None]:
        """Count one provider call by its outcome and time it."""
        started = time.perf_counter()
        outcome = "error"
        try:
            yield
            outcome = "ok"
        except ContentRejected:
            outcome = "rejected"
            raise
        except ProviderBusy:
            outcome = "busy"
            raise
        finally:
            self.generations.labels(kind, provider, outcome).inc()
            self.provider_seconds.labels(kind, provider).observe(time.perf_counter() - started)

    def exposition(self) -> Response:
        """Every metric in Prometheus' text format; under gunicorn, added up over all workers."""
        for refresh in self.refreshers:
            try:
                refresh()
            except Exception:  # a scrape still answers with what it has
                log.exception("could not refresh a metric before the scrape")
        registry = self.registry
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = self.prom.CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        return Response(self.prom.generate_latest(registry), mimetype=self.prom.CONTENT_TYPE_LATEST)


def init_app(app: Flask) -> Metrics:
    """Give every request an id, a log line and its metrics; register this first so nothing escapes it."""
    metrics = Metrics()
    app.extensions["metrics"] = metrics

    @app.before_request
    def start_request() -> None:
        g.request_started = time.perf_counter()
        g.request_id = request_id()
        call_context.set(CallContext(route=request.url_rule.rule if request.url_rule else None,
                                     request_id=g.request_id))

    @app.after_request
    def finish_request(response: Response) -> Response:
        seconds = time.perf_counter() - g.get("request_started", time.perf_counter())
        rid = g.get("request_id") or request_id()
        response.headers[REQUEST_ID_HEADER] = rid
        route = request.url_rule.rule if request.url_rule else "unmatched"
        metrics.observe_request(route, response.status_code, seconds)
        # The path only: a query string is the client's data, and the log never needs it.
        job = f" job_id={g.job_id}" if g.get("job_id") else ""  # set by a generating route (the jobs package)
        log.info("method=%s path=%s status=%d duration_ms=%.1f request_id=%s%s",
                 request.method, quote(request.path, safe="/-._~"), response.status_code, seconds * 1000, rid, job)
        return response

    return metrics


def request_id() -> str:
    """The client's `X-Request-ID` when it is safe to echo, else a new one."""
    given = request.environ.get("HTTP_X_REQUEST_ID", "")
    return given if CLIENT_REQUEST_ID.fullmatch(given) else os.urandom(16).hex()
