"""AWS Signature Version 4 verification for the S3 front end, on plain values (no HTTP framework).

``parse_request`` (None: anonymous) -> the server finds the secret -> ``verify`` -> ``AuthResult``
(``authenticate`` does all three); then the body goes through ``ChunkedDecoder`` when
``auth.streaming``, else ``PayloadHasher``. Every refusal is an ``S3AuthError`` (S3 error code +
HTTP status). ``headers`` is case-insensitive (aiohttp's ``CIMultiDictProxy``; repeats via getall).

Canonical request, as S3 computes it: the method; the raw path as sent (S3 neither normalizes nor
double-encodes; as a fallback each ``/`` segment re-escaped per the spec, for HTTP stacks that
re-escape after signing: segment boundaries never move); the query minus ``X-Amz-Signature``,
decoded (``+`` is a space, as the server's query parser reads it), spec-encoded (only
``A-Za-z0-9-_.~`` kept), sorted by name then value (fallback: the pairs as sent, sorted); the
SignedHeaders lowercased, values trimmed and inner whitespace collapsed, repeats joined by ``,``;
the SignedHeaders list; the payload hash (``x-amz-content-sha256``, required for header auth;
``UNSIGNED-PAYLOAD`` for presigned URLs unless that header is signed). ``raw_path`` may carry the
query (aiohttp's does); it is split off and used when ``raw_query`` is empty.

The claim (header or presigned query) is parsed and checked without the secret by
:mod:`.sigv4_claim` (its names are re-exported here). ``verify`` then checks the clock: header
auth within ``max_skew_seconds`` of ``now``; a presigned URL valid from ``X-Amz-Date - skew``
through ``X-Amz-Date + X-Amz-Expires`` inclusive (compared as differences: no date near year 1
or 9999 overflows); the region, when given; and the signature, compared with
``hmac.compare_digest``.

aws-chunked: ``hex-size[;chunk-signature=sig]\\r\\n data \\r\\n`` ..., a size-0 last chunk (no data
CRLF), then ``name:value\\r\\n`` trailer lines ended by an empty line (so the plain signed variant
ends ``0;chunk-signature=sig\\r\\n\\r\\n``; one blank line before an expected trailer is tolerated).
Signed chunks are released only once verified (one chunk, at most ``max_chunk_size``, is held);
unsigned ones stream through. A signed trailer is hashed as its ``name:value\\n`` lines, sorted,
without ``x-amz-trailer-signature``. Trailer checksums (crc32; crc32c if ``google_crc32c`` or
``crc32c`` imports; sha1; sha256: base64 of the big-endian digest) are checked when the trailer
ends; others are listed in ``ChunkedDecoder.unverified``. Commit nothing before ``finish()``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import importlib
import re
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote_to_bytes

from aisync.s3.sigv4_claim import (
    ALGORITHM,
    HEX64,
    MAX_PRESIGN_EXPIRES,
    PRESIGN_PARAMS,
    STREAMING,
    STREAMING_SIGNED,
    STREAMING_SIGNED_TRAILER,
    STREAMING_UNSIGNED_TRAILER,
    UNSIGNED_PAYLOAD,
    ParsedAuth,
    S3AuthError,
    amz_time,
    check_region,
    component_text,
    decode_component,
    parse_request,
    query_pairs,
    split_path,
)

__all__ = ["ALGORITHM", "MAX_PRESIGN_EXPIRES", "PRESIGN_PARAMS", "STREAMING", "STREAMING_SIGNED",
           "STREAMING_SIGNED_TRAILER", "STREAMING_UNSIGNED_TRAILER", "UNSIGNED_PAYLOAD",
           "AuthResult", "ChunkedDecoder", "ParsedAuth", "PayloadHasher", "S3AuthError",
           "amz_time", "authenticate", "canonical_requests", "check_region", "new_checksum",
           "parse_request", "signing_key", "verify"]

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MAX_LINE = 4096  # longest chunk header or trailer line accepted
MAX_TRAILERS = 16
TRAILER_SIGNATURE = "x-amz-trailer-signature"


@dataclass(frozen=True)
class AuthResult:
    """A verified request; carries what an aws-chunked body needs to check its chunks."""

    access_key: str
    payload_hash: str
    signing_key: bytes = field(repr=False)  # derived from the secret: never logged
    scope: str
    amz_date: str
    seed_signature: str

    @property
    def streaming(self) -> bool:
        return self.payload_hash.startswith("STREAMING-")


def _bad_trailer(message: str) -> S3AuthError:
    return S3AuthError("MalformedTrailerError", message, 400)


def _getall(headers: Mapping[str, str], name: str) -> list[str]:
    if hasattr(headers, "getall"):
        return list(headers.getall(name, []))
    return [] if headers.get(name) is None else [headers[name]]


@functools.lru_cache(maxsize=1024)  # one derivation per key and day, not per request
def signing_key(secret_key: str, date: str, region: str, service: str = "s3") -> bytes:
    key = ("AWS4" + secret_key).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode("utf-8", "surrogateescape"), hashlib.sha256).digest()
    return key


def _hmac_hex(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()


def _sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


# ---------------------------------------------------------------- verifying the signature


def canonical_requests(parsed: ParsedAuth, method: str, raw_path: str, raw_query: str,
                       headers: Mapping[str, str]) -> Iterator[str]:
    """The canonical requests to try: the spec form first, then the fallbacks (see top)."""
    path, raw_query = split_path(raw_path, raw_query)
    pairs = [(n, v) for n, v in query_pairs(raw_query) if component_text(n) != "X-Amz-Signature"]
    spec = sorted((quote(decode_component(n), safe=""), quote(decode_component(v), safe=""))
                  for n, v in pairs)
    queries = ["&".join(f"{n}={v}" for n, v in spec),
               "&".join(f"{n}={v}" for n, v in sorted(pairs))]
    paths = [path, "/".join(quote(unquote_to_bytes(s), safe="") for s in path.split("/"))]
    head = "".join(f"{name}:{','.join(' '.join(v.split()) for v in _getall(headers, name))}\n"
                   for name in parsed.signed_headers)
    tail = f"{head}\n{';'.join(parsed.signed_headers)}\n{parsed.payload_hash}"
    for i, p in enumerate(paths):
        for j, q in enumerate(queries):
            if (i == 0 or p != paths[0]) and (j == 0 or q != queries[0]):
                yield f"{method}\n{p}\n{q}\n{tail}"


def verify(parsed: ParsedAuth, secret_key: str, method: str, raw_path: str, raw_query: str,
           headers: Mapping[str, str], now: datetime, max_skew_seconds: int = 900, *,
           region: str | None = None) -> AuthResult:
    """Check the clock rules and the signature; ``region``, if given, must be the scope's
    (:func:`check_region`)."""
    if region is not None:
        check_region(parsed, region)
    now = now if now.tzinfo else now.replace(tzinfo=UTC)
    signed_at = amz_time(parsed.amz_date)
    skew = timedelta(seconds=max_skew_seconds)
    if parsed.presigned:
        if signed_at - now > skew:
            raise S3AuthError("AccessDenied", "Request is not valid yet")
        if now - signed_at > timedelta(seconds=parsed.expires or 0):
            raise S3AuthError("AccessDenied", "Request has expired")
    elif abs(now - signed_at) > skew:
        raise S3AuthError("RequestTimeTooSkewed", "The difference between the request time and "
                          "the current time is too large.")
    key = signing_key(secret_key, parsed.date, parsed.region, parsed.service)
    prefix = f"{ALGORITHM}\n{parsed.amz_date}\n{parsed.scope}\n"
    for canonical in canonical_requests(parsed, method, raw_path, raw_query, headers):
        if hmac.compare_digest(_hmac_hex(key, prefix + _sha256_hex(canonical)), parsed.signature):
            return AuthResult(parsed.access_key, parsed.payload_hash, key, parsed.scope,
                              parsed.amz_date, parsed.signature)
    raise S3AuthError("SignatureDoesNotMatch", "The request signature we calculated does not "
                      "match the signature you provided. Check your key and signing method.")


def authenticate(method: str, raw_path: str, raw_query: str, headers: Mapping[str, str],
                 now: datetime, secret_for: Callable[[str], str | None],
                 max_skew_seconds: int = 900, *, region: str | None = None) -> AuthResult | None:
    """parse + secret lookup (None -> InvalidAccessKeyId) + verify; None if anonymous."""
    parsed = parse_request(method, raw_path, raw_query, headers)
    if parsed is None:
        return None
    secret = secret_for(parsed.access_key)
    if secret is None:
        raise S3AuthError("InvalidAccessKeyId", "The AWS Access Key Id you provided does not "
                          "exist in our records.")
    return verify(parsed, secret, method, raw_path, raw_query, headers, now, max_skew_seconds,
                  region=region)


# ---------------------------------------------------------------- bodies


class PayloadHasher:
    """Checks a plain body against the signed hex sha256 (a no-op for UNSIGNED-PAYLOAD)."""

    def __init__(self, payload_hash: str) -> None:
        if payload_hash.startswith("STREAMING-"):
            raise ValueError("streaming payloads are decoded with ChunkedDecoder")
        self._expected = None if payload_hash == UNSIGNED_PAYLOAD else payload_hash.lower()
        self._hash = hashlib.sha256()

    def update(self, data: bytes) -> None:
        if self._expected is not None:
            self._hash.update(data)

    def check(self) -> None:
        if self._expected is not None and self._hash.hexdigest() != self._expected:
            raise S3AuthError("XAmzContentSHA256Mismatch", "The provided 'x-amz-content-sha256' "
                              "header does not match what was computed.", 400)


class _Crc:
    """hashlib-style update/digest over a CRC ``extend(value, data)`` function."""

    def __init__(self, extend: Callable[[int, bytes], int]) -> None:
        self._extend, self._value = extend, 0

    def update(self, data: bytes) -> None:
        self._value = self._extend(self._value, data)

    def digest(self) -> bytes:
        return self._value.to_bytes(4, "big")


def _crc32c_extend() -> Callable[[int, bytes], int] | None:
    for module, make in (("google_crc32c", lambda m: m.extend),
                         ("crc32c", lambda m: lambda value, data: m.crc32c(data, value))):
        try:
            return make(importlib.import_module(module))
        except ImportError:
            continue
    return None


def new_checksum(name: str) -> Any:
    """A fresh ``update``/``digest`` checksum for an ``x-amz-checksum-*`` name; None when it
    cannot be verified here (crc64nvme; crc32c without ``google_crc32c`` or ``crc32c``)."""
    algorithm = name.lower().removeprefix("x-amz-checksum-")
    if algorithm in ("sha1", "sha256"):
        return hashlib.new(algorithm)
    extend = {"crc32": lambda value, data: zlib.crc32(data, value)}.get(algorithm) \
        or (_crc32c_extend() if algorithm == "crc32c" else None)
    return _Crc(extend) if extend else None


_HEADER, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


class ChunkedDecoder:
    """Incremental aws-chunked decoder; the framing rules are in the module docstring."""

    def __init__(self, auth: AuthResult, declared_trailers: str | None = None, *,
                 decoded_content_length: int | None = None,
                 max_chunk_size: int = 16 * 1024 * 1024) -> None:
        if auth.payload_hash not in STREAMING:
            raise ValueError(f"not an aws-chunked payload: {auth.payload_hash}")
        self._auth = auth
        self._signed = auth.payload_hash != STREAMING_UNSIGNED_TRAILER
        self._signed_trailer = auth.payload_hash == STREAMING_SIGNED_TRAILER
        trailers = "" if auth.payload_hash == STREAMING_SIGNED else declared_trailers or ""
        self._declared = [t.strip().lower() for t in trailers.split(",") if t.strip()]
        self._length, self._max_chunk = decoded_content_length, max_chunk_size
        checksums = [n for n in self._declared if n.startswith("x-amz-checksum-")]
        self._checksums = {n: c for n in checksums if (c := new_checksum(n)) is not None}
        self.unverified = [n for n in checksums if n not in self._checksums]
        self._buf = bytearray()
        self._state, self._prev, self._chunk_sig = _HEADER, auth.seed_signature, ""
        self._remaining = self._total = 0
        self._chunk_hash = hashlib.sha256()
        self._held: list[bytes] = []  # the current signed chunk, until its signature checks
        self._trailers: dict[str, str] = {}
        self._blank_seen = False

    def feed(self, data: bytes) -> bytes:
        """Consume any piece of the body; return the payload bytes now known good."""
        self._buf += data
        out: list[bytes] = []
        pos = 0
        while True:
            avail = len(self._buf) - pos
            if self._state in (_HEADER, _TRAILER):
                end = self._buf.find(b"\r\n", pos, pos + MAX_LINE + 2)
                if end < 0:
                    if avail > MAX_LINE:
                        raise self._framing("a chunk header or trailer line is too long")
                    break
                line, pos = bytes(self._buf[pos:end]), end + 2
                (self._chunk_header if self._state == _HEADER else self._trailer_line)(line)
            elif self._state == _DATA and avail:
                piece = bytes(self._buf[pos:pos + min(avail, self._remaining)])
                pos += len(piece)
                self._remaining -= len(piece)
                self._consume(piece, out)
                self._state = _DATA if self._remaining else _DATA_END
            elif self._state == _DATA_END and avail >= 2:
                if self._buf[pos:pos + 2] != b"\r\n":
                    raise self._framing("chunk data is not followed by CRLF")
                pos += 2
                self._end_chunk()
                out.extend(self._held)
                self._held.clear()
                self._state = _HEADER
            elif self._state == _DONE and avail:
                raise self._framing("data after the end of the aws-chunked body")
            else:
                break
        del self._buf[:pos]
        return b"".join(out)

    def finish(self) -> dict[str, str]:
        """Call once the input ended; returns the trailer headers (signature excluded)."""
        if self._state != _DONE or self._buf:
            what = "trailer" if self._state == _TRAILER else "final chunk"
            raise S3AuthError("IncompleteBody", f"the aws-chunked body ended before its {what}",
                              400)
        return dict(self._trailers)

    @staticmethod
    def _framing(message: str) -> S3AuthError:
        return S3AuthError("InvalidArgument", f"malformed aws-chunked body: {message}", 400)

    def _chunk_header(self, line: bytes) -> None:
        size, _, ext = line.partition(b";")
        if not re.fullmatch(rb"[0-9a-fA-F]{1,16}", size):
            raise self._framing(f"bad chunk size {size[:32]!r}")
        self._remaining = int(size, 16)
        if self._signed:
            match = re.fullmatch(rb"chunk-signature=([0-9a-f]{64})", ext.strip())
            if not match:
                raise self._framing("chunk header lacks a valid chunk-signature")
            self._chunk_sig = match.group(1).decode()
            if self._remaining > self._max_chunk:
                raise self._framing(f"a {self._remaining}-byte chunk exceeds {self._max_chunk}")
        self._chunk_hash = hashlib.sha256()
        if self._remaining:
            self._state = _DATA
        else:  # the last chunk: no data CRLF, the (maybe empty) trailer section follows
            self._end_chunk()
            self._state = _TRAILER

    def _consume(self, piece: bytes, out: list[bytes]) -> None:
        self._total += len(piece)
        if self._length is not None and self._total > self._length:
            raise self._framing(f"more than x-amz-decoded-content-length={self._length} bytes")
        for checksum in self._checksums.values():
            checksum.update(piece)
        if self._signed:
            self._chunk_hash.update(piece)
            self._held.append(piece)
        else:
            out.append(piece)

    def _end_chunk(self) -> None:
        if self._signed:
            sts = (f"AWS4-HMAC-SHA256-PAYLOAD\n{self._auth.amz_date}\n{self._auth.scope}\n"
                   f"{self._prev}\n{EMPTY_SHA256}\n{self._chunk_hash.hexdigest()}")
            self._prev = self._expect(sts, self._chunk_sig, "chunk")

    def _expect(self, string_to_sign: str, given: str, what: str) -> str:
        expected = _hmac_hex(self._auth.signing_key, string_to_sign)
        if not hmac.compare_digest(expected, given):
            raise S3AuthError("SignatureDoesNotMatch",
                              f"the {what} signature we calculated does not match the one sent")
        return expected

    def _trailer_line(self, line: bytes) -> None:
        if line:
            name, sep, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip()
            if not sep or not name or name in self._trailers:
                raise _bad_trailer(f"malformed trailer line {line[:64]!r}")
            if name != TRAILER_SIGNATURE and name not in self._declared:
                raise _bad_trailer(f"trailer {name} was not declared in x-amz-trailer")
            if len(self._trailers) >= MAX_TRAILERS:
                raise _bad_trailer("too many trailer headers")
            self._trailers[name] = value
        elif not self._trailers and (self._declared or self._signed_trailer) \
                and not self._blank_seen:
            self._blank_seen = True  # tolerated: a CRLF between the last chunk and the trailer
        else:
            self._end_trailer()
            self._state = _DONE

    def _end_trailer(self) -> None:
        signature = self._trailers.pop(TRAILER_SIGNATURE, None)
        missing = [n for n in self._declared if n not in self._trailers]
        if missing:
            raise _bad_trailer(f"declared trailer(s) missing: {', '.join(missing)}")
        if self._signed_trailer:
            if signature is None or not HEX64.fullmatch(signature):
                raise _bad_trailer("the trailer lacks a valid x-amz-trailer-signature")
            canonical = "".join(f"{n}:{v}\n" for n, v in sorted(self._trailers.items()))
            self._expect(f"AWS4-HMAC-SHA256-TRAILER\n{self._auth.amz_date}\n{self._auth.scope}\n"
                         f"{self._prev}\n{_sha256_hex(canonical)}", signature, "trailer")
        elif signature is not None:
            raise _bad_trailer("x-amz-trailer-signature on an unsigned trailer")
        if self._length is not None and self._total != self._length:
            raise S3AuthError("IncompleteBody", f"decoded {self._total} bytes, "
                              f"x-amz-decoded-content-length says {self._length}", 400)
        for name, checksum in self._checksums.items():
            if base64.b64encode(checksum.digest()).decode() != self._trailers[name]:
                raise S3AuthError("BadDigest", f"the {name} you specified did not match the "
                                  "calculated checksum", 400)
