"""Sources of truth for cached buckets: one backend instance per distinct configuration.

A bucket's backend is built from its properties (provider, non-secret ``settings``, ``source``
bucket name) on top of the named profile of this node's configuration (credentials). Backends
are cached and shared by every bucket with the same configuration, and closed with the node.

What a request may say is narrow, because the bucket map is replicated and every node acts on
it: a bucket's ``settings`` hold only :data:`REQUEST_SETTINGS` of its provider (never an endpoint,
a host or a credential: those come from the node's own profiles), and an ``fs://`` bucket's
``path`` must lie under the ``root`` of an ``fs`` profile of *this* node (after resolving ``..``
and symlinks), checked again by every node when it builds the backend, so neither a request nor a
forged map can make a node read or write elsewhere on its host.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from typing import Any

from aisync.backends.base import Backend
from aisync.backends.registry import make_backend
from aisync.cluster.maps import BucketProps
from aisync.util.errors import AccessDenied, ConfigError, InvalidArgument

log = logging.getLogger("aisync.sources")

_SECRET_WORDS = ("secret", "password", "key", "token", "credential", "connection_string",
                 "pass_phrase", "sas")


#: The only bucket settings a request may give, per provider; everything else (endpoints,
#: accounts, credentials) comes from the node's backend profile.
REQUEST_SETTINGS: dict[str, frozenset[str]] = {
    "fs": frozenset({"path"}),
    "s3": frozenset({"region"}),
    "oci": frozenset({"region"}),
}


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


class SourcePool:
    """``remotes`` maps an attached remote cluster's alias to the settings of its ``ais``
    backend (``endpoints``: the proxy URLs this node may use, ``token``: the peer's token; the
    buckets ``ais://@alias/name`` are read from it); it raises ``RemoteNotFound`` for unknown
    aliases and ``AccessDenied`` for aliases this node has no profile for."""

    def __init__(self, profiles: dict[str, dict[str, Any]],
                 remotes: Callable[[str], dict[str, Any]] | None = None) -> None:
        self.profiles = profiles
        self.remotes = remotes
        self._backends: dict[str, Backend] = {}
        self._building: dict[str, asyncio.Future] = {}

    def settings_for(self, props: BucketProps) -> dict[str, Any]:
        if props.provider == "ais" and props.namespace:
            if self.remotes is None:
                raise ConfigError("this node cannot reach remote clusters")
            return {"provider": "ais", **self.remotes(props.namespace)}
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
        allowed = REQUEST_SETTINGS.get(props.provider, frozenset())
        refused = sorted(set(props.settings) - allowed)
        if refused:
            raise InvalidArgument(
                f"bucket settings {', '.join(refused)} are not accepted for "
                f"{props.provider}:// buckets (allowed: {', '.join(sorted(allowed)) or 'none'}); "
                "endpoints and accounts come from a backend profile of the nodes' configuration, "
                "named with 'profile'")
        if props.provider == "fs":
            root, directory = self._fs_directory(props)
            settings.pop("root", None)
            settings["buckets"] = {props.source_bucket: directory}
            settings["provider"] = "fs"
            return settings
        settings.update(props.settings)
        settings["provider"] = props.provider
        return settings

    def _fs_directory(self, props: BucketProps) -> tuple[str, str]:
        """``(root, directory)`` of an ``fs://`` bucket: its ``path`` (absolute, or relative to
        the root) resolved, and inside the root of its fs profile, or of the first fs profile
        whose root holds it when the bucket names none; else :class:`AccessDenied`."""
        path = props.settings.get("path")
        if not path or not isinstance(path, str):
            raise InvalidArgument(f"fs://{props.name} needs a 'path' (the directory)")
        if "\0" in path:
            raise InvalidArgument("the path holds a NUL character")
        names = [props.profile] if props.profile else sorted(self.profiles)
        roots = [(n, self.profiles[n].get("root")) for n in names
                 if self.profiles.get(n, {}).get("provider") == "fs"]
        roots = [(n, os.path.realpath(str(r))) for n, r in roots if r]
        if not roots:
            raise AccessDenied(
                f"fs://{props.name}: {'profile ' + repr(props.profile) if props.profile else 'no'}"
                f" fs profile with a 'root' in the nodes' configuration (backends: {{NAME: "
                "{provider: fs, root: /DIR}}): fs:// buckets live only under such roots")
        for _, root in roots:
            directory = os.path.realpath(os.path.join(root, path))
            if _inside(directory, root):
                return root, directory
        raise AccessDenied(f"fs://{props.name}: {path} is outside the fs roots of the nodes' "
                           f"configuration ({', '.join(r for _, r in roots)})")

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
