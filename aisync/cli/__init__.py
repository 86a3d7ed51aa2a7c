"""The ``aisync`` command line (click): nodes, local clusters, buckets and objects.

Owns: argument parsing, human output, spawning node processes for ``cluster up``.
May import: anything below it; talks to clusters only through ``aisync.client`` and imports
``aisync.proxy`` / ``aisync.target`` lazily, only to run a node.
"""
