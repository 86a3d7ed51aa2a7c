"""Backends: the small contract every source of truth implements, and its providers.

Owns: talking to S3, GCS, Azure Blob, OCI, POSIX directories and peer aisync clusters.
May import: ``aisync.client`` (for the peer-cluster provider), ``aisync.config``, ``aisync.util``.
Knows nothing of aisync's own HTTP API handlers.

Cluster-local ``ais://`` buckets have no backend; the contract and providers arrive with the
backends issue.
"""
