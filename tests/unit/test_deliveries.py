"""Deliveries to wearables (edge/deliveries.py): saved before they are tried, each
wearable's outcome reported once (delivered, unsupported, expired), kept across a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from drivers.ble.kinds.base import Delivery as Outcome
from edge.deliveries import Deliveries, Delivery


def test_outcomes_are_reported_once_and_what_is_owed_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "deliveries.json"
    reports: list[dict[str, Any]] = []
    connected = {"btn-1", "tag-1"}
    now = [1_000_000]

    async def show(device: str, d: Delivery) -> Outcome:
        if device not in connected:
            return Outcome.NOT_CONNECTED
        return Outcome.UNSUPPORTED if device == "tag-1" else Outcome.DELIVERED

    def make() -> Deliveries:
        return Deliveries(
            path, show=show, connected=lambda: set(connected), report=reports.append, now_ms=lambda: now[0]
        )

    async def first() -> dict[str, int]:
        d = Delivery(
            "alert:a1",
            {"alert": "a1", "level": "warning"},
            1_060_000,
            ["btn-1", "tag-1", "cam-1"],
            level=2,
            text="x",
        )
        return await make().add(d)

    got = asyncio.run(first())
    assert got == {"wearables": 3, "delivered": 1, "unsupported": 1, "pending": 1}
    assert [(r["device"], r["state"], r["ok"]) for r in reports] == [
        ("btn-1", "delivered", True),
        ("tag-1", "unsupported", False),
    ]

    # a restart: cam-1 is still owed the alert; it connects and gets it, once
    async def second() -> None:
        again = make()
        assert list(again.items) == ["alert:a1"] and again.items["alert:a1"].pending == ["cam-1"]
        task = asyncio.get_running_loop().create_task(again.run())
        connected.add("cam-1")
        again.connected("cam-1")
        again.connected("cam-1")
        await asyncio.sleep(0.05)
        task.cancel()
        assert not again.items

    asyncio.run(second())
    assert [r["device"] for r in reports].count("cam-1") == 1 and reports[-1]["state"] == "delivered"

    # one that never connects before it expires is reported expired
    async def third() -> None:
        dl = make()
        await dl.add(Delivery("ack:c9", {"ack": "c9", "alarm_seq": 5}, 1_001_000, ["btn-9"], counter=7))
        now[0] = 1_002_000
        task = asyncio.get_running_loop().create_task(dl.run())
        await asyncio.sleep(1.2)
        task.cancel()
        assert not dl.items

    asyncio.run(third())
    assert reports[-1] | {} == {
        "ack": "c9",
        "alarm_seq": 5,
        "device": "btn-9",
        "state": "expired",
        "ok": False,
        "error": "expired",
    }
    assert make().items == {}  # and it is gone from the file


def test_an_unreadable_file_starts_empty(tmp_path: Path) -> None:
    path = tmp_path / "deliveries.json"
    path.write_text("{not json")

    async def show(_device: str, _d: Delivery) -> Outcome:
        return Outcome.DELIVERED

    assert Deliveries(path, show=show, connected=set, report=lambda _r: None).items == {}
    path.write_text('[{"key": 5}, {"key": "a", "report": {}, "expires_ms": 1, "pending": [3]}]')
    assert Deliveries(path, show=show, connected=set, report=lambda _r: None).items == {}
