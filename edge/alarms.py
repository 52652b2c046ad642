"""What becomes of a life-safety message after its commit, beyond the MQTT uplink: the
other bearers when the broker does not acknowledge it in time (edge/bearers/fallback.py),
the wearer told it went (*sent*: a PUBACK, or a bearer took it), and, for a wearable's
alarm nobody acknowledges, the escalation's steps (edge/escalation.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drivers.ble import profiles as p
from drivers.parts import BearerRefused, Device, Parts
from edge.bearers.fallback import Fallback, start_bearers
from edge.bearers.readable import Style, readable
from edge.deliveries import ALERT_TTL_S, Deliveries, Delivery
from edge.escalation import Escalation, Unanswered
from edge.outbox import Outbox, Row
from floor.config import Config
from floor.envelope import own_payload
from floor.errors import N_
from floor.kinds import Prio
from floor.registry import Registry

if TYPE_CHECKING:
    from drivers.ble.driver import BleManager

log = logging.getLogger(__name__)

WEARABLE_ALARMS = ("sos.alarm", "worker.down")
NO_ANSWER = N_("NO ANSWER")  # said first when the duty numbers are told nobody has answered (readable.py)


class AlarmPath:
    def __init__(
        self,
        cfg: Config,
        parts: Parts,
        *,
        registry: Registry,
        deliveries: Deliveries,
        ble: Callable[[], BleManager | None],
        report: Callable[[str, Mapping[str, Any]], object],
        clock_ms: Callable[[], int],
        devices: Callable[[], Mapping[str, Device]] = dict,
    ) -> None:
        self.cfg = cfg
        self._devices = devices
        self.parts = parts
        self._registry = registry
        self._deliveries = deliveries
        self._ble = ble
        self._report = report
        self._clock_ms = clock_ms
        self.style = Style(
            lang=cfg.alarms.language,
            timezone=cfg.alarms.timezone,
            map_link=cfg.alarms.map_link,
            names=cfg.alarms.names,
        )
        self.fallback: Fallback | None = None
        self._tg: asyncio.TaskGroup | None = None  # the gateway's, once started
        self._sign: Callable[[dict[str, Any]], bytes] = lambda _payload: b""
        self._signature: Callable[[bytes], bytes] = lambda _data: b""
        steps: dict[str, Callable[[Unanswered], Awaitable[Mapping[str, Any]]]] = {
            "bearers": self._again_by_every_bearer,
            "duty": self._tell_duty,
            "wearables": self._alert_wearables,
        }
        self.escalation = Escalation(
            ack_within_s=cfg.alarms.ack_within_s,
            every_s=cfg.alarms.escalate_every_s,
            steps=[(name, steps[name]) for name in cfg.alarms.escalation],
            state_file=cfg.gateway.state_dir / "escalations.json",
            report=lambda rec: report("alarm.escalated", rec),
        )

    @property
    def state_dir(self) -> Path:
        """Where the bearers keep their journals (a `BearerHost`)."""
        return self.cfg.gateway.state_dir

    def signature(self, data: bytes) -> bytes:
        """The gateway key's bare signature (a `BearerHost`: a form too small for COSE)."""
        return self._signature(data)

    def device(self, dev_id: str) -> Device | None:
        """A stream device the gateway built (a `BearerHost`: a BeiDou terminal)."""
        return self._devices().get(dev_id)

    def start(
        self,
        tg: asyncio.TaskGroup,
        *,
        outbox: Outbox,
        sign_compact: Callable[[dict[str, Any]], bytes],
        on_bearer: Callable[[int, str], None],
        test_message: Callable[[str], dict[str, Any]] | None = None,
        signature: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self._sign = sign_compact
        if signature is not None:
            self._signature = signature

        self._tg = tg

        def sent(kind: str, seq: int, bearer: str, payload: Mapping[str, Any]) -> None:
            on_bearer(seq, bearer)
            with contextlib.suppress(KeyError, IndexError, TypeError):
                self._tell_wearer(kind, payload["recs"][0]["d"])

        self.fallback = start_bearers(
            tg,
            self.cfg,
            self.parts,
            host=self,
            outbox=outbox,
            sign_compact=sign_compact,
            readable=self.words,
            report=self._report,
            on_sent=sent,
            test_message=test_message,
        )
        tg.create_task(self.escalation.run(), name="alarms.escalation")

    def words(self, payload: Mapping[str, Any], prefix: str = "") -> str:
        return readable(payload, self.cfg.gateway.id, self.style, prefix=prefix)

    # what the rest of the gateway tells it -------------------------------------------

    def committed(self, rows: list[Row]) -> None:
        for r in rows:
            if r.prio == Prio.LIFE_SAFETY:
                self.escalation.committed(r.seq, r.kind, r.body)

    def acked_by_broker(self, seq: int, alarm: Mapping[str, Any] | None) -> None:
        """The broker acknowledged a life-safety message: no other bearer is owed it, and
        the wearer whose alarm it is (`alarm`: its kind, device, counter) is told it went."""
        if self.fallback is not None:
            self.fallback.acked(seq)
        if alarm is not None:
            self._tell_wearer(str(alarm.get("kind")), alarm)

    def acknowledged(self, seq: int) -> None:
        """The platform acknowledged the alarm committed as `seq` (sos.ack)."""
        self.escalation.acked(seq)

    def _tell_wearer(self, kind: str, d: Mapping[str, Any]) -> None:
        """*sent* on the wearable whose alarm it is (best effort: *acknowledged* follows,
        and the button keeps showing *received* until then)."""
        manager, tg = self._ble(), self._tg
        if kind not in WEARABLE_ALARMS or manager is None or tg is None:
            return
        if d.get("cancel") or not isinstance(d.get("counter"), int) or not isinstance(d.get("device"), str):
            return
        tg.create_task(manager.deliver(d["device"], p.Feedback.SENT, d["counter"]), name="alarms.sent")

    # the escalation's steps ------------------------------------------------------------

    async def _again_by_every_bearer(self, u: Unanswered) -> Mapping[str, Any]:
        """The alarm again, by every bearer that is ready, whatever it already carried."""
        if self.fallback is None:
            return {"bearers": []}
        payload = own_payload(u.body)
        data, went = self._sign(dict(payload)), []
        for c in self.fallback.carriers:
            if not c.bearer.ready():
                continue
            try:
                await c.bearer.send(f"esc:{u.seq}:{u.step}", data, None)
                went.append(c.bearer.name)
            except BearerRefused as exc:
                log.warning("escalation: %s refused alarm %d: %s", c.bearer.name, u.seq, exc)
        return {"bearers": went}

    async def _tell_duty(self, u: Unanswered) -> Mapping[str, Any]:
        """The duty numbers told, in words, that nobody has answered."""
        if self.fallback is None:
            return {"told": 0}
        text = self.words(own_payload(u.body), prefix=NO_ANSWER)
        told = 0
        for c in self.fallback.carriers:
            with contextlib.suppress(BearerRefused):
                told += await c.bearer.tell(f"esc:{u.seq}:{u.step}", text)
        return {"told": told}

    async def _alert_wearables(self, u: Unanswered) -> Mapping[str, Any]:
        """Every other wearable of this gateway shows an emergency alert about it."""
        others = sorted(d for d, w in self._registry.devices.items() if w.worker != u.worker)
        if not others:
            return {"wearables": 0}
        text = self.words(own_payload(u.body), prefix=NO_ANSWER)
        expires = self._clock_ms() + int(ALERT_TTL_S * 1000)
        d = Delivery(
            f"alert:escalation:{u.seq}:{u.step}",
            {"alert": f"escalation:{u.seq}", "level": "emergency"},
            expires,
            others,
            level=int(p.AlertLevel.EMERGENCY),
            text=text,
        )
        got = await self._deliveries.add(d)
        return {"wearables": got["wearables"], "delivered": got["delivered"]}

    def snapshot(self) -> dict[str, Any]:
        return self.escalation.snapshot()
