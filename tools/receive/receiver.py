"""What the receiver does with one message, whatever brought it (MQTT, an SMS provider's
delivery, a BeiDou terminal): the platform's checks (`tools/verify.py`, the same as
`gridedge verify` makes) against the registry, then the store (tools/receive/store.py).
A message that fails is counted by reason; a signed message that is junk is counted
against its gateway, which is quarantined past a threshold; none of it stops the rest."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from tools.receive.store import QUARANTINE_AFTER, Gateway, Store
from tools.verify import Checked, check_compact, check_message

REGISTRY_TTL_S = 5.0  # the registry is read again this often (a gateway registered or quarantined)


class Receiver:
    def __init__(
        self, store: Store, *, prefix: str = "gridedge/v1", quarantine_after: int = QUARANTINE_AFTER
    ) -> None:
        self.store = store
        self.prefix = prefix
        self.quarantine_after = quarantine_after
        self.outcomes: Counter[str] = Counter()
        self._registry: dict[bytes, Gateway] = {}
        self._keys: dict[bytes, Any] = {}
        self._bound: dict[bytes, str] = {}
        self._read_at = -1e18

    def _gateways(self) -> dict[bytes, Gateway]:
        if time.monotonic() - self._read_at > REGISTRY_TTL_S:
            self._registry, self._read_at = self.store.gateways(), time.monotonic()
            # what the checks take, built once per reading of the registry, not per message
            self._keys = {kid: g.key for kid, g in self._registry.items()}
            self._bound = {kid: g.gw for kid, g in self._registry.items()}
        return self._registry

    def refresh(self) -> None:
        self._read_at = -1e18

    def take(self, topic: str, data: bytes) -> str:
        """One MQTT message: `stored`, `duplicate`, or why it was not stored."""
        self._gateways()
        return self._store(check_message(topic, data, self._keys, self._bound, self.prefix), "mqtt")

    def take_compact(self, data: bytes, bearer: str) -> str:
        """A compact signed copy another bearer brought (`sms`, `beidou`)."""
        self._gateways()
        return self._store(check_compact(data, self._keys, self._bound), bearer)

    def _store(self, c: Checked, bearer: str) -> str:
        gateway = self._registry.get(c.kid) if c.kid is not None else None
        if gateway is not None and gateway.status != "active":
            self.store.refused(gateway.gw)  # whatever it holds: not even read further
            return self._count(gateway.status)
        if c.payload is None or c.error:
            if c.junk and gateway is not None:
                if self.store.junk(gateway.gw, threshold=self.quarantine_after) == "quarantined":
                    self.refresh()
                return self._count("junk")
            return self._count(c.error or "refused")
        p: dict[str, Any] = c.payload
        if p["kind"] == "gateway.status":
            return self._count("status")  # the retained birth: state, not a message of the sequence
        return self._count("stored" if self.store.add(p, bearer) else "duplicate")

    def _count(self, outcome: str) -> str:
        self.outcomes[outcome] += 1
        return outcome
