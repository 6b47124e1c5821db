"""Helpers for tests: image bytes as providers send them, reading back what we stored, and hostile PNGs."""

from __future__ import annotations

import functools
import io
import struct
import zlib
from email.parser import BytesParser

from PIL import Image

from core.png import png_chunks

CLIPDROP_KEY = "cd-test-key-0123456789"
STABILITY_KEY = "fake-stability-key-0123456789"
OPENAI_KEY = "fake-openai-key-0123456789"
CLIPDROP_URL = "https://clipdrop-api.co/text-to-image/v1"
STABILITY_CORE_URL = "https://api.stability.ai/v2beta/stable-image/generate/core"


def image_bytes(size=(1024, 1024), fmt="PNG", colour=(200, 120, 40)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, fmt)
    return out.getvalue()


def png_text(data: bytes) -> dict[str, str]:
    """The text chunks of a PNG, after checking that it decodes."""
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        image.load()
        return dict(image.text)


def without_text_chunks(png: bytes) -> bytes:
    """The PNG's bytes with its iTXt chunks taken out, as they were before we added our provenance."""
    out, offset = [png[:8]], 8
    for kind, data, _crc in png_chunks(png):
        end = offset + 12 + len(data)
        if kind != b"iTXt":
            out.append(png[offset:end])
        offset = end
    return b"".join(out)


def form_fields(request) -> dict[str, str]:
    """The text fields of a multipart/form-data request that `requests` sent."""
    body = request.body if isinstance(request.body, bytes) else request.body.encode()
    head = f"Content-Type: {request.headers['Content-Type']}\r\n\r\n".encode()
    message = BytesParser().parsebytes(head + body)
    assert message.is_multipart()
    return {part.get_param("name", header="content-disposition"): part.get_payload(decode=True).decode()
            for part in message.get_payload()}


@functools.cache
def zlib_bomb(mebibytes: int, byte: bytes = b"a") -> bytes:
    """A zlib stream that inflates to `mebibytes` MiB of `byte`, about 1 KB per MiB, made in milliseconds: one
    fully flushed deflate block of 1 MiB, repeated (each starts afresh), then the end and the checksum."""
    chunk = byte * (1024 * 1024)
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = packer.compress(chunk) + packer.flush(zlib.Z_FULL_FLUSH)
    checksum = 1
    for _ in range(mebibytes):
        checksum = zlib.adler32(chunk, checksum)
    return b"\x78\xda" + block * mebibytes + b"\x03\x00" + struct.pack(">I", checksum)


def with_itxt(png: bytes, keyword: str, text: bytes, compressed: bool) -> bytes:
    """`png` with one more iTXt chunk before IEND, its text given as raw bytes (compressed or not)."""
    data = keyword.encode("latin-1") + b"\0" + bytes([int(compressed), 0]) + b"\0\0" + text
    chunk = struct.pack(">I", len(data)) + b"iTXt" + data + struct.pack(">I", zlib.crc32(b"iTXt" + data))
    iend = png.rindex(b"IEND") - 4
    return png[:iend] + chunk + png[iend:]
