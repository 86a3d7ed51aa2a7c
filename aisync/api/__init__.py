"""HTTP front ends of a node: the proxy (gateway) and the target (storage node).

Owns: request parsing, routing, the single error middleware, and node lifecycles.
``aisync.api.proxy`` and ``aisync.api.target`` never import each other; both build on
``aisync.api.common`` and ``aisync.api.runtime``. ``aisync.api.node`` starts either.
May import: ``aisync.cluster``, ``aisync.storage``, ``aisync.catalog``, ``aisync.client``,
``aisync.config``, ``aisync.util``.
"""
