"""What every node runs, proxy or target: the shared node runtime and HTTP plumbing.

Owns: the router (access levels, strict query and body rules, the one error mapping),
request and response helpers (:mod:`.http`), zero-copy file responses (:mod:`.files`), the
streaming relay (:mod:`.relay`), the runtime every role builds on (:mod:`.runtime`: catalog,
maps, membership client, metasync, workers), the pool of source backends (:mod:`.sources`), the
local-read protocol (:mod:`.localread`) and the process launcher (:mod:`.launch`, which gets the
role's node class from the CLI and so imports neither role).
May import: ``aisync.cluster``, ``aisync.sync``, ``aisync.storage``, ``aisync.catalog``,
``aisync.backends``, ``aisync.auth``, ``aisync.client``, ``aisync.config``, ``aisync.util``.
Never ``aisync.proxy``, ``aisync.target``, ``aisync.s3`` or ``aisync.cli``.
"""
