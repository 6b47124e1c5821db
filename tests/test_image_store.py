"""The content-addressed PNG store: atomic, shared by identical bytes, and cleaned of unused files."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from core.image_store import DiskStore
from core.png import check_png
from models import Achievement, Storefront, User


def png(colour="red", size=(8, 4)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return out.getvalue()


def test_put_names_file_by_hash_and_shares_identical_bytes(tmp_path):
    store = DiskStore(tmp_path)
    first = store.put(png())
    second = store.put(png())
    assert first == second
    assert (first.width, first.height, first.size) == (8, 4, len(png()))
    assert store.read(first.sha256) == png()
    assert list(tmp_path.rglob("*.png")) == [store.path(first.sha256)]
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize("data", [b"not an image", b"\x89PNG\r\n\x1a\n broken"])
def test_put_refuses_non_png(tmp_path, data):
    store = DiskStore(tmp_path)
    with pytest.raises(Exception):  # noqa: B017 - Pillow raises several types for bad bytes
        store.put(data)
    assert not list(tmp_path.rglob("*.png"))


def test_put_refuses_other_formats(tmp_path):
    out = io.BytesIO()
    Image.new("RGB", (4, 4)).save(out, "JPEG")
    with pytest.raises(ValueError):
        DiskStore(tmp_path).put(out.getvalue())


def test_saving_removes_new_files_when_commit_fails(app):
    store = app.extensions["image_store"]
    with app.extensions["sessionmaker"]() as session:
        kept = store.put(png("blue"))
        session.add(Achievement(name="a", description="d", occasion="o", product_type="p", **kept.columns()))
        session.commit()
        with pytest.raises(RuntimeError), store.saving(session) as put:
            put(png("blue"))
            put(png("green"))
            raise RuntimeError("database write failed")
        assert store.path(kept.sha256).exists()
        assert [p.name for p in store.root.rglob("*.png")] == [f"{kept.sha256}.png"]


def test_remove_unused_keeps_files_in_use(app):
    store = app.extensions["image_store"]
    with app.extensions["sessionmaker"]() as session:
        user = User(name="u", recommendations={})
        session.add(user)
        session.flush()
        with store.saving(session) as put:
            used, unused = put(png("red")), put(png("black"))
            session.add(Storefront(user_id=user.id, name="u_x", description="d", style="x", **used.columns()))
        assert store.remove_unused(session, [used.sha256, unused.sha256, None]) == 1
        assert store.path(used.sha256).exists()
        assert not store.path(unused.sha256).exists()


def test_check_png_reads_the_size_without_decoding_and_refuses_damage():
    good = png(size=(12, 5))
    assert check_png(good) == (12, 5)
    iend = good.rindex(b"IEND") - 4
    for damaged in (good[:iend], good[:20], good[:8] + good[33:], good.replace(b"IHDR", b"IHDX", 1)):
        with pytest.raises(ValueError):
            check_png(damaged)
