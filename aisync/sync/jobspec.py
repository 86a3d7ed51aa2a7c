"""What a job is: its specification (``JobSpec``, what ``POST /v1/jobs`` takes), its id, and
its progress counters. The planner that runs jobs is :mod:`aisync.sync.jobs`."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from aisync.sync.diff import MaxDelete
from aisync.util.errors import describe_validation

JobKind = Literal["prefetch", "copy", "sync", "evict"]
#: A sync that did everything else but whose deletes were refused (``--max-delete``, the shrink
#: guard): finished, not succeeded; the copies still hold objects the source no longer has.
DELETES_REFUSED = "deletes-refused"
#: A job in one of these states never runs again.
FINAL_STATES = frozenset({"succeeded", DELETES_REFUSED, "failed", "aborted"})


class JobSpec(BaseModel):
    """What a user asked for (``POST /v1/jobs``). Buckets are URIs: ``s3://datasets``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: JobKind
    bucket: str = Field(description="the bucket read from (evict: the bucket evicted)")
    destination: str | None = Field(None, description="copy/sync: the bucket written to")
    prefix: str = ""
    latest: bool = Field(False, description="prefetch: also re-fetch copies that changed")
    delete: bool = Field(False, description="sync: remove copies the source no longer has")
    max_delete: str | None = Field(None, description="cap on deletes: a count or 'N%'")
    shrink_limit: float = Field(0.5, gt=0, description="refuse deletes above this fraction")
    dry_run: bool = False
    keep_metadata: bool = Field(False, description="evict: keep the bucket registered")
    peers: list[str] = Field(default_factory=list, description="remote clusters to read from "
                             "first (``--from zone-a``); default: the bucket's own peers")
    bandwidth: int | None = Field(None, gt=0, description="bytes/s for the whole job")
    rate: float | None = Field(None, gt=0, description="object requests/s for the whole job")
    retries: int = Field(5, ge=1, le=20)
    batch: int = Field(64, ge=1, le=1000)

    @model_validator(mode="after")
    def _check(self) -> JobSpec:
        if self.kind == "copy" and not self.destination:
            raise ValueError("a copy job needs a destination bucket")
        if self.kind in ("prefetch", "evict") and self.destination:
            raise ValueError(f"a {self.kind} job takes no destination")
        if self.delete and self.kind != "sync":
            raise ValueError("--delete applies to sync jobs only")
        MaxDelete.parse(self.max_delete)
        return self


def new_job_id() -> str:
    return "j-" + uuid.uuid4().hex[:12]



class Progress:
    """Counters of one job; ``as_dict`` is what the API shows."""

    FIELDS = ("listed", "unchanged", "planned", "added", "updated", "copied", "deleted",
              "evicted", "skipped", "failed", "bytes")

    def __init__(self, saved: dict[str, Any] | None = None) -> None:
        saved = saved or {}
        self.counts = {f: int(saved.get(f, 0)) for f in self.FIELDS}
        self.started = time.monotonic()
        self.base_objects = self.done_objects()
        self.base_bytes = self.counts["bytes"]
        self.note: str | None = saved.get("note")

    def done_objects(self) -> int:
        c = self.counts
        return (c["added"] + c["updated"] + c["copied"] + c["deleted"] + c["evicted"]
                + c["skipped"] + c["failed"])

    def as_dict(self) -> dict[str, Any]:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        out: dict[str, Any] = dict(self.counts)
        out["errors"] = self.counts["failed"]
        out["objects_per_s"] = round((self.done_objects() - self.base_objects) / elapsed, 1)
        out["bytes_per_s"] = round((self.counts["bytes"] - self.base_bytes) / elapsed)
        if self.note:
            out["note"] = self.note
        return out


def parse_spec(body: dict[str, Any]) -> JobSpec:
    """A :class:`JobSpec` from a request body, with errors that name the field."""
    try:
        return JobSpec.model_validate(body)
    except ValueError as exc:
        raise describe_validation(exc, "invalid job") from None
