"""A real moto S3 server over HTTP for tests: one per test session, on a free local port.

Use the ``moto_endpoint`` fixture (import it into a test module) for the URL, ``admin_client`` for
a plain boto3 client to arrange state behind a backend's back, and ``temp_bucket`` for a fresh
bucket with a unique name that is emptied (all versions) and removed afterwards.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from moto.server import ThreadedMotoServer

#: moto accepts any credentials; these keep boto3 from looking for real ones.
CREDENTIALS = {"access_key": "testing", "secret_key": "testing", "region": "us-east-1"}


@contextlib.contextmanager
def running_moto() -> Iterator[str]:
    """Start a threaded moto server on 127.0.0.1 and a free port; yield its URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    with running_moto() as url:
        yield url


def admin_client(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name=CREDENTIALS["region"],
                        aws_access_key_id=CREDENTIALS["access_key"],
                        aws_secret_access_key=CREDENTIALS["secret_key"],
                        config=Config(retries={"mode": "standard"}))


def empty_and_drop(client: Any, bucket: str) -> None:
    paginator = client.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=bucket):
        doomed = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                  for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
        if doomed:
            client.delete_objects(Bucket=bucket, Delete={"Objects": doomed, "Quiet": True})
    for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"],
                                      UploadId=upload["UploadId"])
    client.delete_bucket(Bucket=bucket)


@contextlib.contextmanager
def temp_bucket(client: Any, *, versioning: str | None = None) -> Iterator[str]:
    """A fresh bucket; ``versioning`` is None, ``"Enabled"`` or ``"Suspended"``."""
    name = f"aisync-test-{uuid.uuid4().hex[:20]}"
    client.create_bucket(Bucket=name)
    if versioning:
        client.put_bucket_versioning(Bucket=name,
                                     VersioningConfiguration={"Status": versioning})
    try:
        yield name
    finally:
        empty_and_drop(client, name)
