"""Buckets cached from a source of truth, on a real cluster: an fs:// directory and an s3://
bucket on a real moto server. Cold GET (read-through, coalesced), warm GET, write-through PUT,
source-first DELETE, out-of-band source data."""

from __future__ import annotations

import os
import threading
import uuid

import pytest
import xxhash

from aisync.client import Client
from aisync.util.errors import ConfigError, NotFound, ObjectNotFound
from tests.backends.moto_server import admin_client
from tests.harness import http_json, new_fs_bucket


@pytest.fixture(scope="module")
def cluster(lab_cluster):
    return lab_cluster


@pytest.fixture
def client(lab_client):
    return lab_client


def backend_gets(cluster) -> int:
    total = 0
    for target in cluster.targets:
        status = http_json(f"{target.url}/v1/node/status")[1]
        total += status["readthrough"]["backend_gets"]
    return total


@pytest.fixture
def fs_bucket(client, tmp_path):
    uri, share = new_fs_bucket(client, tmp_path)
    return uri.removeprefix("fs://"), share


@pytest.fixture
def s3_bucket(client, moto):
    name = f"s3-{uuid.uuid4().hex[:8]}"
    admin = admin_client(moto)
    admin.create_bucket(Bucket=name)
    client.create_bucket(f"s3://{name}", profile="lab")
    return name, admin


def test_fs_cold_then_warm_get_of_out_of_band_files(cluster, client, fs_bucket):
    name, share = fs_bucket
    data = os.urandom(3 * 1024 * 1024 + 5)
    (share / "data").mkdir()
    (share / "data" / "shard-0.tar").write_bytes(data)  # written by another tool
    before = backend_gets(cluster)
    assert client.get_object(f"fs://{name}", "data/shard-0.tar") == data
    assert backend_gets(cluster) == before + 1
    for _ in range(3):
        assert client.get_object(f"fs://{name}", "data/shard-0.tar") == data
    assert backend_gets(cluster) == before + 1  # warm: served from the cluster
    head = client.head_object(f"fs://{name}", "data/shard-0.tar")
    assert head.size == len(data)
    assert head.checksum == f"xxh3:{xxhash.xxh3_64_hexdigest(data)}"
    assert client.get_object(f"fs://{name}", "data/shard-0.tar", byte_range=(10, 19)) == data[10:20]


def test_twenty_concurrent_cold_readers_cause_one_backend_get(cluster, client, s3_bucket):
    name, admin = s3_bucket
    data = os.urandom(8 * 1024 * 1024)
    admin.put_object(Bucket=name, Key="hot/shard.tar", Body=data)
    before = backend_gets(cluster)
    results, errors = [], []

    def read():
        try:
            with Client(cluster.endpoint) as own:
                results.append(own.get_object(f"s3://{name}", "hot/shard.tar"))
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[:3]
    assert len(results) == 20 and all(r == data for r in results)
    assert backend_gets(cluster) == before + 1


def test_cold_range_read_caches_the_whole_object(cluster, client, s3_bucket):
    name, admin = s3_bucket
    data = os.urandom(500_000)
    admin.put_object(Bucket=name, Key="r", Body=data)
    assert client.get_object(f"s3://{name}", "r", byte_range=(1000, 1999)) == data[1000:2000]
    before = backend_gets(cluster)
    assert client.get_object(f"s3://{name}", "r") == data
    assert backend_gets(cluster) == before


def test_write_through_reaches_the_source_before_the_ack(cluster, client, s3_bucket):
    name, admin = s3_bucket
    data = os.urandom(2 * 1024 * 1024)
    info = client.put_object(f"s3://{name}", "ckpt/step-100.pt", data)
    assert info.size == len(data)
    source = admin.get_object(Bucket=name, Key="ckpt/step-100.pt")
    assert source["Body"].read() == data
    before = backend_gets(cluster)
    assert client.get_object(f"s3://{name}", "ckpt/step-100.pt") == data
    assert backend_gets(cluster) == before  # the written copy is already cached
    head = client.head_object(f"s3://{name}", "ckpt/step-100.pt")
    assert head.etag.strip('"') == source["ETag"].strip('"')  # clients see the source's ETag


def test_failed_write_through_caches_nothing(cluster, client, s3_bucket):
    name, admin = s3_bucket
    admin.delete_bucket(Bucket=name)  # the source bucket vanishes behind the cluster's back
    with pytest.raises(Exception) as exc:
        client.put_object(f"s3://{name}", "lost", b"never acknowledged")
    assert getattr(exc.value, "code", "") in ("BucketNotFound", "BackendError")
    admin.create_bucket(Bucket=name)
    with pytest.raises(ObjectNotFound):  # not cached, and not at the source
        client.get_object(f"s3://{name}", "lost")
    for target in cluster.targets:
        assert not any((target.dir / "mp0" / "tmp").iterdir())


def test_delete_goes_to_the_source_first(cluster, client, fs_bucket):
    name, share = fs_bucket
    client.put_object(f"fs://{name}", "gone.txt", b"bye")
    assert (share / "gone.txt").read_bytes() == b"bye"
    client.get_object(f"fs://{name}", "gone.txt")
    client.delete_object(f"fs://{name}", "gone.txt")
    assert not (share / "gone.txt").exists()
    with pytest.raises(ObjectNotFound):
        client.get_object(f"fs://{name}", "gone.txt")


def test_missing_source_object_is_404_and_nothing_is_cached(client, fs_bucket):
    name, _ = fs_bucket
    with pytest.raises(ObjectNotFound):
        client.get_object(f"fs://{name}", "never/was")
    assert client.list_objects(f"fs://{name}").objects == []


def test_bucket_creation_checks_the_source(client, moto):
    with pytest.raises(NotFound) as exc:
        client.create_bucket("s3://aisync-no-such-source", profile="lab")
    assert exc.value.code == "BucketNotFound"
    assert not client.head_bucket("s3://aisync-no-such-source")
    with pytest.raises(ConfigError, match="no backend profile 'nope'"):
        client.create_bucket("s3://x-anything", profile="nope")
    assert not client.head_bucket("s3://x-anything")


def test_listing_merges_the_source_with_the_cluster(cluster, client, fs_bucket):
    name, share = fs_bucket
    uri = f"fs://{name}"
    for i in range(7):  # at the source, written by another tool
        (share / f"k{i}").write_bytes(b"x" * (i + 1))
    client.get_object(uri, "k2")
    client.get_object(uri, "k5")
    client.put_object(uri, "k9", b"via aisync")  # write-through: at the source and cached
    client.get_object(uri, "k6")
    (share / "k6").unlink()                       # deleted at the source, out of band
    merged = list(client.iter_objects(uri, page_size=3))  # pages across both sources
    assert [e.name for e in merged] == ["k0", "k1", "k2", "k3", "k4", "k5", "k6", "k9"]
    by_name = {e.name: e for e in merged}
    assert {n for n, e in by_name.items() if e.cached} == {"k2", "k5", "k6", "k9"}
    assert by_name["k6"].in_source is False and by_name["k6"].version is None
    assert by_name["k3"].cached is False and by_name["k3"].version["size"] == 4
    assert by_name["k2"].checksum.startswith("xxh3:") and by_name["k2"].version["etag"]
    only_cached = list(client.iter_objects(uri, cached=True))
    assert [e.name for e in only_cached] == ["k2", "k5", "k6", "k9"]
    assert all(e.cached and e.version for e in only_cached)
