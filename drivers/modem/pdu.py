"""SMS-SUBMIT PDUs for 8-bit data (3GPP TS 23.040), split over concatenated parts.

Sans-IO: bytes in, (length, hex) out, as `AT+CMGS=<length>` in PDU mode (3GPP TS
27.005 section 3.5.1) wants them: `length` counts the TPDU's octets, without the
service-centre address in front (here one octet, 00: the SIM's own SMS centre).
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_UD = 140  # octets of user data one SMS carries
CONCAT_UDH = 6  # UDHL + IEI 00 (8-bit reference) + IEDL + ref + total + seq
MAX_PARTS = 255
DCS_8BIT = 0x04  # general data coding, no class, 8-bit data
VP_1_DAY = 0xA7  # relative validity period: 24 hours (TS 23.040 9.2.3.12.1)


class PduError(ValueError):
    """A number or a payload that cannot go out as an SMS."""


@dataclass(frozen=True, slots=True)
class Part:
    length: int  # the TPDU octets: AT+CMGS=<length>
    hex: str  # what is written after the "> " prompt (then Ctrl-Z)
    user_data: bytes  # the TP-UD, user data header included


def address(number: str) -> bytes:
    """TP-DA: digit count, type of address, semi-octets (an odd count padded with F)."""
    international = number.startswith("+")
    digits = number[1:] if international else number
    if not digits.isdigit() or not 1 <= len(digits) <= 20:
        raise PduError(f"not a phone number: {number!r} (digits, with an optional leading +)")
    padded = digits + ("F" if len(digits) % 2 else "")
    swapped = "".join(padded[i + 1] + padded[i] for i in range(0, len(padded), 2))
    return bytes([len(digits), 0x91 if international else 0x81]) + bytes.fromhex(swapped)


def split(data: bytes) -> list[bytes]:
    """The user data of each part: one SMS, or chunks that leave room for the
    concatenation header."""
    if len(data) <= MAX_UD:
        return [data]
    room = MAX_UD - CONCAT_UDH
    return [data[i : i + room] for i in range(0, len(data), room)]


def submit(number: str, data: bytes, ref: int) -> list[Part]:
    """The SMS-SUBMIT parts carrying `data` to `number`; several, each with a
    concatenation header (reference `ref`, 8 bits), when it does not fit one."""
    if not data:
        raise PduError("nothing to send")
    da = address(number)
    chunks = split(data)
    if len(chunks) > MAX_PARTS:
        raise PduError(f"{len(data)} bytes need more than {MAX_PARTS} parts")
    udh = len(chunks) > 1
    parts = []
    for i, chunk in enumerate(chunks):
        ud = bytes([5, 0x00, 3, ref & 0xFF, len(chunks), i + 1]) + chunk if udh else chunk
        first = 0x01 | 0x10 | (0x40 if udh else 0)  # SMS-SUBMIT, relative validity, UDHI
        tpdu = bytes([first, 0x00]) + da + bytes([0x00, DCS_8BIT, VP_1_DAY, len(ud)]) + ud
        parts.append(Part(len(tpdu), ("00" + tpdu.hex()).upper(), ud))
    return parts


def reassemble(parts: list[bytes]) -> bytes:
    """The data of one message from its parts' user data (as an SMS gateway hands them
    over, hex or raw, in any order): concatenation headers are read and put in order."""
    if len(parts) == 1 and not concat_header(parts[0]):
        return parts[0]
    pieces: dict[int, bytes] = {}
    total = 0
    for ud in parts:
        head = concat_header(ud)
        if head is None:
            raise PduError("a part of a concatenated message lacks its header")
        _ref, total, seq = head
        pieces[seq] = ud[CONCAT_UDH:]
    if sorted(pieces) != list(range(1, total + 1)):
        raise PduError(f"parts {sorted(pieces)} of {total}: incomplete")
    return b"".join(pieces[i] for i in range(1, total + 1))


def concat_header(ud: bytes) -> tuple[int, int, int] | None:
    """(reference, parts, this part) of a part's 8-bit concatenation header, or None."""
    if len(ud) > CONCAT_UDH and ud[:3] == b"\x05\x00\x03" and 1 <= ud[5] <= ud[4]:
        return ud[3], ud[4], ud[5]
    return None
