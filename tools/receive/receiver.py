"""What the receiver does with messages, whatever brought them (MQTT, an SMS provider's
delivery, a BeiDou terminal): the platform's checks (`tools/verify.py`, the same as
`gridedge verify` makes) against the registry, then the store (tools/receive/store.py),
a batch at a time. A message that fails is counted by reason; a signed message that is
junk is counted against its gateway, which is quarantined past a threshold; none of it
stops the rest."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
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
        self.life_safety: list[dict[str, Any]] = []  # stored since the caller last took them
        self._registry: dict[bytes, Gateway] = {}
        self._keys: dict[bytes, Any] = {}
        self._bound: dict[bytes, str] = {}
        self._read_at = -1e18

    def _gateways(self) -> None:
        if time.monotonic() - self._read_at > REGISTRY_TTL_S:
            self._registry, self._read_at = self.store.gateways(), time.monotonic()
            # what the checks take, built once per reading of the registry, not per message
            self._keys = {kid: g.key for kid, g in self._registry.items()}
            self._bound = {kid: g.gw for kid, g in self._registry.items()}

    def refresh(self) -> None:
        self._read_at = -1e18

    def take(self, topic: str, data: bytes) -> str:
        """One MQTT message: `stored`, `duplicate`, or why it was not stored."""
        return self.take_many([(topic, data)])[0]

    def take_many(self, messages: Sequence[tuple[str, bytes]]) -> list[str]:
        """MQTT messages (topic, payload), stored together (in the caller's transaction,
        or one of their own); each one's outcome."""
        self._gateways()
        return self._store(
            [(check_message(t, d, self._keys, self._bound, self.prefix), "mqtt") for t, d in messages]
        )

    def take_compact(self, data: bytes, bearer: str) -> str:
        """A compact signed copy another bearer brought (`sms`, `beidou`)."""
        self._gateways()
        return self._store([(check_compact(data, self._keys, self._bound), bearer)])[0]

    def take_sms(self, sender: str, ud: bytes) -> str:
        """One SMS as a provider delivered it (its user data, concatenation header
        included): `part` while its message waits for other parts, else the message's outcome."""
        whole, heard = self.store.sms_part(sender, ud)
        if whole is None:
            return self._count("part_duplicate" if heard else "part")
        return self.take_compact(whole, "sms")

    def _count(self, outcome: str) -> str:
        self.outcomes[outcome] += 1
        return outcome

    def _store(self, checked: list[tuple[Checked, str]]) -> list[str]:
        outcomes: list[str] = [""] * len(checked)
        keep: list[tuple[int, dict[str, Any], str]] = []
        refused: Counter[str] = Counter()
        status: list[dict[str, Any]] = []
        for i, (c, bearer) in enumerate(checked):
            gateway = self._registry.get(c.kid) if c.kid is not None else None
            if gateway is not None and gateway.status != "active":
                refused[gateway.gw] += 1  # whatever it holds: not even read further
                outcomes[i] = gateway.status
            elif c.payload is None or c.error:
                outcomes[i] = (
                    self._junk(c, gateway) if c.junk and gateway is not None else c.error or "refused"
                )
            elif c.payload["kind"] == "gateway.status":
                status.append(c.payload)  # the retained birth: state, not a message of the sequence
                outcomes[i] = "status"
            else:
                keep.append((i, c.payload, bearer))
        self.store.refused(refused)
        if status:
            self.store.learn_time(status)
        for (i, p, bearer), new in zip(keep, self.store.add_many([(p, b) for _i, p, b in keep]), strict=True):
            outcomes[i] = "stored" if new else "duplicate"
            if new and p["prio"] == 0:
                ep = p["ep"]
                self.life_safety.append(
                    {"gw": p["gw"], "ep": [ep[0], ep[1].hex()], "seq": p["seq"], "kind": p["kind"],
                     "bearer": bearer, "recs": p["recs"]}
                )  # fmt: skip
        self.outcomes.update(outcomes)
        return outcomes

    def _junk(self, c: Checked, gateway: Gateway) -> str:
        if self.store.junk(gateway.gw, threshold=self.quarantine_after) == "quarantined":
            assert c.kid is not None
            self._registry[c.kid] = replace(gateway, status="quarantined")  # the rest of the batch too
        return "junk"
