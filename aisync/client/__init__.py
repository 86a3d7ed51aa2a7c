"""The aisync Python SDK.

``AsyncClient`` (asyncio, one ``aiohttp`` session) and ``Client`` (the same methods, blocking)
talk to a cluster through any proxy, follow the proxies' ``307`` redirects to the owning target
by hand, and raise the typed errors of :mod:`aisync.util.errors`::

    from aisync.client import Client

    with Client("http://127.0.0.1:51080") as c:
        c.create_bucket("ais://train")
        c.put_object("ais://train", "images/0001.jpg", pathlib.Path("0001.jpg"))
        for entry in c.iter_objects("ais://train", prefix="images/"):
            print(entry.name, entry.size)

Owns: the client side of docs/api.md. May import: ``aisync.util`` and ``aisync.config`` only.
"""

from aisync.client.aio import MAX_REDIRECTS, AsyncClient, ObjectReader, as_bucket
from aisync.client.body import BodyNotReplayable
from aisync.client.sync import Client
from aisync.client.types import ObjectEntry, ObjectInfo, ObjectPage, parse_range, range_header

__all__ = [
    "MAX_REDIRECTS",
    "AsyncClient",
    "BodyNotReplayable",
    "Client",
    "ObjectEntry",
    "ObjectInfo",
    "ObjectPage",
    "ObjectReader",
    "as_bucket",
    "parse_range",
    "range_header",
]
