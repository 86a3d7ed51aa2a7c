"""The one MAC the auth layers use: 128-bit keyed BLAKE2b under a key derived per purpose.

Keyed BLAKE2b is a MAC by design (no HMAC construction around it). Each purpose (member
signatures, signed redirects) gets its own key, SHA-256 of the purpose label and the cluster
secret, so a MAC made for one can never pass as the other. The keyed state is made once and
copied per message: a check costs about a microsecond, which matters on paths every object
request takes.
"""

from __future__ import annotations

import hashlib


class KeyedMac:
    __slots__ = ("_keyed",)

    def __init__(self, secret: bytes, purpose: bytes) -> None:
        key = hashlib.sha256(purpose + b"\0" + secret).digest()
        self._keyed = hashlib.blake2b(key=key, digest_size=16)

    def hex(self, message: bytes) -> str:
        """The MAC of ``message``, 32 lower-case hex digits."""
        mac = self._keyed.copy()
        mac.update(message)
        return mac.hexdigest()
