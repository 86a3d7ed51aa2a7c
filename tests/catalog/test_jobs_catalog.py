"""The sync engine's catalog records (jobs, job reports, schedule runs, bucket sync state), each
test run on SQLite and on a real PostgreSQL (see ``conftest.py``); plus migration 0002 down/up
and byte-ordered report names on a PostgreSQL database whose default collation is not bytewise.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from aisync.catalog import Catalog, head_revision
from aisync.util.errors import InvalidArgument, JobNotFound, NotFound

SYNC_TABLES = {"jobs", "job_reports", "schedule_runs", "bucket_sync_state"}

#: Names whose UTF-8 byte order differs from case-insensitive, locale and UTF-16 orders.
TRICKY_NAMES = ["a", "B", "ä", "z", "a/b", "a b", "A", "\uffff", "😀", "ﬁ", "é/x", "0", "~"]

T0 = datetime(2024, 12, 1, 12, 0, 0, tzinfo=UTC)


def _job(job_id: str = "j1", **extra: object) -> dict[str, object]:
    return {"id": job_id, "kind": "sync", "bucket": "aws/datasets", **extra}


def _when(value: str | None) -> datetime:
    assert isinstance(value, str)
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() == timedelta(0), value  # ISO string in UTC with explicit offset
    return parsed


def _count_reports(cat: Catalog, job_id: str | None = None) -> int:
    stmt = sa.select(sa.func.count()).select_from(sa.table("job_reports", sa.column("job_id")))
    if job_id is not None:
        stmt = stmt.where(sa.column("job_id") == job_id)
    with cat.engine.connect() as conn:
        return int(conn.execute(stmt).scalar_one())


# ------------------------------------------------------------------------------------ migrations


def test_head_creates_sync_tables(catalog: Catalog) -> None:
    assert head_revision() == "0004"
    assert catalog.current_revision() == "0004"
    insp = sa.inspect(catalog.engine)
    assert SYNC_TABLES <= set(insp.get_table_names())
    assert {i["name"] for i in insp.get_indexes("jobs")} == {"ix_jobs_state", "ix_jobs_created_at"}
    (ix,) = insp.get_indexes("schedule_runs")
    assert ix["column_names"] == ["schedule", "fired_at"]
    (fk,) = insp.get_foreign_keys("job_reports")
    assert fk["referred_table"] == "jobs" and fk["options"].get("ondelete") == "CASCADE"
    assert insp.get_pk_constraint("job_reports")["constrained_columns"] == ["job_id", "name"]


def test_downgrade_to_0001_and_upgrade_again(catalog: Catalog) -> None:
    assert catalog.save_document("cluster_map", 1, {"n": 1})
    catalog.create_job(_job())
    catalog.record_reports("j1", [{"name": "x", "action": "added"}])
    catalog.downgrade("0001")
    assert catalog.current_revision() == "0001"
    tables = set(sa.inspect(catalog.engine).get_table_names())
    assert not SYNC_TABLES & tables and "documents" in tables
    assert catalog.latest_document("cluster_map") == (1, {"n": 1})  # 0001's data survives
    catalog.upgrade()
    assert catalog.current_revision() == "0004"
    with pytest.raises(JobNotFound):  # tables really recreated, empty
        catalog.get_job("j1")
    catalog.create_job(_job())
    assert catalog.record_reports("j1", [{"name": "x", "action": "added"}]) == 1
    assert catalog.latest_document("cluster_map") == (1, {"n": 1})


def test_postgres_name_column_is_collate_c(catalog: Catalog) -> None:
    if catalog.dialect != "postgresql":
        pytest.skip("PostgreSQL only (SQLite's BINARY collation is byte order already)")
    stmt = sa.text(
        "SELECT collation_name FROM information_schema.columns "
        "WHERE table_name = 'job_reports' AND column_name = 'name'"
    )
    with catalog.engine.connect() as conn:
        assert conn.execute(stmt).scalar_one() == "C"


@pytest.mark.postgres
def test_byte_order_on_a_database_with_a_linguistic_default_collation(request) -> None:
    """The test server's databases default to collation C; a production one may not."""
    server = request.getfixturevalue("pg_server")
    name = f"icu_{secrets.token_hex(6)}"
    admin = sa.create_engine(server.url(), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            try:
                conn.exec_driver_sql(
                    f"CREATE DATABASE {name} TEMPLATE template0 "
                    "LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C'"
                )
            except sa.exc.DBAPIError as exc:
                pytest.skip(f"no ICU collations on this server: {exc}")
        with Catalog(server.url(name)) as cat:
            cat.upgrade()
            with cat.engine.connect() as conn:
                linguistic = conn.exec_driver_sql(
                    "SELECT x FROM (VALUES ('a'), ('B'), ('ä'), ('z')) t(x) ORDER BY x"
                ).scalars()
                assert list(linguistic) == ["a", "ä", "B", "z"]  # the database default is not C
            cat.create_job(_job())
            cat.record_reports("j1", [{"name": n, "action": "added"} for n in TRICKY_NAMES])
            assert [r["name"] for r in cat.report_page("j1")] == sorted(TRICKY_NAMES)
            page = cat.report_page("j1", after="a", limit=2)
            assert [r["name"] for r in page] == sorted(n for n in TRICKY_NAMES if n > "a")[:2]
    finally:
        admin.dispose()
        server.drop_database(name)


# ------------------------------------------------------------------------------------------ jobs


def test_create_and_get_job_with_defaults(catalog: Catalog) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    job = catalog.create_job(_job())
    assert job == catalog.get_job("j1")
    assert {k: job[k] for k in job if k != "created_at"} == {
        "id": "j1",
        "kind": "sync",
        "state": "pending",
        "bucket": "aws/datasets",
        "destination": None,
        "params": {},
        "dry_run": False,
        "schedule": None,
        "started_at": None,
        "finished_at": None,
        "progress": {},
        "checkpoint": None,
        "error": None,
    }
    assert before <= _when(job["created_at"]) <= datetime.now(UTC) + timedelta(seconds=5)


def test_create_job_with_every_field(catalog: Catalog) -> None:
    params = {"prefix": "train/", "deep": {"a": [1, 2, {"b": None}]}, "ünï": "🚀"}
    job = catalog.create_job(
        _job(
            "copy-1",
            kind="copy",
            state="running",
            destination="gcp/mirror",
            params=params,
            dry_run=True,
            schedule="nightly",
            created_at=T0,
            progress={"objects": 0},
        )
    )
    assert job["kind"] == "copy" and job["state"] == "running"
    assert job["destination"] == "gcp/mirror" and job["schedule"] == "nightly"
    assert job["params"] == params and job["dry_run"] is True
    assert job["progress"] == {"objects": 0}
    assert job["created_at"] == "2024-12-01T12:00:00+00:00"
    assert catalog.get_job("copy-1") == job


def test_duplicate_job_id_is_rejected(catalog: Catalog) -> None:
    catalog.create_job(_job(params={"first": True}))
    with pytest.raises(InvalidArgument, match="already exists"):
        catalog.create_job(_job(kind="evict", params={"second": True}))
    job = catalog.get_job("j1")
    assert job["kind"] == "sync" and job["params"] == {"first": True}


@pytest.mark.parametrize(
    "job",
    [
        {"kind": "sync", "bucket": "b"},  # no id
        _job(id=""),
        _job(id="x" * 33),
        _job(kind="rsync"),
        _job(state="done"),
        _job(bucket=""),
        _job(bucket="b" * 513),
        _job(params=[1]),
        _job(params={"x": float("nan")}),
        _job(dry_run="yes"),
        _job(schedule="s" * 129),
        _job(created_at="yesterday"),
        _job(owner="me"),  # unknown field
        ["not", "a", "dict"],
    ],
)
def test_invalid_jobs_are_rejected(catalog: Catalog, job: object) -> None:
    with pytest.raises(InvalidArgument):
        catalog.create_job(job)  # type: ignore[arg-type]
    assert catalog.list_jobs() == []


def test_update_job(catalog: Catalog) -> None:
    catalog.create_job(_job())
    started = datetime(2024, 12, 1, 14, 30, tzinfo=timezone(timedelta(hours=2)))  # 12:30 UTC
    job = catalog.update_job("j1", state="running", started_at=started, progress={"done": 1})
    assert job["state"] == "running" and job["progress"] == {"done": 1}
    assert job["started_at"] == "2024-12-01T12:30:00+00:00"
    job = catalog.update_job(
        "j1",
        checkpoint="train/b.bin",
        error="boom",
        finished_at="2024-12-01T13:00:00.250000+00:00",  # ISO strings are accepted too
        state="failed",
    )
    assert job["checkpoint"] == "train/b.bin" and job["error"] == "boom"
    assert job["finished_at"] == "2024-12-01T13:00:00.250000+00:00"
    assert job["started_at"] == "2024-12-01T12:30:00+00:00"  # untouched fields stay
    naive = catalog.update_job("j1", error=None, finished_at=datetime(2024, 12, 2, 8, 0))
    assert naive["error"] is None and naive["finished_at"] == "2024-12-02T08:00:00+00:00"
    assert catalog.update_job("j1") == catalog.get_job("j1")  # nothing to change
    assert catalog.get_job("j1") == naive


def test_update_job_rejects_bad_fields(catalog: Catalog) -> None:
    catalog.create_job(_job())
    for fields in (
        {"state": "done"},
        {"kind": "copy"},  # not updatable
        {"progress": None},
        {"progress": [1]},
        {"started_at": 12},
        {"checkpoint": 3},
    ):
        with pytest.raises(InvalidArgument):
            catalog.update_job("j1", **fields)
    assert catalog.get_job("j1")["state"] == "pending"


def test_missing_job_raises_job_not_found(catalog: Catalog) -> None:
    with pytest.raises(JobNotFound) as info:
        catalog.get_job("nope")
    assert isinstance(info.value, NotFound) and isinstance(info.value, FileNotFoundError)
    assert info.value.code == "JobNotFound" and info.value.status == 404
    with pytest.raises(JobNotFound):
        catalog.update_job("nope", state="running")
    with pytest.raises(JobNotFound):
        catalog.update_job("nope")
    with pytest.raises(JobNotFound):
        catalog.record_reports("nope", [{"name": "a", "action": "added"}])
    assert catalog.report_page("nope") == [] and catalog.report_counts("nope") == {}
    assert catalog.reported_names("nope", ["a"]) == set()


def test_list_jobs_newest_first_with_filters(catalog: Catalog) -> None:
    specs = [
        ("j1", "aws/a", "succeeded"),
        ("j2", "aws/b", "running"),
        ("j3", "aws/a", "failed"),
        ("j4", "aws/a", "pending"),
        ("j5", "aws/b", "succeeded"),
    ]
    for i, (job_id, bucket, state) in enumerate(specs):
        catalog.create_job(
            _job(job_id, bucket=bucket, state=state, created_at=T0 + timedelta(minutes=i))
        )
    ids = lambda jobs: [j["id"] for j in jobs]  # noqa: E731
    assert ids(catalog.list_jobs()) == ["j5", "j4", "j3", "j2", "j1"]
    assert ids(catalog.list_jobs(limit=2)) == ["j5", "j4"]
    assert ids(catalog.list_jobs(states=["succeeded", "failed"])) == ["j5", "j3", "j1"]
    assert ids(catalog.list_jobs(states="running")) == ["j2"]  # a lone string is one state
    assert ids(catalog.list_jobs(states=iter(["pending"]))) == ["j4"]
    assert ids(catalog.list_jobs(states=[])) == []
    assert ids(catalog.list_jobs(bucket="aws/a")) == ["j4", "j3", "j1"]
    assert ids(catalog.list_jobs(bucket="aws/a", states=["succeeded"])) == ["j1"]
    assert catalog.list_jobs(bucket="aws/none") == []
    for limit in (0, -1, True, "5"):
        with pytest.raises(InvalidArgument):
            catalog.list_jobs(limit=limit)  # type: ignore[arg-type]


def test_jobs_created_in_the_same_instant_list_deterministically(catalog: Catalog) -> None:
    for job_id in ("b", "c", "a"):
        catalog.create_job(_job(job_id, created_at=T0))
    assert [j["id"] for j in catalog.list_jobs()] == ["c", "b", "a"]


def test_prune_jobs_keeps_unfinished_and_cascades_reports(catalog: Catalog) -> None:
    states = ["succeeded", "failed", "running", "aborted", "pending", "succeeded", "succeeded"]
    for i, state in enumerate(states):
        job_id = f"j{i}"
        catalog.create_job(_job(job_id, state=state, created_at=T0 + timedelta(hours=i)))
        rows = [{"name": f"obj-{k}", "action": "added", "size": k} for k in range(3)]
        catalog.record_reports(job_id, rows)
    assert _count_reports(catalog) == 21
    assert catalog.prune_jobs(keep=10) == 0
    assert catalog.prune_jobs(keep=2) == 3  # finished: j0 j1 j3 j5 j6 -> keep j6 j5
    assert sorted(j["id"] for j in catalog.list_jobs()) == ["j2", "j4", "j5", "j6"]
    for gone in ("j0", "j1", "j3"):
        assert _count_reports(catalog, gone) == 0  # ON DELETE CASCADE
        with pytest.raises(JobNotFound):
            catalog.get_job(gone)
    assert _count_reports(catalog) == 12
    assert catalog.report_counts("j5") == {"added": 3}
    assert catalog.prune_jobs(keep=0) == 2
    assert sorted(j["id"] for j in catalog.list_jobs()) == ["j2", "j4"]  # unfinished stay
    assert catalog.prune_jobs() == 0  # default keep=1000
    for keep in (-1, True, "3"):
        with pytest.raises(InvalidArgument):
            catalog.prune_jobs(keep=keep)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------- reports


def test_reports_page_in_byte_order(catalog: Catalog) -> None:
    catalog.create_job(_job())
    rows = [{"name": n, "action": "added", "size": len(n)} for n in reversed(TRICKY_NAMES)]
    assert catalog.record_reports("j1", rows) == len(TRICKY_NAMES)
    expected = sorted(TRICKY_NAMES, key=lambda n: n.encode())
    assert expected == sorted(TRICKY_NAMES)  # Python's code-point order is UTF-8 byte order
    assert expected[:4] == ["0", "A", "B", "a"] and expected[-2:] == ["\uffff", "😀"]
    assert [r["name"] for r in catalog.report_page("j1")] == expected
    paged: list[str] = []
    after = None
    while page := catalog.report_page("j1", after=after, limit=3):
        assert len(page) <= 3
        paged += [r["name"] for r in page]
        after = page[-1]["name"]
    assert paged == expected
    assert [r["name"] for r in catalog.report_page("j1", after="a", limit=4)] == [
        "a b",
        "a/b",
        "z",
        "~",
    ]
    assert catalog.report_page("j1", after="😀") == []
    first = catalog.report_page("j1", limit=1)[0]
    assert first["job_id"] == "j1" and first["name"] == "0" and first["size"] == 1
    assert first["action"] == "added" and first["reason"] is None and first["version"] is None
    _when(first["at"])


def test_reports_upsert_counts_and_action_filter(catalog: Catalog) -> None:
    catalog.create_job(_job())
    catalog.create_job(_job("other"))
    version = {"etag": "abc", "generation": 2**40}
    n = catalog.record_reports(
        "j1",
        [
            {"name": "a", "action": "added", "size": 10, "version": version},
            {"name": "b", "action": "failed", "reason": "timeout"},
            {"name": "c", "action": "would-add", "at": T0},
            {"name": "b", "action": "skipped", "reason": "unchanged"},  # same batch: last wins
        ],
    )
    assert n == 3
    catalog.record_reports("other", [{"name": "a", "action": "deleted"}])
    by_name = {r["name"]: r for r in catalog.report_page("j1")}
    assert by_name["a"]["version"] == version and by_name["a"]["size"] == 10
    assert by_name["b"]["action"] == "skipped" and by_name["b"]["reason"] == "unchanged"
    assert by_name["c"]["at"] == "2024-12-01T12:00:00+00:00"
    assert catalog.report_counts("j1") == {"added": 1, "skipped": 1, "would-add": 1}
    # recording again replaces the whole row
    catalog.record_reports("j1", [{"name": "a", "action": "failed", "reason": "checksum"}])
    (a,) = catalog.report_page("j1", limit=1)
    assert (a["action"], a["reason"], a["size"], a["version"]) == ("failed", "checksum", None, None)
    assert catalog.report_counts("j1") == {"failed": 1, "skipped": 1, "would-add": 1}
    assert catalog.report_counts("other") == {"deleted": 1}
    failed = catalog.report_page("j1", actions=["failed", "would-add"])
    assert [r["name"] for r in failed] == ["a", "c"]
    assert [r["name"] for r in catalog.report_page("j1", actions="skipped")] == ["b"]
    assert catalog.report_page("j1", actions=[]) == []
    assert catalog.record_reports("j1", []) == 0


def test_record_reports_batch_of_thousands(catalog: Catalog) -> None:
    catalog.create_job(_job())
    names = [f"shard-{i:05d}/part.tar" for i in range(2500)]
    for start in range(0, len(names), 1000):
        batch = [
            {"name": n, "action": "copied", "size": i, "version": {"etag": f"e{i}"}}
            for i, n in enumerate(names[start : start + 1000], start)
        ]
        assert catalog.record_reports("j1", batch) == len(batch)
    catalog.record_reports("j1", ({"name": n, "action": "skipped"} for n in names[:1000]))
    assert catalog.report_counts("j1") == {"skipped": 1000, "copied": 1500}
    seen, after = [], None
    while page := catalog.report_page("j1", after=after):
        seen += [r["name"] for r in page]
        after = seen[-1]
    assert seen == names


def test_reported_names(catalog: Catalog) -> None:
    catalog.create_job(_job())
    catalog.create_job(_job("other"))
    done = [f"o{i:04d}" for i in range(0, 1200, 2)]  # even numbers
    catalog.record_reports("j1", [{"name": n, "action": "added"} for n in done])
    catalog.record_reports("j1", [{"name": "o0000", "action": "failed"}])
    catalog.record_reports("other", [{"name": "o0001", "action": "added"}])
    asked = [f"o{i:04d}" for i in range(1200)] + ["o0002"]  # > one IN chunk, a duplicate
    assert catalog.reported_names("j1", asked) == set(done)
    assert catalog.reported_names("j1", []) == set()
    assert catalog.reported_names("j1", ["o0000", "o0002"], actions=["added"]) == {"o0002"}
    assert catalog.reported_names("other", ["o0000", "o0001"]) == {"o0001"}


@pytest.mark.parametrize(
    "row",
    [
        {"action": "added"},
        {"name": "", "action": "added"},
        {"name": "x" * 1025, "action": "added"},
        {"name": "a"},
        {"name": "a", "action": "x" * 17},
        {"name": "a", "action": "added", "size": -1},
        {"name": "a", "action": "added", "size": 1.5},
        {"name": "a", "action": "added", "version": {"x": object()}},
        {"name": "a", "action": "added", "etag": "unknown field"},
        "a",
    ],
)
def test_invalid_report_rows_write_nothing(catalog: Catalog, row: object) -> None:
    catalog.create_job(_job())
    with pytest.raises(InvalidArgument):
        catalog.record_reports("j1", [{"name": "ok", "action": "added"}, row])  # type: ignore[list-item]
    assert catalog.report_counts("j1") == {}


def test_longest_name_fits(catalog: Catalog) -> None:
    catalog.create_job(_job())
    name = "ä" * 512  # 1024 bytes of UTF-8, 512 characters
    longest = "n" * 1024
    catalog.record_reports(
        "j1", [{"name": name, "action": "added"}, {"name": longest, "action": "added"}]
    )
    assert [r["name"] for r in catalog.report_page("j1")] == [longest, name]


def test_concurrent_report_writers_and_job_updates(catalog: Catalog) -> None:
    threads = 6
    for t in range(threads):
        catalog.create_job(_job(f"j{t}"))
    barrier = threading.Barrier(threads)

    def worker(t: int) -> None:
        barrier.wait()
        for batch in range(5):
            rows = [{"name": f"{batch}/{k}", "action": "added"} for k in range(50)]
            catalog.record_reports(f"j{t}", rows)
            catalog.record_reports("j0", [{"name": f"shared/{t}/{batch}", "action": "copied"}])
            catalog.update_job(f"j{t}", state="running", progress={"batch": batch})
            catalog.report_page(f"j{t}", limit=10)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, range(threads)))
    for t in range(threads):
        counts = catalog.report_counts(f"j{t}")
        assert counts["added"] == 250
        assert catalog.get_job(f"j{t}")["progress"] == {"batch": 4}
    assert catalog.report_counts("j0")["copied"] == threads * 5


