"""CLI job, schedule and bucket-props commands against a real cluster (``tests/harness.py``).

One cluster (1 proxy, 3 targets) serves the whole module. Each test makes its own cached bucket:
an ``fs://`` bucket whose source of truth is a fresh temp directory, created with
``aisync bucket create fs://NAME --path DIR``. Commands run in-process through click's
``CliRunner``; what they did is checked with the SDK. Jobs are followed by the commands
themselves (``job start`` waits by default; ``job wait``), never by sleeping.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from aisync.cli.main import cli
from aisync.client import Client
from tests.harness import LocalCluster
from tests.harness import cli_ok as ok

FILES = {f"data/f{i}.bin": bytes([i]) * (100 + i) for i in range(5)}
JOB_ID = re.compile(r"\bj-[0-9a-f]{12}\b")

NEW_COMMANDS = [
    ["job"], ["job", "start"], ["job", "ls"], ["job", "show"], ["job", "wait"], ["job", "abort"],
    ["job", "report"], ["schedule"], ["schedule", "add"], ["schedule", "ls"],
    ["schedule", "show"], ["schedule", "rm"], ["bucket", "props"],
]


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(targets=3) as c:
        yield c


@pytest.fixture(scope="module")
def sdk(cluster):
    with Client(cluster.endpoint, timeout=30) as c:
        yield c


@pytest.fixture
def invoke(cli_at, cluster):
    return cli_at(cluster.endpoint)


@pytest.fixture
def source(tmp_path) -> Path:
    """A directory holding FILES: the source of truth of an fs:// bucket."""
    root = tmp_path / "share"
    for name, data in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


@pytest.fixture
def fs_bucket(invoke, source) -> str:
    uri = f"fs://jobs-{uuid.uuid4().hex[:8]}"
    r = invoke("bucket", "create", uri, "--path", str(source))
    assert r.exit_code == 0, r.output
    return uri


def job_id_of(r: Result) -> str:
    match = JOB_ID.search(r.stdout)
    assert match, r.output
    return match.group(0)


def fields(text: str) -> dict[str, str]:
    """``key: value`` lines (as ``bucket show`` and ``job show`` print them)."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def cached_names(sdk: Client, uri: str) -> list[str]:
    return [e.name for e in sdk.iter_objects(uri, cached=True)]


def report_rows(text: str) -> list[tuple[str, str]]:
    """(action, name) of the rows after the ``ACTION  NAME  REASON`` header."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["ACTION", "NAME"])
    return [tuple(line.split()[:2]) for line in lines[start + 1:] if line.strip()]


@pytest.mark.parametrize("args", NEW_COMMANDS, ids=lambda a: " ".join(a))
def test_every_new_command_has_teaching_help(args):
    r = ok(CliRunner().invoke(cli, [*args, "--help"]))
    match = re.search(r"Examples?:", r.output)
    assert match and "aisync " in r.output[match.end():], r.output


# -- bucket props and freshness ----------------------------------------------------------------


def test_bucket_props_set_show_and_clear(invoke, sdk, fs_bucket):
    r = ok(invoke("bucket", "props", fs_bucket, "consistency=validate", "max_staleness=5m"))
    shown = fields(r.stdout)
    assert shown["consistency"] == "validate" and shown["max_staleness"] == "5m"
    info = sdk.bucket_info(fs_bucket)
    assert info["consistency"] == "validate" and info["max_staleness"] == 300

    r = ok(invoke("bucket", "props", fs_bucket, "max_staleness=none"))
    assert fields(r.stdout)["max_staleness"] == "-"
    assert sdk.bucket_info(fs_bucket)["max_staleness"] is None
    assert sdk.bucket_info(fs_bucket)["consistency"] == "validate"

    r = ok(invoke("bucket", "props", fs_bucket, "--json"))  # no change: just show
    assert json.loads(r.stdout)["consistency"] == "validate"

    r = ok(invoke("bucket", "show", fs_bucket))
    assert fields(r.stdout)["freshness"] == "never verified"


