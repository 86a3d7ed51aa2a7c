"""Local object storage on a target: mountpaths, atomic object files, metadata, the index.

Owns: bytes on disk. An object lives at a path derived from a hash of its name on the mountpath
chosen by HRW, never as a directory tree of its name, so nested names (``a`` and ``a/b``), long
names and any characters are safe. Writes are temp file → fsync → rename → fsync(dir); the
metadata (size, xxh3 checksum, times, name) is an xattr on the same inode, so the rename commits
bytes and metadata together and a reader that opened the old file keeps reading the old inode.

May import: ``aisync.config``, ``aisync.util``. Knows nothing of HTTP or of the cluster.
"""
