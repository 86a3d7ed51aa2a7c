"""Build a backend from a named profile: ``{"provider": "s3", "endpoint": ..., ...}``.

Each provider class validates its own settings (a pydantic model; secrets as ``SecretStr``) in
``from_profile`` and falls back to the provider's usual environment variables and files for
anything the profile leaves out (``AWS_*``, ``STORAGE_EMULATOR_HOST`` /
``GOOGLE_APPLICATION_CREDENTIALS``, ``AZURE_STORAGE_CONNECTION_STRING``, ``~/.oci/config``).
Provider modules are imported lazily, so a node needs only the SDKs of the providers it uses.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from aisync.backends.base import Backend
from aisync.util.errors import ConfigError

PROVIDER_CLASSES = {
    "fs": "aisync.backends.fs:FsBackend",
    "s3": "aisync.backends.s3:S3Backend",
    "gs": "aisync.backends.gcs:GcsBackend",
    "az": "aisync.backends.azure:AzureBackend",
    "oci": "aisync.backends.oci:OciBackend",
    "ais": "aisync.backends.ais:AisBackend",
}


def backend_class(provider: str) -> type[Backend]:
    target = PROVIDER_CLASSES.get(provider)
    if target is None:
        raise ConfigError(f"unknown provider {provider!r}; known: {', '.join(PROVIDER_CLASSES)}")
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"provider {provider!r} needs an SDK that is not installed ({exc}); "
                          f"install aisync[{provider if provider != 'gs' else 'gcs'}]") from exc
    return getattr(module, class_name)


def make_backend(profile: Mapping[str, Any]) -> Backend:
    settings = dict(profile)
    provider = settings.pop("provider", None)
    if not provider:
        raise ConfigError("a backend profile needs a 'provider'")
    return backend_class(provider).from_profile(settings)
