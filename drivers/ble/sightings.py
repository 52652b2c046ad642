"""Who is advertising: paired wearables by address or IRK (a resolvable private address
is resolved once per address, not per advert), when each was last seen, and strangers
advertising a gridedge service, counted and reported (`device.unknown`), never believed."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from drivers.ble.rpa import resolves
from floor.config import BleConfig, WearableConfig
from floor.ratelimit import TokenBucket

if TYPE_CHECKING:
    from bleak.backends.device import BLEDevice
    from bleak.backends.scanner import AdvertisementData

SEEN_FRESH_S = 30.0  # an advert older than this does not count as "in range"
STALE_RETRY_S = 15.0  # with no fresh advert for this long, try the last known device anyway
MAX_STRANGERS = 1024  # strangers remembered for rate limiting (oldest forgotten first)
MAX_RESOLVED = 4096  # advertised addresses remembered with what they resolved to
# device.unknown reports per unknown_report_s, all strangers together: rotating addresses
# (each new to the per-address limit) cannot flood the outbox
MAX_UNKNOWN_REPORTS = 16


class Sightings:
    def __init__(
        self,
        cfg: BleConfig,
        wearables: Callable[[], Mapping[str, WearableConfig]],
        labels: Mapping[str, str],
        submit: Callable[..., object],
    ) -> None:
        self.cfg = cfg
        self._wearables = wearables
        self._labels = labels  # gridedge service UUID -> its kind's short name
        self._submit = submit
        self.unknown_adverts = 0
        self.unknown_reported = 0
        self.unknown_suppressed = 0  # reports the overall limit held back (counted in the status)
        self._reports = TokenBucket(
            MAX_UNKNOWN_REPORTS, max(cfg.unknown_report_s, 1.0) / MAX_UNKNOWN_REPORTS, time.monotonic()
        )
        self._strangers: OrderedDict[str, tuple[float, int]] = (
            OrderedDict()
        )  # address -> (last report, count)
        self._seen: dict[str, tuple[BLEDevice, int, float]] = {}  # wearable id -> (device, rssi, when)
        self._known: dict[str, tuple[BLEDevice, int]] = {}  # the last advert ever seen, kept
        self._seen_events: dict[str, asyncio.Event] = {}
        self._resolved: dict[str, str] = {}  # advertised address -> wearable id resolved by IRK, or ""

    def _report_budget(self, now: float) -> bool:
        """A token for one more device.unknown (MAX_UNKNOWN_REPORTS per unknown_report_s)."""
        if self._reports.take(now):
            return True
        self.unknown_suppressed += 1
        return False

    def forget_resolved(self) -> None:
        """The registry changed: resolve every address again."""
        self._resolved.clear()

    def forget_seen(self, dev_id: str) -> None:
        """Wait for a fresh advert of this wearable before trying it again."""
        self._seen.pop(dev_id, None)

    def identify(self, address: str) -> WearableConfig | None:
        address = address.upper()
        devices = self._wearables()
        for w in devices.values():
            if w.address is not None and w.address == address:
                return w
        if address not in self._resolved:
            # One AES per IRK per new address, not per advert: the answer (a wearable id,
            # or "" for a stranger) is kept until the registry changes.
            if len(self._resolved) > MAX_RESOLVED:
                self._resolved.clear()
            self._resolved[address] = next(
                (
                    w.id
                    for w in devices.values()
                    if w.irk is not None and resolves(bytes.fromhex(w.irk), address)
                ),
                "",
            )
        return devices.get(self._resolved[address])

    def on_advert(self, device: BLEDevice, adv: AdvertisementData) -> None:
        w = self.identify(device.address)
        now = time.monotonic()
        if w is not None:
            self._seen[w.id] = (device, adv.rssi, now)
            self._known[w.id] = (device, adv.rssi)
            ev = self._seen_events.get(w.id)
            if ev is not None:
                ev.set()
            return
        self.unknown_adverts += 1
        ours = [s for s in adv.service_uuids if s in self._labels]
        if not ours:
            return  # a phone or a beacon: counted, not reported
        address = device.address.upper()
        last, count = self._strangers.pop(address, (float("-inf"), 0))
        count += 1
        if now - last >= self.cfg.unknown_report_s and self._report_budget(now):
            self.unknown_reported += 1
            self._submit(
                "device.unknown",
                "gw",
                {
                    "address": address,
                    "rssi": adv.rssi,
                    "services": [self._labels[s] for s in ours],
                    "name": adv.local_name,
                    "adverts": count,
                },
            )
            last, count = now, 0
        self._strangers[address] = (last, count)
        while len(self._strangers) > MAX_STRANGERS:
            self._strangers.popitem(last=False)

    async def wait_seen(self, dev_id: str) -> tuple[BLEDevice, int]:
        """A device to connect to: one advertising now, or after STALE_RETRY_S without a
        fresh advert the last one seen (BlueZ may not report again a device it knows,
        yet connects to it; a device really gone then fails and backs off)."""
        waited = 0.0
        while True:
            seen = self._seen.get(dev_id)
            if seen is not None and time.monotonic() - seen[2] < SEEN_FRESH_S:
                return seen[0], seen[1]
            known = self._known.get(dev_id)
            if known is not None and waited >= STALE_RETRY_S:
                return known[0], known[1]
            ev = self._seen_events.setdefault(dev_id, asyncio.Event())
            ev.clear()
            started = time.monotonic()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STALE_RETRY_S):
                    await ev.wait()
            waited += time.monotonic() - started
