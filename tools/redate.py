"""Re-dating records stamped before the gateway's clock was trusted (a platform's view,
used by `gridedge verify`; docs/envelope-and-topics.md, "Re-dating").

Every record carries `tb`, milliseconds since the gateway's boot, whatever its clock
knew. A `time.anchor` is one instant on both clocks, `tb` and a trusted `tu`; it and
each epoch's `gateway.status` name the boot (`boot`, the kernel's boot id). A record
whose `tq` is not trusted (`rtc`, `persisted`, `none`) from an epoch of that boot is
re-dated as `anchor.tu + (tb - anchor.tb)`: boot time runs on through a gateway
restart but starts again at a reboot, so the boot id says which anchors apply."""

from __future__ import annotations

from typing import Any

TRUSTED_TQ = frozenset({"gnss", "ntp"})
MAX_WAITING = 10_000  # messages held for an anchor that has not come yet

Epoch = tuple[str, int, bytes]  # gw, start counter, nonce


class Redater:
    def __init__(self) -> None:
        self.boots: dict[Epoch, str] = {}  # each epoch's boot
        self.anchors: dict[tuple[str, str], tuple[int, int]] = {}  # (gw, boot) -> (tb, tu)
        self.waiting: dict[Epoch, list[dict[str, Any]]] = {}
        self.held = 0

    def learn(self, ep: Epoch, kind: str, recs: list[Any]) -> list[dict[str, Any]]:
        """Take what a gateway.status or time.anchor says; the waiting lines it re-dates."""
        for rec in recs:
            d = rec.get("d") if isinstance(rec, dict) else None
            if not isinstance(d, dict) or not isinstance(d.get("boot"), str) or not d["boot"]:
                continue
            self.boots[ep] = d["boot"]
            if kind == "time.anchor" and d.get("tq") in TRUSTED_TQ:
                tb, tu = d.get("tb"), d.get("tu")
                if isinstance(tb, int) and isinstance(tu, int):
                    self.anchors[(ep[0], d["boot"])] = (tb, tu)
        out: list[dict[str, Any]] = []
        for waiting_ep in [e for e in self.waiting if self._anchor(e) is not None]:
            lines = self.waiting.pop(waiting_ep)
            self.held -= len(lines)
            for line in lines:
                self.redate(waiting_ep, line)
                keep = ("gw", "ep", "seq", "kind", "tu_redated")
                out.append({k: line[k] for k in keep} | {"redated": True})
        return out

    def _anchor(self, ep: Epoch) -> tuple[int, int] | None:
        boot = self.boots.get(ep)
        return None if boot is None else self.anchors.get((ep[0], boot))

    def redate(self, ep: Epoch, line: dict[str, Any], tq: str | None = None) -> None:
        """Add `tu_redated` (one per record) to a message's line when it needs and can
        have it; else keep it (bounded) until an anchor of its boot arrives."""
        if tq in TRUSTED_TQ:
            return
        anchor = self._anchor(ep)
        recs = line.get("recs")
        if not isinstance(recs, list):
            return
        if anchor is None:
            if tq is not None and self.held < MAX_WAITING:
                self.waiting.setdefault(ep, []).append(line)
                self.held += 1
            return
        atb, atu = anchor
        line["tu_redated"] = [
            atu + (r["tb"] - atb) if isinstance(r, dict) and isinstance(r.get("tb"), int) else None
            for r in recs
        ]
