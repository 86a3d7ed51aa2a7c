"""Cluster control plane: cluster and bucket maps, placement, metasync, membership, keepalive.

Owns: the versioned, immutable documents that say which nodes exist and which buckets exist, how
objects are placed on targets, and how a new map version reaches every node.
May import: ``aisync.storage``, ``aisync.catalog``, ``aisync.client``, ``aisync.config``,
``aisync.util``. Never imports ``aisync.node``, the roles or ``aisync.cli``.
"""
