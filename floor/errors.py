"""Error families: transient faults are retried, permanent ones wait for a human."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


def N_(message: str) -> str:
    """Mark a message for the technician's catalogs (edge/i18n.py); translated where shown."""
    return message


# Messages more than one module raises.
CANNOT_LOAD = N_("cannot load {file_path}: {why}")
ONE_OF = N_("expected one of {choices}, got {got}")


@dataclass(frozen=True, slots=True)
class Problem:
    """What is wrong, as a message template and its values: `str()` gives the English, and
    a catalog translates the template (and any value that is itself a Problem)."""

    template: str
    values: Mapping[str, object] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.template.format(**self.values) if self.values else self.template


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
    """A configuration mistake, located by key path and line. `message` is a template
    (marked with N_ for the catalogs) filled with `values`: edge/i18n.py shows it in the
    technician's language."""

    def __init__(
        self, path: str, message: str | Problem, *, file: str = "", line: int | None = None, **values: object
    ) -> None:
        self.problem = message if isinstance(message, Problem) else Problem(message, values)
        self.message = str(self.problem)
        where = file
        if line is not None:
            where = f"{where}:{line}" if where else f"line {line}"
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}{path}: {self.message}" if path else f"{prefix}{self.message}")
        self.path = path
        self.line = line
        self.file = file


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
