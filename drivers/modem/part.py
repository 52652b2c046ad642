"""SMS through a cellular modem's AT port (`[sms]`): life-safety messages in their
compact signed form, in 8-bit SMS-SUBMIT PDUs, concatenated when they do not fit one,
to each of the platform's numbers."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from drivers.modem.modem import Modem, ModemError
from drivers.modem.pdu import PduError, split, submit
from drivers.part import Bearer, BearerPart, BearerRefused
from floor.config import BearerConfig, Section, bearer_basics, phone_numbers
from floor.errors import N_

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class SmsConfig(BearerConfig):
    name: ClassVar[str] = "sms"
    port: str = ""  # the modem's AT command port (a Quectel EC25's is /dev/ttyUSB2); empty: off
    baudrate: int = 115200
    numbers: tuple[str, ...] = ()  # the platform's SMS numbers, each gets every message
    max_parts_per_hour: int = 60  # SMS parts sent in any hour, at most: a flood cannot run up a bill
    timeout_s: float = 30.0  # an AT command unanswered this long: the modem is reopened

    @property
    def enabled(self) -> bool:
        return bool(self.port)

    @property
    def per_hour(self) -> int:
        return self.max_parts_per_hour


_D = SmsConfig()


def parse(t: Section) -> SmsConfig:
    sms = SmsConfig(
        **bearer_basics(t, _D),
        port=t.text("port", _D.port),
        baudrate=t.integer("baudrate", _D.baudrate, lo=1200, hi=4_000_000),
        numbers=phone_numbers(t, "numbers"),
        max_parts_per_hour=t.integer("max_parts_per_hour", _D.max_parts_per_hour, lo=1, hi=10_000),
        timeout_s=t.number("timeout_s", _D.timeout_s, lo=1.0),
    )
    if sms.enabled and not sms.numbers:
        raise t.error("numbers", N_("is required when port is set: the platform's SMS number(s)"))
    t.done()
    return sms


class SmsBearer:
    name = "sms"

    def __init__(self, cfg: SmsConfig) -> None:
        self.cfg = cfg
        self.modem = Modem("sms", cfg.port, cfg.baudrate, timeout_s=cfg.timeout_s)
        self._ref = int(time.time()) & 0xFF  # concatenation references, per message
        self.last_cmgs_ms: float | None = None  # from the send's start to the last +CMGS

    def ready(self) -> bool:
        return self.modem.ready.is_set()

    def cost(self, data: bytes) -> int:
        return len(split(data)) * len(self.cfg.numbers)

    async def send(self, data: bytes) -> int:
        self._ref = (self._ref + 1) & 0xFF
        started = time.monotonic()
        spent = 0
        for number in self.cfg.numbers:
            try:
                for part in submit(number, data, self._ref):
                    await self.modem.send(part)
                    spent += 1
            except ModemError as exc:
                raise BearerRefused(exc.reason.value, exc.detail) from exc
            except PduError as exc:
                raise BearerRefused("pdu", str(exc)) from exc
        self.last_cmgs_ms = (time.monotonic() - started) * 1000.0
        return spent

    async def run(self) -> None:
        await self.modem.run()

    def snapshot(self) -> dict[str, Any]:
        return {**self.modem.snapshot(), "last_cmgs_ms": self.last_cmgs_ms}


def build(cfg: SmsConfig) -> Bearer:
    return SmsBearer(cfg)


PART = BearerPart(name="sms", config=SmsConfig, parse=parse, build=build)