# --------------------------------------------------------------------------------- schedule runs


def test_schedule_runs_newest_first(catalog: Catalog) -> None:
    first = catalog.record_schedule_run("nightly", T0, "started", job_id="j1")
    assert first["schedule"] == "nightly" and first["outcome"] == "started"
    assert first["job_id"] == "j1" and first["reason"] is None
    assert first["fired_at"] == "2024-12-01T12:00:00+00:00" and isinstance(first["id"], int)
    second = catalog.record_schedule_run(
        "nightly", "2024-12-02T12:00:00+00:00", "skipped", reason="previous job still running"
    )
    assert second["id"] > first["id"]
    catalog.record_schedule_run("hourly", T0 + timedelta(hours=1), "failed", reason="no source")
    for day in range(3, 30):
        catalog.record_schedule_run("nightly", T0 + timedelta(days=day), "started")
    runs = catalog.schedule_runs("nightly")
    assert len(runs) == 20  # default limit
    assert [_when(r["fired_at"]) for r in runs] == [
        T0 + timedelta(days=d) for d in range(29, 9, -1)
    ]
    oldest_two = catalog.schedule_runs("nightly", limit=100)[-2:]
    assert oldest_two == [second, first]
    (hourly,) = catalog.schedule_runs("hourly")
    assert hourly["outcome"] == "failed" and hourly["reason"] == "no source"
    assert catalog.schedule_runs("never") == []
    with pytest.raises(InvalidArgument):
        catalog.record_schedule_run("nightly", T0, "exploded")
    with pytest.raises(InvalidArgument):
        catalog.record_schedule_run("", T0, "started")
    with pytest.raises(InvalidArgument):
        catalog.record_schedule_run("nightly", None, "started")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        catalog.schedule_runs("nightly", limit=0)


