"""SMS as a second bearer: the compact signed form in 8-bit SMS-SUBMIT PDUs, concatenated
when it does not fit one, to each of the platform's numbers, through the modem's AT port."""

from __future__ import annotations

import logging
import time
from typing import Any

from drivers.modem.modem import Modem, ModemError
from drivers.modem.pdu import PduError, split, submit
from edge.base.config import SmsConfig
from edge.bearers import BearerRefused

log = logging.getLogger(__name__)


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
