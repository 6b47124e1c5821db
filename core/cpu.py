"""CPU-bound work (Pillow's decoding and encoding, the local renderer) off the event loop.

Under gevent (gunicorn's workers, Celery's gevent pool) every connection of a process shares one thread: a picture
encoded there for 100 ms would stall every other request of the process for as long. `cpu_bound` runs such work on
gevent's pool of native threads instead (Pillow releases the GIL while it works), and the calling greenlet waits for
it as for any I/O. Without gevent's patching (tests, Werkzeug's development server) it simply calls the function.
Never call it while holding a SQLite write lock: another greenlet waiting on that lock would block the loop.
"""

from __future__ import annotations

import contextvars
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def patched() -> bool:
    """Whether gevent has patched this process's standard library (imported only when something imported gevent)."""
    if "gevent" not in sys.modules:
        return False
    from gevent import monkey

    return monkey.is_module_patched("threading")


def cpu_bound(func: Callable[..., T], *args) -> T:
    """`func(*args)`, on a native thread when gevent is patched, with the caller's context (its job id in logs)."""
    if not patched():
        return func(*args)
    from gevent import get_hub

    result = get_hub().threadpool.apply(contextvars.copy_context().run, (func, *args))
    take_turn()  # the caller goes on with more Python: behind whatever else became ready meanwhile
    return result


TURN_AT_LEAST_EVERY_S = 0.05


def take_turn() -> None:
    """Wait until this process's event loop has nothing else to do, then go on: one waiting greenlet per idle pass.

    Generation comes in bursts: a hundred requests arrive together, and their pictures come back together. Each then
    runs tens of milliseconds of Python before it next waits, and under gevent a read that arrives behind them waited
    for all of them (half a second for a burst of 100). Called where a generation is about to run such a stretch,
    this puts the stretch behind everything else that is ready: a read waits for one stretch at most, and the burst
    as a whole takes the same CPU. Without gevent's patching, threads share the CPU by themselves: it returns at once.
    Never call it holding a pooled database connection: a burst waiting for turns would hold them all.
    """
    if not patched():
        return
    from gevent import get_hub

    hub = get_hub()
    turns = getattr(hub, "cpu_turns", None)
    if turns is None:
        turns = hub.cpu_turns = _Turns(hub)
    turns.wait()


class _Turns:
    """The greenlets of one hub waiting for a turn, let go one at a time by an idle watcher: libev runs idle watchers
    only when no other event (I/O, timer, gevent callback) is pending, so whatever else is ready runs first. A loop
    that never rests (a flood of PNG GETs) still lets one go every TURN_AT_LEAST_EVERY_S: slower, never starved."""

    def __init__(self, hub) -> None:
        self.hub = hub
        self.waiting = deque()
        self.idle = hub.loop.idle()
        self.timer = hub.loop.timer(TURN_AT_LEAST_EVERY_S, TURN_AT_LEAST_EVERY_S)
        self.last_turn_at = 0.0

    def wait(self) -> None:
        from gevent.hub import Waiter

        waiter = Waiter(self.hub)
        self.waiting.append(waiter)
        if not self.idle.active:
            self.idle.start(self._let_one_go)
            self.timer.start(self._unless_one_went_lately)
        try:
            waiter.get()
        finally:  # let go, or interrupted (a timeout, a kill): no longer waiting either way
            if waiter in self.waiting:
                self.waiting.remove(waiter)

    def _unless_one_went_lately(self) -> None:
        if time.monotonic() - self.last_turn_at >= TURN_AT_LEAST_EVERY_S:
            self._let_one_go()

    def _let_one_go(self) -> None:
        """In the hub, when the loop is idle: switch to the longest-waiting greenlet; it runs until it next waits."""
        self.last_turn_at = time.monotonic()
        if self.waiting:
            self.waiting.popleft().switch(None)
        if not self.waiting:
            self.idle.stop()
            self.timer.stop()