@pytest.mark.parametrize(("change", "message"), [
    ("consistency=bogus", "synchronize"),                 # names the allowed values
    ("max_staleness=soon", "not a duration: 'soon'"),
    ("color=red", "cannot be changed: color"),
])
def test_bucket_props_bad_value_is_an_error(invoke, sdk, fs_bucket, change, message):
    before = sdk.bucket_info(fs_bucket)
    r = invoke("bucket", "props", fs_bucket, change)
    assert r.exit_code == 1, r.output
    assert r.stderr.startswith("error: ") and message in r.stderr, r.stderr
    assert "Traceback" not in r.output
    after = sdk.bucket_info(fs_bucket)
    assert (after["consistency"], after["max_staleness"]) == \
        (before["consistency"], before["max_staleness"])


def test_bucket_props_bad_value_message_is_one_line(invoke, fs_bucket):
    """Like every other API error, a bad property value is one readable line (no pydantic
    dump with its documentation URL)."""
    r = invoke("bucket", "props", fs_bucket, "consistency=bogus")
    assert r.exit_code == 1
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "errors.pydantic.dev" not in r.stderr


def test_bucket_props_usage_errors(invoke, sdk):
    r = invoke("bucket", "props", "fs://whatever", "consistency")
    assert r.exit_code == 2 and "expected KEY=VALUE" in r.stderr
    name = f"plain-{uuid.uuid4().hex[:8]}"
    sdk.create_bucket(f"ais://{name}")
    r = invoke("bucket", "props", f"ais://{name}", "consistency=validate")
    assert r.exit_code == 1 and "has no source" in r.stderr
    r = ok(invoke("bucket", "show", f"ais://{name}"))
    assert "freshness" not in fields(r.stdout)


# -- jobs --------------------------------------------------------------------------------------


def test_prefetch_waits_then_report_shows_added_rows(invoke, sdk, fs_bucket):
    r = ok(invoke("job", "start", "prefetch", fs_bucket))
    job_id = job_id_of(r)
    assert f"job {job_id} succeeded" in r.stdout
    assert "added 5" in r.stdout
    assert f"started job {job_id}" in r.stderr
    job = sdk.get_job(job_id)
    assert job["state"] == "succeeded" and job["progress"]["added"] == len(FILES)
    assert cached_names(sdk, fs_bucket) == sorted(FILES)

    r = ok(invoke("job", "report", job_id))
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["added", "5"]
    assert sorted(report_rows(r.stdout)) == [("added", n) for n in sorted(FILES)]
    assert "new at source" in r.stdout
    r = ok(invoke("job", "report", job_id, "--changes"))
    assert sorted(report_rows(r.stdout)) == [("added", n) for n in sorted(FILES)]
    r = ok(invoke("job", "report", job_id, "--action", "failed,skipped"))
    assert r.stdout == "" and "no report entries" in r.stderr
    r = ok(invoke("job", "report", job_id, "--json"))
    doc = json.loads(r.stdout)
    assert doc["counts"] == {"added": 5}
    assert [e["name"] for e in doc["entries"]] == sorted(FILES)
    # the SDK pages through the report
    assert [e["name"] for e in sdk.iter_job_report(job_id, page_size=2)] == sorted(FILES)

    # a prefetch does not verify the bucket; a whole-bucket sync does
    r = ok(invoke("bucket", "show", fs_bucket))
    assert fields(r.stdout)["freshness"] == f"never verified; last job {job_id} succeeded"
    r = ok(invoke("job", "start", "sync", fs_bucket))
    sync_id = job_id_of(r)
    assert "unchanged 5" in r.stdout
    freshness = fields(ok(invoke("bucket", "show", fs_bucket)).stdout)["freshness"]
    assert freshness.startswith("in sync with the source as of "), freshness
    assert re.search(r"\(lag [0-9.dhms]+\)", freshness), freshness
    assert freshness.endswith(f"verified by job {sync_id}; last job {sync_id} succeeded")


