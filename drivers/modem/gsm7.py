"""The GSM 7-bit default alphabet (3GPP TS 23.038 6.2.1) and its packing into octets
(6.1.2.1.1), for text SMS a phone shows: 160 characters in one SMS, 153 per part of a
concatenated one. Text with a character outside the alphabet (Chinese) goes as UCS-2
instead (pdu.py). Sans-IO."""

from __future__ import annotations

# The default alphabet, in code order (0x00-0x7F); 0x1B is the escape to the extension table.
_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_EXTENSION = {
    "^": 0x14, "{": 0x28, "}": 0x29, "\\": 0x2F, "[": 0x3C, "~": 0x3D, "]": 0x3E, "|": 0x40, "€": 0x65,
}  # fmt: skip
_CODE = {ch: i for i, ch in enumerate(_BASIC) if ch != "\x1b"}
ESCAPE = 0x1B


def septets(text: str) -> list[int] | None:
    """The text's septets (an extension character takes two), or None when a character
    is not in the alphabet."""
    out: list[int] = []
    for ch in text:
        if (code := _CODE.get(ch)) is not None:
            out.append(code)
        elif (ext := _EXTENSION.get(ch)) is not None:
            out += [ESCAPE, ext]
        else:
            return None
    return out


def pack(values: list[int], *, skip_bits: int = 0) -> bytes:
    """Septets packed into octets, least significant bits first; `skip_bits` of fill in
    front (after a user data header, so the text starts on a septet boundary)."""
    acc, nbits, out = 0, skip_bits, bytearray()
    for v in values:
        acc |= (v & 0x7F) << nbits
        nbits += 7
        while nbits >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            nbits -= 8
    if nbits == 1:
        # seven spare bits would read as a trailing '@' to a receiver that counts octets,
        # not the length: they are a <CR> instead (TS 23.038 6.1.2.3.1)
        acc |= 0x0D << nbits
    if nbits:
        out.append(acc & 0xFF)
    return bytes(out)


def unpack(data: bytes, count: int, *, skip_bits: int = 0) -> list[int]:
    """`count` septets from packed octets (the inverse of `pack`)."""
    acc = int.from_bytes(data, "little") >> skip_bits
    return [(acc >> (7 * i)) & 0x7F for i in range(count)]


def decode(values: list[int]) -> str:
    """Septets back to text."""
    reverse = {v: k for k, v in _EXTENSION.items()}
    out, escaped = [], False
    for v in values:
        if escaped:
            out.append(reverse.get(v, " "))
            escaped = False
        elif v == ESCAPE:
            escaped = True
        else:
            out.append(_BASIC[v])
    return "".join(out)
