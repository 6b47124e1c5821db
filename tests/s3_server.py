"""An S3 server on 127.0.0.1 for the tests (moto in server mode: real HTTP, boto3 unmocked)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import boto3
import pytest
from moto.server import ThreadedMotoServer

from serving import free_port

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test-not-a-key", "AWS_SECRET_ACCESS_KEY": "test-not-a-secret",
               "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """The URL of an S3 server running for this test session."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint, monkeypatch) -> str:
    """A new, empty bucket on the test S3 server, with credentials for it in the environment."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    name = f"images-{secrets.token_hex(6)}"
    s3_client(s3_endpoint).create_bucket(Bucket=name)
    return name


def s3_client(endpoint: str):
    """A boto3 client of the test server, to look at what the service stored."""
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])


def object_keys(endpoint: str, bucket: str) -> set[str]:
    """Every key in the bucket."""
    pages = s3_client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {item["Key"] for page in pages for item in page.get("Contents", [])}
