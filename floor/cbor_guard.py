"""A well-formedness check for CBOR from outside (RFC 8949, section 3), before any decoder
turns it into objects.

cbor2 honours shared references (tags 28 and 29): a few hundred bytes can name one
list from thousands of places, and anything that walks or prints the result (an
error message with `{value!r}`) expands it into gigabytes. Untrusted bytes may carry
only the tags the caller names, definite lengths, at most `max_depth` levels and
`max_items` data items; the walk is linear in the input and never builds an object.
"""

from __future__ import annotations

MAX_DEPTH = 32
MAX_ITEMS = 1 << 20


class CborRefused(ValueError):
    """Not CBOR we take from outside; `str()` says why, never what the bytes held."""


def check(data: bytes, *, tags: frozenset[int] = frozenset(), max_depth: int = MAX_DEPTH) -> None:
    """CborRefused unless `data` is exactly one well-formed item within the limits."""
    end = _Walk(data, tags, max_depth).item(0, 0)
    if end != len(data):
        raise CborRefused("bytes after the item")


def item_end(data: bytes, *, tags: frozenset[int] = frozenset(), max_depth: int = MAX_DEPTH) -> int:
    """Where the first item of `data` ends, checked as `check` checks; bytes may follow
    it (a short form's signature)."""
    return _Walk(data, tags, max_depth).item(0, 0)


class _Walk:
    def __init__(self, data: bytes, tags: frozenset[int], max_depth: int) -> None:
        self.data = data
        self.tags = tags
        self.max_depth = max_depth
        self.items = 0

    def _head(self, pos: int) -> tuple[int, int, int]:
        """(major type, argument, position after the head)."""
        if pos >= len(self.data):
            raise CborRefused("truncated")
        first = self.data[pos]
        major, info = first >> 5, first & 0x1F
        pos += 1
        if info < 24:
            return major, info, pos
        if info > 27:
            # 28-30 are reserved; 31 is an indefinite length, which no signer of ours writes
            raise CborRefused("indefinite length or reserved additional information")
        size = 1 << (info - 24)
        if pos + size > len(self.data):
            raise CborRefused("truncated")
        return major, int.from_bytes(self.data[pos : pos + size], "big"), pos + size

    def item(self, pos: int, depth: int) -> int:
        """Check the item at `pos`; the position after it. An explicit stack would do as
        well, but `max_depth` already bounds the recursion far below Python's limit."""
        if depth > self.max_depth:
            raise CborRefused("nested too deeply")
        self.items += 1
        if self.items > MAX_ITEMS:
            raise CborRefused("too many items")
        major, arg, pos = self._head(pos)
        if major in (0, 1, 7):  # integers, simple values and floats: the head is all
            return pos
        if major in (2, 3):  # byte and text strings
            if pos + arg > len(self.data):
                raise CborRefused("truncated string")
            return pos + arg
        if major == 6:
            if arg not in self.tags:
                raise CborRefused(f"tag {arg} not allowed here")
            return self.item(pos, depth + 1)
        count = arg * 2 if major == 5 else arg  # arrays, maps (a key and a value each)
        if count > len(self.data) - pos:  # every item takes at least one byte
            raise CborRefused("more items than bytes")
        for _ in range(count):
            pos = self.item(pos, depth + 1)
        return pos
