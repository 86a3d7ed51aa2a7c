"""Upload bodies: one interface over bytes, files, file objects and byte streams.

A PUT may have to be sent more than once (a target that no longer owns the object redirects
it after a cluster map change), so every body is a *source* that opens a fresh iterator per
attempt. Bytes, paths and seekable file objects replay; a stream (async iterator, iterator,
pipe) replays only while nothing has been read from it yet.

Files are read in chunks in a worker thread, never whole and never on the event loop.

Owns: reading upload data. May import: the standard library and ``aisync.util``.
"""

from __future__ import annotations

import asyncio
import io
import os
import stat
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from typing import Any, BinaryIO

from aisync.util.errors import AisyncError

CHUNK = 1 << 20
_END = object()

Progress = Callable[[int], Any]


class BodyNotReplayable(AisyncError):
    """An upload stream was redirected after bytes of it were sent; it cannot be re-read."""

    code, status = "BodyNotReplayable", 409


class _Chunks:
    """An async iterator over one attempt's chunks, with progress and deterministic close."""

    def __init__(self, source: BodySource) -> None:
        self._source = source
        self.sent = 0
        self.started = False
        self.closed = False
        self.handle: BinaryIO | None = None
        self.remaining: int | None = None

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        if self.closed:
            raise StopAsyncIteration
        self.started = True
        chunk = await self._source._next_chunk(self)
        if not chunk:
            self.close()
            raise StopAsyncIteration
        self.sent += len(chunk)
        if self._source.progress is not None:
            self._source.progress(len(chunk))
        return chunk

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._source._close_attempt(self)


class BodySource:
    """Base class: ``size`` (``None`` if unknown), ``replayable``, ``open()`` per attempt."""

    size: int | None = None
    progress: Progress | None = None
    description = "stream"

    def __init__(self) -> None:
        self._current: _Chunks | None = None

    @property
    def replayable(self) -> bool:
        return True

    def open(self) -> Any:
        """The ``data`` for one request attempt (bytes or an async iterator).

        Raises :class:`BodyNotReplayable` for a stream whose bytes were already (partly) sent.
        """
        current = self._current
        if current is not None and current.started:
            if not self.replayable:
                raise BodyNotReplayable(
                    f"the cluster redirected the upload of a {self.description} after it was "
                    "sent (the object's owner changed); a stream cannot be re-read: retry the "
                    "upload from a file or bytes"
                )
            if self.progress is not None and current.sent:
                self.progress(-current.sent)
            current.close()
        if current is None or current.started or current.closed:
            self._current = _Chunks(self)
        return self._current

    def close(self) -> None:
        """Release what the last attempt holds (an open file)."""
        if self._current is not None:
            self._current.close()

    def report_done(self) -> None:
        """Called once the upload succeeded (bodies sent in one piece report progress here)."""

    async def _next_chunk(self, attempt: _Chunks) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def _close_attempt(self, attempt: _Chunks) -> None:
        return None


class BytesBody(BodySource):
    description = "bytes"

    def __init__(self, data: bytes | bytearray | memoryview, progress: Progress | None) -> None:
        super().__init__()
        self._data = bytes(data)
        self.size = len(self._data)
        self.progress = progress
        self._reported = False

    def open(self) -> Any:
        return self._data

    def report_done(self) -> None:
        if self.progress is not None and not self._reported and self.size:
            self._reported = True
            self.progress(self.size)


class FileBody(BodySource):
    """A path (opened per attempt) or a file object (seekable: replays from its start offset)."""

    def __init__(self, source: os.PathLike | BinaryIO, progress: Progress | None,
                 size: int | None = None) -> None:
        super().__init__()
        self.progress = progress
        self._path: str | None = None
        self._fileobj: BinaryIO | None = None
        self._start = 0
        self._seekable = False
        if isinstance(source, os.PathLike):
            self._path = os.fspath(source)
            self.description = f"file {self._path}"
            st = os.stat(self._path)
            if not stat.S_ISREG(st.st_mode):
                raise IsADirectoryError(f"{self._path} is not a regular file")
            self.size = st.st_size if size is None else size
        else:
            self._fileobj = source
            self.description = "file object"
            try:
                self._seekable = bool(source.seekable())
            except (AttributeError, ValueError, OSError):
                self._seekable = False
            if self._seekable:
                self._start = source.tell()
                end = source.seek(0, io.SEEK_END)
                source.seek(self._start)
                self.size = end - self._start if size is None else size
            else:
                self.size = size

    @property
    def replayable(self) -> bool:
        return self._path is not None or self._seekable

    async def _next_chunk(self, attempt: _Chunks) -> bytes:
        if attempt.handle is None:
            if self._path is not None:
                attempt.handle = await asyncio.to_thread(open, self._path, "rb")
            else:
                assert self._fileobj is not None
                attempt.handle = self._fileobj
                if self._seekable:
                    await asyncio.to_thread(attempt.handle.seek, self._start)
            attempt.remaining = self.size
        want = CHUNK if attempt.remaining is None else min(CHUNK, attempt.remaining)
        if want <= 0:
            return b""
        chunk = await asyncio.to_thread(attempt.handle.read, want)
        if attempt.remaining is not None:
            attempt.remaining -= len(chunk)
        return chunk

    def _close_attempt(self, attempt: _Chunks) -> None:
        handle, attempt.handle = attempt.handle, None
        if handle is not None and self._path is not None:
            handle.close()


class StreamBody(BodySource):
    """An async iterator/iterable or a plain iterable of bytes: sent once."""

    def __init__(self, stream: AsyncIterable[bytes] | Iterable[bytes], progress: Progress | None,
                 size: int | None = None) -> None:
        super().__init__()
        self.progress = progress
        self.size = size
        self._aiter: AsyncIterator[bytes] | None = None
        self._iter: Any = None
        if isinstance(stream, AsyncIterable):
            self._aiter = aiter(stream)
        else:
            self._iter = iter(stream)

    @property
    def replayable(self) -> bool:
        return False

    async def _next_chunk(self, attempt: _Chunks) -> bytes:
        while True:
            if self._aiter is not None:
                try:
                    chunk = await anext(self._aiter)
                except StopAsyncIteration:
                    return b""
            else:
                chunk = await asyncio.to_thread(next, self._iter, _END)
                if chunk is _END:
                    return b""
            if not isinstance(chunk, bytes | bytearray | memoryview):
                raise TypeError(f"upload stream yielded {type(chunk).__name__}, expected bytes")
            if chunk:
                return bytes(chunk)


def make_body(data: Any, *, size: int | None = None,
              progress: Progress | None = None) -> BodySource:
    """Wrap what ``put_object`` accepts into a :class:`BodySource`."""
    if isinstance(data, bytes | bytearray | memoryview):
        return BytesBody(data, progress)
    if isinstance(data, str):
        raise TypeError(
            "put_object data is a str; pass bytes, or pathlib.Path(...) for a file name"
        )
    if isinstance(data, os.PathLike):
        return FileBody(data, progress, size)
    if hasattr(data, "read"):
        return FileBody(data, progress, size)
    if isinstance(data, AsyncIterable | Iterable):
        return StreamBody(data, progress, size)
    raise TypeError(
        f"cannot upload a {type(data).__name__}: pass bytes, a path, a binary file object or "
        "an (async) iterator of bytes"
    )
