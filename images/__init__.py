"""Image delivery: `/images/<sha256>.png` and the compat routes' PNG answers (`delivery`), and moving the stored
PNGs to another store (`commands`). Where PNGs are stored is `core/image_store.py`."""

from __future__ import annotations

from flask import Flask

from images.commands import register_commands
from images.delivery import bp


def init_app(app: Flask) -> None:
    """Register `/images/<sha256>.png` and `flask images copy`."""
    app.register_blueprint(bp)
    register_commands(app)