def test_dry_run_sync_delete_prints_the_plan_and_changes_nothing(invoke, sdk, fs_bucket,
                                                               source):
    ok(invoke("job", "start", "prefetch", fs_bucket))
    before = cached_names(sdk, fs_bucket)
    (source / "data/f0.bin").unlink()
    (source / "data/new.bin").write_bytes(b"new")

    r = ok(invoke("job", "start", "sync", fs_bucket, "--delete", "--dry-run"))
    job_id = job_id_of(r)
    counts = dict(line.split() for line in r.stdout.splitlines()
                  if line.startswith("  would-"))
    assert counts == {"would-add": "1", "would-update": "0", "would-delete": "1"}
    rows = report_rows(r.stdout.split("nothing was changed")[0])
    assert sorted(rows) == [("would-add", "data/new.bin"), ("would-delete", "data/f0.bin")]
    assert "gone from source" in r.stdout and "new at source" in r.stdout
    assert r.stdout.rstrip().endswith("nothing was changed (dry run)")

    assert cached_names(sdk, fs_bucket) == before
    job = sdk.get_job(job_id)
    assert job["dry_run"] is True and job["state"] == "succeeded"
    assert job["progress"]["deleted"] == job["progress"]["added"] == 0

    r = ok(invoke("job", "start", "sync", fs_bucket, "--delete", "--dry-run", "--json"))
    doc = json.loads(r.stdout)
    assert doc["plan"]["counts"] == {"would-add": 1, "would-delete": 1}


def test_copy_to_a_missing_bucket_is_an_error(invoke, fs_bucket):
    dest = f"ais://missing-{uuid.uuid4().hex[:8]}"
    r = invoke("job", "start", "copy", fs_bucket, dest)
    assert r.exit_code == 1, r.output
    assert r.stderr.strip() == f"error: bucket {dest} does not exist"


def test_job_commands_on_a_copy(invoke, sdk, fs_bucket):
    dest = f"ais://copy-{uuid.uuid4().hex[:8]}"
    ok(invoke("bucket", "create", dest))
    r = ok(invoke("job", "start", "copy", fs_bucket, dest, "--no-wait", "--bandwidth", "100MiB",
                  "--prefix", "data/"))
    job_id = job_id_of(r)
    assert r.stdout.startswith(f"started job {job_id}")
    assert sdk.get_job(job_id)["params"]["bandwidth"] == 100 * 1024 * 1024

    r = ok(invoke("job", "wait", job_id))
    assert f"job {job_id} succeeded" in r.stdout
    assert sorted(e.name for e in sdk.iter_objects(dest)) == sorted(FILES)

    r = ok(invoke("job", "ls"))
    header, *rows = r.stdout.splitlines()
    assert header.split() == ["ID", "KIND", "STATE", "BUCKET", "DEST", "DONE/PLANNED", "FAILED",
                              "CREATED"]
    mine = next(row.split() for row in rows if row.startswith(job_id))
    assert mine[1:7] == ["copy", "succeeded", fs_bucket, dest, "5/5", "0"]
    r = ok(invoke("job", "ls", "--state", "succeeded,failed", "--json"))
    assert job_id in [j["id"] for j in json.loads(r.stdout)]
    r = ok(invoke("job", "ls", "--state", "pending", "--state", "running"))
    assert job_id not in r.stdout
    r = invoke("job", "ls", "--state", "done")
    assert r.exit_code == 2 and "unknown job state" in r.stderr

    shown = fields(ok(invoke("job", "show", job_id)).stdout)
    assert shown["id"] == job_id and shown["state"] == "succeeded"
    assert shown["job"].startswith(f"copy {fs_bucket} -> {dest}")
    assert "prefix=data/" in shown["job"]
    assert json.loads(ok(invoke("job", "show", job_id, "--json")).stdout)["id"] == job_id

    r = ok(invoke("job", "abort", job_id))  # finished: harmless
    assert f"job {job_id} already succeeded; nothing to abort" in r.stdout
    assert sdk.get_job(job_id)["state"] == "succeeded"

    r = invoke("job", "show", "j-000000000000")
    assert r.exit_code == 1 and r.stderr.startswith("error: ") and "not found" in r.stderr


def test_failed_job_exits_1(invoke, sdk, fs_bucket, source):
    for path in sorted(source.rglob("*"), reverse=True):  # the source directory goes away
        path.unlink() if path.is_file() else path.rmdir()
    source.rmdir()
    r = invoke("job", "start", "sync", fs_bucket)
    assert r.exit_code == 1, r.output
    job_id = job_id_of(r)
    assert f"job {job_id} failed" in r.stdout
    assert r.stderr.splitlines()[-1].startswith(f"error: job {job_id} failed")
    assert sdk.get_job(job_id)["state"] == "failed"
    r = invoke("job", "wait", job_id)
    assert r.exit_code == 1 and f"error: job {job_id} failed" in r.stderr


