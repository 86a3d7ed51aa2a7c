"""An S3 request body as a stream of verified payload bytes.

:class:`VerifiedBody` turns what the client sent into the object's bytes and checks everything
the request promised about them: the signed SHA-256 (``x-amz-content-sha256``), the aws-chunked
framing with its per-chunk signatures and trailer checksums, ``x-amz-checksum-*`` headers and the
declared length. The checks can only finish at the end of the body, so the stream **holds back
its last piece** until they pass: when one fails, the consumer (the PUT to the owning target)
never receives a complete body, the target's size check refuses it and nothing is stored.
``Content-MD5`` is checked by the target itself (it computes the MD5 ETag anyway).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from aisync.s3 import sigv4
from aisync.s3.xml import S3Error

CHECKSUM_HEADERS = ("crc32", "crc32c", "sha1", "sha256", "crc64nvme")


def content_md5_hex(request: web.BaseRequest) -> str | None:
    """The request's Content-MD5 as hex; InvalidDigest when it is not a base64 MD5."""
    value = request.headers.get("Content-MD5")
    if value is None:
        return None
    try:
        digest = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != 16:
        raise S3Error("InvalidDigest", "The Content-MD5 you specified was invalid.")
    return digest.hex()


class VerifiedBody:
    """Async iterator of payload bytes; ``length`` is the payload size the client declared."""

    def __init__(self, request: web.BaseRequest, auth: sigv4.AuthResult | None) -> None:
        headers = request.headers
        self._request = request
        self._decoder: sigv4.ChunkedDecoder | None = None
        self._hasher: sigv4.PayloadHasher | None = None
        payload_hash = headers.get("x-amz-content-sha256", "")
        streaming = payload_hash.startswith("STREAMING-")
        if streaming:
            if auth is None and payload_hash != "STREAMING-UNSIGNED-PAYLOAD-TRAILER":
                raise S3Error("AccessDenied", "a signed streaming payload needs a signature")
            if auth is not None and auth.payload_hash != payload_hash:
                raise S3Error("InvalidRequest", "x-amz-content-sha256 is not the signed one")
            decoded = headers.get("x-amz-decoded-content-length")
            if decoded is None or not decoded.isdigit():
                raise S3Error("MissingContentLength",
                              "aws-chunked bodies need x-amz-decoded-content-length")
            self.length: int | None = int(decoded)
            self._decoder = sigv4.ChunkedDecoder(
                auth if auth is not None else _unsigned(), headers.get("x-amz-trailer"))
        else:
            self.length = request.content_length
            if auth is not None and auth.payload_hash not in ("", sigv4.UNSIGNED_PAYLOAD):
                self._hasher = sigv4.PayloadHasher(auth.payload_hash)
        if self.length is None:
            raise S3Error("MissingContentLength", "You must provide the Content-Length HTTP "
                          "header.")
        self._checksums: list[tuple[str, str, Any]] = []
        for name in CHECKSUM_HEADERS:
            expected = headers.get(f"x-amz-checksum-{name}")
            if expected is not None:
                checksum = sigv4.new_checksum(name)
                if checksum is not None:  # an algorithm this build cannot compute: not checked
                    self._checksums.append((name, expected.strip(), checksum))
        self.error: Exception | None = None
        self.received = 0

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._stream()

    async def _stream(self) -> AsyncIterator[bytes]:
        try:
            held = b""
            async for chunk in self._request.content.iter_any():
                data = self._decoder.feed(chunk) if self._decoder is not None else chunk
                if not data:
                    continue
                self._account(data)
                if held:
                    yield held
                held = data
            self._finish()
            if held:
                yield held
        except (sigv4.S3AuthError, S3Error) as exc:
            self.error = exc  # the consumer's request fails; the caller reports this instead
            raise

    def _account(self, data: bytes) -> None:
        self.received += len(data)
        assert self.length is not None
        if self.received > self.length:
            raise S3Error("IncompleteBody", "the body is longer than the declared length")
        if self._hasher is not None:
            self._hasher.update(data)
        for _, _, checksum in self._checksums:
            checksum.update(data)

    def _finish(self) -> None:
        if self._decoder is not None:
            self._decoder.finish()
        if self.received != self.length:
            raise S3Error("IncompleteBody", f"You did not provide the number of bytes "
                          f"specified by the Content-Length HTTP header ({self.received} of "
                          f"{self.length})")
        if self._hasher is not None:
            self._hasher.check()
        for name, expected, checksum in self._checksums:
            if base64.b64encode(checksum.digest()).decode() != expected:
                raise S3Error("BadDigest", f"The {name.upper()} you specified did not match the "
                              f"calculated checksum.")


def _unsigned() -> sigv4.AuthResult:
    """What the decoder needs for STREAMING-UNSIGNED-PAYLOAD-TRAILER: no signing material."""
    return sigv4.AuthResult("", "STREAMING-UNSIGNED-PAYLOAD-TRAILER", b"", "", "", "")
