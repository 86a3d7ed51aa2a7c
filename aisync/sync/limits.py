"""Pacing for jobs: token-bucket rate limits and jittered exponential backoff.

A job's ``bandwidth`` (bytes/s) and ``rate`` (requests/s) are cluster-wide figures; the planner
splits them evenly over the targets that execute the job, and each target keeps one
:class:`TokenBucket` per job and limit, shared by every batch of that job it runs.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aisync.util.errors import AisyncError

T = TypeVar("T")


class TokenBucket:
    """``rate`` tokens per second, bursts up to ``burst`` (default: one second's worth)."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(rate, 1.0))
        self._tokens = self.burst
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    async def take(self, amount: float = 1.0) -> None:
        """Wait until ``amount`` tokens are available (amounts above the burst are allowed: the
        caller then waits for the deficit, so large chunks still average out to ``rate``)."""
        async with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= amount
            if self._tokens < 0:
                await asyncio.sleep(-self._tokens / self.rate)


def is_transient(exc: BaseException) -> bool:
    """Errors worth retrying: throttling, unavailable backends or nodes, broken connections."""
    if isinstance(exc, AisyncError):
        if getattr(exc, "transient", False):
            return True
        return exc.code in ("NodeUnavailable", "Throttled", "BackendUnavailable", "NoActiveTargets")
    return isinstance(exc, ConnectionError | TimeoutError)


def backoff_delays(attempts: int, base: float = 0.2, cap: float = 10.0):
    """Full-jitter exponential delays: uniform in [0, min(cap, base * 2**n)]."""
    for n in range(attempts):
        yield random.uniform(0, min(cap, base * (2 ** n)))


async def with_retries(fn: Callable[[], Awaitable[T]], *, attempts: int = 5,
                       base: float = 0.2, cap: float = 10.0,
                       transient: Callable[[BaseException], bool] = is_transient) -> T:
    """Call ``fn`` until it succeeds, retrying transient errors with jittered backoff."""
    delays = backoff_delays(max(attempts - 1, 0), base, cap)
    while True:
        try:
            return await fn()
        except Exception as exc:
            if not transient(exc):
                raise
            delay = next(delays, None)
            if delay is None:
                raise
            await asyncio.sleep(delay)
