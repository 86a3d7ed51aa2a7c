"""A randomized model test of the sync engine against real sources (an fs:// directory and a
moto S3 bucket), with fixed seeds so every run is the same run.

The test keeps a model of the source (name -> bytes) and of what the cluster caches, mutates
the source out of band (new objects, same-size overwrites, deletes, delete-and-recreate),
interleaves validated reads and sync jobs, and checks after every step:

* a read under ``consistency=validate`` is never stale (it returns the source's bytes, or 404);
* after a sync job the cached bucket equals the source byte for byte (names and xxh3 checksums),
  and the job's report lists exactly the changes the model predicts;
* objects changed while a (slowed) sync job runs are cached whole, at one of their versions,
  never a mix, and the next sync converges.
"""

from __future__ import annotations

import os
import random
import uuid

import pytest
import xxhash

from aisync.util.errors import ObjectNotFound
from tests.backends.moto_server import admin_client
from tests.harness import api, job_report, wait_for, wait_job

SEEDS = [11, 29]
STEPS = 60


@pytest.fixture(scope="module")
def cluster(lab_cluster):
    return lab_cluster


@pytest.fixture
def client(lab_client):
    return lab_client


class FsSource:
    def __init__(self, client, root) -> None:
        self.root = root
        root.mkdir()
        self.uri = f"fs://model-{uuid.uuid4().hex[:6]}"
        client.create_bucket(self.uri, settings={"path": str(root)})

    def put(self, name: str, data: bytes) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def delete(self, name: str) -> None:
        (self.root / name).unlink()


class S3Source:
    def __init__(self, client, endpoint) -> None:
        self.bucket = f"model-{uuid.uuid4().hex[:6]}"
        self.s3 = admin_client(endpoint)
        self.s3.create_bucket(Bucket=self.bucket)
        self.uri = f"s3://{self.bucket}"
        client.create_bucket(self.uri, profile="lab")

    def put(self, name: str, data: bytes) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=name, Body=data)

    def delete(self, name: str) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=name)


@pytest.fixture(params=["fs", "s3"])
def source(request, client, tmp_path, moto):
    if request.param == "fs":
        return FsSource(client, tmp_path / "source")
    return S3Source(client, moto)


def call(cluster, method: str, path: str, body: dict | None = None) -> dict:
    status, answer = api(cluster, method, path, body)
    assert status in (200, 201), answer
    return answer


def start_job(cluster, uri: str, **extra) -> str:
    return call(cluster, "POST", "/v1/jobs", {"kind": "sync", "bucket": uri, "delete": True,
                                              "shrink_limit": 1.0, **extra})["id"]


def report(cluster, job_id: str) -> dict[str, str]:
    return {name: action for name, (action, _) in job_report(cluster, job_id).items()}


def cached(client, uri: str) -> dict[str, str]:
    return {o.name: o.checksum for o in client.iter_objects(uri, cached=True)}


def digest(data: bytes) -> str:
    return f"xxh3:{xxhash.xxh3_64_hexdigest(data)}"


@pytest.mark.parametrize("seed", SEEDS)
def test_random_out_of_band_changes_reads_and_syncs(cluster, client, source, seed):
    rng = random.Random(seed)
    uri = source.uri
    call(cluster, "PATCH", f"/v1/buckets/{uri.split('://')[1]}?provider={uri.split('://')[0]}",
         {"consistency": "validate"})
    model: dict[str, bytes] = {}    # the source of truth
    cache: dict[str, bytes] = {}    # what the cluster holds, as the model predicts
    names = [f"d{i // 8}/o{i:02d}" for i in range(24)]

    def blob(size: int) -> bytes:
        return rng.randbytes(size)

    for step in range(STEPS):
        op = rng.choice(["new", "new", "overwrite", "delete", "recreate", "read", "read",
                         "sync"])
        name = rng.choice(names)
        where = f"seed {seed} step {step}: {op} {name}"
        if op == "new" and name not in model:
            model[name] = blob(rng.randint(0, 3000))
            source.put(name, model[name])
        elif op == "overwrite" and name in model:
            model[name] = blob(len(model[name]))  # same size, new bytes
            source.put(name, model[name])
        elif op == "delete" and name in model:
            del model[name]
            source.delete(name)
        elif op == "recreate" and name in model:
            source.delete(name)
            model[name] = blob(len(model[name]))
            source.put(name, model[name])
        elif op == "read":
            if name in model:
                assert client.get_object(uri, name) == model[name], where
                cache[name] = model[name]
                # a re-fetch commits its copy just after answering: wait for it, so the next
                # sync's report is exactly predictable
                wait_for(lambda n=name: cached(client, uri).get(n) == digest(model[n]), 30,
                         f"{where}: copy committed")
            else:
                with pytest.raises(ObjectNotFound):
                    client.get_object(uri, name)
        elif op == "sync":
            expected = {n: "added" for n in model if n not in cache}
            expected.update({n: "updated" for n in model if n in cache and cache[n] != model[n]})
            expected.update({n: "deleted" for n in cache if n not in model})
            job = wait_job(cluster, start_job(cluster, uri))
            assert job["state"] == "succeeded", (where, job)
            assert report(cluster, job["id"]) == expected, where
            cache = dict(model)
            assert cached(client, uri) == {n: digest(d) for n, d in model.items()}, where

    job = wait_job(cluster, start_job(cluster, uri))
    assert job["state"] == "succeeded", job
    assert cached(client, uri) == {n: digest(d) for n, d in model.items()}


def test_objects_changing_during_a_sync_are_never_mixed(cluster, client, source):
    rng = random.Random(7)
    uri = source.uri
    versions: dict[str, list[bytes]] = {}
    for i in range(30):
        name = f"big/{i:02d}"
        versions[name] = [rng.randbytes(64 * 1024)]
        source.put(name, versions[name][0])
    # slowed to ~3 s, so the changes below land while it runs
    job_id = start_job(cluster, uri, bandwidth=30 * 64 * 1024 // 3, batch=2)
    wait_for(lambda: call(cluster, "GET", f"/v1/jobs/{job_id}")["progress"].get("added", 0)
             >= 2, 60, "the sync under way")
    for name in rng.sample(sorted(versions), 10):
        versions[name].append(rng.randbytes(64 * 1024))
        source.put(name, versions[name][-1])
    job = wait_job(cluster, job_id)
    assert job["state"] == "succeeded", job
    held = cached(client, uri)
    for name, history in versions.items():
        assert held[name] in {digest(v) for v in history}, name  # one whole version
    job = wait_job(cluster, start_job(cluster, uri))
    assert job["state"] == "succeeded", job
    assert cached(client, uri) == {n: digest(v[-1]) for n, v in versions.items()}
