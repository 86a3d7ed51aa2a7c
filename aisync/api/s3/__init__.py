"""The S3-compatible front end: owns the S3 wire protocol (SigV4 request authentication,
aws-chunked bodies, XML and the S3 operations). Its modules work on plain values where they
can so they are unit-testable. May import ``aisync.util`` and ``aisync.config``.
"""
