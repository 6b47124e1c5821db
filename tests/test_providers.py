"""What every provider's picture goes through: the image check, the fit to size, and provenance in the PNG."""

from __future__ import annotations

import io
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from PIL import Image

import providers
from conftest import png_size
from core import http_client
from core.errors import ProviderError
from fakes import image_bytes, png_text


def test_local_pictures_carry_their_provenance(client, users):
    response = client.post(f"/gen-new-storefront-images?user_id={users[0]['id']}&shop_theme=tech")
    [made] = response.get_json()["storefronts"]
    provenance = png_text(client.get(made["image_url"]).data)
    listed = client.get(f"/get-all-user-storefront-image?user_id={users[0]['id']}").get_json()["storefronts"][0]
    assert provenance["prompt"] == listed["description"]
    assert provenance["provider"] == "local"
    assert provenance["model"]
    assert provenance["seed"].isdigit()
    assert datetime.fromisoformat(provenance["created"]).tzinfo is not None

    badge = client.post("/gen-achievement-image?date=31 Oct&product=soju").get_json()
    assert png_text(client.get(badge["image_url"]).data)["provider"] == "local"


@pytest.mark.parametrize(("size", "fmt"), [((1216, 832), "JPEG"), ((512, 512), "WEBP"), ((1024, 1024), "PNG")])
def test_pictures_are_fitted_to_png_of_the_spec_size(size, fmt):
    spec = providers.badge_spec(providers.AchievementDraft("Name", "d", "Halloween", "soju"))
    png = providers.to_png(providers.RawImage(image_bytes(size, fmt), "m", 42), spec, "stability")
    assert png_text(png) | {"created": ""} == {"prompt": spec.prompt, "provider": "stability", "model": "m",
                                                "seed": "42", "created": ""}
    assert png_size(png) == (spec.width, spec.height)


@pytest.mark.parametrize("data", [b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", image_bytes((8, 8), "GIF"),
                                  image_bytes((8, 8), "BMP"), image_bytes((4097, 4097), "PNG", colour=(0, 0, 0))],
                         ids=["broken-gif", "gif", "bmp", "too-many-pixels"])
def test_other_kinds_of_image_are_refused(data):
    spec = providers.storefront_spec("tech", ["mouse"])
    with pytest.raises(ProviderError, match="not an image"):
        providers.to_png(providers.RawImage(data, "m"), spec, "clipdrop")


def test_retry_after_in_seconds_or_as_a_date():
    in_a_minute = format_datetime(datetime.now(UTC) + timedelta(seconds=60), usegmt=True)
    assert http_client.retry_after_s({"Retry-After": "12"}) == 12
    assert 50 < http_client.retry_after_s({"Retry-After": in_a_minute}) <= 60
    assert http_client.retry_after_s({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0
    assert http_client.retry_after_s({"Retry-After": "soon"}) is None
    assert http_client.retry_after_s({}) is None


def noisy_png(size: tuple[int, int]) -> bytes:
    """A PNG like a generated photo: every pixel different, so no encoder would write the same bytes by chance."""
    out = io.BytesIO()
    Image.frombytes("RGB", size, random.Random(7).randbytes(3 * size[0] * size[1])).save(out, "PNG")
    return out.getvalue()


def test_a_png_that_already_fits_keeps_its_bytes():
    spec = providers.storefront_spec("tech", ["mouse"])
    vendor = noisy_png((spec.width, spec.height))
    png = providers.to_png(providers.RawImage(vendor, "m", 7), spec, "clipdrop")
    iend = vendor.rindex(b"IEND") - 4
    assert png.startswith(vendor[:iend])  # signature, IHDR and every IDAT byte as sent: nothing re-encoded
    assert png.endswith(vendor[iend:])
    assert png_text(png)["provider"] == "clipdrop"
    with Image.open(io.BytesIO(png)) as stored, Image.open(io.BytesIO(vendor)) as sent:
        assert stored.tobytes() == sent.tobytes()


def test_a_damaged_png_of_the_right_size_is_refused():
    spec = providers.storefront_spec("tech", ["mouse"])
    vendor = bytearray(noisy_png((spec.width, spec.height)))
    vendor[vendor.index(b"IDAT") + 100] ^= 0xFF  # its chunk's CRC no longer matches
    with pytest.raises(ProviderError, match="not an image"):
        providers.to_png(providers.RawImage(bytes(vendor), "m"), spec, "clipdrop")
