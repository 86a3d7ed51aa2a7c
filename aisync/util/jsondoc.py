"""JSON from outside the process, read safely: the one parser of every body, header and answer.

``json.loads`` alone recurses once per nesting level (a document 1,000 levels deep raised
``RecursionError``, a 500) and accepts ``NaN`` and ``Infinity`` (also as ``1e999``), which no
JSON peer means and which break arithmetic (``int(inf)`` raises ``OverflowError``).
:func:`parse_json` refuses both, so its callers see only ``InvalidArgument``.
"""

from __future__ import annotations

import json
import math
from typing import Any

from aisync.util.errors import InvalidArgument

#: The deepest nesting (objects and arrays) a JSON document a node is sent may have. Nothing
#: aisync exchanges comes near it; a deeper document is refused before it can exhaust the
#: parser's recursion (a RecursionError, once a 500).
MAX_JSON_DEPTH = 64


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is out of range")
    return value


def _too_deep(doc: Any) -> bool:
    """Whether ``doc`` nests containers deeper than ``MAX_JSON_DEPTH`` (walked without
    recursion)."""
    stack = [(doc, 1)]
    while stack:
        node, level = stack.pop()
        if level > MAX_JSON_DEPTH:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, level + 1) for child in children
                     if isinstance(child, dict | list))
    return False


def parse_json(raw: bytes | str, what: str) -> Any:
    """The one way aisync reads JSON it is sent: request bodies, JSON headers, other nodes' and
    peer clusters' answers all come through here.

    UTF-8, -16 or -32 (bytes are detected as ``json.loads`` does); ``NaN``, ``Infinity`` and
    numbers too large for a float (``1e999``) are refused, and so is nesting deeper than
    :data:`MAX_JSON_DEPTH`. Raises only ``InvalidArgument`` (400), naming ``what``."""
    try:
        doc = json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise InvalidArgument(f"{what}: nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:  # not JSON, not UTF-8, a number over Python's digit limit
        raise InvalidArgument(f"{what}: not valid JSON ({exc})") from None
    if isinstance(doc, dict | list) and _might_be_deep(raw) and _too_deep(doc):
        raise InvalidArgument(f"{what}: nested deeper than {MAX_JSON_DEPTH} levels")
    return doc


def _might_be_deep(raw: bytes | str) -> bool:
    """A cheap bound: fewer opening brackets than the limit cannot nest past it."""
    if isinstance(raw, str):
        return raw.count("[") + raw.count("{") > MAX_JSON_DEPTH
    return raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH
