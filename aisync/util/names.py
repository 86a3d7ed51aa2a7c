"""Bucket and object names: the one place that decides what is a valid name.

Bucket names: 1 to 63 characters of ``[A-Za-z0-9._-]``, starting and ending with a letter or a
digit, with no ``..``. (A superset of S3's rules, which also forbid upper case; AIStore allows the
same alphabet.)

Object names: 1 to 1024 bytes of UTF-8, no NUL, no leading ``/``, and no ``.`` or ``..`` path
segments. Nested names such as ``a/b`` and ``a`` may coexist: objects are stored by a hash of their
name, never as a directory tree, so no object name can escape or collide on disk.

Bucket URIs: ``PROVIDER://[@NAMESPACE/]BUCKET[/OBJECT]`` as in ``ais://train/images/0001.jpg`` or
``ais://@zone-a/checkpoints``. A bare ``train`` means ``ais://train``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from aisync.util.errors import InvalidArgument, InvalidBucketName, InvalidObjectName

MAX_OBJECT_NAME_BYTES = 1024
_BUCKET_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")
_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")

#: Providers a bucket URI may name. ``ais`` is cluster-local (or a peer cluster with ``@ns``).
PROVIDERS = ("ais", "s3", "gs", "az", "oci", "fs")
PROVIDER_ALIASES = {"aws": "s3", "gcp": "gs", "azure": "az"}


def validate_bucket_name(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidBucketName("bucket name is empty")
    if not _BUCKET_RE.match(name) or ".." in name:
        raise InvalidBucketName(
            f"invalid bucket name {name!r}: use 1-63 characters of letters, digits, '.', '_' "
            "and '-', starting and ending with a letter or digit, without '..'"
        )
    return name


def validate_object_name(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidObjectName("object name is empty")
    if "\x00" in name:
        raise InvalidObjectName("object name contains a NUL character")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidObjectName("object name is not valid UTF-8") from exc
    if len(encoded) > MAX_OBJECT_NAME_BYTES:
        raise InvalidObjectName(
            f"object name is {len(encoded)} bytes; the limit is {MAX_OBJECT_NAME_BYTES}"
        )
    if name.startswith("/"):
        raise InvalidObjectName("object name must not start with '/'")
    if "." in name and any(segment in (".", "..") for segment in name.split("/")):
        raise InvalidObjectName(f"object name {name!r} contains a '.' or '..' segment")
    return name


def validate_prefix(prefix: str) -> str:
    """A listing prefix may be empty or partial, but never hold NUL or exceed the name limit."""
    if "\x00" in prefix or len(prefix.encode("utf-8", "surrogatepass")) > MAX_OBJECT_NAME_BYTES:
        raise InvalidArgument("invalid prefix")
    return prefix


def normalize_provider(provider: str) -> str:
    provider = PROVIDER_ALIASES.get(provider, provider)
    if provider not in PROVIDERS:
        raise InvalidArgument(
            f"unknown provider {provider!r}; expected one of {', '.join(PROVIDERS)}"
        )
    return provider


@dataclass(frozen=True, slots=True)
class BucketRef:
    """A bucket's identity: provider, optional namespace (peer cluster alias) and name."""

    name: str
    provider: str = "ais"
    namespace: str = ""
    #: A unique, stable string for the bucket (used in placement and on disk); made once, as
    #: every object request asks for it.
    uname: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        validate_bucket_name(self.name)
        normalize_provider(self.provider)
        if self.namespace and not _NAMESPACE_RE.match(self.namespace):
            raise InvalidArgument(f"invalid namespace {self.namespace!r}")
        ns = f"@{self.namespace}/" if self.namespace else ""
        object.__setattr__(self, "uname", f"{self.provider}/{ns}{self.name}")

    def __str__(self) -> str:
        ns = f"@{self.namespace}/" if self.namespace else ""
        return f"{self.provider}://{ns}{self.name}"


def parse_uri(uri: str, *, require_object: bool = False) -> tuple[BucketRef, str]:
    """Parse ``ais://bucket/object`` (or a bare ``bucket/object``) into (bucket, object name).

    The object part may be empty unless ``require_object``; it is returned unvalidated when it
    ends with ``/`` (a prefix), validated otherwise.
    """
    provider, sep, rest = uri.partition("://")
    if not sep:
        provider, rest = "ais", uri
    provider = normalize_provider(provider)
    namespace = ""
    if rest.startswith("@"):
        namespace, _, rest = rest[1:].partition("/")
    bucket, _, obj = rest.partition("/")
    ref = BucketRef(name=bucket, provider=provider, namespace=namespace)
    if require_object:
        validate_object_name(obj)
    elif obj and not obj.endswith("/"):
        validate_object_name(obj)
    return ref, obj