# ----------------------------------------------------------------------------- bucket sync state


def test_sync_state_upsert(catalog: Catalog) -> None:
    assert catalog.get_sync_state("aws/datasets") is None
    assert catalog.list_sync_states() == []
    first = catalog.set_sync_state("aws/datasets", last_job_id="j1", last_job_state="running")
    assert first == catalog.get_sync_state("aws/datasets")
    assert first["bucket"] == "aws/datasets" and first["verified_at"] is None
    assert first["last_job_id"] == "j1" and first["last_job_state"] == "running"
    assert first["source_objects"] is None and first["job_id"] is None
    _when(first["updated_at"])
    second = catalog.set_sync_state(
        "aws/datasets",
        verified_at=T0,
        job_id="j1",
        source_objects=12_345,
        source_bytes=2**50,
        last_job_state="succeeded",
    )
    assert second["last_job_id"] == "j1"  # not given: kept
    assert second["last_job_state"] == "succeeded" and second["job_id"] == "j1"
    assert second["verified_at"] == "2024-12-01T12:00:00+00:00"
    assert (second["source_objects"], second["source_bytes"]) == (12_345, 2**50)
    assert _when(second["updated_at"]) >= _when(first["updated_at"])
    third = catalog.set_sync_state("aws/datasets", last_job_id="j2", last_job_state=None)
    assert third["last_job_id"] == "j2" and third["last_job_state"] is None
    assert third["verified_at"] == second["verified_at"]
    catalog.set_sync_state("gcp/models")
    assert [s["bucket"] for s in catalog.list_sync_states()] == ["aws/datasets", "gcp/models"]
    assert catalog.list_sync_states()[0] == third
    for fields in ({"source_bytes": -1}, {"last_job_state": "done"}, {"owner": "x"}):
        with pytest.raises(InvalidArgument):
            catalog.set_sync_state("aws/datasets", **fields)
    with pytest.raises(InvalidArgument):
        catalog.set_sync_state("")
    assert catalog.get_sync_state("aws/datasets") == third


