"""On-access consistency: what a warm GET of a cached object does about its source.

A bucket's ``consistency`` decides (per-request ``latest`` forces a check whatever it says):

* ``none`` — serve the cached copy as it is (changes arrive by sync jobs only).
* ``validate`` — ask the source (one HEAD) before serving; a changed version is re-fetched
  (the caller turns the GET into a cold GET); an object the source deleted answers 404, while
  the cached copy stays (a sync job or ``synchronize`` removes it).
* ``synchronize`` — like ``validate``, and a deletion at the source also removes the copy.
* ``max_staleness`` (seconds, with either mode) — a copy fetched or validated within that window
  is served without asking; ``latest`` ignores the window.

Availability rule: when the source cannot be reached (a transient error) a validating read
serves the cached copy and counts a ``validate_errors``; a request that asked for ``latest``
fails instead, since its caller asked for proof.

Equality is :func:`aisync.sync.versions.compare_versions`; an ``UNKNOWN`` verdict re-fetches.
"""

from __future__ import annotations

import collections
import enum
import logging
import time
from dataclasses import asdict, dataclass

from aisync.backends.base import Backend, VersionToken
from aisync.sync.versions import Verdict, compare_versions
from aisync.util.errors import BackendError, ObjectNotFound

log = logging.getLogger("aisync.onaccess")

CONSISTENCY_MODES = ("none", "validate", "synchronize")


class Decision(enum.Enum):
    SERVE = "serve"        # the cached copy is current (or allowed to be served)
    REFETCH = "refetch"    # the source has another version: read through again
    GONE = "gone"          # the source deleted it: answer 404 (synchronize: copy removed)


@dataclass
class OnAccessStats:
    validations: int = 0           # HEADs sent to sources by warm GETs
    within_staleness: int = 0      # warm GETs served inside max_staleness without asking
    out_of_band_changes: int = 0   # a cached copy found older than its source
    deleted_at_source: int = 0     # a cached object found deleted at its source
    removed_copies: int = 0        # ... and removed (synchronize)
    validate_errors: int = 0       # source unreachable: served the cached copy

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class OnAccess:
    """Per-target state of on-access checks: when each copy was last validated, and counters."""

    def __init__(self, remember: int = 100_000) -> None:
        self.stats = OnAccessStats()
        self._validated: collections.OrderedDict[tuple[str, str], float] = \
            collections.OrderedDict()
        self._remember = remember

    @staticmethod
    def wanted(consistency: str, latest: bool) -> bool:
        """Whether a warm GET must consult this module at all."""
        return latest or consistency in ("validate", "synchronize")

    def validated(self, bucket: str, name: str, when: float | None = None) -> None:
        key = (bucket, name)
        self._validated[key] = time.time() if when is None else when
        self._validated.move_to_end(key)
        while len(self._validated) > self._remember:
            self._validated.popitem(last=False)

    def forget(self, bucket: str, name: str) -> None:
        self._validated.pop((bucket, name), None)

    async def check(self, backend: Backend, source_bucket: str, bucket: str, name: str, *,
                    cached: VersionToken | None, cached_at: float, consistency: str,
                    max_staleness: float | None, latest: bool) -> Decision:
        """Decide what to do with a cached copy (``cached_at``: epoch seconds it was written)."""
        if not latest and max_staleness is not None:
            last = max(cached_at, self._validated.get((bucket, name), 0.0))
            if time.time() - last <= max_staleness:
                self.stats.within_staleness += 1
                return Decision.SERVE
        self.stats.validations += 1
        try:
            current = await backend.head(source_bucket, name)
        except ObjectNotFound:
            self.stats.deleted_at_source += 1
            self.forget(bucket, name)
            return Decision.GONE
        except BackendError as exc:
            if latest or not getattr(exc, "transient", False):
                raise
            self.stats.validate_errors += 1
            log.warning("validating %s/%s: source unreachable, serving the cached copy: %s",
                        bucket, name, exc)
            return Decision.SERVE
        comparison = compare_versions(cached, current)
        if comparison.verdict is Verdict.SAME:
            self.validated(bucket, name)
            return Decision.SERVE
        self.stats.out_of_band_changes += 1
        self.forget(bucket, name)
        log.info("%s/%s changed at the source (%s): fetching it again", bucket, name,
                 comparison.reason)
        return Decision.REFETCH
