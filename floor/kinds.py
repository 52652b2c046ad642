"""Message kinds and their priorities (docs/envelope-and-topics.md, Kinds)."""

from __future__ import annotations

import enum


class Prio(enum.IntEnum):
    """Outbox lanes: lower drains first."""

    LIFE_SAFETY = 0
    EVENT = 1
    TELEMETRY = 2
    BULK = 3


LIFE_SAFETY_KINDS = (
    "sos.alarm",
    "sos.cancel",
    "dsc.distress",
    "ais.distress",
    "worker.down",
    "worker.overdue",
    "beidou.distress",
)
_LIFE_SAFETY = frozenset(LIFE_SAFETY_KINDS)
_EVENT = frozenset(
    {
        "device.state",
        "device.unknown",
        "camera.mark",
        "camera.recording",
        "cmd.result",
        "time.anchor",
        "gateway.status",
        "gateway.health",
        "outbox.dropped",
        "ais.static",
        "ais.beacon_test",
        "dsc.call",
        "vessels.outside",
        "alert.delivery",
        "diag.snapshot",
        "fw.result",
        "bearer.state",
        "alarm.escalated",
        "gateway.posture",
        "beidou.message",
    }
)
_TELEMETRY = frozenset({"gnss.fix", "ais.position", "device.battery", "beidou.position"})


def prio_of(kind: str) -> Prio:
    """The lane of a kind; unknown kinds are bulk so they can never crowd out an alarm."""
    if kind in _LIFE_SAFETY:
        return Prio.LIFE_SAFETY
    if kind in _EVENT:
        return Prio.EVENT
    if kind in _TELEMETRY:
        return Prio.TELEMETRY
    return Prio.BULK


class DeviceState(enum.StrEnum):
    """`device.state` `state` (docs/envelope-and-topics.md), and each device's in the status."""

    UNSEEN = "unseen"  # a wearable not met since the gateway started (status only)
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    SILENT = "silent"  # a serial or network device that sent nothing for silence_s
    REJECTED = "rejected"  # a wearable without its kind's profile
    UNPAIRED = "unpaired"
