"""The S3-compatible front end of a proxy.

Owns the S3 wire protocol: addressing (path and virtual-hosted style), SigV4 authentication
(:mod:`.sigv4`, pure: it imports nothing of aisync), verified request bodies (:mod:`.body`), the
S3 XML documents and the one S3 error table (:mod:`.xml`), and the S3 operations
(:mod:`.objects`, :mod:`.buckets`, :mod:`.multipart`) built on the proxy's view of the cluster
and on the targets' native HTTP routes; large bodies are relayed with ``splice`` (:mod:`.splice`).

May import: ``aisync.node.http``, ``aisync.cluster`` (maps), ``aisync.util``,
``aisync.config``. Never ``aisync.target.node`` or ``aisync.storage``: objects are reached over
HTTP, through the target that owns them (an import-linter contract).
"""
