"""Helpers for provider tests: image bytes as providers send them, and reading back what we stored."""

from __future__ import annotations

import io
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
