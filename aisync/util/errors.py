"""Typed errors shared by every layer.

Each error subclasses both :class:`AisyncError` and the closest built-in exception, so callers
may catch either (``except FileNotFoundError`` works for a missing object). Every class carries a
stable ``code`` (used verbatim in JSON error bodies and, later, mapped to S3 codes) and the HTTP
``status`` that the single error mapping in ``aisync.node.router`` answers with. Adding a new error
means adding a class here; nothing else maps errors to statuses.

Every class that sets its own ``code`` enters :data:`ERRORS_BY_CODE` as it is defined (the SDK
rebuilds typed errors from JSON bodies with it); two classes claiming one code is an error at
import time, so a code always names one class.
"""

from __future__ import annotations

#: Every error class by its ``code`` (filled by :meth:`AisyncError.__init_subclass__`).
ERRORS_BY_CODE: dict[str, type[AisyncError]] = {}


def _register(cls: type[AisyncError]) -> None:
    taken = ERRORS_BY_CODE.get(cls.code)
    same_definition = taken is not None and (taken.__module__, taken.__qualname__) == (
        cls.__module__, cls.__qualname__)  # a module imported twice (run as __main__)
    if taken is not None and not same_definition:
        raise TypeError(f"error code {cls.code!r} is {taken.__qualname__}'s; "
                        f"{cls.__qualname__} needs its own")
    ERRORS_BY_CODE[cls.code] = cls


class AisyncError(Exception):
    """Base of every aisync error. ``code`` is stable API; ``message`` is for humans."""

    code: str = "InternalError"
    status: int = 500

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "code" in cls.__dict__:  # a class that inherits its parent's code is not its name
            _register(cls)

    def __init__(self, message: str = "", **details: object) -> None:
        super().__init__(message or self.code)
        self.message = message or self.code
        self.details = details

    def to_dict(self) -> dict[str, object]:
        body: dict[str, object] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class InvalidArgument(AisyncError, ValueError):
    code, status = "InvalidArgument", 400


class InvalidBucketName(InvalidArgument):
    code = "InvalidBucketName"


class InvalidObjectName(InvalidArgument):
    code = "InvalidObjectName"


class InvalidRange(AisyncError, ValueError):
    code, status = "InvalidRange", 416


class NotFound(AisyncError, FileNotFoundError):
    code, status = "NotFound", 404


class ObjectNotFound(NotFound):
    code = "ObjectNotFound"


class BucketNotFound(NotFound):
    code = "BucketNotFound"


class BucketAlreadyExists(AisyncError, FileExistsError):
    code, status = "BucketAlreadyExists", 409


class PreconditionFailed(AisyncError):
    code, status = "PreconditionFailed", 412


class StaleMapVersion(AisyncError):
    """A node was sent a cluster or bucket map older than the one it already holds."""

    code, status = "StaleMapVersion", 409


class NotPrimary(AisyncError):
    """A primary-only operation reached a non-primary proxy that could not forward it."""

    code, status = "NotPrimary", 409


class MethodNotAllowed(AisyncError):
    code, status = "MethodNotAllowed", 405


class PayloadTooLarge(AisyncError):
    code, status = "PayloadTooLarge", 413


class IncompleteBody(AisyncError, ValueError):
    """The client sent fewer bytes than it declared; nothing was stored."""

    code, status = "IncompleteBody", 400


class ChecksumMismatch(AisyncError, ValueError):
    """Bytes received do not match the checksum the client declared; nothing was stored."""

    code, status = "BadDigest", 400


class ObjectCorrupted(AisyncError, OSError):
    """Stored bytes no longer match their recorded checksum; the copy was quarantined."""

    code, status = "ObjectCorrupted", 500


class NoTargets(AisyncError):
    """The cluster map has no active target to place an object on."""

    code, status = "NoActiveTargets", 503


class NodeUnavailable(AisyncError, ConnectionError):
    code, status = "NodeUnavailable", 503


class ConfigError(AisyncError, ValueError):
    code, status = "ConfigError", 400


class Unauthenticated(AisyncError, PermissionError):
    """The request carries no credentials this node accepts (no token, a wrong token, a bad or
    replayed intra-cluster signature, an expired redirect signature)."""

    code, status = "Unauthorized", 401


class AccessDenied(AisyncError, PermissionError):
    code, status = "AccessDenied", 403


class BackendError(AisyncError):
    """A source of truth (S3, GCS, ...) failed. ``transient`` errors are worth retrying."""

    code, status = "BackendError", 502
    transient = False


class Throttled(BackendError):
    """The backend asked us to slow down (HTTP 429/503 SlowDown); retry with backoff."""

    code, status = "Throttled", 503
    transient = True


class BackendUnavailable(BackendError, ConnectionError):
    """The backend could not be reached or answered 5xx; retry with backoff."""

    code, status = "BackendUnavailable", 503
    transient = True


class NotSupported(AisyncError):
    code, status = "NotImplemented", 501


class JobNotFound(NotFound):
    code = "JobNotFound"


class ScheduleNotFound(NotFound):
    code = "ScheduleNotFound"


class RemoteNotFound(NotFound):
    code = "RemoteNotFound"


class ChangeFeedGap(AisyncError):
    """The change feed no longer reaches back to the requested point: list instead."""

    code, status = "ChangeFeedGap", 410


class AlreadyExists(AisyncError, FileExistsError):
    code, status = "AlreadyExists", 409


class Conflict(AisyncError):
    """The request conflicts with the current state (e.g. aborting a finished job)."""

    code, status = "Conflict", 409


_register(AisyncError)


def error_from_dict(status: int, body: dict[str, object]) -> AisyncError:
    """Rebuild a typed error from a JSON error body (used by the SDK)."""
    code = str(body.get("code", ""))
    cls = ERRORS_BY_CODE.get(code)
    if cls is None:
        cls = {404: NotFound, 400: InvalidArgument, 409: AisyncError, 412: PreconditionFailed,
               416: InvalidRange, 503: NodeUnavailable}.get(status, AisyncError)
    err = cls(str(body.get("message", code or f"HTTP {status}")))
    details = body.get("details")
    if isinstance(details, dict):
        err.details = details
    if cls is AisyncError:
        err.code, err.status = code or "HTTPError", status
    return err


def describe_validation(exc: ValueError, what: str) -> InvalidArgument:
    """One readable line from a pydantic ``ValidationError`` (``field: message; ...``)."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return InvalidArgument(f"{what}: {exc}")
    parts = []
    for err in errors():
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        where = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{where}: {message}" if where else message)
    return InvalidArgument(f"{what}: " + "; ".join(parts))


class AccessKeyNotFound(NotFound):
    """No S3 access key of that id (``aisync auth key rm``, the primary's secret lookup)."""

    code = "AccessKeyNotFound"


# -- multipart uploads (S3 semantics; see aisync.storage.uploads) --

class UploadNotFound(NotFound):
    """No multipart upload with this id (never created, completed, aborted or expired)."""

    code = "NoSuchUpload"


class InvalidPart(InvalidArgument):
    """A part named in a complete request is missing or its ETag does not match."""

    code = "InvalidPart"


class InvalidPartOrder(InvalidArgument):
    """The parts of a complete request are not in strictly ascending order."""

    code = "InvalidPartOrder"


class EntityTooSmall(InvalidArgument):
    """A part other than the last is smaller than the minimum part size (5 MiB)."""

    code = "EntityTooSmall"