def test_refused_deletes_exit_3_and_show_as_deletes_refused(invoke, sdk, fs_bucket, source):
    ok(invoke("job", "start", "prefetch", fs_bucket))
    for name in ("data/f0.bin", "data/f1.bin"):
        (source / name).unlink()
    r = invoke("job", "start", "sync", fs_bucket, "--delete", "--max-delete", "1")
    assert r.exit_code == 3, r.output
    job_id = job_id_of(r)
    assert f"job {job_id} deletes-refused" in r.stdout
    assert r.stderr.splitlines()[-1] == (
        f"error: job {job_id} deletes refused: 2 deletes exceed max-delete 1 (limit 1 of 5 "
        f"cached objects); nothing was deleted")
    assert len(cached_names(sdk, fs_bucket)) == 5

    r = invoke("job", "wait", job_id)
    assert r.exit_code == 3 and "nothing was deleted" in r.stderr, r.output
    assert fields(ok(invoke("job", "show", job_id)).stdout)["state"] == "deletes-refused"
    listed = json.loads(ok(invoke("job", "ls", "--state", "deletes-refused", "--json")).stdout)
    assert job_id in [j["id"] for j in listed]
    mine = next(row.split() for row in ok(invoke("job", "ls")).stdout.splitlines()
                if row.startswith(job_id))
    assert mine[1:3] == ["sync", "deletes-refused"]

    r = ok(invoke("job", "start", "sync", fs_bucket, "--delete"))  # within the limits
    assert f"job {job_id_of(r)} succeeded" in r.stdout
    assert len(cached_names(sdk, fs_bucket)) == 3


def test_a_job_still_running_exits_5_and_an_aborted_one_4(invoke, sdk, fs_bucket):
    r = ok(invoke("job", "start", "prefetch", fs_bucket, "--bandwidth", "1", "--no-wait"))
    job_id = job_id_of(r)  # 1 byte/s: its first object alone takes minutes
    r = invoke("job", "wait", job_id, "--timeout", "0s")
    assert r.exit_code == 5 and f"error: job {job_id} is still " in r.stderr, r.output
    ok(invoke("job", "abort", job_id))
    r = invoke("job", "wait", job_id)
    assert r.exit_code == 4 and f"error: job {job_id} aborted" in r.stderr, r.output


def test_job_help_documents_the_exit_status(invoke):
    for command in ("start", "wait"):
        text = ok(invoke("job", command, "--help")).stdout
        assert "3    deletes-refused" in text and "4    aborted" in text, text
        assert "5    still running when --timeout passed" in text, text


@pytest.mark.parametrize(("args", "message"), [
    (["copy", "{b}"], "a copy job needs a destination"),
    (["prefetch", "{b}", "ais://x"], "takes no destination"),
    (["prefetch", "{b}", "--delete"], "--delete applies to sync jobs only"),
    (["sync", "{b}", "--delete", "--max-delete", "lots"], "--max-delete"),
    (["prefetch", "{b}", "--bandwidth", "fast"], "--bandwidth"),
    (["launch", "{b}"], "Invalid value"),
])
def test_job_start_usage_errors(invoke, sdk, fs_bucket, args, message):
    before = {j["id"] for j in sdk.list_jobs(limit=10000)}
    r = invoke("job", "start", *[a.format(b=fs_bucket) for a in args])
    assert r.exit_code == 2, r.output
    assert message in r.stderr
    assert {j["id"] for j in sdk.list_jobs(limit=10000)} == before


# -- schedules -----------------------------------------------------------------------------------


