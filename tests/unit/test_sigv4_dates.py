"""SigV4 dates, expiry, region and service: every malformed value is S3's 4xx, decided while
parsing the claim (before any secret is looked up or signature computed), never a 500.

The claims are written by hand (the checks come before the signature, so any 64-hex signature
will do); the same claims with valid values parse, so each refusal is the value's fault.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
from multidict import CIMultiDict

from aisync.s3.sigv4 import (
    MAX_PRESIGN_EXPIRES,
    S3AuthError,
    amz_time,
    check_region,
    parse_request,
    verify,
)

AK, REGION, HOST = "AKIAAISYNCDATES0001", "us-east-1", "127.0.0.1:9"
SIGNATURE = "0" * 64
EMPTY_SHA = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
GOOD = "20240309T123015Z"

BAD_TIMES = [
    "20240309T240000Z",  # hour 24
    "20240309T126015Z",  # minute 60
    "20240309T123060Z",  # second 60
    "20240309T993015Z",
    "20230229T000000Z",  # not a leap year
    "20241301T000000Z",  # month 13
    "20240300T000000Z",  # day 0
    "00000101T000000Z",  # year 0
    "2024-03-09T12:30:15Z",
    "20240309T123015",
    "20240309t123015z",
    "٢٠٢٤0309T123015Z",  # digits of another script (\d would take them)
    "²0240309T123015Z",
    "",
    "x" * 5000,
]


def header_claim(amz_date: str = GOOD, *, scope_date: str | None = None,
                 region: str = REGION, service: str = "s3", date: str | None = None):
    scope = f"{AK}/{scope_date or amz_date[:8]}/{region}/{service}/aws4_request"
    headers = CIMultiDict({"Host": HOST, "x-amz-content-sha256": EMPTY_SHA})
    signed = "host;x-amz-content-sha256;"
    if date is not None:
        headers["Date"] = date
        signed += "date"
    else:
        headers["x-amz-date"] = amz_date
        signed += "x-amz-date"
    headers["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={scope}, "
                                f"SignedHeaders={signed}, Signature={SIGNATURE}")
    return "GET", "/bkt/key", "", headers


def query_claim(amz_date: str = GOOD, expires: str = "600", *, scope_date: str | None = None,
                region: str = REGION, service: str = "s3"):
    scope = f"{AK}/{scope_date or amz_date[:8]}/{region}/{service}/aws4_request"
    params = {"X-Amz-Algorithm": "AWS4-HMAC-SHA256", "X-Amz-Credential": scope,
              "X-Amz-Date": amz_date, "X-Amz-Expires": expires, "X-Amz-SignedHeaders": "host",
              "X-Amz-Signature": SIGNATURE}
    query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params.items())
    return "GET", "/bkt/key", query, CIMultiDict({"Host": HOST})


def refusal(claim) -> S3AuthError:
    with pytest.raises(S3AuthError) as exc:
        parse_request(*claim)
    return exc.value


def test_valid_claims_parse():
    parsed = parse_request(*header_claim())
    assert parsed.amz_date == GOOD and not parsed.presigned
    presigned = parse_request(*query_claim())
    assert presigned.presigned and presigned.expires == 600
    dated = parse_request(*header_claim(date="Sat, 09 Mar 2024 12:30:15 GMT"))
    assert dated.amz_date == GOOD


@pytest.mark.parametrize("value", BAD_TIMES)
def test_bad_x_amz_date_header_is_access_denied(value):
    claim = header_claim(value, scope_date="20240309")
    error = refusal(claim)
    assert (error.code, error.status) == ("AccessDenied", 403)
    assert "x-amz-date" in error.message


@pytest.mark.parametrize("value", BAD_TIMES)
def test_bad_presigned_x_amz_date(value):
    error = refusal(query_claim(value, scope_date="20240309"))
    assert (error.code, error.status) == ("AuthorizationQueryParametersError", 400)
    assert "ISO8601" in error.message


@pytest.mark.parametrize("value", ["Sat, 09 Mar 2024 25:30:15 GMT", "Sat, 09 Mar 2024 12:61:15 GMT",
                                   "Bad Date", "", "Fri, 31 Dec 9999 23:59:59 -0100"])
def test_bad_date_header_is_access_denied(value):
    error = refusal(header_claim(date=value, scope_date="20240309"))
    assert (error.code, error.status) == ("AccessDenied", 403)


def test_date_header_of_an_early_year_keeps_four_digits():
    parsed = parse_request(*header_claim(date="Mon, 01 Jan 0999 00:00:00 GMT",
                                         scope_date="09990101"))
    assert parsed.amz_date == "09990101T000000Z"


@pytest.mark.parametrize(("value", "says"), [
    ("abc", "should be a number"), ("", "should be a number"), ("1e3", "should be a number"),
    ("６００", "should be a number"), ("²", "should be a number"), (" 600", "should be a number"),
    ("-1", "must be non-negative"), ("-" + "9" * 5000, "must be non-negative"),
    ("604801", "less than a week"), ("9" * 5000, "less than a week"),
    ("0" * 4000 + "604801", "less than a week"), ("0", "at least 1"),
])
def test_bad_x_amz_expires(value, says):
    error = refusal(query_claim(expires=value))
    assert (error.code, error.status) == ("AuthorizationQueryParametersError", 400)
    assert says in error.message


def test_x_amz_expires_bounds_and_leading_zeros_parse():
    assert parse_request(*query_claim(expires="1")).expires == 1
    assert parse_request(*query_claim(expires=str(MAX_PRESIGN_EXPIRES))).expires == 604800
    assert parse_request(*query_claim(expires="000600")).expires == 600


@pytest.mark.parametrize("make", [header_claim, query_claim])
def test_wrong_region_names_the_expected_one(make):
    parsed = parse_request(*make(region="eu-west-1"))
    with pytest.raises(S3AuthError) as exc:
        check_region(parsed, REGION)
    error = exc.value
    expected_code = ("AuthorizationQueryParametersError" if parsed.presigned
                     else "AuthorizationHeaderMalformed")
    assert (error.code, error.status) == (expected_code, 400)
    assert "the region 'eu-west-1' is wrong; expecting 'us-east-1'" in error.message
    assert error.fields == {"Region": REGION}
    check_region(parse_request(*make()), REGION)  # the right region passes


@pytest.mark.parametrize("make", [header_claim, query_claim])
def test_verify_checks_the_region_before_the_clock_and_signature(make):
    method, path, query, headers = make(region="xx-fake-9")
    parsed = parse_request(method, path, query, headers)
    far_future = datetime(2999, 1, 1, tzinfo=UTC)
    with pytest.raises(S3AuthError) as exc:
        verify(parsed, "secret", method, path, query, headers, far_future, region=REGION)
    assert exc.value.fields == {"Region": REGION}


@pytest.mark.parametrize("make", [header_claim, query_claim])
def test_wrong_service(make):
    error = refusal(make(service="iam"))
    assert error.status == 400 and "incorrect service 'iam'" in error.message


@pytest.mark.parametrize("amz_date", ["99991231T235959Z", "00010101T000000Z"])
def test_dates_at_the_ends_of_the_calendar_are_refused_by_the_clock_not_a_crash(amz_date):
    for method, path, query, headers in (header_claim(amz_date),
                                         query_claim(amz_date, str(MAX_PRESIGN_EXPIRES))):
        parsed = parse_request(method, path, query, headers)
        with pytest.raises(S3AuthError) as exc:
            verify(parsed, "secret", method, path, query, headers, datetime.now(UTC))
        assert exc.value.code in ("AccessDenied", "RequestTimeTooSkewed")


def test_presigned_window_is_still_inclusive():
    method, path, query, headers = query_claim(expires="600")
    parsed = parse_request(method, path, query, headers)
    signed_at = amz_time(GOOD)
    late = signed_at + timedelta(seconds=601)
    with pytest.raises(S3AuthError, match="expired"):
        verify(parsed, "secret", method, path, query, headers, late)
    with pytest.raises(S3AuthError) as exc:  # in the window: only the signature is wrong
        verify(parsed, "secret", method, path, query, headers, signed_at + timedelta(seconds=600))
    assert exc.value.code == "SignatureDoesNotMatch"


@pytest.mark.parametrize("value", BAD_TIMES)
def test_amz_time_refuses_every_bad_value_with_value_error(value):
    with pytest.raises(ValueError):
        amz_time(value)
