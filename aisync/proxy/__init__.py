"""The proxy: a stateless gateway in front of the targets.

Owns: ``ProxyNode`` (:mod:`.node`: object redirects and reverse relays, buckets, listings,
cluster status and join, the primary's duties through ``aisync.cluster.primary``), the jobs and
schedules API (:mod:`.jobs`), S3 access keys (:mod:`.keys`) and attached remote clusters
(:mod:`.remotes`); it runs the S3 front end (``aisync.s3``) as its fallback route.
May import: ``aisync.s3``, ``aisync.node`` and everything below them. Never ``aisync.target``.
Known circle (listed in the import-linter contract until its port lands): the handler modules
type their node (``TYPE_CHECKING``).
"""
