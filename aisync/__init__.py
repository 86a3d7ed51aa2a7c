"""aisync: multi-cluster data synchronization and caching for AI workloads.

Package map (dependencies point down this list, never up; enforced by import-linter):

* ``aisync.cli``      -- the ``aisync`` command line; talks to clusters only through ``aisync.client``
                         and spawns node processes.
* ``aisync.proxy``    -- the gateway: object redirects and relays, buckets, jobs, keys, remotes.
* ``aisync.target``   -- the storage node: object routes, cold GET, uploads, job batches, read
                         workers, the local-read server (proxy and target never import each other).
* ``aisync.s3``       -- the S3 front end a proxy runs (SigV4, XML, operations); it sees the proxy
                         through ``aisync.s3.ports.ProxyPort`` only.
* ``aisync.node``     -- what every node runs: router, HTTP helpers, sendfile and relay, runtime
                         (maps, membership client, workers), source backends, launch.
* ``aisync.cluster``  -- cluster and bucket maps, placement, membership, metasync, keepalive.
* ``aisync.sync``     -- the sync engine (version equality, change detection, jobs, schedules).
* ``aisync.storage``  -- mountpaths, atomic object files, per-object metadata, the object index.
* ``aisync.catalog``  -- SQLAlchemy models and Alembic migrations for cluster-level records.
* ``aisync.backends`` -- the backend contract and the providers behind it.
* ``aisync.client``   -- the Python SDK (async, with a synchronous facade).
* ``aisync.config``   -- pydantic configuration models, YAML loading, ``AISYNC_*`` overrides.
* ``aisync.util``     -- errors, names, hashing, logging: no aisync imports at all.
"""

__version__ = "0.1.0"