@pytest.fixture
def two_catalogs(catalog_url: str) -> Iterator[tuple[Catalog, Catalog]]:
    first, second = Catalog(catalog_url), Catalog(catalog_url)
    first.upgrade()
    try:
        yield first, second
    finally:
        first.close()
        second.close()


def test_records_persist_across_catalog_instances(two_catalogs: tuple[Catalog, Catalog]) -> None:
    first, second = two_catalogs
    first.create_job(_job(dry_run=True))
    first.record_reports("j1", [{"name": "ä", "action": "would-add", "size": 2**40}])
    first.set_sync_state("aws/datasets", source_objects=1)
    assert second.get_job("j1")["dry_run"] is True
    assert second.report_page("j1")[0]["size"] == 2**40
    assert second.get_sync_state("aws/datasets")["source_objects"] == 1  # type: ignore[index]


def test_feed_cursor_in_sync_state(catalog: Catalog) -> None:
    row = catalog.set_sync_state("ais/ckpt", feed_source="ais://@zone-a/ckpt",
                                 feed_cursor=1_795_000_000_000_000_000)
    assert row["feed_cursor"] == 1_795_000_000_000_000_000
    assert row["feed_source"] == "ais://@zone-a/ckpt"
    row = catalog.set_sync_state("ais/ckpt", last_job_id="j9")
    assert row["feed_cursor"] == 1_795_000_000_000_000_000  # untouched by other updates
    assert catalog.set_sync_state("ais/ckpt", feed_cursor=None)["feed_cursor"] is None
    with pytest.raises(InvalidArgument):
        catalog.set_sync_state("ais/ckpt", feed_cursor=-1)
    catalog.downgrade("0002")
    catalog.upgrade()
    assert catalog.get_sync_state("ais/ckpt")["feed_cursor"] is None
