"""CLI bucket/object/cluster commands against a real cluster (``tests/harness.py``).

One cluster (1 proxy, 3 targets) serves the whole module; each test uses its own bucket. The
commands run in-process through click's ``CliRunner`` with ``--endpoint`` set to the cluster's
proxy; what they stored is checked with the SDK. The listing test runs the CLI in a worker
thread so that a TCP relay on the test's event loop can count the requests it makes.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid

import pytest
import xxhash
from click.testing import Result

from aisync.client import Client
from aisync.util.errors import ObjectNotFound
from tests.client.relay import Relay
from tests.harness import LocalCluster


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(targets=3) as c:
        yield c


@pytest.fixture(scope="module")
def sdk(cluster):
    with Client(cluster.endpoint, timeout=10) as c:
        yield c


@pytest.fixture
def bucket(sdk) -> str:
    name = f"cli-{uuid.uuid4().hex[:10]}"
    sdk.create_bucket(name)
    return name


@pytest.fixture
def invoke(cli_at, cluster):
    return cli_at(cluster.endpoint)


def names(sdk: Client, bucket: str) -> list[str]:
    return [e.name for e in sdk.iter_objects(bucket)]


def test_bucket_commands(invoke, sdk):
    name = f"cli-{uuid.uuid4().hex[:10]}"
    r = invoke("bucket", "create", f"ais://{name}")
    assert r.exit_code == 0, r.output
    assert f"created ais://{name}" in r.stdout and sdk.head_bucket(name) is True
    r = invoke("bucket", "create", name)
    assert r.exit_code == 1 and r.stderr.strip() == f"error: bucket ais://{name} already exists"
    r = invoke("bucket", "ls")
    assert r.exit_code == 0 and r.stdout.splitlines()[0].split() == ["BUCKET", "CREATED"]
    assert f"ais://{name}" in r.stdout
    r = invoke("bucket", "ls", "--json")
    assert name in [b["name"] for b in json.loads(r.stdout)]
    sdk.put_object(name, "a", b"12345")
    r = invoke("bucket", "show", f"ais://{name}")
    assert r.exit_code == 0, r.output
    fields = dict(line.split(":", 1) for line in r.stdout.splitlines())
    assert fields["bucket"].strip() == f"ais://{name}"
    assert fields["objects"].strip() == "1" and fields["bytes"].strip() == "5 (5 B)"
    r = invoke("bucket", "show", name, "--json")
    assert (json.loads(r.stdout)["objects"], json.loads(r.stdout)["bytes"]) == (1, 5)
    r = invoke("bucket", "rm", f"ais://{name}", "--dry-run")
    assert r.exit_code == 0 and f"would destroy ais://{name}: 1 object(s), 5 B" in r.stdout
    assert sdk.head_bucket(name) is True and sdk.get_object(name, "a") == b"12345"
    r = invoke("bucket", "rm", f"ais://{name}")  # no --yes, no terminal: refused
    assert r.exit_code == 2 and "without --yes" in r.stderr and sdk.head_bucket(name) is True
    r = invoke("bucket", "rm", f"ais://{name}", "--yes")
    assert r.exit_code == 0 and f"destroyed ais://{name}" in r.stdout
    assert sdk.head_bucket(name) is False
    r = invoke("bucket", "show", f"ais://{name}")
    assert r.exit_code == 1
    assert r.stderr.startswith(f"error: bucket ais://{name} does not exist")
    r = invoke("bucket", "ls", "--json")
    assert name not in [b["name"] for b in json.loads(r.stdout)]


def test_put_get_head_single_file(invoke, sdk, bucket, tmp_path):
    data = os.urandom(300_000)
    (tmp_path / "in.bin").write_bytes(data)
    r = invoke("object", "put", "in.bin", f"ais://{bucket}/dir/")
    assert r.exit_code == 0, r.output
    assert f"uploaded ais://{bucket}/dir/in.bin" in r.stdout
    assert sdk.get_object(bucket, "dir/in.bin") == data
    r = invoke("object", "put", "in.bin", f"ais://{bucket}/renamed.bin")
    assert r.exit_code == 0 and sdk.get_object(bucket, "renamed.bin") == data
    (tmp_path / "in.bin").unlink()
    r = invoke("object", "get", f"ais://{bucket}/dir/in.bin")  # default: base name in cwd
    assert r.exit_code == 0, r.output
    assert (tmp_path / "in.bin").read_bytes() == data
    (tmp_path / "sub").mkdir()
    r = invoke("object", "get", f"ais://{bucket}/dir/in.bin", "-o", "sub")
    assert r.exit_code == 0 and (tmp_path / "sub" / "in.bin").read_bytes() == data
    r = invoke("object", "get", f"ais://{bucket}/dir/in.bin", "-o", "-", "--range", "10-19")
    assert r.exit_code == 0 and r.stdout_bytes == data[10:20]
    r = invoke("object", "get", f"ais://{bucket}/dir/in.bin", "-")
    assert r.exit_code == 0 and r.stdout_bytes == data
    r = invoke("object", "head", f"ais://{bucket}/dir/in.bin", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert (doc["bucket"], doc["name"], doc["size"]) == (bucket, "dir/in.bin", len(data))
    assert doc["checksum"] == "xxh3:" + xxhash.xxh3_64_hexdigest(data)
    r = invoke("object", "head", f"ais://{bucket}/dir/in.bin")
    assert r.exit_code == 0 and f"size:     {len(data)} (293.0 KiB)" in r.stdout
    r = invoke("object", "get", f"ais://{bucket}/missing")
    assert r.exit_code == 1
    assert r.stderr.strip() == f"error: ais://{bucket}/missing: no such object"
    assert not (tmp_path / "missing").exists()
    assert [p.name for p in tmp_path.iterdir() if "aisync-part" in p.name] == []
    r = invoke("object", "head", f"ais://{bucket}/missing")
    assert r.exit_code == 1 and r.stderr.startswith("error: ")
    assert "no such object" in r.stderr


def test_put_stdin(invoke, sdk, bucket):
    r = invoke("object", "put", "-", f"ais://{bucket}/from-stdin", input=b"piped bytes")
    assert r.exit_code == 0, r.output
    assert sdk.get_object(bucket, "from-stdin") == b"piped bytes"
    r = invoke("object", "put", "-", f"ais://{bucket}/", input=b"x")
    assert r.exit_code == 2 and "full object name" in r.stderr
    assert names(sdk, bucket) == ["from-stdin"]


async def test_recursive_put_ls_and_rm(cluster, invoke, sdk, bucket, tmp_path):
    async def run(*args: str, endpoint: str | None = None) -> Result:
        return await asyncio.to_thread(invoke, *args, endpoint=endpoint)

    src = tmp_path / "tree"
    files = {"a.txt": b"a", "sub/b.txt": b"bb", "sub/deeper/c.bin": os.urandom(2000)}
    for rel, content in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(content)
    r = await run("object", "put", str(src), f"ais://{bucket}/data", "--recursive",
                  "--jobs", "2")
    assert r.exit_code == 0, r.output
    assert "uploaded 3 file(s)" in r.stdout and "MiB/s" in r.stdout
    assert {f"data/{rel}": content for rel, content in files.items()} == {
        name: sdk.get_object(bucket, name) for name in names(sdk, bucket)}
    sdk.put_object(bucket, "other", b"o")

    async with Relay(cluster.endpoint) as relay:  # counts the listing requests
        r = await run("object", "ls", f"ais://{bucket}/data/", "--page-size", "2",
                      endpoint=relay.url)
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["NAME", "SIZE", "MODIFIED"]
    assert [line.split()[0] for line in lines[1:]] == [
        "data/a.txt", "data/sub/b.txt", "data/sub/deeper/c.bin"]
    assert bytes(relay.sent).count(f"GET /v1/buckets/{bucket}?".encode()) == 2  # page by page
    assert "3 object(s)" in r.stderr
    r = await run("object", "ls", f"ais://{bucket}", "--prefix", "data/sub/", "--json")
    assert [o["name"] for o in json.loads(r.stdout)] == ["data/sub/b.txt",
                                                          "data/sub/deeper/c.bin"]
    assert [o["size"] for o in json.loads(r.stdout)] == [2, 2000]
    r = await run("object", "ls", f"ais://{bucket}", "--limit", "1", "--json")
    assert [o["name"] for o in json.loads(r.stdout)] == ["data/a.txt"]
    r = await run("object", "ls", f"ais://{bucket}/x/", "--prefix", "y")
    assert r.exit_code == 2

    r = await run("object", "rm", f"ais://{bucket}/data/", "--recursive", "--dry-run")
    assert r.exit_code == 0 and "would delete 3 object(s)" in r.stdout
    assert len(names(sdk, bucket)) == 4
    r = await run("object", "rm", f"ais://{bucket}/data/")
    assert r.exit_code == 2 and "--recursive" in r.stderr
    r = await run("object", "rm", f"ais://{bucket}", "--recursive", "--prefix", "data/")
    assert r.exit_code == 0 and "deleted 3 object(s)" in r.stdout, r.output
    assert names(sdk, bucket) == ["other"]
    r = await run("object", "rm", f"ais://{bucket}/other", "--dry-run")
    assert r.exit_code == 0 and f"would delete ais://{bucket}/other (1 B)" in r.stdout
    r = await run("object", "rm", f"ais://{bucket}/other")
    assert r.exit_code == 0 and names(sdk, bucket) == []
    with pytest.raises(ObjectNotFound):
        sdk.head_object(bucket, "other")


def test_cluster_status_table_and_json(cluster, invoke, sdk, bucket):
    sdk.put_object(bucket, "counted", b"x" * 1000)
    version = cluster.cluster_map()["version"]
    r = invoke("cluster", "status")
    assert r.exit_code == 0, r.output
    header, *table = r.stdout.splitlines()
    assert header.startswith(f"cluster test-zone  map v{version}  bucket map v")
    assert "primary proxy-0" in header and f"endpoint {cluster.endpoint}" in header
    columns = table[0]
    assert columns.split()[:4] == ["ID", "ROLE", "STATE", "PRIMARY"]
    disk_at, objects_at = columns.index("DISK USED/TOTAL"), columns.index("OBJECTS")
    rows = {line.split()[0]: line for line in table[1:]}
    assert set(rows) == {n.id for n in cluster.nodes}
    proxy = rows["proxy-0"].split()
    assert proxy[1:6] == ["proxy", "active", "*", cluster.endpoint, str(version)]
    for target in cluster.targets:
        row = rows[target.id]
        assert row.split()[1:5] == ["target", "active", target.url, str(version)]  # no '*'
        used, _, total = row[disk_at:objects_at].strip().partition("/")
        assert used.endswith("B") and total.endswith("B"), row  # e.g. "1.2 GiB/50.0 GiB"
        assert row[objects_at:].strip().isdigit(), row

    r = invoke("cluster", "status", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert (doc["cluster"], doc["primary"], doc["map_version"]) == (
        "test-zone", "proxy-0", version)
    assert {n["id"] for n in doc["nodes"]} == {n.id for n in cluster.nodes}
    targets = [n for n in doc["nodes"] if n["role"] == "target"]
    assert all(n["state"] == "active" and n["disks"] for n in targets)
    assert sum(n["objects"] for n in targets) >= 1  # at least the object stored above
