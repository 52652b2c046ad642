"""Why a firmware update, an image chunk or a flash failed: `fw.result` `reason` and the
`cmd.result` `error` of a `firmware.update` (docs/envelope-and-topics.md)."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class FwReason(enum.StrEnum):
    BAD_ARGS = "bad_args"
    BAD_SIGNATURE = "bad_signature"
    BUSY = "busy"
    DEVICE_REFUSED = "device_refused"
    DID_NOT_COME_BACK = "did_not_come_back"
    DIGEST = "digest"
    EXPIRED = "expired"
    GAP = "gap"
    MALFORMED = "malformed"
    NO_TRANSPORT = "no_transport"
    ROLLBACK = "rollback"
    SIZE = "size"
    TIMEOUT = "timeout"
    UNKNOWN_DEVICE = "unknown_device"
    UNSUPPORTED = "unsupported"
    WRONG_CLASS = "wrong_class"


@dataclass(frozen=True, slots=True)
class FlashResult:
    ok: bool
    reason: FwReason | None = None
    detail: str = ""
    version: str | None = None  # what the device runs afterwards, when known
    resumed: int = 0  # how many times the upload resumed after a broken link
