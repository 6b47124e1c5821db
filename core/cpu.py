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

    return get_hub().threadpool.apply(contextvars.copy_context().run, (func, *args))
