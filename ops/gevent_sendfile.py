"""A real sendfile for gevent's sockets.

gunicorn sends a file response with `socket.sendfile()`. The standard library's waits for a blocking socket, so
gevent replaces it with a loop that reads the file into Python 8 KiB at a time and sends each block: 128 reads, 128
sends and as many trips through the event loop for a 1 MB badge. This one hands the file to the kernel with
`os.sendfile()` (no byte passes through Python) and, when the socket's buffer is full, waits for it to drain as a
greenlet, like any other gevent send (the socket's timeout applies).
"""

from __future__ import annotations

import io
import os


def sendfile(sock, file, offset: int = 0, count: int | None = None) -> int:
    """Send `count` bytes (or up to the end) of `file` from `offset`; the bytes sent. The file's position ends after
    them, as with `socket.sendfile()`."""
    try:
        file_fd = file.fileno()
        size = os.fstat(file_fd).st_size
    except (AttributeError, io.UnsupportedOperation, OSError):  # not a file on disk: gevent's own loop
        return sock._sendfile_use_send(file, offset, count)
    sock._check_sendfile_params(file, offset, count)
    remaining = size - offset if count is None else min(count, size - offset)
    sent_total = 0
    try:
        while remaining > 0:
            try:
                sent = os.sendfile(sock.fileno(), file_fd, offset + sent_total, remaining)
            except BlockingIOError:
                sock._wait(sock._write_event)
                continue
            if sent == 0:  # the file ended sooner than its size said (truncated meanwhile)
                break
            sent_total += sent
            remaining -= sent
        return sent_total
    finally:
        if sent_total:
            file.seek(offset + sent_total)


def install() -> None:
    """Use `sendfile` for every gevent socket of this process."""
    from gevent import socket

    socket.socket.sendfile = sendfile
