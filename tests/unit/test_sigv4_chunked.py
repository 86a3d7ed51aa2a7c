"""aws-chunked bodies (``ChunkedDecoder``): round trips with an independent encoder in any
split, damaged chunks and signatures, truncation, and trailers with their checksums (including
botocore's own unsigned-trailer bodies). The clock is fixed as in ``test_sigv4``."""

from __future__ import annotations

import base64
import hashlib
import random
import re
import zlib

import pytest
from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum, Sha1Checksum, Sha256Checksum

from aisync.s3.sigv4 import (
    STREAMING_SIGNED,
    STREAMING_SIGNED_TRAILER,
    STREAMING_UNSIGNED_TRAILER,
    AuthResult,
    ChunkedDecoder,
    S3AuthError,
)
from tests.unit.sigv4_wire import (
    FixedPayload,
    code_of,
    encode_chunked,
    key_path,
    pin_botocore_clock,
    sign,
)


@pytest.fixture(autouse=True)
def _botocore_signs_at_t0(monkeypatch):
    pin_botocore_clock(monkeypatch)


def streaming_auth(marker: str, decoded: int, trailer: str | None = None) -> AuthResult:
    headers = {"Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": str(decoded)}
    if trailer:
        headers["x-amz-trailer"] = trailer
    wire = sign("PUT", key_path("bkt", "big obj"), headers=headers,
                signer=FixedPayload.with_payload(marker))
    auth = wire.check()
    assert auth.streaming and auth.payload_hash == marker
    return auth


def encode_for(auth: AuthResult, payload: bytes, chunk: int, **kw) -> bytes:
    return encode_chunked(payload, chunk, amz_date=auth.amz_date, scope=auth.scope,
                          seed=auth.seed_signature, **kw)


def feed_split(decoder: ChunkedDecoder, body: bytes, rng: random.Random, max_piece: int) -> bytes:
    out, i = bytearray(), 0
    while i < len(body):
        n = rng.randint(1, max_piece)
        out += decoder.feed(body[i:i + n])
        i += n
    return bytes(out)


PAYLOAD = random.Random(7).randbytes(70_001)


@pytest.mark.parametrize("max_piece", [1, 7, 8193, 100_000])
@pytest.mark.parametrize("chunk", [8192, 65536, 70_001, 99_999])
def test_signed_chunked_round_trip_any_split(chunk, max_piece):
    payload = PAYLOAD[:3000] if max_piece == 1 else PAYLOAD  # 1-byte feeds: keep it quick
    auth = streaming_auth(STREAMING_SIGNED, len(payload))
    body = encode_for(auth, payload, chunk)
    decoder = ChunkedDecoder(auth, decoded_content_length=len(payload))
    assert feed_split(decoder, body, random.Random(chunk + max_piece), max_piece) == payload
    assert decoder.finish() == {}


def test_signed_chunks_are_released_only_once_verified():
    auth = streaming_auth(STREAMING_SIGNED, len(PAYLOAD))
    body = encode_for(auth, PAYLOAD, 65536)
    decoder = ChunkedDecoder(auth)
    assert decoder.feed(body[:60_000]) == b""  # first chunk not complete: nothing released
    assert len(decoder.feed(body[60_000:65_700])) == 65536


@pytest.mark.parametrize("damage", ["payload-byte", "chunk-signature", "reordered"])
def test_signed_chunk_damage_is_detected(damage):
    auth = streaming_auth(STREAMING_SIGNED, len(PAYLOAD))
    body = bytearray(encode_for(auth, PAYLOAD, 8192))
    if damage == "payload-byte":
        body[20_000] ^= 0x01
    elif damage == "chunk-signature":
        at = body.index(b"chunk-signature=", 9000) + len(b"chunk-signature=")
        body[at:at + 1] = b"0" if body[at:at + 1] != b"0" else b"1"
    else:  # a correctly signed chunk replayed in the wrong place
        first = bytes(body[:body.index(b"\r\n") + 2 + 8192 + 2])
        body = bytearray(first + first + body[len(first):])
    with pytest.raises(S3AuthError) as exc:
        feed_split(ChunkedDecoder(auth), bytes(body), random.Random(1), 5000)
    assert exc.value.code == "SignatureDoesNotMatch" and exc.value.status == 403


