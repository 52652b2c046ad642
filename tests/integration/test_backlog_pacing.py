"""An outage's backlog drains through a thin uplink without parking an alarm behind it.

The outbox, ingest and publisher run in-process against a real mosquitto reached
through the fault proxy at 400 kB/s. With a fixed window, 64 backlog messages of
about 9 KiB (some 600 kB, 1.5 s of that link) are on the wire ahead of an alarm
published mid-drain; the delay-based window keeps only a few there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from bench.harness import pipeline
from floor.kinds import Prio
from tests.support.broker import Mosquitto
from tests.support.faultproxy import FaultProxy

RATE = 400_000  # bytes/s: a thin cellular uplink
ALARM = {"device": "sos1", "worker": "w1", "counter": 1}
FIX = {"lat": 21.91234, "lon": 112.81234, "alt": 12.3, "fix": 3, "sats": 11, "hdop": 0.8, "speed": 1.42}


async def until(predicate: Callable[[], bool]) -> None:
    while not predicate():  # noqa: ASYNC110 (observing the publisher from outside)
        await asyncio.sleep(0.02)


async def backlog_ahead_of_an_alarm(
    state: Path, proxy: FaultProxy, backlog_queue_ms: float
) -> tuple[int, int, int]:
    """(backlog messages in flight when the alarm went out, the window then, messages acked)."""
    proxy.set_mode("refuse")  # the outage: no session while the backlog is committed
    async with pipeline(state, proxy.port, batch_ms=250, backlog_queue_ms=backlog_queue_ms) as p:
        for i in range(150 * 64):  # 150 messages of 64 fixes
            p.ingest.submit("gnss.fix", f"gnss{i % 3}", FIX)
        p.ingest.flush_all()
        await p.outbox.flush()
        assert p.outbox.depth(Prio.TELEMETRY) == 150 and p.publisher.sessions == 0
        proxy.set_mode("slow", rate=RATE)  # the link comes back, thin
        async with asyncio.timeout(60):
            # the drain is under way; a window has had time to open
            await until(lambda: p.publisher.acked >= 80)
            seq = await p.ingest.emit("sos.alarm", "sos1", ALARM)
            assert seq is not None
            await until(lambda: not p.outbox.depth(Prio.LIFE_SAFETY))  # deleted: the broker has it
        return p.publisher.ls_backlog_ahead_max, p.publisher.backlog_window.allowed, p.publisher.acked


def test_the_backlog_gives_way_on_a_thin_link(tmp_path: Path, fast_broker: Mosquitto) -> None:
    proxy = FaultProxy(fast_broker.port).start()
    try:
        paced, window, acked = asyncio.run(backlog_ahead_of_an_alarm(tmp_path / "paced", proxy, 5))
        # The same drain with a target no queue reaches (60 s): the window opens to the session's cap.
        fixed, fixed_window, _ = asyncio.run(backlog_ahead_of_an_alarm(tmp_path / "fixed", proxy, 60_000))
    finally:
        proxy.stop()
    assert fixed >= 48, f"control: a fixed window should have had most of 64 ahead, had {fixed}"
    assert fixed_window == 64
    assert paced <= 8, f"{paced} backlog messages were on the wire ahead of the alarm"
    assert window < 64
    assert acked > 80  # and the backlog kept draining meanwhile


def test_after_an_outage_live_telemetry_goes_out_before_the_backlog(
    tmp_path: Path, fast_broker: Mosquitto
) -> None:
    """The outage's backlog drains oldest first, but what is captured after the link
    returns is current: it goes ahead of the backlog, not after it."""
    import threading

    import cbor2
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    arrived: list[str] = []
    lock = threading.Lock()

    def on_message(_c: object, _u: object, msg: paho.MQTTMessage) -> None:
        sign1 = cbor2.loads(msg.payload)
        with lock:
            arrived.append(cbor2.loads(sign1.value[2])["src"])

    sub = paho.Client(CallbackAPIVersion.VERSION2, client_id="order-watch")
    sub.on_message = on_message
    sub.connect("127.0.0.1", fast_broker.port)
    sub.subscribe("gridedge/v1/bench-gw/up/gnss.fix", qos=1)
    sub.loop_start()
    proxy = FaultProxy(fast_broker.port).start()

    async def go() -> None:
        proxy.set_mode("refuse")  # the outage
        async with pipeline(tmp_path, proxy.port, batch_ms=250) as p:
            for _ in range(80 * 64):  # 80 messages of 64 fixes, committed during the outage
                p.ingest.submit("gnss.fix", "backlog", FIX)
            p.ingest.flush_all()
            await p.outbox.flush()
            assert p.outbox.depth(Prio.TELEMETRY) == 80
            # the link is back, thin: the drain takes some 6 s, telemetry's group commit 1 s
            proxy.set_mode("slow", rate=RATE // 4)
            async with asyncio.timeout(60):
                await until(lambda: p.publisher.sessions >= 1)
                for _ in range(5):  # now the receiver reports where the boat is
                    p.ingest.submit("gnss.fix", "live", FIX)
                    p.ingest.flush_all()
                    await asyncio.sleep(0.05)
                await until(lambda: p.outbox.depth(Prio.TELEMETRY) == 0)
                await until(lambda: len(arrived) >= 85)

    try:
        asyncio.run(go())
    finally:
        proxy.stop()
        sub.loop_stop()
        sub.disconnect()
    live = [i for i, src in enumerate(arrived) if src == "live"]
    assert len(live) == 5 and arrived.count("backlog") == 80
    behind = sum(1 for src in arrived[live[-1] :] if src == "backlog")
    assert behind >= 40, f"live telemetry went out behind the backlog: {arrived}"
