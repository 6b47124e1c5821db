"""PNG handling in one place: walking and checking chunks without decoding a pixel, text chunks (provenance, the
baked badge credential), and the one decode-fit-encode path for pictures that are not the size asked for."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator

from PIL import Image, UnidentifiedImageError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# What a provider may send back; anything else (SVG, PDF, EPS, a JSON error...) is not a picture to us.
ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP")
MAX_SOURCE_PIXELS = 4096 * 4096
# A compressed text chunk is inflated to at most this: a 1 MiB upload could otherwise unfold to a gigabyte.
MAX_TEXT_BYTES = 1024 * 1024


def png_chunks(png: bytes) -> Iterator[tuple[bytes, memoryview, int]]:
    """The chunks after a PNG's signature, in order: type, data and the CRC it carries; stops early at a chunk that is
    cut short, and yields nothing for bytes that are no PNG."""
    if not png.startswith(PNG_SIGNATURE):
        return
    view, offset = memoryview(png), len(PNG_SIGNATURE)
    while offset + 12 <= len(png):
        length, kind = struct.unpack_from(">I4s", png, offset)
        end = offset + 12 + length
        if end > len(png):
            return
        (crc,) = struct.unpack_from(">I", png, end - 4)
        yield kind, view[offset + 8:end - 4], crc
        offset = end


def check_png(png: bytes) -> tuple[int, int]:
    """Width and height of a well-formed PNG, checked without decoding a pixel: the signature, IHDR first, every
    chunk's CRC, some IDAT, IEND last (what Pillow's `verify()` checks); ValueError otherwise."""
    if not png.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG")
    size, seen_idat = None, False
    for kind, data, crc in png_chunks(png):
        if zlib.crc32(data, zlib.crc32(kind)) != crc:
            raise ValueError(f"PNG chunk {kind!r} fails its CRC")
        if size is None:
            if kind != b"IHDR" or len(data) != 13:
                raise ValueError("PNG does not start with IHDR")
            size = struct.unpack_from(">II", data)
            if 0 in size:
                raise ValueError("PNG has no pixels")
        seen_idat = seen_idat or kind == b"IDAT"
        if kind == b"IEND":
            if not seen_idat:
                raise ValueError("PNG has no image data")
            return size
    raise ValueError("PNG is truncated")


def add_text_chunks(png: bytes, text: dict[str, str]) -> bytes:
    """Insert iTXt chunks before IEND without re-encoding the pixels."""
    chunks = b""
    for key, value in text.items():
        data = key.encode("latin-1") + b"\0\0\0\0\0" + value.encode("utf-8")
        chunks += struct.pack(">I", len(data)) + b"iTXt" + data + struct.pack(">I", zlib.crc32(b"iTXt" + data))
    iend = png.rindex(b"IEND") - 4
    return png[:iend] + chunks + png[iend:]


def read_text_chunk(png: bytes, keyword: str) -> str | None:
    """The text of the PNG's first iTXt chunk named `keyword`, or None when it has none (or is no PNG); ValueError
    when that text cannot be read: not UTF-8, not zlib data, or inflating past MAX_TEXT_BYTES."""
    for kind, data, _crc in png_chunks(png):
        if kind == b"iTXt":
            name, _, rest = bytes(data).partition(b"\0")
            if name == keyword.encode("latin-1") and len(rest) >= 2:
                compressed, text = rest[0], rest[2:].split(b"\0", 2)[-1]  # skip language and translated keyword
                try:
                    return (inflate(text, MAX_TEXT_BYTES) if compressed else text).decode("utf-8")
                except UnicodeDecodeError:
                    raise ValueError(f"the {keyword!r} chunk is not UTF-8 text") from None
        if kind == b"IEND":
            break
    return None


def inflate(data: bytes, limit: int) -> bytes:
    """zlib data inflated, never past `limit` bytes: ValueError for more, or for data that is no zlib stream."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, limit)
    except zlib.error:
        raise ValueError("the compressed text is not zlib data") from None
    if inflater.unconsumed_tail or (len(out) == limit and not inflater.eof):
        raise ValueError(f"the compressed text inflates to more than {limit // 1024} KiB")
    if not inflater.eof:
        raise ValueError("the compressed text is cut short")
    return out


def fit_to_png(data: bytes, width: int, height: int) -> bytes:
    """Decode a PNG, JPEG or WebP once, centre-crop it to `width`:`height`, resize and encode it as PNG once;
    ValueError for anything that is not such a picture, or one larger than MAX_SOURCE_PIXELS."""
    try:
        with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as image:
            if image.width * image.height > MAX_SOURCE_PIXELS:
                raise ValueError("picture too large")
            image.load()
            return encode(_fit(image, width, height))
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise ValueError(f"not a picture ({type(error).__name__})") from None


def encode(image: Image.Image) -> bytes:
    """The image as PNG bytes."""
    out = io.BytesIO()
    # Level 1: a generated photo encodes in ~80 ms instead of ~440 ms at level 6, for ~15% more bytes;
    # it was most of what /gen-achievement-image added to the vendors' time (see README, Benchmarks).
    image.save(out, "PNG", compress_level=1)
    return out.getvalue()


def _fit(image: Image.Image, width: int, height: int) -> Image.Image:
    """Centre-crop to the target's aspect ratio, then resize."""
    mode = "RGBA" if "A" in image.getbands() else "RGB"
    if image.mode != mode:  # a vendor's RGB picture is used as decoded, not copied first
        image = image.convert(mode)
    src_w, src_h = image.size
    target = width / height
    if src_w / src_h > target:
        crop_w = round(src_h * target)
        box = ((src_w - crop_w) // 2, 0, (src_w - crop_w) // 2 + crop_w, src_h)
    else:
        crop_h = round(src_w / target)
        box = (0, (src_h - crop_h) // 2, src_w, (src_h - crop_h) // 2 + crop_h)
    # Bicubic: ~40% less CPU than Lanczos for the badge's 1.3x enlargement of a 1024x1024 picture, and no visible
    # difference at these scales (README, Benchmarks).
    return image.resize((width, height), Image.Resampling.BICUBIC, box=box)
