"""What a SigV4 request claims: the Authorization header or presigned query, parsed and checked.

Everything here needs neither the secret nor the clock, so a request that fails it is refused
before any key is looked up: the algorithm (SigV2 is InvalidRequest, SigV4A NotImplemented), the
Credential (``<key>/<YYYYMMDD>/<region>/s3/aws4_request``), the date (``x-amz-date`` or ``Date``
for header auth, ``X-Amz-Date`` for presigned URLs: a real UTC instant, so a 25th hour or a
30 February is refused here, never a 500 later), the scope day equal to the request's day,
``X-Amz-Expires`` (a number of seconds in 1..604800), ``host``, the date header used and every
``x-amz-*`` header present signed. Refusals are :class:`S3AuthError` with S3's codes and
messages: a malformed header claim is ``AuthorizationHeaderMalformed``, a malformed presigned one
``AuthorizationQueryParametersError`` (both 400), a bad ``x-amz-date``/``Date`` ``AccessDenied``.
:func:`check_region` refuses a scope signed for another region as S3 does, naming the expected
one in a ``Region`` element.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import unquote_to_bytes

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "s3"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
STREAMING = (STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER)
MAX_PRESIGN_EXPIRES = 604800
PRESIGN_PARAMS = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
                  "X-Amz-SignedHeaders", "X-Amz-Signature")

HEX64 = re.compile(r"[0-9a-f]{64}")
_AMZ_DATE = re.compile(r"[0-9]{8}T[0-9]{6}Z")  # ASCII digits only (\d takes any script's)
_SCOPE_DATE = re.compile(r"[0-9]{8}")
_EXPIRES = re.compile(r"-?[0-9]+")
_SIGV4A = "ECDSA-P256"
_NO_V2 = "Signature Version 2 is not supported; use SigV4"
_NO_DATE = "AWS authentication requires a valid Date or x-amz-date header"
_HEADER_PREFIX = "The authorization header is malformed; "
_QUERY_PREFIX = "Error parsing the X-Amz-Credential parameter; "


class S3AuthError(Exception):
    """A refused request: ``code`` is the S3 error code, ``status`` the HTTP status, ``fields``
    extra elements of S3's error document (``Region`` for a wrong region)."""

    def __init__(self, code: str, message: str, status: int = 403, **fields: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.status, self.fields = code, message, status, fields


@dataclass(frozen=True)
class ParsedAuth:
    """What the request claims; nothing here is verified until ``verify``."""

    access_key: str
    date: str  # YYYYMMDD, the credential scope date
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str
    amz_date: str  # YYYYMMDDTHHMMSSZ, a valid UTC instant
    presigned: bool
    expires: int | None
    payload_hash: str
    security_token: str | None = None  # X-Amz-Security-Token, for the server to refuse or use

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


def malformed(presigned: bool, message: str, **fields: str) -> S3AuthError:
    code = "AuthorizationQueryParametersError" if presigned else "AuthorizationHeaderMalformed"
    return S3AuthError(code, message, 400, **fields)


def _credential_error(presigned: bool, what: str, **fields: str) -> S3AuthError:
    return malformed(presigned, (_QUERY_PREFIX if presigned else _HEADER_PREFIX) + what,
                     **fields)


def check_region(parsed: ParsedAuth, region: str) -> None:
    """AuthorizationHeaderMalformed (header) or AuthorizationQueryParametersError (presigned)
    unless the scope names ``region``: S3's message, and the expected region in ``Region``."""
    if parsed.region != region:
        raise _credential_error(parsed.presigned, f"the region '{parsed.region}' is wrong; "
                                f"expecting '{region}'", Region=region)


def split_path(raw_path: str, raw_query: str) -> tuple[str, str]:
    path, sep, query = raw_path.partition("?")
    return path or "/", (raw_query if raw_query or not sep else query)


def query_pairs(raw_query: str) -> list[tuple[str, str]]:
    """Raw (still encoded) name/value pairs in request order; empty segments dropped."""
    return [(n, v) for n, _, v in (p.partition("=") for p in raw_query.split("&") if p)]


def decode_component(component: str) -> bytes:
    return unquote_to_bytes(component.replace("+", " "))


def component_text(component: str) -> str:
    return decode_component(component).decode("utf-8", "surrogateescape")


def amz_time(value: str) -> datetime:
    """``YYYYMMDDTHHMMSSZ`` as an aware UTC datetime (what ``strptime`` would take, at a tenth
    of its cost); ValueError for anything else, hour 24, minute 60 or 30 February included."""
    if not _AMZ_DATE.fullmatch(value):
        raise ValueError(f"not an ISO 8601 basic time: {value!r}")
    return datetime(int(value[:4]), int(value[4:6]), int(value[6:8]), int(value[9:11]),
                    int(value[11:13]), int(value[13:15]), tzinfo=UTC)


def _is_amz_time(value: str) -> bool:
    try:
        amz_time(value)
    except ValueError:
        return False
    return True


def parse_request(method: str, raw_path: str, raw_query: str,
                  headers: Mapping[str, str]) -> ParsedAuth | None:
    """Find the SigV4 claim (Authorization header or presigned query); None if anonymous.

    Every check that needs neither the secret nor the clock happens here (see the module
    docstring); ``headers`` is case-insensitive (aiohttp's ``CIMultiDictProxy``).
    """
    _, raw_query = split_path(raw_path, raw_query)
    pairs = [(component_text(n), component_text(v)) for n, v in query_pairs(raw_query)]
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
        raise malformed(parsed.presigned, "SignedHeaders must include host")
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
            raise malformed(True, f"X-Amz-Algorithm only supports {ALGORITHM}")
        if algorithm == "AWS":
            raise S3AuthError("InvalidRequest", _NO_V2, 400)
        raise S3AuthError("InvalidArgument", f"Unsupported Authorization Type {algorithm!r}", 400)
    parts = credential.rsplit("/", 4)
    if len(parts) != 5 or not parts[0] or not parts[2] or parts[4] != "aws4_request" \
            or not _SCOPE_DATE.fullmatch(parts[1]):
        raise malformed(presigned, f"invalid Credential {credential!r}; expected "
                        f"<access key>/<YYYYMMDD>/<region>/{SERVICE}/aws4_request")
    if parts[3] != SERVICE:
        raise _credential_error(presigned, f"incorrect service '{parts[3]}'. This endpoint "
                                f"belongs to '{SERVICE}'.")
    signed = tuple(signed_headers.lower().split(";"))
    if not all(signed):
        raise malformed(presigned, f"invalid SignedHeaders {signed_headers!r}")
    if not HEX64.fullmatch(signature.lower()):
        raise malformed(presigned, "Signature must be 64 hexadecimal characters")
    return parts[0], parts[1], parts[2], parts[3], signed, signature.lower()


def _payload_hash(value: str) -> str:
    value = value.strip()
    if value in (UNSIGNED_PAYLOAD, *STREAMING) or HEX64.fullmatch(value.lower()):
        return value
    if value.startswith("STREAMING-") and _SIGV4A in value:
        raise S3AuthError("NotImplemented", "SigV4A (ECDSA) streaming is not supported", 501)
    raise S3AuthError("InvalidArgument", "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, "
                      "a STREAMING-* value or a valid sha256 value", 400)


def _request_date(headers: Mapping[str, str]) -> tuple[str, str]:
    """(YYYYMMDDTHHMMSSZ, the header it came from): x-amz-date, else Date; AccessDenied unless
    it is a real instant (as S3 answers a malformed x-amz-date)."""
    if headers.get("x-amz-date") is not None:
        if not _is_amz_time(value := headers["x-amz-date"].strip()):
            raise S3AuthError("AccessDenied", _NO_DATE)
        return value, "x-amz-date"
    try:
        stamp = parsedate_to_datetime(headers.get("Date") or "")
        stamp = (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).astimezone(UTC)
    except (TypeError, ValueError, OverflowError):  # OverflowError: year 1 or 9999 in a zone
        raise S3AuthError("AccessDenied", _NO_DATE) from None
    value = f"{stamp.year:04d}{stamp.month:02d}{stamp.day:02d}T" \
            f"{stamp.hour:02d}{stamp.minute:02d}{stamp.second:02d}Z"
    return value, "date"


def _parse_header(value: str, headers: Mapping[str, str]) -> ParsedAuth:
    algorithm, _, rest = value.partition(" ")
    if algorithm != ALGORITHM:
        _claim(False, algorithm, "", "", "")  # raises the right error
    fields: dict[str, str] = {}
    for part in rest.split(","):
        key, sep, val = part.strip().partition("=")
        if not sep or key in fields or key not in ("Credential", "SignedHeaders", "Signature"):
            raise malformed(False, f"malformed component {part.strip()!r}")
        fields[key] = val.strip()
    if len(fields) != 3:
        raise malformed(False, "Authorization needs Credential, SignedHeaders and Signature")
    access_key, date, region, service, signed, signature = _claim(
        False, algorithm, fields["Credential"], fields["SignedHeaders"], fields["Signature"])
    amz_date, date_header = _request_date(headers)
    if date_header not in signed:
        raise S3AuthError("AccessDenied", f"the {date_header} header must be signed")
    if amz_date[:8] != date:
        raise malformed(False, f"credential date {date} is not the request date {amz_date[:8]}")
    if headers.get("x-amz-content-sha256") is None:
        raise S3AuthError("InvalidRequest", "Missing required header for this request: "
                          "x-amz-content-sha256", 400)
    return ParsedAuth(access_key, date, region, service, signed, signature, amz_date, False, None,
                      _payload_hash(headers["x-amz-content-sha256"]),
                      headers.get("x-amz-security-token"))


def _expires(value: str) -> int:
    """X-Amz-Expires as seconds in 1..MAX_PRESIGN_EXPIRES, refused with S3's messages (and never
    converting a 5,000-digit number)."""
    if not _EXPIRES.fullmatch(value):
        raise malformed(True, "X-Amz-Expires should be a number")
    if value.startswith("-"):
        raise malformed(True, "X-Amz-Expires must be non-negative")
    digits = value.lstrip("0")
    if len(digits) > len(str(MAX_PRESIGN_EXPIRES)) or int(digits or "0") > MAX_PRESIGN_EXPIRES:
        raise malformed(True, "X-Amz-Expires must be less than a week (in seconds) that is "
                        f"{MAX_PRESIGN_EXPIRES}")
    if not digits:
        raise malformed(True, "X-Amz-Expires must be at least 1 second")
    return int(digits)


def _parse_query(pairs: list[tuple[str, str]], headers: Mapping[str, str]) -> ParsedAuth:
    names = [n for n, _ in pairs]
    for name in PRESIGN_PARAMS:
        if names.count(name) != 1:
            raise malformed(True, f"query-string authentication needs exactly one {name}")
    query = dict(pairs)
    access_key, date, region, service, signed, signature = _claim(
        True, query["X-Amz-Algorithm"], query["X-Amz-Credential"], query["X-Amz-SignedHeaders"],
        query["X-Amz-Signature"])
    amz_date = query["X-Amz-Date"]
    if not _is_amz_time(amz_date):
        raise malformed(True, "X-Amz-Date must be in the ISO8601 Long Format "
                        "\"yyyyMMdd'T'HHmmss'Z'\"")
    if amz_date[:8] != date:
        raise malformed(True, f"credential date {date} is not X-Amz-Date's day {amz_date[:8]}")
    expires = _expires(query["X-Amz-Expires"])
    payload_hash = UNSIGNED_PAYLOAD
    if "x-amz-content-sha256" in signed and headers.get("x-amz-content-sha256") is not None:
        payload_hash = _payload_hash(headers["x-amz-content-sha256"])
    return ParsedAuth(access_key, date, region, service, signed, signature, amz_date, True,
                      expires, payload_hash, query.get("X-Amz-Security-Token"))
