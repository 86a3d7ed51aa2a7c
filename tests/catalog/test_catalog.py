"""Catalog tests, each run on SQLite and on a real PostgreSQL (see ``conftest.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from aisync.catalog import (
    MIGRATIONS_DIR,
    Base,
    Catalog,
    Document,
    head_revision,
    upgrade_to_head,
)
from aisync.util.errors import InvalidArgument

REPO = Path(__file__).resolve().parents[2]

NESTED = {
    "version": 3,
    "nodes": {
        "t1": {"url": "http://127.0.0.1:9001", "mountpaths": ["/a", "/b"], "weight": 1.5},
        "t2": {"url": "http://127.0.0.1:9002", "mountpaths": [], "maintenance": True},
    },
    "primary": None,
    "tags": ["ünïcødé", "emoji 🚀", ""],
    "deep": {"a": {"b": {"c": {"d": [1, [2, [3, {"e": False}]]]}}}},
    "big": 2**62,
}


def _tables(cat: Catalog) -> set[str]:
    return set(sa.inspect(cat.engine).get_table_names())


def _alembic_versions(cat: Catalog) -> list[str]:
    with cat.engine.connect() as conn:
        return list(conn.scalars(sa.text("SELECT version_num FROM alembic_version")))


# ------------------------------------------------------------------------------------ migrations


def test_migrations_dir_is_next_to_the_package() -> None:
    assert MIGRATIONS_DIR == REPO / "migrations"
    assert (MIGRATIONS_DIR / "env.py").is_file()
    assert head_revision() == "0004"


def test_fresh_upgrade_creates_schema_and_records_head(catalog_url: str) -> None:
    cat = Catalog(catalog_url)
    try:
        assert "documents" not in _tables(cat)
        assert cat.current_revision() is None
        cat.upgrade()
        assert {"documents", "alembic_version"} <= _tables(cat)
        insp = sa.inspect(cat.engine)
        cols = {c["name"]: c for c in insp.get_columns("documents")}
        assert set(cols) == {"kind", "version", "body", "created_at"}
        assert all(not c["nullable"] for c in cols.values())
        assert isinstance(cols["version"]["type"], sa.BigInteger)
        assert isinstance(cols["kind"]["type"], sa.String) and cols["kind"]["type"].length == 64
        pk = insp.get_pk_constraint("documents")
        assert pk["constrained_columns"] == ["kind", "version"]
        assert pk["name"] == "pk_documents" or cat.dialect == "sqlite"  # SQLite may not keep it
        assert _alembic_versions(cat) == [head_revision()]
        assert cat.current_revision() == head_revision()
    finally:
        cat.close()


def test_upgrade_is_idempotent(catalog_url: str) -> None:
    cat = Catalog(catalog_url)
    try:
        cat.upgrade()
        assert cat.save_document("cluster_map", 1, {"n": 1})
        cat.upgrade()
        cat.upgrade()
        assert _alembic_versions(cat) == [head_revision()]
        assert cat.latest_document("cluster_map") == (1, {"n": 1})
    finally:
        cat.close()


def test_models_match_migrations(catalog: Catalog) -> None:
    with catalog.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, Base.metadata)
    assert diff == []


def test_downgrade_to_base_then_upgrade(catalog: Catalog) -> None:
    assert catalog.save_document("bucket_map", 5, {"b": 1})
    catalog.downgrade("base")
    assert "documents" not in _tables(catalog)
    assert catalog.current_revision() is None
    assert _alembic_versions(catalog) == []
    catalog.upgrade()
    assert "documents" in _tables(catalog)
    assert catalog.current_revision() == head_revision()
    assert catalog.latest_document("bucket_map") is None  # the table was really recreated
    assert catalog.save_document("bucket_map", 5, {"b": 2})
    assert catalog.latest_document("bucket_map") == (5, {"b": 2})


def test_concurrent_upgrades_of_a_fresh_database(catalog_url: str) -> None:
    cats = [Catalog(catalog_url) for _ in range(4)]
    barrier = threading.Barrier(len(cats))

    def up(cat: Catalog) -> str | None:
        barrier.wait()
        cat.upgrade()
        return cat.current_revision()

    try:
        with ThreadPoolExecutor(len(cats)) as pool:
            revisions = list(pool.map(up, cats))
        assert revisions == [head_revision()] * len(cats)
        assert _alembic_versions(cats[0]) == [head_revision()]
    finally:
        for cat in cats:
            cat.close()


def test_upgrade_to_head_does_not_depend_on_cwd(
    catalog_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    upgrade_to_head(catalog_url)
    upgrade_to_head(catalog_url)
    with Catalog(catalog_url) as cat:
        assert cat.current_revision() == head_revision()
        assert "documents" in _tables(cat)


# ------------------------------------------------------------------------------------- documents


def test_round_trip_nested_json(catalog: Catalog) -> None:
    assert catalog.latest_document("cluster_map") is None
    assert catalog.save_document("cluster_map", 3, NESTED) is True
    latest = catalog.latest_document("cluster_map")
    assert latest is not None
    version, body = latest
    assert version == 3 and isinstance(version, int)
    assert body == NESTED
    assert body is not NESTED
    assert catalog.get_document("cluster_map", 3) == NESTED
    assert catalog.get_document("cluster_map", 4) is None


def test_created_at_is_set(catalog: Catalog) -> None:
    catalog.save_document("cluster_map", 1, {})
    with catalog.session() as session:
        doc = session.get(Document, ("cluster_map", 1))
        assert doc is not None
        assert isinstance(doc.created_at, datetime)
        assert doc.created_at.year >= 2024
        assert doc.body == {}


def test_latest_picks_highest_version_saved_out_of_order(catalog: Catalog) -> None:
    for v in (5, 2, 9, 1, 7, 3):
        assert catalog.save_document("cluster_map", v, {"v": v})
    assert catalog.latest_document("cluster_map") == (9, {"v": 9})
    assert catalog.save_document("cluster_map", 10, {"v": 10})
    assert catalog.latest_document("cluster_map") == (10, {"v": 10})
    assert catalog.list_versions("cluster_map") == [1, 2, 3, 5, 7, 9, 10]


def test_versions_order_numerically_not_lexically(catalog: Catalog) -> None:
    for v in (9, 10, 100, 2**40):
        catalog.save_document("cluster_map", v, {"v": v})
    assert catalog.latest_document("cluster_map") == (2**40, {"v": 2**40})


def test_duplicate_version_is_not_overwritten(catalog: Catalog) -> None:
    assert catalog.save_document("bucket_map", 4, {"first": True}) is True
    assert catalog.save_document("bucket_map", 4, {"second": True}) is False
    assert catalog.save_document("bucket_map", 4, {"first": True}) is False
    assert catalog.latest_document("bucket_map") == (4, {"first": True})
    assert catalog.list_versions("bucket_map") == [4]


def test_kinds_are_independent(catalog: Catalog) -> None:
    assert catalog.save_document("cluster_map", 7, {"k": "cluster"})
    assert catalog.save_document("bucket_map", 7, {"k": "bucket"})  # same version, other kind
    assert catalog.save_document("bucket_map", 2, {"k": "bucket2"})
    assert catalog.latest_document("cluster_map") == (7, {"k": "cluster"})
    assert catalog.latest_document("bucket_map") == (7, {"k": "bucket"})
    assert catalog.latest_document("users") is None
    assert catalog.prune_documents("bucket_map", keep=1) == 1
    assert catalog.list_versions("cluster_map") == [7]
    assert catalog.list_versions("bucket_map") == [7]


def test_prune_keeps_newest(catalog: Catalog) -> None:
    for v in range(1, 31):
        catalog.save_document("cluster_map", v, {"v": v})
    catalog.save_document("bucket_map", 1, {})
    assert catalog.prune_documents("cluster_map", keep=5) == 25
    assert catalog.list_versions("cluster_map") == [26, 27, 28, 29, 30]
    assert catalog.prune_documents("cluster_map", keep=5) == 0
    assert catalog.prune_documents("cluster_map", keep=50) == 0
    assert catalog.prune_documents("cluster_map") == 0  # default keep=20
    assert catalog.latest_document("cluster_map") == (30, {"v": 30})
    assert catalog.prune_documents("nothing_here", keep=1) == 0
    assert catalog.prune_documents("cluster_map", keep=0) == 5
    assert catalog.latest_document("cluster_map") is None
    assert catalog.list_versions("bucket_map") == [1]


def test_prune_default_keeps_twenty(catalog: Catalog) -> None:
    for v in range(100, 125):
        catalog.save_document("bucket_map", v, {"v": v})
    assert catalog.prune_documents("bucket_map") == 5
    assert catalog.list_versions("bucket_map") == list(range(105, 125))


def test_concurrent_saves_from_threads(catalog: Catalog) -> None:
    threads, per_thread = 8, 10
    barrier = threading.Barrier(threads)

    def worker(t: int) -> list[bool]:
        barrier.wait()
        results = []
        for i in range(per_thread):
            v = i * threads + t + 1  # distinct across threads, interleaved
            results.append(catalog.save_document("cluster_map", v, {"v": v, "thread": t}))
            catalog.latest_document("cluster_map")  # readers interleave with writers
        return results

    with ThreadPoolExecutor(threads) as pool:
        results = [r for rs in pool.map(worker, range(threads)) for r in rs]
    total = threads * per_thread
    assert results == [True] * total
    assert catalog.list_versions("cluster_map") == list(range(1, total + 1))
    latest = catalog.latest_document("cluster_map")
    assert latest is not None and latest[0] == total
    assert latest[1]["v"] == total


def test_concurrent_duplicate_saves_exactly_one_wins(catalog: Catalog) -> None:
    threads = 8
    barrier = threading.Barrier(threads)

    def worker(t: int) -> bool:
        barrier.wait()
        return catalog.save_document("bucket_map", 42, {"writer": t})

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(worker, range(threads)))
    assert results.count(True) == 1
    winner = results.index(True)
    assert catalog.latest_document("bucket_map") == (42, {"writer": winner})


def test_data_persists_across_reopen(catalog_url: str) -> None:
    with Catalog(catalog_url) as first:
        first.upgrade()
        assert first.save_document("cluster_map", 11, NESTED)
        assert first.save_document("bucket_map", 2, {"buckets": {"b1": {"provider": "s3"}}})
    second = Catalog(catalog_url)
    try:
        second.upgrade()  # what a restarting node does
        assert second.latest_document("cluster_map") == (11, NESTED)
        assert second.latest_document("bucket_map") == (2, {"buckets": {"b1": {"provider": "s3"}}})
        assert second.save_document("cluster_map", 11, {}) is False
    finally:
        second.close()


@pytest.mark.parametrize(
    ("kind", "version", "body"),
    [
        ("", 1, {}),
        ("x" * 65, 1, {}),
        (None, 1, {}),
        ("k", -1, {}),
        ("k", True, {}),
        ("k", 1.0, {}),
        ("k", 2**63, {}),
        ("k", 1, [1, 2]),
        ("k", 1, {"x": object()}),
        ("k", 1, {"x": float("nan")}),
    ],
)
def test_invalid_arguments_are_rejected(
    catalog: Catalog, kind: object, version: object, body: object
) -> None:
    with pytest.raises(InvalidArgument):
        catalog.save_document(kind, version, body)  # type: ignore[arg-type]
    assert catalog.latest_document("k") is None


def test_invalid_prune_keep_is_rejected(catalog: Catalog) -> None:
    catalog.save_document("k", 1, {})
    for keep in (-1, True, "3"):
        with pytest.raises(InvalidArgument):
            catalog.prune_documents("k", keep=keep)  # type: ignore[arg-type]
    assert catalog.list_versions("k") == [1]


# ---------------------------------------------------------------------------------- SQLite only


def test_sqlite_file_settings(tmp_path: Path) -> None:
    db = tmp_path / "sub" / "dir" / "catalog.db"  # parent directories are created
    with Catalog(f"sqlite:///{db}") as cat:
        cat.upgrade()
        assert db.is_file()
        with cat.engine.connect() as conn:

            def pragma(name: str) -> object:
                return conn.exec_driver_sql(f"PRAGMA {name}").scalar()

            assert pragma("journal_mode") == "wal"
            assert pragma("synchronous") == 1  # NORMAL
            assert pragma("busy_timeout") >= 5000
            assert pragma("foreign_keys") == 1


def test_sqlite_memory_is_shared_across_threads() -> None:
    with Catalog("sqlite://") as cat:
        cat.upgrade()
        assert cat.save_document("cluster_map", 1, {"a": 1})
        seen: list[object] = []
        t = threading.Thread(target=lambda: seen.append(cat.latest_document("cluster_map")))
        t.start()
        t.join()
        assert seen == [(1, {"a": 1})]


def test_alembic_command_line_from_another_directory(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    url = f"sqlite:///{db}"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "AISYNC_CATALOG_URL"}

    def alembic(*args: str) -> str:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "alembic",
                "-c",
                str(REPO / "alembic.ini"),
                "-x",
                f"url={url}",
                *args,
            ],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    alembic("upgrade", "head")
    assert "0004 (head)" in alembic("current")
    alembic("check")  # models and migrations agree
    with Catalog(url) as cat:
        assert cat.current_revision() == head_revision()
        assert cat.save_document("cluster_map", 1, {})
    alembic("downgrade", "base")
    with Catalog(url) as cat:
        assert cat.current_revision() is None
        assert "documents" not in _tables(cat)
