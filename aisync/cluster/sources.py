"""Sources of truth for cached buckets: one backend instance per distinct configuration.

A bucket's backend is built from its properties (provider, non-secret ``settings``, ``source``
bucket name) on top of the named profile of this node's configuration (credentials). Backends
are cached and shared by every bucket with the same configuration, and closed with the node.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from aisync.backends.base import Backend
from aisync.backends.registry import make_backend
from aisync.cluster.maps import BucketProps
from aisync.util.errors import ConfigError, InvalidArgument

log = logging.getLogger("aisync.sources")

_SECRET_WORDS = ("secret", "password", "key", "token", "credential", "connection_string",
                 "pass_phrase", "sas")


class SourcePool:
    """``remotes`` maps an attached remote cluster's alias to its proxy URLs (the buckets
    ``ais://@alias/name`` are read from it); it raises ``RemoteNotFound`` for unknown aliases."""

    def __init__(self, profiles: dict[str, dict[str, Any]],
                 remotes: Callable[[str], list[str]] | None = None) -> None:
        self.profiles = profiles
        self.remotes = remotes
        self._backends: dict[str, Backend] = {}
        self._building: dict[str, asyncio.Future] = {}

    def settings_for(self, props: BucketProps) -> dict[str, Any]:
        if props.provider == "ais" and props.namespace:
            if self.remotes is None:
                raise ConfigError("this node cannot reach remote clusters")
            return {"provider": "ais", "endpoints": self.remotes(props.namespace)}
        settings: dict[str, Any] = {}
        if props.profile:
            profile = self.profiles.get(props.profile)
            if profile is None:
                raise ConfigError(f"no backend profile {props.profile!r} in this node's "
                                  f"configuration (known: {', '.join(self.profiles) or 'none'})")
            if profile.get("provider", props.provider) != props.provider:
                raise ConfigError(f"profile {props.profile!r} is for provider "
                                  f"{profile.get('provider')!r}, not {props.provider!r}")
            settings.update({k: v for k, v in profile.items() if k != "provider"})
        secret = [k for k in props.settings if any(w in k.lower() for w in _SECRET_WORDS)]
        if secret:
            raise InvalidArgument(
                f"bucket settings are replicated to every node and must hold no credentials "
                f"({', '.join(sorted(secret))}); put them in a backend profile of the nodes' "
                "configuration and name it with 'profile'")
        settings.update(props.settings)
        if props.provider == "fs":
            path = settings.pop("path", None)
            if not path:
                raise InvalidArgument(f"fs://{props.name} needs a 'path' (the directory)")
            settings["buckets"] = {props.source_bucket: path}
        settings["provider"] = props.provider
        return settings

    async def backend_for(self, props: BucketProps) -> tuple[Backend, str]:
        """(backend, bucket name at the provider) for a cached bucket.

        Building one (an SDK client: boto3 takes ~0.3 s) happens in a thread, never on the
        event loop; concurrent first requests for the same configuration share one build."""
        settings = self.settings_for(props)
        key = json.dumps(settings, sort_keys=True, default=str)
        backend = self._backends.get(key)
        if backend is None:
            building = self._building.get(key)
            if building is None:
                building = self._building[key] = asyncio.ensure_future(
                    asyncio.to_thread(make_backend, settings))
            try:
                backend = await asyncio.shield(building)
            finally:
                if building.done():
                    self._building.pop(key, None)
            self._backends[key] = backend
        return backend, props.source_bucket

    async def warm(self, props: BucketProps) -> None:
        """Build a bucket's backend ahead of its first cold GET; errors wait for that GET."""
        try:
            await self.backend_for(props)
        except Exception as exc:  # reported to the request that needs the backend
            log.info("backend of %s not built ahead: %s", props.ref, exc)

    async def close(self) -> None:
        for backend in self._backends.values():
            await backend.close()
        self._backends.clear()
