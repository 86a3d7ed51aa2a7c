"""S3 access keys in the catalog (``access_keys``, migration 0004), each test run on SQLite and
on a real PostgreSQL (see ``conftest.py``): create, list without secrets, secret lookup, delete,
duplicates (also from concurrent threads), the rules a key pair must follow, and the migration
down and up again.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from aisync.catalog import Catalog, check_access_key, check_secret_key
from aisync.util.errors import AlreadyExists, InvalidArgument

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def _when(value: object) -> datetime:
    assert isinstance(value, str)
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() == timedelta(0), value  # ISO string in UTC with explicit offset
    return parsed


# ------------------------------------------------------------------------------------ migrations


def test_head_creates_access_keys(catalog: Catalog) -> None:
    insp = sa.inspect(catalog.engine)
    cols = {c["name"]: c for c in insp.get_columns("access_keys")}
    assert set(cols) == {"access_key", "secret_key", "description", "created_at"}
    assert all(not c["nullable"] for c in cols.values())
    assert cols["access_key"]["type"].length == 128
    assert cols["secret_key"]["type"].length == 128
    assert cols["description"]["type"].length == 256
    assert insp.get_pk_constraint("access_keys")["constrained_columns"] == ["access_key"]


def test_downgrade_to_0003_drops_only_access_keys(catalog: Catalog) -> None:
    catalog.create_access_key("AKDOWN", SECRET)
    catalog.create_job({"id": "j1", "kind": "sync", "bucket": "aws/datasets"})
    catalog.downgrade("0003")
    tables = set(sa.inspect(catalog.engine).get_table_names())
    assert "access_keys" not in tables and "jobs" in tables
    assert catalog.get_job("j1")["id"] == "j1"  # 0002's data survives
    catalog.upgrade()
    assert catalog.current_revision() == "0004"
    assert catalog.list_access_keys() == []  # the table was really recreated
    catalog.create_access_key("AKDOWN", SECRET)
    assert catalog.access_key_secret("AKDOWN") == SECRET


# ------------------------------------------------------------------------------------ behaviour


def test_create_returns_the_row(catalog: Catalog) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    row = catalog.create_access_key("AKIAIOSFODNN7EXAMPLE", SECRET, "training jobs")
    assert set(row) == {"access_key", "secret_key", "description", "created_at"}
    assert row["access_key"] == "AKIAIOSFODNN7EXAMPLE"
    assert row["secret_key"] == SECRET
    assert row["description"] == "training jobs"
    assert before <= _when(row["created_at"]) <= datetime.now(UTC) + timedelta(seconds=5)


def test_list_has_no_secrets_and_is_in_key_order(catalog: Catalog) -> None:
    assert catalog.list_access_keys() == []
    for key in ("b-key", "A.key", "a_key", "AKZ"):
        catalog.create_access_key(key, f"{key}-secret-value")
    catalog.create_access_key("described", SECRET, description="ci runner ✓")
    keys = catalog.list_access_keys()
    assert [k["access_key"] for k in keys] == sorted(["b-key", "A.key", "a_key", "AKZ",
                                                      "described"])
    for entry in keys:
        assert set(entry) == {"access_key", "description", "created_at"}
        _when(entry["created_at"])
    assert SECRET not in repr(keys) and "secret-value" not in repr(keys)
    assert {k["access_key"]: k["description"] for k in keys}["described"] == "ci runner ✓"
    assert {k["access_key"]: k["description"] for k in keys}["AKZ"] == ""


def test_secret_lookup(catalog: Catalog) -> None:
    catalog.create_access_key("AKLOOKUP", SECRET)
    assert catalog.access_key_secret("AKLOOKUP") == SECRET
    assert catalog.access_key_secret("akLOOKUP") is None  # ids are case-sensitive
    assert catalog.access_key_secret("AKNONE") is None
    # malformed ids cannot exist; they are answered without a query (NUL would upset PostgreSQL)
    for bad in ("", "a\x00b", "x" * 1000, "a/b", None, 7):
        assert catalog.access_key_secret(bad) is None  # type: ignore[arg-type]


def test_keys_differing_only_in_case_are_distinct(catalog: Catalog) -> None:
    catalog.create_access_key("AKcase", "secret-lower")
    catalog.create_access_key("AKCASE", "secret-upper")
    assert catalog.access_key_secret("AKcase") == "secret-lower"
    assert catalog.access_key_secret("AKCASE") == "secret-upper"


def test_duplicate_is_already_exists_and_keeps_the_stored_pair(catalog: Catalog) -> None:
    catalog.create_access_key("AKDUP", SECRET, "first")
    with pytest.raises(AlreadyExists) as info:
        catalog.create_access_key("AKDUP", "another-secret", "second")
    assert info.value.status == 409 and "AKDUP" in info.value.message
    assert "another-secret" not in info.value.message
    assert catalog.access_key_secret("AKDUP") == SECRET
    assert catalog.list_access_keys()[0]["description"] == "first"


def test_concurrent_duplicate_creates_exactly_one_wins(catalog: Catalog) -> None:
    n = 8
    barrier = threading.Barrier(n)

    def create(i: int) -> str:
        barrier.wait()
        try:
            catalog.create_access_key("AKRACE", f"secret-number-{i}")
            return f"won:{i}"
        except AlreadyExists:
            return "lost"

    with ThreadPoolExecutor(n) as pool:
        outcomes = list(pool.map(create, range(n)))
    winners = [o for o in outcomes if o.startswith("won:")]
    assert len(winners) == 1 and outcomes.count("lost") == n - 1
    assert catalog.access_key_secret("AKRACE") == f"secret-number-{winners[0][4:]}"


def test_delete(catalog: Catalog) -> None:
    catalog.create_access_key("AKGONE", SECRET)
    catalog.create_access_key("AKKEPT", SECRET)
    assert catalog.delete_access_key("AKGONE") is True
    assert catalog.delete_access_key("AKGONE") is False
    assert catalog.delete_access_key("never-was") is False
    assert catalog.delete_access_key("a/b") is False
    assert catalog.access_key_secret("AKGONE") is None
    assert [k["access_key"] for k in catalog.list_access_keys()] == ["AKKEPT"]
    catalog.create_access_key("AKGONE", "a-new-secret")  # the id may be reused
    assert catalog.access_key_secret("AKGONE") == "a-new-secret"


def test_keys_persist_across_reopen(catalog_url: str) -> None:
    with Catalog(catalog_url) as first:
        first.upgrade()
        first.create_access_key("AKKEEP", SECRET, "kept")
    with Catalog(catalog_url) as second:
        second.upgrade()  # what a restarting primary does
        assert second.access_key_secret("AKKEEP") == SECRET


# ------------------------------------------------------------------------------------ the rules


@pytest.mark.parametrize("access_key", [
    "AKIAIOSFODNN7EXAMPLE", "abc", "a.b_c-d", "x" * 128, "...", "0123456789",
])
def test_valid_access_keys(catalog: Catalog, access_key: str) -> None:
    assert check_access_key(access_key) == access_key
    catalog.create_access_key(access_key, SECRET)
    assert catalog.access_key_secret(access_key) == SECRET


@pytest.mark.parametrize("access_key", [
    "", "ab", "x" * 129, "has space", "a/b", "a:b", "ümlaut", "tab\there", "new\nline",
    "AKOK\n", None, 42,
])
def test_invalid_access_keys(catalog: Catalog, access_key: object) -> None:
    with pytest.raises(InvalidArgument, match="access key"):
        catalog.create_access_key(access_key, SECRET)  # type: ignore[arg-type]
    assert catalog.list_access_keys() == []


@pytest.mark.parametrize("secret", [
    "12345678", "x" * 128, SECRET, "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", "pass+word/ok=",
])
def test_valid_secrets(catalog: Catalog, secret: str) -> None:
    assert check_secret_key(secret) == secret
    catalog.create_access_key("AKSECRET", secret)
    assert catalog.access_key_secret("AKSECRET") == secret


@pytest.mark.parametrize("secret", [
    "", "short7c", "x" * 129, "has a space", "tab\tsecret1", "ünïcødé-secret", "secret-line\n",
    "nul\x00secret", None, 12345678,
])
def test_invalid_secrets_are_rejected_without_echoing_them(catalog: Catalog,
                                                          secret: object) -> None:
    with pytest.raises(InvalidArgument, match="secret key") as info:
        catalog.create_access_key("AKBADSECRET", secret)  # type: ignore[arg-type]
    if isinstance(secret, str) and len(secret) > 3:
        assert secret.strip() not in info.value.message
    assert catalog.access_key_secret("AKBADSECRET") is None


def test_description_rules(catalog: Catalog) -> None:
    assert catalog.create_access_key("AKD1", SECRET, None)["description"] == ""  # type: ignore[arg-type]
    assert catalog.create_access_key("AKD2", SECRET, "d" * 256)["description"] == "d" * 256
    with pytest.raises(InvalidArgument, match="description"):
        catalog.create_access_key("AKD3", SECRET, "d" * 257)
    with pytest.raises(InvalidArgument, match="description"):
        catalog.create_access_key("AKD4", SECRET, 5)  # type: ignore[arg-type]
    assert [k["access_key"] for k in catalog.list_access_keys()] == ["AKD1", "AKD2"]
