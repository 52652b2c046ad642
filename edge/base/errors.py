"""Error families: transient faults are retried, permanent ones wait for a human."""

from __future__ import annotations

import enum


class EdgeError(Exception):
    """Base of every gridedge error."""


class TransientError(EdgeError):
    """A fault that may clear by itself: retry with backoff."""


class PermanentError(EdgeError):
    """A fault that retrying will not fix: back off to the maximum and report."""


class DeviceGone(TransientError):
    """The device went away (EOF, EIO, unplugged)."""

    def __init__(self, device: str, detail: str = "") -> None:
        super().__init__(f"device gone{': ' + detail if detail else ''}")
        self.device = device


class DeviceSilent(TransientError):
    """The device sent nothing for longer than its silence timeout."""

    def __init__(self, device: str, seconds: float) -> None:
        super().__init__(f"silent for {seconds:g} s")
        self.device = device
        self.seconds = seconds


class BrokerUnavailable(TransientError):
    """The MQTT broker cannot be reached or dropped the connection."""


class AuthRejected(PermanentError):
    """The broker refused our credentials or certificate."""


class ConfigError(PermanentError):
    """A configuration mistake, located by key path and line."""

    def __init__(self, path: str, message: str, *, file: str = "", line: int | None = None) -> None:
        where = file
        if line is not None:
            where = f"{where}:{line}" if where else f"line {line}"
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}{path}: {message}" if path else f"{prefix}{message}")
        self.path = path
        self.line = line
        self.file = file
        self.message = message


class Refusal(Exception):
    """Something refused with a reason a counter keys on, and a detail for people."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}{': ' + detail if detail else ''}")
        self.reason = reason
        self.detail = detail


class EnvelopeReason(enum.StrEnum):
    """Why a COSE_Sign1 envelope was refused."""

    TOO_LARGE = "too_large"
    CBOR = "malformed_cbor"
    STRUCTURE = "bad_structure"
    ALG = "bad_alg"
    KID = "unknown_kid"
    SIGNATURE = "bad_signature"
    PAYLOAD = "bad_payload"


class EnvelopeError(EdgeError):
    """A received envelope failed decoding or verification."""

    def __init__(self, reason: EnvelopeReason, detail: str = "") -> None:
        super().__init__(f"{reason.value}{': ' + detail if detail else ''}")
        self.reason = reason
