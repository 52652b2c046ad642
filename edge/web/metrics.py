"""Prometheus metrics at `/metrics`, read from the status document at scrape time (nothing
is counted twice and an idle gateway pays nothing between scrapes). Names and units by
Prometheus' conventions: `_total` counters, `_seconds`, `_bytes`, base units."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from drivers.nmea0183 import Reason
from edge.commands import CommandError

LANES = {0: "life_safety", 1: "event", 2: "telemetry", 3: "bulk"}


def _gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


def _counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=list(labels))


class _Snapshot(Collector):
    def __init__(self, doc: Mapping[str, Any]) -> None:
        self.doc = doc

    def collect(self) -> Iterator[Metric]:
        d = self.doc
        info = InfoMetricFamily("gridedge", "the gateway's id and version")
        info.add_metric([], {"gw": str(d["gw"]), "version": str(d["version"])})
        yield info
        yield from _outbox(d.get("outbox"))
        yield from _link(d.get("link"))
        yield from _devices(d.get("devices") or {}, (d.get("ble") or {}).get("wearables") or {})
        yield from _bearers(d.get("bearers") or {})
        yield from _commands(d.get("commands"))
        yield from _feeds(d.get("feeds") or {})


def _outbox(ob: Mapping[str, Any] | None) -> Iterator[Metric]:
    if ob is None:
        return
    rows = _gauge("gridedge_outbox_records", "messages waiting for the broker's acknowledgement", ("lane",))
    size = _gauge("gridedge_outbox_bytes", "bytes of the waiting messages", ("lane",))
    age = _gauge("gridedge_outbox_oldest_age_seconds", "age of the oldest waiting message", ("lane",))
    for prio, lane in LANES.items():
        stats = ob["lanes"].get(prio) or {"rows": 0, "bytes": 0}  # read in process: int keys
        rows.add_metric([lane], stats["rows"])
        size.add_metric([lane], stats["bytes"])
        oldest = (ob.get("oldest_age_s") or {}).get(prio)
        age.add_metric([lane], 0.0 if oldest is None else oldest)
    yield from (rows, size, age)
    yield _one("gridedge_outbox_max_bytes", "the outbox's bound", ob["max_bytes"])
    yield _total(
        "gridedge_outbox_dropped", "messages thinned or expired to stay within bounds", ob["dropped"]
    )
    yield _total("gridedge_outbox_refused", "messages refused by a full outbox", ob["refused"])
    yield _total("gridedge_outbox_committed", "messages written to the outbox", ob["committed"])
    # write-behind: published before being written; written only when unacknowledged in time
    yield _total(
        "gridedge_outbox_published_unsaved",
        "messages published before being written",
        ob["published_unsaved"],
    )
    yield _total(
        "gridedge_outbox_saved_late",
        "messages published first and written after all: unacknowledged when due, or the link went",
        ob["saved_late"],
    )


def _one(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _total(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _link(link: Mapping[str, Any] | None) -> Iterator[Metric]:
    if link is None:
        return
    yield _one("gridedge_uplink_up", "1 while the MQTT session is up", 1.0 if link["state"] == "up" else 0.0)
    yield _total("gridedge_uplink_sessions", "MQTT sessions established", link["sessions"])
    if link.get("last_ack_ms"):
        yield _one(
            "gridedge_uplink_last_ack_timestamp_seconds", "the latest PUBACK", link["last_ack_ms"] / 1000
        )
    for name, key, doc in (
        ("gridedge_messages_published_total", "published_by_kind", "messages published, by kind"),
        ("gridedge_messages_acked_total", "acked_by_kind", "messages the broker acknowledged, by kind"),
    ):
        fam = _counter(name.removesuffix("_total"), doc, ("kind",))
        for kind, n in sorted((link.get(key) or {}).items()):
            fam.add_metric([kind], n)
        yield fam


REJECT_REASONS = tuple(r.value for r in Reason)  # every series there from the start, at 0
COMMAND_REFUSALS = tuple(c.value for c in CommandError)


def _devices(devices: Mapping[str, Any], wearables: Mapping[str, Any]) -> Iterator[Metric]:
    up = _gauge("gridedge_device_up", "1 while a device is connected", ("device",))
    last = _gauge(
        "gridedge_device_last_data_timestamp_seconds", "the latest bytes a device sent", ("device",)
    )
    fix = _gauge("gridedge_gnss_fix_mode", "a GNSS receiver's fix: 0 none, 2 2D, 3 3D", ("device",))
    sats = _gauge("gridedge_gnss_satellites_used", "the satellites a GNSS receiver's fix used", ("device",))
    opens = _counter("gridedge_device_reconnects", "times a device's link was opened again", ("device",))
    rejected = _counter("gridedge_rejections", "input refused, by device and reason", ("device", "reason"))
    battery = _gauge("gridedge_wearable_battery_ratio", "a wearable's battery (0-1)", ("device",))
    rssi = _gauge("gridedge_wearable_rssi_dbm", "a wearable's signal when it connected", ("device",))
    for dev, c in sorted(devices.items()):
        up.add_metric([dev], 1.0 if c["state"] == "connected" else 0.0)
        opens.add_metric([dev], max(0, c["opened"] - 1))
        last.add_metric([dev], c.get("last_ms", 0) / 1000)
        counts = {reason: 0 for reason in REJECT_REASONS} | dict(c["rejected"])
        for reason, n in sorted(counts.items()):
            rejected.add_metric([dev, reason], n)
        if "fix" in c:  # a receiver of positions: its fix, or none
            f = c["fix"] or {}
            fix.add_metric([dev], float(f.get("fix") or 0))
            sats.add_metric([dev], float(f.get("sats") or 0))
    for dev, w in sorted(wearables.items()):
        up.add_metric([dev], 1.0 if w["state"] == "connected" else 0.0)
        opens.add_metric([dev], max(0, w["connects"] - 1))
        for reason in ("rejected", "forged", "flooded"):
            if w.get(reason):
                rejected.add_metric([dev, reason if reason != "rejected" else "malformed"], w[reason])
        if w.get("battery") is not None:
            battery.add_metric([dev], w["battery"] / 100)
        if w.get("rssi") is not None:
            rssi.add_metric([dev], w["rssi"])
    yield from (up, opens, rejected, battery, rssi, last, fix, sats)


def _bearers(bearers: Mapping[str, Any]) -> Iterator[Metric]:
    """Every bearer's figures under one name each, labelled by the bearer (its section)."""
    sent = _counter("gridedge_bearer_sent", "life-safety messages a bearer sent", ("bearer",))
    units = _counter("gridedge_bearer_units", "what a bearer spent (SMS parts, messages)", ("bearer",))
    capped = _counter("gridedge_bearer_capped", "messages a bearer's hourly budget held back", ("bearer",))
    errors = _counter(
        "gridedge_bearer_errors", "a bearer's refusals and faults, by reason", ("bearer", "reason")
    )
    ready = _gauge("gridedge_bearer_ready", "1 while a bearer can send", ("bearer",))
    signal = _gauge("gridedge_bearer_signal_dbm", "a bearer's radio signal", ("bearer",))
    for name, b in sorted(bearers.items()):
        sent.add_metric([name], b["sent"])
        units.add_metric([name], b["units"])
        capped.add_metric([name], b["capped"])
        for reason, n in sorted((b.get("errors") or {}).items()):
            errors.add_metric([name, reason], n)
        ready.add_metric([name], 1.0 if b["state"] == "ready" else 0.0)
        if b.get("rssi_dbm") is not None:
            signal.add_metric([name], b["rssi_dbm"])
    yield from (sent, units, capped, errors, ready, signal)


