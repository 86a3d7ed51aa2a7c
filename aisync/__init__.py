"""aisync: multi-cluster data synchronization and caching for AI workloads.

Package map (dependencies point down this list, never up; enforced by import-linter):

* ``aisync.cli``      -- the ``aisync`` command line; talks to clusters only through ``aisync.client``
                         and spawns node processes.
* ``aisync.api``      -- HTTP front ends: ``api.proxy`` (gateway) and ``api.target`` (storage node),
                         which never import each other, plus shared middleware.
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
