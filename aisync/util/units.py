"""Human units on the command line and in properties: durations (``90s``, ``5m``, ``2h``,
``1d``, ``1h30m``, plain seconds) and sizes (``512``, ``64KiB``, ``100MB``, ``1.5GiB``)."""

from __future__ import annotations

import re

from aisync.util.errors import InvalidArgument

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?i?b?)\s*$", re.IGNORECASE)


def parse_duration(text: str | float | int) -> float:
    """Seconds from ``"5m"``, ``"1h30m"``, ``"90"`` (seconds) or a number."""
    if isinstance(text, bool):
        raise InvalidArgument(f"not a duration: {text!r}")
    if isinstance(text, int | float):
        value = float(text)
    else:
        s = str(text).strip().lower()
        try:
            value = float(s)
        except ValueError:
            pos, value = 0, 0.0
            for match in _DURATION_PART.finditer(s):
                if match.start() != pos:
                    break
                value += float(match.group(1)) * _SECONDS[match.group(2)]
                pos = match.end()
            if pos != len(s) or not s:
                raise InvalidArgument(
                    f"not a duration: {text!r} (use e.g. 30s, 5m, 2h, 1d, 1h30m)") from None
    if value < 0:
        raise InvalidArgument(f"a duration cannot be negative: {text!r}")
    return value


def parse_size(text: str | int) -> int:
    """Bytes from ``"64KiB"`` (binary), ``"100MB"`` (decimal), ``"512"`` or an int."""
    if isinstance(text, bool):
        raise InvalidArgument(f"not a size: {text!r}")
    if isinstance(text, int):
        value = text
    else:
        match = _SIZE.match(str(text))
        if not match:
            raise InvalidArgument(f"not a size: {text!r} (use e.g. 512, 64KiB, 100MB, 1GiB)")
        number, unit = float(match.group(1)), match.group(2).lower().rstrip("b")
        base = 1024 if unit.endswith("i") else 1000
        power = " kmgtp".index(unit[0]) if unit else 0
        value = int(number * base ** power)
    if value < 0:
        raise InvalidArgument(f"a size cannot be negative: {text!r}")
    return value
