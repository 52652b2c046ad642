"""An MQTT message as it arrived (commands, firmware chunks): what edge/mqtt.py hands on."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Incoming:
    topic: str
    payload: bytes
    retain: bool
    qos: int
