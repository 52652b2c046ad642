"""The gateway starts on a corrupt, truncated, full or read-only state directory without
losing sight of a seq: a broken outbox is quarantined and its range reported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from drivers.gnss.sim import sentence
from tests.support.broker import Mosquitto
from tests.support.collector import Collector
from tests.support.gateway import GatewayProc
from tests.support.prefill import prefill
from tests.support.pty import Pty
from tests.support.smallfs import fill_disk, mount_tmpfs, umount


def corrupt_middle(db: Path) -> None:
    data = bytearray(db.read_bytes())
    for i in range(4096, min(len(data), 4096 * 6)):
        data[i] = 0xA5
    db.write_bytes(bytes(data))


def corrupt_deep(db: Path) -> None:
    """Garbage in data pages near the end: the schema reads fine, so the start does not see
    it; the quick check run just after the start does."""
    data = bytearray(db.read_bytes())
    for i in range(len(data) - 4096 * 4, len(data) - 4096 * 2):
        data[i] = 0x5A
    db.write_bytes(bytes(data))


def truncate(db: Path) -> None:
    with open(db, "r+b") as f:
        f.truncate(db.stat().st_size // 2 + 100)


@pytest.mark.parametrize(
    "damage", [corrupt_middle, corrupt_deep, truncate], ids=["corrupt", "corrupt-deep", "truncated"]
)
def test_broken_outbox_is_quarantined_and_reported(damage: object, broker: Mosquitto, tmp_path: Path) -> None:
    gw = GatewayProc(tmp_path / "gw", port=broker.port)
    gw.state.mkdir(parents=True)
    hw = prefill(gw.state, gw.key, gw.gw_id, 3000)  # unsent messages in the outbox...
    (gw.state / "seq_hw").write_text(f"{hw}\n")
    damage(gw.state / "outbox.sqlite")  # type: ignore[operator]
    col = Collector(broker.port, gw.pub).start()
    gw.start()
    try:
        try:
            msgs = col.wait_for(lambda ms: any(m.payload["kind"] == "outbox.dropped" for m in ms), timeout=30)
        except TimeoutError:
            raise AssertionError(
                f"no quarantine report; gateway log:\n{gw.log.read_text()[-3000:]}"
            ) from None
        doc = gw.status()
    finally:
        gw.stop()
        col.stop()
    assert list(gw.state.glob("outbox.sqlite.corrupt-*")), "the broken file is kept for a post-mortem"
    (report,) = [m for m in msgs if m.payload["kind"] == "outbox.dropped"]
    d = report.payload["recs"][0]["d"]
    assert d["reason"] == "quarantined"
    ((lo, hi),) = d["ranges"]
    assert lo == hw + 1 and hi > lo
    assert report.payload["seq"] > hi, "new seqs start above everything the lost file could hold"
    assert doc["outbox"]["hw"] > hw
    assert "Traceback" not in gw.log.read_text()


def test_read_only_state_dir_is_a_clear_error(tmp_path: Path) -> None:
    gw = GatewayProc(tmp_path / "gw", port=1)
    mount_tmpfs(gw.state, "1m", readonly=True)
    try:
        res = subprocess.run(
            [sys.executable, "-m", "tools.cli", "run", "-c", str(gw.config)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        umount(gw.state)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1] == (
        f"gridedge run: gateway.state_dir: {gw.state} is not writable: Read-only file system"
    )


def test_full_state_dir_still_takes_a_distress(broker: Mosquitto, tmp_path: Path) -> None:
    pty = Pty(tmp_path / "ttyDSC")
    dev = f'[[devices]]\nid = "vhf"\nkind = "dsc"\nport = "{pty.link}"\n'
    gw = GatewayProc(
        tmp_path / "gw", port=broker.port, devices=dev, outbox="batch_ms = 50\nmax_bytes = 8388608"
    )
    mount_tmpfs(gw.state, "3m")
    col = Collector(broker.port, gw.pub).start()
    try:
        gw.start()  # a first run makes the outbox and its disk reserve
        gw.wait_status(lambda d: d["link"]["state"] == "up")
        gw.stop()
        fill_disk(gw.state / "filler")  # then something else fills the disk
        gw.start()
        gw.wait_device_open("vhf")
        pty.write(sentence("CDDSC,12,3380400790,12,05,00,1423108312,2019,,,S,") + b"\r\n")
        msgs = col.wait_for(lambda ms: any(m.payload["kind"] == "dsc.distress" for m in ms), timeout=20)
        doc = gw.wait_status(lambda d: d["outbox"]["health"] == "degraded")
        corrupt = list(gw.state.glob("*.corrupt-*"))
    finally:
        gw.stop()
        col.stop()
        pty.unplug()
        umount(gw.state)
    assert any(m.payload["kind"] == "dsc.distress" for m in msgs)
    assert "disk full" in doc["outbox"]["degraded"]
    # A full disk is not a corrupt outbox: the one from the first run is kept, not set aside.
    assert not corrupt, f"the outbox was quarantined on a full disk: {corrupt}"
    assert not [m for m in col.up("outbox.dropped") if m.payload["recs"][0]["d"]["reason"] == "quarantined"]
    health = [m for m in col.up("gateway.health")]
    assert health and health[-1].payload["recs"][0]["d"]["state"] == "degraded"
