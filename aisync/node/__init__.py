"""HTTP front ends of a node: the proxy (gateway) and the target (storage node).

Owns: request parsing, routing, the single error middleware, and node lifecycles.
``aisync.proxy.node`` and ``aisync.target.node`` never import each other; both build on
``aisync.node.http`` and ``aisync.node.runtime``. ``aisync.node.launch`` starts either.
May import: ``aisync.cluster``, ``aisync.storage``, ``aisync.catalog``, ``aisync.client``,
``aisync.config``, ``aisync.util``.
"""
