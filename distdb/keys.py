"""Row keys: validation and the order-preserving text encoding every server stores.

A table's keys are all integers or all strings. Both are stored as text whose
byte order is the key order, so one index and one comparison serve both:

* integers (signed 64-bit) become 19 zero-padded digits, negatives prefixed with
  ``-`` and offset by 2**63 so that they sort before every non-negative key
  ("0000000000000000042" for 42);
* strings are stored as they are (UTF-8 byte order; PostgreSQL columns use the
  "C" collation, see ``KeyField``).

The empty string is the start of the key space (-inf); ``None`` as an end key is +inf.
"""

from __future__ import annotations

from collections.abc import Iterable

from distdb.errors import InvalidKey

KEY_TYPES: tuple[str, ...] = ("int", "str")
MAX_KEY_BYTES = 256
_OFFSET = 2**63
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1


def encode_key(key_type: str, key: object) -> str:
    """Validate a user key and return its stored, order-preserving form."""
    if key_type == "int":
        if isinstance(key, bool) or not isinstance(key, int):
            # Strict: JSON bodies carry integer keys as numbers. Keys that arrive as text
            # (URLs, the compatibility endpoint) go through ``parse_key_text``.
            raise InvalidKey("this table's keys are integers", key=_show(key))
        if not _INT_MIN <= key <= _INT_MAX:
            raise InvalidKey("integer keys must fit in 64 bits", key=_show(key))
        return f"{key:019d}" if key >= 0 else f"-{key + _OFFSET:019d}"
    if not isinstance(key, str):
        raise InvalidKey("this table's keys are strings", key=_show(key))
    if not key:
        raise InvalidKey("a key must not be empty")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidKey(f"a key must be at most {MAX_KEY_BYTES} bytes", key=key[:64])
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise InvalidKey("a key must not contain control characters", key=key[:64])
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidKey("a key must be valid Unicode", key=_show(key)) from None
    return key


def decode_key(key_type: str, stored: str) -> int | str:
    """The user-facing key of a stored key."""
    if key_type == "int":
        if stored.startswith("-"):
            return int(stored[1:]) - _OFFSET
        return int(stored)
    return stored


def parse_key_text(key_type: str, text: str) -> str:
    """Encode a key that arrived as text (URL path or query string)."""
    if key_type == "int":
        if not _is_int_text(text):
            raise InvalidKey("this table's keys are integers", key=text[:64])
        return encode_key("int", int(text))
    return encode_key("str", text)


def in_range(stored: str, start: str, end: str | None) -> bool:
    """Whether a stored key falls in the half-open range [start, end)."""
    return stored >= start and (end is None or stored < end)


def range_cut(
    start: str, end: str | None, cuts: Iterable[str | None]
) -> list[tuple[str, str | None]]:
    """[start, end) cut at every cut strictly inside it, as contiguous half-open pieces.

    Cuts outside the range, on its bounds, repeated, empty or None are ignored, so the
    pieces always cover [start, end) exactly, in key order.
    """
    inner = sorted({c for c in cuts if c and c > start and (end is None or c < end)})
    starts: list[str] = [start, *inner]
    ends: list[str | None] = [*inner, end]
    return list(zip(starts, ends, strict=True))


def bound_display(key_type: str | None, key: str | None) -> str:
    """A stored range bound as people read it: "" is -inf, None is +inf.

    With the table's ``key_type`` other keys are shown as users write them (integer keys
    decoded); without it (a server that does not know the table), as stored.
    """
    if key is None:
        return "+inf"
    if key == "":
        return "-inf"
    return str(decode_key(key_type, key)) if key_type else key


def _is_int_text(text: str) -> bool:
    body = text[1:] if text[:1] in "+-" else text
    return 0 < len(body) <= 20 and body.isascii() and body.isdigit()


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 64 else text[:61] + "..."
