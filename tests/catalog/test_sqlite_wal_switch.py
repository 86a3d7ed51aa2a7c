"""SQLite: a node opening a fresh catalog file that another process holds locked waits for it
(and still switches it to WAL), instead of failing with "database is locked"."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import sqlalchemy as sa

from aisync.catalog import Catalog
from tests.harness import wait_for


def _timer_sleep(thread: threading.Thread) -> bool:
    """Whether the thread sleeps on a timer (SQLite's busy handler, the WAL switch's retry),
    not on a lock or the GIL: its Linux ``wchan``. False once the thread ended."""
    try:
        return "nanosleep" in Path(f"/proc/self/task/{thread.native_id}/wchan").read_text()
    except FileNotFoundError:
        return False


def test_first_connection_waits_for_a_locked_fresh_file(tmp_path):
    path = tmp_path / "catalog.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")  # another node process is creating the file right now
    holder.execute("CREATE TABLE other (x)")

    catalog = Catalog(f"sqlite:///{path}")
    reached_the_file = threading.Event()

    @sa.event.listens_for(catalog.engine, "connect", insert=True)  # before the WAL switch
    def _trace(dbapi_conn, _record) -> None:
        dbapi_conn.set_trace_callback(lambda _statement: reached_the_file.set())

    failures: list[BaseException] = []

    def open_catalog() -> None:
        try:
            catalog.upgrade()
            assert catalog.save_document("cluster_map", 1, {"ok": True})
        except BaseException as exc:
            failures.append(exc)

    opener = threading.Thread(target=open_catalog, daemon=True)
    opener.start()
    try:
        wait_for(reached_the_file.is_set, 30, "the catalog to open the locked file")
        if Path("/proc/self/task").is_dir():  # Linux: waiting for the lock, not failed
            wait_for(lambda: _timer_sleep(opener) or not opener.is_alive(), 30,
                     "the catalog to wait for the lock")
        assert opener.is_alive() and not failures, failures
    finally:
        holder.execute("COMMIT")
        holder.close()
    opener.join(timeout=60)
    assert not opener.is_alive(), "the catalog did not open once the lock was released"
    assert not failures, failures
    assert catalog.latest_document("cluster_map") == (1, {"ok": True})
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    catalog.close()
