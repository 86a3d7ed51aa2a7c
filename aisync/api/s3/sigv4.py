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

Checks: ``host``, the date header used and every ``x-amz-*`` header present must be signed (as on
S3: no ``x-amz-copy-source`` slipped under a presigned PUT); service ``s3``; scope date = request
day; header auth within ``max_skew_seconds`` of ``now``; presigned ``X-Amz-Expires`` in 1..604800,
valid from ``X-Amz-Date - skew`` through ``X-Amz-Date + expires`` inclusive. SigV2 is refused
(InvalidRequest), SigV4A is NotImplemented. Signatures are compared with ``hmac.compare_digest``.

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
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, unquote_to_bytes

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
STREAMING = (STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER)
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MAX_PRESIGN_EXPIRES = 604800
MAX_LINE = 4096  # longest chunk header or trailer line accepted
MAX_TRAILERS = 16
TRAILER_SIGNATURE = "x-amz-trailer-signature"
PRESIGN_PARAMS = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
                  "X-Amz-SignedHeaders", "X-Amz-Signature")

_HEX64 = re.compile(r"[0-9a-f]{64}")
_AMZ_DATE = re.compile(r"\d{8}T\d{6}Z")
_SIGV4A = "ECDSA-P256"
_NO_V2 = "Signature Version 2 is not supported; use SigV4"
_NO_DATE = "AWS authentication requires a valid Date or x-amz-date header"


class S3AuthError(Exception):
    """A refused request: ``code`` is the S3 error code, ``status`` the HTTP status."""

    def __init__(self, code: str, message: str, status: int = 403) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.status = code, message, status


@dataclass(frozen=True)
class ParsedAuth:
    """What the request claims; nothing here is verified until ``verify``."""

    access_key: str
    date: str  # YYYYMMDD, the credential scope date
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str
    amz_date: str  # YYYYMMDDTHHMMSSZ
    presigned: bool
    expires: int | None
    payload_hash: str
    security_token: str | None = None  # X-Amz-Security-Token, for the server to refuse or use

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


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


def _malformed(presigned: bool, message: str) -> S3AuthError:
    code = "AuthorizationQueryParametersError" if presigned else "AuthorizationHeaderMalformed"
    return S3AuthError(code, message, 400)


def _bad_trailer(message: str) -> S3AuthError:
    return S3AuthError("MalformedTrailerError", message, 400)


def _getall(headers: Mapping[str, str], name: str) -> list[str]:
    if hasattr(headers, "getall"):
        return list(headers.getall(name, []))
    return [] if headers.get(name) is None else [headers[name]]


def _split_path(raw_path: str, raw_query: str) -> tuple[str, str]:
    path, sep, query = raw_path.partition("?")
    return path or "/", (raw_query if raw_query or not sep else query)


def _query_pairs(raw_query: str) -> list[tuple[str, str]]:
    """Raw (still encoded) name/value pairs in request order; empty segments dropped."""
    return [(n, v) for n, _, v in (p.partition("=") for p in raw_query.split("&") if p)]


def _decode(component: str) -> bytes:
    return unquote_to_bytes(component.replace("+", " "))


def _text(component: str) -> str:
    return _decode(component).decode("utf-8", "surrogateescape")


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


# ---------------------------------------------------------------- parsing the claim


def parse_request(method: str, raw_path: str, raw_query: str,
                  headers: Mapping[str, str]) -> ParsedAuth | None:
    """Find the SigV4 claim (Authorization header or presigned query); None if anonymous.

    Every check that needs neither the secret nor the clock happens here.
    """
    _, raw_query = _split_path(raw_path, raw_query)
    pairs = [(_text(n), _text(v)) for n, v in _query_pairs(raw_query)]
    names = {n for n, _ in pairs}
    auth_header = headers.get("Authorization")
    if auth_header is not None and "X-Amz-Algorithm" in names:
        raise S3AuthError("InvalidArgument", "Only one auth mechanism allowed; send either the "
                          "X-Amz-Algorithm query parameter or the Authorization header", 400)
    if auth_header is not None:
        parsed = _parse_header(auth_header.strip(), headers)
    elif "X-Amz-Algorithm" in names:
        parsed = _parse_query(pairs, headers)
    elif "AWSAccessKeyId" in names and "Signature" in names:
        raise S3AuthError("InvalidRequest", _NO_V2, 400)
    else:
        return None
    if "host" not in parsed.signed_headers:
        raise _malformed(parsed.presigned, "SignedHeaders must include host")
    exempt = {"x-amz-content-sha256"} if parsed.presigned else set()  # ignored there if unsigned
    unsigned = {k.lower() for k in headers if k.lower().startswith("x-amz-")}
    unsigned -= set(parsed.signed_headers) | exempt
    if unsigned:
        raise S3AuthError("AccessDenied", "There were headers present in the request which were "
                          "not signed: " + ", ".join(sorted(unsigned)))
    return parsed


