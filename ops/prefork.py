"""What the gunicorn master does with the preloaded app before it forks the workers, so that they share more of it.

A worker shares the master's pages until it writes to one; CPython writes to every object it uses (reference counts,
and the first calls of a function rewrite its bytecode). What a worker's first request would build or rewrite once
(the mappers' configuration, the URL matcher) is built here, once, in pages every worker then shares.

And the master gives back the library code only its start-up ran: importing the app runs code of compiled libraries
(pydantic's schema building, cryptography's key loading) that no request runs again. Those pages stayed mapped in the
master alone, 10-20 MB of its PSS (README, Benchmarks).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

from flask import Flask
from sqlalchemy.orm import configure_mappers

log = logging.getLogger(__name__)

MADV_PAGEOUT = 21  # Linux 5.4+: reclaim these pages now, as memory pressure would; never discards data


def build_lazy_parts(app: Flask) -> None:
    """Build what the first request of each worker would otherwise build in its own copy of the pages."""
    configure_mappers()  # SQLAlchemy configures every mapper at the first query, writing into all of them
    app.url_map.bind("localhost").match("/healthz")  # Werkzeug compiles its matcher at the first match


def release_startup_code() -> int:
    """Ask the kernel to reclaim this process's read-only file mappings (the code and constants of the interpreter
    and of compiled libraries); the bytes of those it had reclaimed, or 0 where the kernel cannot say.

    Only clean file pages mapped by this process alone are reclaimed: a page another process maps stays, and one
    needed again (by this process or a worker forked later) is read back from the file. Writable mappings are left
    alone, anonymous memory too (without swap it cannot go anywhere, and with swap the app's heap would be written
    out just before the workers need it).
    """
    try:
        with open("/proc/self/maps") as maps:
            lines = maps.readlines()
    except OSError:  # not Linux
        return 0
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    before = file_pss()
    for line in lines:
        fields = line.split()
        if len(fields) < 6 or not fields[5].startswith("/") or "w" in fields[1]:
            continue
        start, end = (int(bound, 16) for bound in fields[0].split("-"))
        if libc.madvise(start, end - start, MADV_PAGEOUT) != 0:  # an older kernel; a locked mapping
            log.debug("madvise(MADV_PAGEOUT) refused %s (errno %d)", fields[5], ctypes.get_errno())
    return max(0, before - file_pss())


def file_pss() -> int:
    """Bytes of this process's PSS in file-backed mappings (Linux 5.8+; 0 where /proc does not say)."""
    try:
        with open("/proc/self/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss_File:"):
                    return 1024 * int(line.split()[1])
    except OSError:
        pass
    return 0
