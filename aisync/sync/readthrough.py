"""Read-through (cold GET): fetch an object from its source into the local store, once.

A cold GET starts one :class:`ColdFetch`: a task that opens the backend stream, writes every
chunk into an :class:`~aisync.storage.objects.ObjectWriter` temp file, verifies the result
(size against the source's token; and MD5 when the source reports one, unless the stream itself
checks a full-object checksum the source sent, as botocore does with S3's CRC32), and commits
it with the source's version token. Readers never wait for the end: each follows the temp file as it grows
(``wait_for``), so the first bytes reach the first client while the fetch is still running, and
every concurrent reader of the same object shares the same single backend GET.

The fetch is independent of its readers: a client that disconnects does not cancel it, and a
fetch that fails (backend error, short read, checksum mismatch) leaves nothing cached and makes
every reader fail too, never return a short object as complete.

Owns: coalescing and verification of cold reads. Uses only the backend contract.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import hashlib
import logging
import os
import time
from dataclasses import dataclass, field

from aisync.backends.base import Backend, VersionToken
from aisync.storage.objects import ObjectStore, ObjectWriter
from aisync.util.errors import AisyncError, BackendError, ChecksumMismatch

log = logging.getLogger("aisync.readthrough")
DEFAULT_WINDOW = 64 << 20


@dataclass
class ReadThroughStats:
    cold_gets: int = 0          # cold GETs served (including coalesced followers)
    backend_gets: int = 0       # backend reads actually issued
    coalesced: int = 0          # readers that joined an in-flight fetch
    bytes_fetched: int = 0
    failures: int = 0
    by_bucket: dict[str, int] = field(default_factory=dict)


class OrderedHasher:
    """Feeds chunks to a hash in order, one pool-thread job at a time, without ever blocking
    the caller: reading the source and hashing it overlap instead of alternating."""

    def __init__(self, hasher, pool) -> None:
        self._hasher, self._pool = hasher, pool
        self._pending: collections.deque[bytes] = collections.deque()
        self._running: asyncio.Future | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._error: BaseException | None = None
        self.lag = 0  # bytes fed but not hashed yet

    def feed(self, chunk: bytes) -> None:
        self._pending.append(chunk)
        self.lag += len(chunk)
        if self._running is None:
            self._next()

    def _next(self) -> None:
        if not self._pending:
            self._running = None
            self._idle.set()
            return
        self._idle.clear()
        chunk = self._pending.popleft()
        self._running = asyncio.get_running_loop().run_in_executor(
            self._pool, self._hasher.update, chunk)
        self._running.add_done_callback(functools.partial(self._done, n=len(chunk)))

    def _done(self, future: asyncio.Future, n: int) -> None:
        self.lag -= n
        if not future.cancelled() and future.exception() is not None:
            self._error = future.exception()
        self._next()

    async def hexdigest(self) -> str:
        await self._idle.wait()
        if self._error is not None:
            raise self._error
        return self._hasher.hexdigest()


class ColdFetch:
    def __init__(self, store: ObjectStore, bucket: str, name: str,
                 window_bytes: int = DEFAULT_WINDOW) -> None:
        self.store, self.bucket, self.name = store, bucket, name
        self.window_limit = window_bytes
        self.received = 0  # bytes read from the source so far
        # Received but not yet in the temp file: readers take them from here, so clients are not
        # held to the disk's write speed. Bounded: past the limit, the source waits for the disk.
        self._window: collections.deque[tuple[int, bytes]] = collections.deque()
        self._window_bytes = 0
        self.version: VersionToken | None = None
        self.writer: ObjectWriter | None = None
        self.error: BaseException | None = None
        self.done = False
        self.verified = False  # size and (when the source has one) MD5 checked
        self._changed = asyncio.Condition()
        self.task: asyncio.Task | None = None
        self.started_at = time.monotonic()  # before the source was asked: what it may reflect
        self.superseded = False  # a fresher fetch of the same object started: do not commit
        self._read_fd = -1  # open on the temp file from its creation: survives rename/unlink
        self._readers = 0

    @contextlib.asynccontextmanager
    async def reader(self):
        """A descriptor on the object's bytes while they arrive (use with ``wait_for``).

        Every :meth:`ReadThrough.fetch` call reserves one reader, which this gives back on
        exit, also when the fetch failed; so the shared descriptor (valid after the temp file is
        renamed or removed) lives exactly as long as someone may still read it.
        """
        fd = -1
        try:
            await self.started()
            if self.error is not None:
                raise self.error
            fd = os.dup(self._read_fd)
            yield fd
        finally:
            if fd >= 0:
                os.close(fd)
            self._readers -= 1
            self._release()

    def abandon(self) -> None:
        """Give back a reservation that will never enter :meth:`reader` (an error path)."""
        self._readers -= 1
        self._release()

    def _release(self) -> None:
        if self.done and self._readers == 0 and self._read_fd >= 0:
            os.close(self._read_fd)
            self._read_fd = -1

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def started(self) -> VersionToken:
        """The source's version of the object, once the backend stream is open."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.version is not None or self.error)
        if self.error is not None and self.version is None:
            raise self.error
        assert self.version is not None
        return self.version

    @property
    def durable(self) -> int:
        """Bytes already in the temp file (readable through the reader's descriptor)."""
        return self.writer.written if self.writer is not None else 0

    def from_window(self, offset: int, limit: int) -> bytes | None:
        """Bytes from ``offset`` (up to ``limit``) that are not in the temp file yet, or None
        when ``offset`` is already on disk (read it from the descriptor)."""
        if offset < self.durable:
            return None
        for start, chunk in self._window:
            if start <= offset < start + len(chunk):
                return chunk[offset - start:min(limit, start + len(chunk)) - start]
        raise AssertionError(f"byte {offset} is neither on disk nor in the window")

    def _evict(self) -> None:
        durable = self.durable
        while self._window and self._window[0][0] + len(self._window[0][1]) <= durable:
            self._window_bytes -= len(self._window.popleft()[1])

    async def wait_for(self, offset: int) -> int:
        """Wait until more than ``offset`` bytes were received (or the fetch ended); returns
        how many. Bytes below :attr:`durable` are in the file, the rest in :meth:`from_window`.
        Raises the fetch's error if it failed."""
        async with self._changed:
            await self._changed.wait_for(
                lambda: self.error is not None or self.done or self.received > offset)
        if self.error is not None:
            raise self.error
        return self.received

    async def wait_sendable(self, offset: int, end: int | None = None) -> int:
        """Like :meth:`wait_for`, for a reader answering a client: the last byte of its
        response (``end``, default the object's size) is released only once the whole object is
        verified, so a client never receives a complete-looking body that fails its check."""
        while True:
            available = await self.wait_for(offset)  # raises if the fetch failed
            assert self.version is not None
            stop = self.version.size if end is None else end
            limit = min(available, stop if self.verified else stop - 1)
            if limit > offset or self.verified:
                return limit
            async with self._changed:  # everything but the last byte is out: wait for the check
                await self._changed.wait_for(
                    lambda: self.verified or self.error is not None or self.done)
            if self.error is not None:
                raise self.error

    async def _drain(self, writer: ObjectWriter, queue: asyncio.Queue) -> None:
        """Move received chunks into the temp file, in order, freeing the window behind."""
        while (chunk := await queue.get()) is not None:
            await writer.write(chunk)
            self._evict()
            await self._notify()

    async def run(self, backend: Backend, source_bucket: str, stats: ReadThroughStats) -> None:
        writer: ObjectWriter | None = None
        what = f"{backend.provider}://{source_bucket}/{self.name}"
        try:
            stats.backend_gets += 1
            stream = await backend.open(source_bucket, self.name)
            async with stream:
                version = stream.version
                writer = self.store.writer(self.bucket, self.name)
                await writer.open()
                self._read_fd = await self.store.run_io(os.open, writer.temp,
                                                        os.O_RDONLY | os.O_CLOEXEC)
                self.writer, self.version = writer, version
                await self._notify()
                # Verification runs on what is received (not on what reached the disk), so
                # clients are released at the source's pace; the disk write and commit follow.
                # A stream that checks the source's own full-object checksum as it reads needs no
                # second hash here (its iteration raises on a mismatch); otherwise MD5 it.
                md5 = OrderedHasher(hashlib.md5(usedforsecurity=False), self.store._io) \
                    if version.md5 and not stream.self_verifying else None
                queue: asyncio.Queue[bytes | None] = asyncio.Queue()
                drain = asyncio.create_task(self._drain(writer, queue))
                try:
                    async for chunk in stream:
                        self._window.append((self.received, chunk))
                        self.received += len(chunk)
                        self._window_bytes += len(chunk)
                        queue.put_nowait(chunk)
                        if md5 is not None:
                            md5.feed(chunk)
                        await self._notify()
                        if self._window_bytes > self.window_limit:
                            async with self._changed:
                                await self._changed.wait_for(
                                    lambda: self._window_bytes <= self.window_limit
                                    or drain.done())
                            if drain.done():
                                drain.result()  # a write error ends the fetch now
                        while md5 is not None and md5.lag > self.window_limit:
                            await md5.hexdigest()  # hashing fell a window behind: let it catch up
                    if self.received != version.size:
                        raise BackendError(f"{what}: short read (received {self.received} of "
                                           f"{version.size} bytes)")
                    digest = await md5.hexdigest() if md5 is not None else None
                    if digest is not None and digest != version.md5:
                        raise ChecksumMismatch(f"{what}: MD5 of the bytes read ({digest}) differs "
                                               f"from the source's ({version.md5})")
                    self.verified = True
                    await self._notify()
                    queue.put_nowait(None)
                    await drain
                finally:
                    if not drain.done():
                        drain.cancel()
                        with contextlib.suppress(asyncio.CancelledError, Exception):
                            await drain
                await writer.finish(expected_size=version.size)
                self._evict()
                await self._notify()
                if self.superseded:  # served its readers; the fresher fetch is what stays
                    await writer.abort()
                else:
                    await writer.commit(source=version.to_dict())
                stats.bytes_fetched += version.size
        except BaseException as exc:
            stats.failures += 1
            self.error = exc if isinstance(exc, AisyncError | asyncio.CancelledError) \
                else BackendError(f"cold GET of {self.bucket}/{self.name} failed: {exc}")
            if self.error is not exc:
                self.error.__cause__ = exc
            if writer is not None:
                await writer.abort()
            if isinstance(exc, asyncio.CancelledError):
                raise
            log.warning("cold GET of %s/%s failed: %s", self.bucket, self.name, exc)
        finally:
            self.done = True
            await self._notify()
            self._release()


