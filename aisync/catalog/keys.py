"""S3 access keys in the catalog: who may sign S3 requests, and with which secret.

Owns :class:`KeysMixin`, the part of the :class:`~aisync.catalog.Catalog` facade over the table
``access_keys`` (model :class:`~aisync.catalog.models.AccessKey`, migration ``0004``), and the
rules a key pair must follow (:func:`check_access_key`, :func:`check_secret_key`,
:func:`check_description`; the proxy API applies the same functions before it writes, so the
messages match). Keys are cluster-level records: only the primary proxy's catalog holds them.

* access key: 3 to 128 characters of ``[A-Za-z0-9._-]`` (AWS-style ids such as
  ``AKIAIOSFODNN7EXAMPLE`` fit; URL-safe, so it can be a path segment);
* secret key: 8 to 128 printable ASCII characters, no spaces (``0x21``–``0x7e``);
* description: free text, at most 256 characters (``""`` by default).

Secrets are stored as given (SigV4 needs the secret itself, not a hash of it), are never part of
an error message, and :meth:`KeysMixin.list_access_keys` leaves them out. Like the rest of the
facade every method is synchronous and thread-safe, one transaction per call; datetimes come back
as ISO-8601 UTC strings (``created_at``).
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from aisync.catalog.jobs import _insert_new, _plain
from aisync.catalog.models import (
    ACCESS_KEY_MAX_LEN,
    KEY_DESCRIPTION_MAX_LEN,
    SECRET_KEY_MAX_LEN,
    AccessKey,
    utcnow,
)
from aisync.util.errors import AlreadyExists, InvalidArgument

KEYS: sa.Table = AccessKey.__table__  # type: ignore[assignment]

#: What an access key may look like (the whole string; checked with ``fullmatch``).
ACCESS_KEY_RE = re.compile(rf"[A-Za-z0-9._-]{{3,{ACCESS_KEY_MAX_LEN}}}")
#: What a secret key may look like: printable ASCII without the space.
SECRET_KEY_RE = re.compile(rf"[\x21-\x7e]{{8,{SECRET_KEY_MAX_LEN}}}")

#: Columns a listing shows (never ``secret_key``).
_PUBLIC = (KEYS.c.access_key, KEYS.c.description, KEYS.c.created_at)


def check_access_key(value: object) -> str:
    """``value`` if it is a valid access key, else :class:`InvalidArgument` saying why."""
    if not isinstance(value, str):
        raise InvalidArgument(f"access key must be a string, got {type(value).__name__}")
    if not ACCESS_KEY_RE.fullmatch(value):
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise InvalidArgument(
            f"invalid access key {shown!r}: use 3 to {ACCESS_KEY_MAX_LEN} characters of "
            "A-Z, a-z, 0-9, '.', '_' and '-'"
        )
    return value


def check_secret_key(value: object) -> str:
    """``value`` if it is a valid secret key, else :class:`InvalidArgument` (the message says
    what is wrong without repeating the secret)."""
    if not isinstance(value, str):
        raise InvalidArgument(f"secret key must be a string, got {type(value).__name__}")
    if not SECRET_KEY_RE.fullmatch(value):
        rule = f"8 to {SECRET_KEY_MAX_LEN} printable ASCII characters without spaces"
        bad = next((i for i, ch in enumerate(value) if not "\x21" <= ch <= "\x7e"), None)
        if bad is not None:
            raise InvalidArgument(
                f"invalid secret key: character {bad + 1} is a space, a control or a non-ASCII "
                f"character; use {rule}"
            )
        raise InvalidArgument(f"invalid secret key: it has {len(value)} characters; use {rule}")
    return value


def check_description(value: object) -> str:
    """A description: a string of at most 256 characters (None means ``""``)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidArgument(f"description must be a string, got {type(value).__name__}")
    if len(value) > KEY_DESCRIPTION_MAX_LEN:
        raise InvalidArgument(
            f"description is too long: {len(value)} characters, at most "
            f"{KEY_DESCRIPTION_MAX_LEN}"
        )
    return value


class KeysMixin:
    """S3 access keys; mixed into ``Catalog``.

    Needs ``self.engine`` (reads) and ``self._writer`` (the engine with the writer option).
    """

    engine: Engine
    _writer: Engine

    def create_access_key(
        self, access_key: str, secret_key: str, description: str = ""
    ) -> dict[str, Any]:
        """Store a key pair and return its row: ``{"access_key", "secret_key", "description",
        "created_at"}``. A key that does not follow the rules (see the module): InvalidArgument;
        an ``access_key`` that exists already: :class:`~aisync.util.errors.AlreadyExists`
        (the stored pair is left untouched)."""
        values = {
            "access_key": check_access_key(access_key),
            "secret_key": check_secret_key(secret_key),
            "description": check_description(description),
            "created_at": utcnow(),
        }
        with self._writer.begin() as conn:
            if not _insert_new(conn, KEYS, values, KEYS.c.access_key):
                raise AlreadyExists(
                    f"access key {access_key!r} already exists", access_key=access_key
                )
            row = conn.execute(sa.select(KEYS).where(KEYS.c.access_key == access_key)).one()
        return _plain(row)

    def list_access_keys(self) -> list[dict[str, Any]]:
        """Every key as ``{"access_key", "description", "created_at"}`` (no secrets), in access
        key order."""
        stmt = sa.select(*_PUBLIC).order_by(KEYS.c.access_key)
        with self.engine.connect() as conn:
            return [_plain(row) for row in conn.execute(stmt)]

    def access_key_secret(self, access_key: str) -> str | None:
        """The secret of ``access_key``, or None when there is no such key (any value may be
        asked: a malformed key simply does not exist, and is answered without a query)."""
        if not isinstance(access_key, str) or not ACCESS_KEY_RE.fullmatch(access_key):
            return None  # cannot exist (and e.g. a NUL byte must not reach PostgreSQL)
        stmt = sa.select(KEYS.c.secret_key).where(KEYS.c.access_key == access_key)
        with self.engine.connect() as conn:
            return conn.execute(stmt).scalar_one_or_none()

    def delete_access_key(self, access_key: str) -> bool:
        """Delete a key pair; True if it existed (a malformed key never does)."""
        if not isinstance(access_key, str) or not ACCESS_KEY_RE.fullmatch(access_key):
            return False
        stmt = sa.delete(KEYS).where(KEYS.c.access_key == access_key)
        with self._writer.begin() as conn:
            return conn.execute(stmt).rowcount == 1