def test_schedule_add_ls_show_rm(invoke, sdk, fs_bucket):
    name = f"warm-{uuid.uuid4().hex[:6]}"
    r = ok(invoke("schedule", "add", name, "--every", "1h", "prefetch", fs_bucket,
                  "--prefix", "data/"))
    assert r.stdout.startswith(f"added schedule {name}: every 1h, prefetch {fs_bucket}")
    assert "next run: " in r.stdout
    view = sdk.get_schedule(name)
    assert view["every"] == 3600 and view["job"]["prefix"] == "data/" and view["next_run"]

    r = ok(invoke("schedule", "ls"))
    row = next(line for line in r.stdout.splitlines() if line.startswith(name))
    assert "every 1h" in row and f"prefetch {fs_bucket}" in row
    assert name in [v["name"] for v in json.loads(ok(invoke("schedule", "ls", "--json")).stdout)]

    shown = ok(invoke("schedule", "show", name)).stdout
    assert fields(shown)["trigger"] == "every 1h"
    assert "no runs yet" in shown

    r = invoke("schedule", "add", name, "--every", "1h", "prefetch", fs_bucket)
    assert r.exit_code == 1 and "already exists" in r.stderr
    r = ok(invoke("schedule", "add", name, "--cron", "0 2 * * *", "sync", fs_bucket,
                  "--replace"))
    assert sdk.get_schedule(name)["cron"] == "0 2 * * *"

    r = ok(invoke("schedule", "rm", name))
    assert r.stdout.strip() == f"removed schedule {name}"
    assert name not in [v["name"] for v in sdk.list_schedules()]
    r = invoke("schedule", "show", name)
    assert r.exit_code == 1 and f"error: no schedule '{name}'" in r.stderr
    r = invoke("schedule", "rm", name)
    assert r.exit_code == 1


def test_schedule_errors(invoke, sdk, fs_bucket):
    name = f"bad-{uuid.uuid4().hex[:6]}"
    r = invoke("schedule", "add", name, "--cron", "61 * * * *", "sync", fs_bucket)
    assert r.exit_code == 1, r.output
    assert r.stderr.startswith("error: ") and "bad cron expression '61 * * * *'" in r.stderr
    assert name not in [v["name"] for v in sdk.list_schedules()]
    r = invoke("schedule", "add", name, "--cron", "0 2 * * *", "--every", "1h", "sync",
               fs_bucket)
    assert r.exit_code == 2 and "exactly one of --cron" in r.stderr
    r = invoke("schedule", "add", name, "sync", fs_bucket)
    assert r.exit_code == 2 and "exactly one of --cron" in r.stderr
    r = invoke("schedule", "add", name, "--every", "sometimes", "sync", fs_bucket)
    assert r.exit_code == 2 and "--every" in r.stderr
    r = invoke("schedule", "add", name, "--every", "1h", "copy", fs_bucket)
    assert r.exit_code == 2 and "needs a destination" in r.stderr


def test_metrics_count_jobs(sdk, fs_bucket):
    text = sdk.metrics()
    assert "# TYPE aisync_jobs gauge" in text
    assert re.search(r'^aisync_jobs\{state="succeeded"\} \d+$', text, re.M)


# -- through a proxy that is not the primary -------------------------------------------------------


def test_commands_through_a_non_primary_proxy(source, cli_at):
    """Jobs, schedules and freshness live on the primary: another proxy forwards to it."""
    with LocalCluster(targets=2, proxies=2) as c:
        invoke = cli_at(c.proxies[1].url)

        uri = "fs://via-other-proxy"
        ok(invoke("bucket", "create", uri, "--path", str(source)))
        ok(invoke("bucket", "props", uri, "consistency=synchronize"))
        job_id = job_id_of(ok(invoke("job", "start", "sync", uri)))
        assert job_id in ok(invoke("job", "ls")).stdout
        assert report_rows(ok(invoke("job", "report", job_id)).stdout) == \
            [("added", n) for n in sorted(FILES)]
        shown = fields(ok(invoke("bucket", "show", uri)).stdout)
        assert shown["consistency"] == "synchronize"
        assert shown["freshness"].endswith(f"verified by job {job_id}; last job {job_id} "
                                           "succeeded")
        ok(invoke("schedule", "add", "nightly", "--cron", "0 2 * * *", "sync", uri))
        assert "nightly" in ok(invoke("schedule", "ls")).stdout
        ok(invoke("schedule", "rm", "nightly"))
