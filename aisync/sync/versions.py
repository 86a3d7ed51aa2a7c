"""Version equality: the one place that decides whether a cached copy is the source's version.

Every sync path (listing diffs, out-of-band change detection, revalidation on read) asks
:func:`compare_versions` and nothing else, so the rules below hold everywhere.

``compare_versions(cached, source)`` answers a :class:`Comparison` with a :class:`Verdict` and a
human-readable reason. The rules, applied in this order (the first that fires wins):

1. ``cached`` is None (nothing cached, or the cached copy records no source token):
   ``CHANGED("not cached")``.
2. The sizes differ: ``CHANGED("size <cached> -> <source>")``.
3. For each field, in the order ``version_id``, ``etag``, ``md5``, ``crc32``, ``crc32c``, ``sha256``, that
   *both* sides carry: if the values differ, ``CHANGED`` with a reason naming the field. A new
   version id means a new version even when the bytes happen to match.
4. If any *content* field (``etag``, ``md5``, ``crc32``, ``crc32c``, ``sha256``) is present on both sides
   and equal: ``SAME``, with a reason naming the proof(s), e.g. ``"md5 equal"``.
5. Otherwise ``UNKNOWN("only size/version-id/last-modified agree: not proof")``.

Normalization and what never counts:

* A field that is None or empty on either side is absent: it neither proves nor refutes.
* ETags are compared without surrounding double quotes (and a weak ``W/`` prefix); an ETag that
  is hex, optionally with a multipart ``-<n>`` suffix, is compared case-insensitively; any other
  ETag (Azure's ``0x8D...``, opaque provider strings) is compared exactly.
* Checksums (``md5``, ``crc32``, ``crc32c``, ``sha256``) are compared case-insensitively.
* Fields are only ever compared with the same field: an ETag is never compared with an MD5. A
  multipart ETag (``<hex>-<n>``) is not the MD5 of the object, and even a single-part ETag is
  only an MD5 by provider convention (SSE-KMS objects break it), so it is not used as one.
* A matching ``version_id`` alone is never proof of sameness (ids can be reused across
  buckets and providers, and a stale id says nothing about the bytes).
* ``last_modified`` is never used at all: clocks, copy semantics and providers disagree about
  it, so it neither proves sameness nor declares a change.

What callers do with the verdict: ``SAME`` means the cached copy may be served and kept;
``CHANGED`` means it is stale; ``UNKNOWN`` means "cannot tell" and callers treat it exactly like
``CHANGED``: re-fetch (fail closed). :func:`same_version` is the boolean form of that policy.
"""

from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass

from aisync.backends.base import VersionToken

_HEX_ETAG = re.compile(r"[0-9a-fA-F]+(?:-[0-9]+)?")
#: Fields whose equality proves the bytes are the same.
CONTENT_FIELDS = ("etag", "md5", "crc32", "crc32c", "sha256")
#: Fields compared for differences, in the order the reasons report them.
COMPARED_FIELDS = ("version_id", *CONTENT_FIELDS)


class Verdict(enum.Enum):
    SAME = "same"
    CHANGED = "changed"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Comparison:
    """The verdict of :func:`compare_versions` and why (for logs, job reports and the API)."""

    verdict: Verdict
    reason: str

    @property
    def same(self) -> bool:
        return self.verdict is Verdict.SAME


def _unquote(etag: str) -> str:
    value = etag.strip()
    if value.startswith("W/"):
        value = value[2:]
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return value


def normalize_etag(etag: str | None) -> str | None:
    """Unquoted ETag; lower-cased when it is hex (with an optional ``-<n>`` part count)."""
    value = _unquote(etag) if etag else ""
    if not value:
        return None
    return value.lower() if _HEX_ETAG.fullmatch(value) else value


def _normalized(name: str, value: object) -> str | None:
    if name == "etag":
        return normalize_etag(value)  # type: ignore[arg-type]
    text = str(value).strip()  # version ids may arrive as ints (GCS generations)
    if not text:
        return None
    return text if name == "version_id" else text.lower()


def _present(name: str, value: object) -> bool:
    """Whether a value that is equal on both sides counts (is not empty once normalized)."""
    if not isinstance(value, str):
        return True
    return bool(_unquote(value) if name == "etag" else value.strip())


@functools.cache
def _same(proof: tuple[str, ...]) -> Comparison:  # at most 15 distinct values
    return Comparison(Verdict.SAME, f"{', '.join(proof)} equal")


def compare_versions(cached: VersionToken | None, source: VersionToken) -> Comparison:
    """Decide whether ``cached`` (the token recorded with the cached copy) is ``source``.

    See the module docstring for the rules. Pure and cheap (a few microseconds): safe to call
    per listed object.
    """
    if cached is None:
        return Comparison(Verdict.CHANGED, "not cached")
    if cached.size != source.size:
        return Comparison(Verdict.CHANGED, f"size {cached.size} -> {source.size}")
    equal: list[str] = []
    for name in COMPARED_FIELDS:
        a, b = getattr(cached, name), getattr(source, name)
        if a is None or b is None:
            continue
        if a == b:  # fast path: identical raw values are equal once normalized
            if not _present(name, a):
                continue
        else:
            a, b = _normalized(name, a), _normalized(name, b)
            if a is None or b is None:
                continue
            if a != b:
                return Comparison(Verdict.CHANGED, f"{name.replace('_', '-')} differs: "
                                                   f"{a} -> {b}")
        if name != "version_id":
            equal.append(name)
    if equal:
        return _same(tuple(equal))
    return Comparison(Verdict.UNKNOWN, "only size/version-id/last-modified agree: not proof")


def same_version(cached: VersionToken | None, source: VersionToken) -> bool:
    """True only when :func:`compare_versions` proves sameness; UNKNOWN is False (re-fetch)."""
    return compare_versions(cached, source).verdict is Verdict.SAME
