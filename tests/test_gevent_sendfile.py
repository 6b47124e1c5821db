"""ops/gevent_sendfile.py: the kernel's sendfile on gevent's non-blocking sockets, waiting as a greenlet when full."""

from __future__ import annotations

import io
import os

import gevent
import pytest
from gevent import socket

from ops.gevent_sendfile import sendfile


@pytest.fixture
def connection():
    """A connected pair of gevent TCP sockets on 127.0.0.1, the sender's buffer kept small so that it fills."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    sender = socket.create_connection(listener.getsockname())
    receiver, _ = listener.accept()
    listener.close()
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
    yield sender, receiver
    sender.close()
    receiver.close()


def slow_read(sock, size: int) -> bytes:
    """Read `size` bytes in small pieces, yielding between them: the sender meets a full buffer many times."""
    received = bytearray()
    while len(received) < size:
        chunk = sock.recv(64 * 1024)
        if not chunk:
            break
        received += chunk
        gevent.sleep(0.001)
    return bytes(received)


@pytest.mark.parametrize(("offset", "count"), [(0, None), (1000, None), (12345, 2_000_000)])
def test_a_file_larger_than_the_socket_buffer_arrives_whole(connection, tmp_path, offset, count):
    sender, receiver = connection
    data = os.urandom(4 * 1024 * 1024)
    path = tmp_path / "big.png"
    path.write_bytes(data)
    expected = data[offset:offset + count if count else None]
    with path.open("rb") as file:
        sending = gevent.spawn(sendfile, sender, file, offset, count)
        received = slow_read(receiver, len(expected))
        assert sending.get(timeout=30) == len(expected)
        assert file.tell() == offset + len(expected)  # as socket.sendfile leaves it
    assert received == expected


def test_it_waits_as_a_greenlet_so_others_run_meanwhile(connection, tmp_path):
    sender, receiver = connection
    path = tmp_path / "big.png"
    path.write_bytes(b"\x89PNG" * 1024 * 1024)
    ticks = []
    ticker = gevent.spawn(lambda: [ticks.append(gevent.sleep(0.005)) for _ in range(20)])
    with path.open("rb") as file:
        sending = gevent.spawn(sendfile, sender, file)
        gevent.sleep(0.2)  # nobody reads: the sender is blocked on a full buffer all this time
        assert not sending.ready()
        assert len(ticks) == 20  # ... and the other greenlet ran to its end meanwhile
        assert len(slow_read(receiver, 4 * 1024 * 1024)) == 4 * 1024 * 1024
        assert sending.get(timeout=30) == 4 * 1024 * 1024
    ticker.kill()


def test_the_socket_timeout_applies(connection, tmp_path):
    sender, _receiver = connection
    sender.settimeout(0.2)
    path = tmp_path / "big.png"
    path.write_bytes(bytes(8 * 1024 * 1024))
    with path.open("rb") as file, pytest.raises(TimeoutError):
        sendfile(sender, file)  # nobody reads


def test_an_object_that_is_not_a_file_on_disk_is_sent_by_gevents_own_loop(connection):
    sender, receiver = connection
    data = b"not on disk" * 1000
    assert sendfile(sender, io.BytesIO(data)) == len(data)
    assert slow_read(receiver, len(data)) == data