def _commands(cmds: Mapping[str, Any] | None) -> Iterator[Metric]:
    if cmds is None:
        return
    fam = _counter("gridedge_commands", "platform commands, by outcome", ("outcome",))
    fam.add_metric(["accepted"], cmds["accepted"])
    for code, n in sorted(({c: 0 for c in COMMAND_REFUSALS} | dict(cmds["rejected"])).items()):
        fam.add_metric([code], n)
    yield fam


def _feeds(feeds: Mapping[str, Any]) -> Iterator[Metric]:
    """The local tools' feeds: who is connected, what was sent and dropped."""
    gpsd = feeds.get("gpsd")
    if gpsd:
        yield _one("gridedge_feed_clients", "clients of the gpsd-compatible feed", gpsd["clients"])
        yield _total("gridedge_feed_sent", "reports the gpsd-compatible feed sent", gpsd["sent"])
        yield _total("gridedge_feed_dropped", "slow clients the feed dropped", gpsd["dropped"])
    nmea = feeds.get("nmea_udp")
    if nmea:
        yield _total("gridedge_nmea_forwarded", "sentences forwarded by UDP", nmea["forwarded"])


def exposition(doc: Mapping[str, Any]) -> bytes:
    """The text exposition format of the document's metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(doc))
    ProcessCollector(registry=registry)  # process_cpu_seconds_total, _resident_memory_bytes, _open_fds...
    return generate_latest(registry)
