"""Who may call a node: client tokens, intra-cluster signatures, signed redirects.

Three trust layers, each checked by the router before any handler runs (see
:class:`aisync.auth.gate.Gate`), each declared per route as an :class:`Access` level:

* **client → proxy**: ``Authorization: Bearer <admin token>`` (:mod:`aisync.auth.tokens`). Users,
  roles and per-bucket grants slot in here later: the gate returns an :class:`Identity`, and a
  route's permission check will take it.
* **proxy → target, for a client**: a proxy's 307 carries ``ais_auth`` in its Location, a MAC
  of the method, path, query, proxy id, map version and expiry (:mod:`aisync.auth.redirects`), so
  a client reaches a target's object routes only through a proxy.
* **node ↔ node**: every request a node sends to another member is signed with the cluster secret
  (a keyed BLAKE2b MAC over method, path and query, body digest, time, nonce and the sender's id), and
  a nonce is accepted once within the clock-skew window (:mod:`aisync.auth.members`).

A MAC over a shared secret was chosen over mutual TLS for the intra-cluster layer: it needs no
certificate authority or rotation story to be on by default on one machine, costs a few
microseconds per request, and authenticates each request rather than each connection (a pooled
connection cannot be reused by another sender). TLS for confidentiality is a later layer, on top.

Owns: credential checks and request signing. May import: ``aisync.config``, ``aisync.util``.
"""

from aisync.auth.gate import Access, Gate, Identity

__all__ = ["Access", "Gate", "Identity"]
