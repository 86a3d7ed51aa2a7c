"""The sync engine: version equality, out-of-band change detection, jobs and schedules.

Owns: keeping cached buckets consistent with their sources (``docs/sync.md``).
May import: ``aisync.storage``, ``aisync.catalog``, ``aisync.backends.base``, ``aisync.config``,
``aisync.util``. Never imports a concrete backend, the API or the CLI.
"""