class ReadThrough:
    """Coalesces cold GETs per object; see the module docstring."""

    def __init__(self, store: ObjectStore, window_bytes: int = DEFAULT_WINDOW) -> None:
        self.store = store
        self.window_bytes = window_bytes
        self.stats = ReadThroughStats()
        self._inflight: dict[tuple[str, str], ColdFetch] = {}

    def fetch(self, backend: Backend, source_bucket: str, bucket: str, name: str, *,
              fresh_after: float | None = None) -> ColdFetch:
        """The in-flight fetch of ``bucket/name``, starting one if there is none.

        The caller must enter ``fetch.reader()`` (which releases its reservation)."""
        key = (bucket, name)
        self.stats.cold_gets += 1
        self.stats.by_bucket[bucket] = self.stats.by_bucket.get(bucket, 0) + 1
        current = self._inflight.get(key)
        if current is not None and not current.done and fresh_after is not None \
                and current.started_at < fresh_after:
            # The caller needs what the source holds now (validate / latest): a fetch that
            # asked the source earlier may predate a change. Start anew; the older one still
            # serves its readers but is not committed over the newer copy.
            current.superseded = True
            current = None
        if current is not None and not current.done:
            self.stats.coalesced += 1
            current._readers += 1
            return current
        fetch = ColdFetch(self.store, bucket, name, self.window_bytes)
        fetch._readers = 1
        self._inflight[key] = fetch
        fetch.task = asyncio.create_task(self._run(fetch, backend, source_bucket),
                                         name=f"cold-get {bucket}/{name}")
        return fetch

    async def _run(self, fetch: ColdFetch, backend: Backend, source_bucket: str) -> None:
        try:
            await fetch.run(backend, source_bucket, self.stats)
        finally:
            if self._inflight.get((fetch.bucket, fetch.name)) is fetch:
                del self._inflight[(fetch.bucket, fetch.name)]

    async def close(self) -> None:
        for fetch in list(self._inflight.values()):
            if fetch.task is not None:
                fetch.task.cancel()
        for fetch in list(self._inflight.values()):
            if fetch.task is not None:
                try:
                    await fetch.task
                except (asyncio.CancelledError, Exception):
                    pass
