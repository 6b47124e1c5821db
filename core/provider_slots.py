"""Caps on the calls in flight to each vendor (`<PROVIDER>_MAX_IN_FLIGHT`), counted across every process and machine
where the shared counters are kept (the database, or Redis: core/shared_counters.py).

A call takes one of the vendor's N slots, a row (or key) leased for PROVIDER_LEASE_S and renewed while the call
runs, and gives it back at its end; the slots of a process that was killed expire with their lease. Over the cap a
call waits for a slot, never refused: in each process one waiter per vendor asks the shared store (at most every
WAIT_MAX_S), the others queue behind it in the process, and a slot given back in the process wakes it at once.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from core.settings import Settings
from core.shared_counters import SharedState

log = logging.getLogger(__name__)

WAIT_FIRST_S, WAIT_MAX_S = 0.05, 1.0


def caps_of(settings: Settings) -> dict[str, int]:
    """The vendors with a cap, and their caps."""
    caps = {"clipdrop": settings.clipdrop_max_in_flight, "stability": settings.stability_max_in_flight,
            "openai": settings.openai_max_in_flight}
    return {name: cap for name, cap in caps.items() if cap}


class ProviderSlots:
    """The slots of the capped vendors, and the gauges of the calls in flight and waiting (by provider)."""

    def __init__(self, state: SharedState | None, caps: dict[str, int], lease_s: float,
                 in_flight=None, waiting=None) -> None:
        self.state, self.caps, self.lease_s = state, caps if state is not None else {}, lease_s
        self.in_flight, self.waiting = in_flight, waiting
        self.queues = {name: threading.Lock() for name in self.caps}  # one waiter per vendor asks the store
        self.freed = threading.Condition()
        self.held: dict[str, int] = {}  # slot name: token, renewed by this process's renewer
        self.renewer: threading.Thread | None = None
        self.pid = os.getpid()

    @contextmanager
    def hold(self, provider: str) -> Iterator[None]:
        """Around one call to `provider`: wait for a slot when it is capped, and count the call in flight."""
        slot = self.take(provider) if provider in self.caps else None
        if self.in_flight is not None:
            self.in_flight.labels(provider).inc()
        try:
            yield
        finally:
            if self.in_flight is not None:
                self.in_flight.labels(provider).dec()
            if slot is not None:
                self.give_back(*slot)

    def take(self, provider: str) -> tuple[str, int] | None:
        """Wait for a slot of `provider`; None when the shared store cannot be asked (the call goes uncounted)."""
        token = random.randint(1, 2**31 - 1)
        if self.waiting is not None:
            self.waiting.labels(provider).inc()
        try:
            with self.queues[provider]:
                wait = WAIT_FIRST_S
                while True:
                    try:
                        name = self.state.take_slot(f"slot:{provider}:", self.caps[provider], token, self.lease_s)
                    except Exception:  # never fail a call for its cap: the store is down, the call goes ahead
                        log.exception("could not take a slot of %s from the shared store; calling uncounted",
                                      provider)
                        return None
                    if name is not None:
                        break
                    with self.freed:
                        self.freed.wait(wait * random.uniform(0.5, 1.0))
                    wait = min(wait * 2, WAIT_MAX_S)
        finally:
            if self.waiting is not None:
                self.waiting.labels(provider).dec()
        with self.freed:
            self.held[name] = token
        self.start_renewer()
        return name, token

    def give_back(self, name: str, token: int) -> None:
        with self.freed:
            self.held.pop(name, None)
        try:
            self.state.free_slot(name, token)
        except Exception:  # its lease ends it
            log.exception("could not give back %s; it frees itself within %.0f s", name, self.lease_s)
        with self.freed:
            self.freed.notify_all()

    def start_renewer(self) -> None:
        """Start this process's renewer, once (a forked process starts its own)."""
        with self.freed:
            if self.renewer is not None and self.renewer.is_alive() and self.pid == os.getpid():
                return
            self.pid = os.getpid()
            self.renewer = threading.Thread(target=self.renew_forever, daemon=True, name="provider-slots")
            self.renewer.start()

    def renew_forever(self) -> None:
        """Renew the leases of the slots this process holds, three times per lease."""
        while True:  # as long as its process
            time.sleep(self.lease_s / 3)
            with self.freed:
                held = dict(self.held)
            if not held:
                continue
            try:
                self.state.renew_slots(held, self.lease_s)
            except Exception:
                log.warning("could not renew the leases of %d provider slots", len(held), exc_info=True)
