"""The target: a storage node pooling its mountpaths into the cluster's object store.

Owns: ``TargetNode`` (:mod:`.node`: object routes, cold GET through the sync engine's
read-through, peer-first reads), multipart uploads (:mod:`.uploads`), job batches
(:mod:`.batches`), the read workers (:mod:`.read_worker`) and the local-read server for
same-host proxies (:mod:`.localread`).
May import: ``aisync.node`` and everything below it. Never ``aisync.proxy`` or ``aisync.s3``.
Known circle (listed in the import-linter contract until its port lands): the handler modules
type their node (``TYPE_CHECKING``).
"""
