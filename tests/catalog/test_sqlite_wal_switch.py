"""SQLite: a node opening a fresh catalog file that another process holds locked waits for it
(and still switches it to WAL), instead of failing with "database is locked"."""

from __future__ import annotations

import sqlite3
import threading

from aisync.catalog import Catalog


def test_first_connection_waits_for_a_locked_fresh_file(tmp_path):
    path = tmp_path / "catalog.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")  # another node process is creating the file right now
    holder.execute("CREATE TABLE other (x)")
    release = threading.Timer(0.3, lambda: holder.execute("COMMIT"))
    release.start()
    try:
        catalog = Catalog(f"sqlite:///{path}")
        catalog.upgrade()
        assert catalog.save_document("cluster_map", 1, {"ok": True})
        assert catalog.latest_document("cluster_map") == (1, {"ok": True})
        mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"
        catalog.close()
    finally:
        release.join()
        holder.close()
