"""Plain value types returned by the SDK, and the small parsers that build them.

Owns: ``ObjectEntry``, ``ObjectInfo``, ``ObjectPage`` and turning HTTP headers or JSON documents
into them; the job-spec and job-path helpers of the job endpoints. May import: the standard library and ``aisync.util``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

from aisync.util.errors import InvalidArgument, InvalidRange
from aisync.util.names import BucketRef


@dataclass(frozen=True, slots=True)
class ObjectEntry:
    """One object of a listing page."""

    name: str
    size: int
    checksum: str = ""
    mtime_ns: int = 0
    #: Cached buckets only: whether the cluster holds a copy, the source's version token, and
    #: whether the source still lists the object (None for cluster-local ``ais://`` buckets).
    cached: bool | None = None
    version: dict | None = None
    in_source: bool | None = None

    @classmethod
    def from_dict(cls, doc: Mapping[str, object]) -> ObjectEntry:
        version = doc.get("version")
        return cls(
            name=str(doc["name"]),
            size=_int(doc.get("size")),
            checksum=str(doc.get("checksum") or ""),
            mtime_ns=_int(doc.get("mtime_ns")),
            cached=doc.get("cached") if isinstance(doc.get("cached"), bool) else None,
            version=dict(version) if isinstance(version, Mapping) else None,
            in_source=doc.get("in_source") if isinstance(doc.get("in_source"), bool) else None,
        )


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """Metadata of one object: from a PUT answer, or from GET/HEAD response headers.

    ``bucket`` is the bucket name (``train``); ``provider`` its provider (``ais``). ``size`` is the
    size of the whole object, also when only a range was read. ``etag`` is the bare checksum hex.
    """

    bucket: str
    name: str
    size: int
    checksum: str = ""
    mtime_ns: int = 0
    etag: str = ""
    provider: str = "ais"

    @classmethod
    def from_put_answer(
        cls, doc: Mapping[str, object], *, bucket: str, provider: str, name: str
    ) -> ObjectInfo:
        checksum = str(doc.get("checksum") or "")
        return cls(
            bucket=str(doc.get("bucket") or bucket),
            name=str(doc.get("name") or name),
            size=_int(doc.get("size")),
            checksum=checksum,
            mtime_ns=_int(doc.get("mtime_ns")),
            etag=checksum.partition(":")[2] if ":" in checksum else checksum,
            provider=str(doc.get("provider") or provider),
        )

    @classmethod
    def from_headers(
        cls, headers: Mapping[str, str], *, bucket: str, provider: str, name: str
    ) -> ObjectInfo:
        size = _size_from_headers(headers)
        checksum = headers.get("X-Aisync-Checksum", "")
        etag = headers.get("ETag", "").strip()
        if etag.startswith("W/"):
            etag = etag[2:]
        etag = etag.strip('"')
        if not etag and ":" in checksum:
            etag = checksum.partition(":")[2]
        mtime_ns = _int(headers.get("X-Aisync-Mtime-Ns"))
        if not mtime_ns and headers.get("Last-Modified"):
            try:
                mtime_ns = int(parsedate_to_datetime(headers["Last-Modified"]).timestamp()) * 10**9
            except (TypeError, ValueError):
                mtime_ns = 0
        return cls(bucket=bucket, name=name, size=size, checksum=checksum, mtime_ns=mtime_ns,
                   etag=etag, provider=provider)


@dataclass(frozen=True, slots=True)
class ObjectPage:
    """One page of a bucket listing; ``next_token`` is ``None`` on the last page."""

    objects: list[ObjectEntry] = field(default_factory=list)
    next_token: str | None = None

    @classmethod
    def from_dict(cls, doc: Mapping[str, object]) -> ObjectPage:
        raw = doc.get("objects") or []
        objects = [ObjectEntry.from_dict(o) for o in raw]  # type: ignore[union-attr]
        token = doc.get("next_token")
        return cls(objects=objects, next_token=str(token) if token else None)


#: A job in one of these states never runs again. ``deletes-refused``: a sync that did all but
#: its deletes, refused by ``max_delete`` or the shrink guard (the reason is in ``error``).
JOB_FINAL_STATES = frozenset({"succeeded", "deletes-refused", "failed", "aborted"})


def job_spec(spec: Mapping[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """A job spec for the API: ``spec`` updated by ``fields``, ``None`` values left out, bucket
    references as URIs."""
    body = {k: v for k, v in {**(spec or {}), **fields}.items() if v is not None}
    for key in ("bucket", "destination"):
        if isinstance(body.get(key), BucketRef):
            body[key] = str(body[key])
    return body


def job_path(job_id: str, suffix: str = "") -> str:
    if not job_id:
        raise InvalidArgument("empty job id")
    return f"/v1/jobs/{quote(job_id, safe='')}{suffix}"


def seconds_param(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


def range_header(byte_range: tuple[int, int | None]) -> str:
    """``Range`` header for ``(first, last)`` (``last`` inclusive, ``None`` = to the end).

    ``(-n, None)`` asks for the last ``n`` bytes.
    """
    first, last = byte_range
    if first < 0:
        if last is not None:
            raise InvalidRange("a suffix range (negative start) takes no end")
        return f"bytes={first}"
    if last is None:
        return f"bytes={first}-"
    if last < first:
        raise InvalidRange(f"invalid range {first}-{last}: end before start")
    return f"bytes={first}-{last}"


def parse_range(text: str) -> tuple[int, int | None]:
    """Parse ``A-B``, ``A-`` or ``-N`` (the CLI's ``--range``) into a ``byte_range`` tuple."""
    text = text.strip().removeprefix("bytes=")
    first, sep, last = text.partition("-")
    try:
        if not sep:
            raise ValueError
        if not first:
            if not last:
                raise ValueError
            return (-int(last), None)
        start = int(first)
        end = int(last) if last else None
    except ValueError:
        raise InvalidRange(f"invalid range {text!r}; use A-B, A- or -N (bytes)") from None
    if start < 0 or (end is not None and end < start):
        raise InvalidRange(f"invalid range {text!r}; use A-B, A- or -N (bytes)")
    return (start, end)


def _size_from_headers(headers: Mapping[str, str]) -> int:
    content_range = headers.get("Content-Range", "")
    if "/" in content_range:
        total = content_range.rpartition("/")[2].strip()
        if total.isdigit():
            return int(total)
    return _int(headers.get("Content-Length"))


def _int(value: object) -> int:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0