def test_truncated_and_malformed_bodies():
    auth = streaming_auth(STREAMING_SIGNED, len(PAYLOAD))
    body = encode_for(auth, PAYLOAD, 8192)
    final = body.rindex(b"0;chunk-signature=")
    for cut in (len(body) - 1, final, final - 1, 100, 0):
        decoder = ChunkedDecoder(auth)
        decoder.feed(body[:cut])
        assert code_of(decoder.finish) == "IncompleteBody"
    garbage = [b"zz;chunk-signature=" + b"0" * 64 + b"\r\n",   # not hex
               b"10\r\n" + b"x" * 16 + b"\r\n",                   # signed chunk without signature
               b"9" * 5000,                                      # endless header line
               body[:8192 + 100].replace(b"\r\n", b"\n", 1)]     # bare LF
    for bad in garbage:
        assert code_of(ChunkedDecoder(auth).feed, bad) in ("InvalidArgument",
                                                          "SignatureDoesNotMatch")
    assert code_of(ChunkedDecoder(auth).feed, body + b"x") == "InvalidArgument"  # after the end
    data_end = body.index(b"\r\n") + 2 + 8192
    assert body[data_end:data_end + 2] == b"\r\n"
    no_crlf = body[:data_end] + b"XY" + body[data_end + 2:]
    assert code_of(ChunkedDecoder(auth).feed, no_crlf) == "InvalidArgument"
    short = ChunkedDecoder(auth, decoded_content_length=len(PAYLOAD) + 1)
    assert code_of(short.feed, body) == "IncompleteBody"
    long = ChunkedDecoder(auth, decoded_content_length=len(PAYLOAD) - 1)
    assert code_of(long.feed, body) == "InvalidArgument"
    capped = ChunkedDecoder(auth, max_chunk_size=4096)
    assert code_of(capped.feed, body) == "InvalidArgument"


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def crc32_b64(data: bytes) -> str:
    return b64(zlib.crc32(data).to_bytes(4, "big"))


def botocore_unsigned_trailer(payload: bytes, checksum_cls, name: str) -> tuple[AuthResult, bytes]:
    """A real botocore STREAMING-UNSIGNED-PAYLOAD-TRAILER request and its aws-chunked body."""
    context = {"checksum": {"request_algorithm": {"in": "trailer", "name": name}}}
    wire = sign("PUT", "/bkt/k", headers={"Content-Encoding": "aws-chunked", "x-amz-trailer": name,
                                          "x-amz-decoded-content-length": str(len(payload))},
                context=context)
    auth = wire.check()
    assert auth.payload_hash == STREAMING_UNSIGNED_TRAILER
    wrapped = AwsChunkedWrapper(_Reader(payload), checksum_cls=checksum_cls, checksum_name=name,
                                chunk_size=10_000)
    return auth, wrapped.read()


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data, self._pos = data, 0

    def read(self, n: int = -1) -> bytes:
        out = self._data[self._pos:self._pos + n]
        self._pos += len(out)
        return out


@pytest.mark.parametrize(("cls", "name"), [(Crc32Checksum, "x-amz-checksum-crc32"),
                                           (Sha1Checksum, "x-amz-checksum-sha1"),
                                           (Sha256Checksum, "x-amz-checksum-sha256")])
def test_botocore_unsigned_trailer_checksums(cls, name):
    auth, body = botocore_unsigned_trailer(PAYLOAD, cls, name)
    decoder = ChunkedDecoder(auth, name, decoded_content_length=len(PAYLOAD))
    assert feed_split(decoder, body, random.Random(3), 3001) == PAYLOAD
    assert set(decoder.finish()) == {name}
    wrong = body[:-10] + (b"A" if body[-10:-9] != b"A" else b"B") + body[-9:]
    with pytest.raises(S3AuthError) as exc:
        ChunkedDecoder(auth, name).feed(wrong)
    assert exc.value.code == "BadDigest" and exc.value.status == 400


def test_unsigned_trailer_crc32_right_and_wrong():
    auth = streaming_auth(STREAMING_UNSIGNED_TRAILER, len(PAYLOAD), "x-amz-checksum-crc32")
    good = encode_for(auth, PAYLOAD, 8192, signed=False,
                      trailers={"x-amz-checksum-crc32": crc32_b64(PAYLOAD)})
    decoder = ChunkedDecoder(auth, "x-amz-checksum-crc32")
    assert decoder.feed(good) == PAYLOAD  # unsigned chunks stream through at once
    assert decoder.finish() == {"x-amz-checksum-crc32": crc32_b64(PAYLOAD)}
    bad = encode_for(auth, PAYLOAD, 8192, signed=False,
                     trailers={"x-amz-checksum-crc32": crc32_b64(PAYLOAD + b"!")})
    assert code_of(ChunkedDecoder(auth, "x-amz-checksum-crc32").feed, bad) == "BadDigest"
    # the declared trailer never arrives / an undeclared one does
    bare = encode_for(auth, PAYLOAD, 8192, signed=False)
    missing = ChunkedDecoder(auth, "x-amz-checksum-crc32")
    missing.feed(bare)
    assert code_of(missing.finish) == "IncompleteBody"
    assert code_of(ChunkedDecoder(auth).feed, good) == "MalformedTrailerError"
    ended = bare.replace(b"0\r\n\r\n", b"0\r\n\r\n\r\n")  # a trailer section, but empty
    assert code_of(ChunkedDecoder(auth, "x-amz-checksum-crc32").feed, ended) \
        == "MalformedTrailerError"


