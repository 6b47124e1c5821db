"""`flask images copy --to <store URL>`: copy every stored PNG to another store (moving to S3)."""

from __future__ import annotations

import click
from flask import Flask

from core.image_store import ImageStore, open_store
from core.settings import Settings


def register_commands(app: Flask) -> None:
    """Add `flask images copy --to <store URL>`."""
    group = click.Group("images", help="Manage the stored PNGs.")

    @group.command("copy")
    @click.option("--to", "target_url", required=True,
                  help="s3://bucket[/prefix] (S3_ENDPOINT_URL and AWS credentials as for the service) or a folder.")
    def copy_command(target_url: str) -> None:
        """Copy every stored PNG to another store; those already there are skipped, so it can be run again."""
        settings: Settings = app.extensions["settings"]
        source: ImageStore = app.extensions["image_store"]
        target = open_store(target_url, settings.image_dir, endpoint_url=settings.s3_endpoint_url,
                            public_base_url=settings.image_public_base_url, url_ttl_s=settings.image_url_ttl_s)
        hashes = list(source.hashes())
        copied = 0
        with click.progressbar(hashes, label="Copying images", show_pos=True) as bar:
            for sha256 in bar:
                if not target.exists(sha256):
                    target.write(sha256, source.read(sha256))
                    copied += 1
        click.echo(f"Copied {copied} image(s); {len(hashes) - copied} already there.")

    app.cli.add_command(group)
