"""compare_versions, case by case: the rules of aisync.sync.versions."""

from __future__ import annotations

import pytest

from aisync.backends.base import VersionToken as V
from aisync.sync.versions import Comparison, Verdict, compare_versions, same_version

MD5 = "9e107d9d372bb6826bd81d3542a419d6"
MD5_B = "e4d909c290d0fb1ca068ffaddf22cbd0"
MULTIPART = "d41d8cd98f00b204e9800998ecf8427e-3"

SAME, CHANGED, UNKNOWN = Verdict.SAME, Verdict.CHANGED, Verdict.UNKNOWN

CASES = [
    # (id, cached, source, verdict, words the reason must contain)
    ("not-cached", None, V(10, etag=MD5), CHANGED, "not cached"),
    ("size-differs", V(10, etag=MD5), V(11, etag=MD5), CHANGED, "size 10 -> 11"),
    ("size-differs-wins-over-etag", V(10, etag=MD5), V(12, etag=MD5_B), CHANGED, "size"),
    ("same-etag", V(10, etag=MD5), V(10, etag=MD5), SAME, "etag equal"),
    ("same-size-overwrite-new-etag", V(10, etag=MD5), V(10, etag=MD5_B), CHANGED, "etag"),
    ("version-id-equal-etag-differs", V(10, etag=MD5, version_id="v1"),
     V(10, etag=MD5_B, version_id="v1"), CHANGED, "etag"),
    ("version-id-differs-etag-equal", V(10, etag=MD5, version_id="v1"),
     V(10, etag=MD5, version_id="v2"), CHANGED, "version-id"),
    ("version-id-only", V(10, version_id="v1"), V(10, version_id="v1"), UNKNOWN, "not proof"),
    ("last-modified-only-equal", V(10, last_modified=1.0), V(10, last_modified=1.0), UNKNOWN,
     "not proof"),
    ("last-modified-never-changes", V(10, etag=MD5, last_modified=1.0),
     V(10, etag=MD5, last_modified=2.0), SAME, "etag equal"),
    ("last-modified-differs-alone", V(10, last_modified=1.0), V(10, last_modified=9.0),
     UNKNOWN, "not proof"),
    ("size-only", V(10), V(10), UNKNOWN, "not proof"),
    ("multipart-etag-vs-md5-never-compared", V(10, etag=MULTIPART), V(10, md5=MD5), UNKNOWN,
     "not proof"),
    ("multipart-etag-vs-own-md5", V(10, etag=MULTIPART, md5=MD5),
     V(10, etag=MULTIPART.upper(), md5=MD5), SAME, "etag, md5 equal"),
    ("single-etag-vs-md5-never-compared", V(10, etag=MD5_B), V(10, md5=MD5), UNKNOWN,
     "not proof"),
    ("quoted-etag", V(10, etag=f'"{MD5}"'), V(10, etag=MD5), SAME, "etag equal"),
    ("uppercase-etag", V(10, etag=MD5.upper()), V(10, etag=f'"{MD5}"'), SAME, "etag equal"),
    ("weak-etag", V(10, etag=f'W/"{MD5}"'), V(10, etag=MD5), SAME, "etag equal"),
    ("opaque-etag-case-sensitive", V(10, etag="0x8DAbc"), V(10, etag="0x8DABC"), CHANGED,
     "etag"),
    ("opaque-etag-equal", V(10, etag="0x8DAbc"), V(10, etag='"0x8DAbc"'), SAME, "etag equal"),
    ("etag-missing-on-cached-md5-proves", V(10, md5=MD5), V(10, etag=MD5_B, md5=MD5), SAME,
     "md5 equal"),
    ("etag-missing-on-source-nothing-else", V(10, etag=MD5), V(10, md5=MD5), UNKNOWN,
     "not proof"),
    ("empty-etag-is-absent", V(10, etag=""), V(10, etag=MD5), UNKNOWN, "not proof"),
    ("md5-case-insensitive", V(10, md5=MD5.upper()), V(10, md5=MD5), SAME, "md5 equal"),
    ("md5-differs", V(10, md5=MD5), V(10, md5=MD5_B), CHANGED, "md5"),
    ("crc32c-only-equal", V(10, crc32c="E3069283"), V(10, crc32c="e3069283"), SAME,
     "crc32c equal"),
    ("crc32c-differs", V(10, crc32c="e3069283"), V(10, crc32c="00000000"), CHANGED, "crc32c"),
    ("sha256-equal", V(10, sha256="ab" * 32), V(10, sha256="AB" * 32), SAME, "sha256 equal"),
    ("sha256-differs-despite-etag", V(10, etag=MD5, sha256="ab" * 32),
     V(10, etag=MD5, sha256="cd" * 32), CHANGED, "sha256"),
    ("checksum-differs-despite-version-id", V(10, version_id="7", crc32c="aa"),
     V(10, version_id="7", crc32c="bb"), CHANGED, "crc32c"),
    ("gcs-generation-int-vs-str", V(10, version_id=7, crc32c="aa"),  # type: ignore[arg-type]
     V(10, version_id="7", crc32c="aa"), SAME, "crc32c equal"),
    ("disjoint-fields", V(10, etag=MD5, version_id="v1"), V(10, sha256="ab" * 32), UNKNOWN,
     "not proof"),
]


@pytest.mark.parametrize(("cached", "source", "verdict", "words"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_compare(cached, source, verdict, words):
    result = compare_versions(cached, source)
    assert result.verdict is verdict, result.reason
    assert words in result.reason
    assert result.same is (verdict is SAME)
    assert same_version(cached, source) is (verdict is SAME)


def test_unknown_reason_is_documented_text():
    assert compare_versions(V(1), V(1)) == Comparison(
        UNKNOWN, "only size/version-id/last-modified agree: not proof")


def test_etag_reason_names_both_values():
    reason = compare_versions(V(10, etag=MD5), V(10, etag=MD5_B)).reason
    assert reason == f"etag differs: {MD5} -> {MD5_B}"


def test_symmetric_verdicts():
    for _, cached, source, verdict, _ in CASES:
        if cached is not None:
            assert compare_versions(source, cached).verdict is verdict


def test_unknown_is_not_same():
    # callers re-fetch on UNKNOWN: the boolean helper must never say "same" for it
    assert not same_version(V(5, version_id="v1", last_modified=3.0),
                            V(5, version_id="v1", last_modified=3.0))