def _claim(presigned: bool, algorithm: str, credential: str, signed_headers: str,
           signature: str) -> tuple[str, str, str, str, tuple[str, ...], str]:
    """Validate the parts both forms share: (access key, date, region, service, signed, sig)."""
    if algorithm != ALGORITHM:
        if _SIGV4A in algorithm:
            raise S3AuthError("NotImplemented", "SigV4A (ECDSA) signing is not supported", 501)
        if presigned:
            raise _malformed(True, f"X-Amz-Algorithm only supports {ALGORITHM}")
        if algorithm == "AWS":
            raise S3AuthError("InvalidRequest", _NO_V2, 400)
        raise S3AuthError("InvalidArgument", f"Unsupported Authorization Type {algorithm!r}", 400)
    parts = credential.rsplit("/", 4)
    if len(parts) != 5 or not parts[0] or not parts[2] or parts[4] != "aws4_request" \
            or not re.fullmatch(r"\d{8}", parts[1]):
        raise _malformed(presigned, f"invalid Credential {credential!r}; expected "
                         "<access key>/<YYYYMMDD>/<region>/s3/aws4_request")
    if parts[3] != "s3":
        raise _malformed(presigned, f"incorrect service {parts[3]!r}; this endpoint is 's3'")
    signed = tuple(signed_headers.lower().split(";"))
    if not all(signed):
        raise _malformed(presigned, f"invalid SignedHeaders {signed_headers!r}")
    if not _HEX64.fullmatch(signature.lower()):
        raise _malformed(presigned, "Signature must be 64 hexadecimal characters")
    return parts[0], parts[1], parts[2], parts[3], signed, signature.lower()


def _payload_hash(value: str) -> str:
    value = value.strip()
    if value in (UNSIGNED_PAYLOAD, *STREAMING) or _HEX64.fullmatch(value.lower()):
        return value
    if value.startswith("STREAMING-") and _SIGV4A in value:
        raise S3AuthError("NotImplemented", "SigV4A (ECDSA) streaming is not supported", 501)
    raise S3AuthError("InvalidArgument", "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, "
                      "a STREAMING-* value or a valid sha256 value", 400)


def _request_date(headers: Mapping[str, str]) -> tuple[str, str]:
    """(YYYYMMDDTHHMMSSZ, the header it came from): x-amz-date, else Date."""
    if headers.get("x-amz-date") is not None:
        if not _AMZ_DATE.fullmatch(value := headers["x-amz-date"].strip()):
            raise S3AuthError("AccessDenied", _NO_DATE)
        return value, "x-amz-date"
    try:
        stamp = parsedate_to_datetime(headers.get("Date") or "")
    except (TypeError, ValueError):
        raise S3AuthError("AccessDenied", _NO_DATE) from None
    stamp = stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
    return stamp.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ"), "date"


def _parse_header(value: str, headers: Mapping[str, str]) -> ParsedAuth:
    algorithm, _, rest = value.partition(" ")
    if algorithm != ALGORITHM:
        _claim(False, algorithm, "", "", "")  # raises the right error
    fields: dict[str, str] = {}
    for part in rest.split(","):
        key, sep, val = part.strip().partition("=")
        if not sep or key in fields or key not in ("Credential", "SignedHeaders", "Signature"):
            raise _malformed(False, f"malformed component {part.strip()!r}")
        fields[key] = val.strip()
    if len(fields) != 3:
        raise _malformed(False, "Authorization needs Credential, SignedHeaders and Signature")
    access_key, date, region, service, signed, signature = _claim(
        False, algorithm, fields["Credential"], fields["SignedHeaders"], fields["Signature"])
    amz_date, date_header = _request_date(headers)
    if date_header not in signed:
        raise S3AuthError("AccessDenied", f"the {date_header} header must be signed")
    if amz_date[:8] != date:
        raise _malformed(False, f"credential date {date} is not the request date {amz_date[:8]}")
    if headers.get("x-amz-content-sha256") is None:
        raise S3AuthError("InvalidRequest", "Missing required header for this request: "
                          "x-amz-content-sha256", 400)
    return ParsedAuth(access_key, date, region, service, signed, signature, amz_date, False, None,
                      _payload_hash(headers["x-amz-content-sha256"]),
                      headers.get("x-amz-security-token"))