def test_unsigned_trailer_crc32c():
    crc32c = pytest.importorskip("google_crc32c")
    value = b64(crc32c.value(PAYLOAD).to_bytes(4, "big"))
    auth = streaming_auth(STREAMING_UNSIGNED_TRAILER, len(PAYLOAD), "x-amz-checksum-crc32c")
    for trailer, ok in ((value, True), (crc32_b64(PAYLOAD), False)):
        body = encode_for(auth, PAYLOAD, 8192, signed=False,
                          trailers={"x-amz-checksum-crc32c": trailer})
        decoder = ChunkedDecoder(auth, "x-amz-checksum-crc32c")
        assert decoder.unverified == []
        if ok:
            assert decoder.feed(body) == PAYLOAD and decoder.finish()
        else:
            assert code_of(decoder.feed, body) == "BadDigest"


def test_unverifiable_checksum_is_reported_not_checked():
    auth = streaming_auth(STREAMING_UNSIGNED_TRAILER, 5, "x-amz-checksum-crc64nvme")
    body = encode_for(auth, b"hello", 8192, signed=False,
                      trailers={"x-amz-checksum-crc64nvme": "AAAAAAAAAAA="})
    decoder = ChunkedDecoder(auth, "x-amz-checksum-crc64nvme")
    assert decoder.unverified == ["x-amz-checksum-crc64nvme"]
    assert decoder.feed(body) == b"hello"


def test_signed_trailer_round_trip_and_tampering():
    name = "x-amz-checksum-sha256"
    auth = streaming_auth(STREAMING_SIGNED_TRAILER, len(PAYLOAD), name)
    right = b64(hashlib.sha256(PAYLOAD).digest())
    body = encode_for(auth, PAYLOAD, 16384, trailers={name: right})
    decoder = ChunkedDecoder(auth, name, decoded_content_length=len(PAYLOAD))
    assert feed_split(decoder, body, random.Random(5), 999) == PAYLOAD
    assert decoder.finish() == {name: right}
    # a checksum edited in transit breaks the trailer signature
    edited = body.replace(right.encode(), b64(hashlib.sha256(b"x").digest()).encode())
    assert code_of(ChunkedDecoder(auth, name).feed, edited) == "SignatureDoesNotMatch"
    # correctly signed but wrong checksum
    wrong = encode_for(auth, PAYLOAD, 16384, trailers={name: b64(hashlib.sha256(b"x").digest())})
    assert code_of(ChunkedDecoder(auth, name).feed, wrong) == "BadDigest"
    # the signature line is mandatory
    unsigned = encode_for(auth, PAYLOAD, 16384, trailers={name: right})
    unsigned = re.sub(rb"x-amz-trailer-signature:[0-9a-f]+\r\n", b"", unsigned)
    assert code_of(ChunkedDecoder(auth, name).feed, unsigned) == "MalformedTrailerError"
    for junk in ("zz", "é" * 64, "A" * 64):
        odd = re.sub(rb"(x-amz-trailer-signature:)[0-9a-f]+", b"\\g<1>" + junk.encode(), body)
        assert code_of(ChunkedDecoder(auth, name).feed, odd) == "MalformedTrailerError"


def test_blank_line_before_trailer_is_tolerated():
    name = "x-amz-checksum-crc32"
    auth = streaming_auth(STREAMING_UNSIGNED_TRAILER, 5, name)
    body = encode_for(auth, b"hello", 8192, signed=False, trailers={name: crc32_b64(b"hello")})
    padded = body.replace(b"0\r\n", b"0\r\n\r\n", 1)
    decoder = ChunkedDecoder(auth, name)
    assert decoder.feed(padded) == b"hello" and decoder.finish() == {name: crc32_b64(b"hello")}


def test_decoder_refuses_non_streaming_auth():
    with pytest.raises(ValueError):
        ChunkedDecoder(sign("GET", "/bkt/k").check())