def _parse_query(pairs: list[tuple[str, str]], headers: Mapping[str, str]) -> ParsedAuth:
    names = [n for n, _ in pairs]
    for name in PRESIGN_PARAMS:
        if names.count(name) != 1:
            raise _malformed(True, f"query-string authentication needs exactly one {name}")
    query = dict(pairs)
    access_key, date, region, service, signed, signature = _claim(
        True, query["X-Amz-Algorithm"], query["X-Amz-Credential"], query["X-Amz-SignedHeaders"],
        query["X-Amz-Signature"])
    amz_date, expires = query["X-Amz-Date"], query["X-Amz-Expires"]
    if not _AMZ_DATE.fullmatch(amz_date):
        raise _malformed(True, "X-Amz-Date must be in the ISO8601 Long Format YYYYMMDDTHHMMSSZ")
    if amz_date[:8] != date:
        raise _malformed(True, f"credential date {date} is not X-Amz-Date's day {amz_date[:8]}")
    if not expires.isdigit() or not 1 <= int(expires) <= MAX_PRESIGN_EXPIRES:
        raise _malformed(True, f"X-Amz-Expires must be a number of seconds in "
                         f"1..{MAX_PRESIGN_EXPIRES}")
    payload_hash = UNSIGNED_PAYLOAD
    if "x-amz-content-sha256" in signed and headers.get("x-amz-content-sha256") is not None:
        payload_hash = _payload_hash(headers["x-amz-content-sha256"])
    return ParsedAuth(access_key, date, region, service, signed, signature, amz_date, True,
                      int(expires), payload_hash, query.get("X-Amz-Security-Token"))


# ---------------------------------------------------------------- verifying the signature


def canonical_requests(parsed: ParsedAuth, method: str, raw_path: str, raw_query: str,
                       headers: Mapping[str, str]) -> Iterator[str]:
    """The canonical requests to try: the spec form first, then the fallbacks (see top)."""
    path, raw_query = _split_path(raw_path, raw_query)
    pairs = [(n, v) for n, v in _query_pairs(raw_query) if _text(n) != "X-Amz-Signature"]
    spec = sorted((quote(_decode(n), safe=""), quote(_decode(v), safe="")) for n, v in pairs)
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


def amz_time(value: str) -> datetime:
    """``YYYYMMDDTHHMMSSZ`` (what ``strptime`` would take, at a tenth of its cost); ValueError
    if it is not that."""
    if len(value) != 16 or value[8] != "T" or value[15] != "Z" or \
            not (value[:8] + value[9:15]).isdigit():
        raise ValueError(f"not an ISO 8601 basic time: {value!r}")
    return datetime(int(value[:4]), int(value[4:6]), int(value[6:8]), int(value[9:11]),
                    int(value[11:13]), int(value[13:15]), tzinfo=UTC)


def verify(parsed: ParsedAuth, secret_key: str, method: str, raw_path: str, raw_query: str,
           headers: Mapping[str, str], now: datetime, max_skew_seconds: int = 900, *,
           region: str | None = None) -> AuthResult:
    """Check the clock rules and the signature; ``region``, if given, must be the scope's."""
    if region is not None and parsed.region != region:
        raise _malformed(parsed.presigned,
                         f"the region {parsed.region!r} is wrong; expecting {region!r}")
    now = now if now.tzinfo else now.replace(tzinfo=UTC)
    signed_at = amz_time(parsed.amz_date)
    skew = timedelta(seconds=max_skew_seconds)
    if parsed.presigned:
        if now + skew < signed_at:
            raise S3AuthError("AccessDenied", "Request is not valid yet")
        if now > signed_at + timedelta(seconds=parsed.expires or 0):
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
            if signature is None or not _HEX64.fullmatch(signature):
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
