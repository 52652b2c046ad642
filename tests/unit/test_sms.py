"""The SMS bearer's parts: the compact signed form, SMS-SUBMIT PDUs read back with an
independent decoder (smspdudecoder, from PyPI), and the modem's AT dialogue against a
simulated modem on a real pty."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import tty
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from smspdudecoder.fields import SMSSubmit

from drivers.modem.at import Reason
from drivers.modem.modem import Modem, ModemError, State
from drivers.modem.pdu import MAX_UD, PduError, Reassembly, concat_header, reassemble, submit, submit_text
from drivers.modem.sim import PtyModem, SimModem
from drivers.part import BearerRefused
from floor import compact
from floor.envelope import Signer, keyring
from tools.verify import Tally

FIX = {"lat": 21.912345, "lon": 112.812345, "fix": 3, "alt": 12.3, "sats": 11, "hdop": 0.8, "age_ms": 420}
SAMPLES: dict[str, dict[str, Any]] = {
    "sos.alarm": {
        "device": "sos-w042",
        "worker": "w-042",
        "counter": 17,
        "uptime_ms": 3_600_123,
        "boot": 3,
        "authenticated": True,
        "fix": FIX,
    },
    "sos.cancel": {
        "device": "sos-w042",
        "worker": "w-042",
        "counter": 18,
        "uptime_ms": 3_601_000,
        "cancel": True,
    },
    "worker.down": {
        "device": "tag-w043",
        "worker": "w-043",
        "event": "fall",
        "counter": 5,
        "uptime_ms": 99_000,
        "fix": FIX,
    },
    "worker.overdue": {
        "device": "tag-w043",
        "worker": "w-043",
        "state": "overdue",
        "silent_s": 95,
        "interval_s": 60,
    },
    "ais.distress": {
        "mmsi": 970123456,
        "lat": 21.8,
        "lon": 112.7,
        "sog": 0.1,
        "cog": 12.0,
        "nav_status": 14,
        "msg_type": 1,
        "channel": "A",
        "station": "ais0",
        "device": "sart",
    },
    "dsc.distress": {
        "mmsi": 412345678,
        "call": "alert",
        "nature": "sinking",
        "lat": 21.85,
        "lon": 112.75,
        "utc_hhmm": "0412",
        "format": "distress",
        "category": "distress",
    },
}


def payload(kind: str, seq: int = 4711) -> dict[str, Any]:
    return {
        "v": 1,
        "gw": "jm-harbour-01",
        "ep": [12, bytes(range(8))],
        "seq": seq,
        "kind": kind,
        "src": "sos-w042" if kind.startswith("sos") else "ais0",
        "prio": 0,
        "tq": "gnss",
        "recs": [{"tb": 123_456_789, "tu": 1_795_000_000_123, "d": SAMPLES[kind]}],
    }


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_the_compact_form_is_the_same_message_signed_by_the_same_key(kind: str) -> None:
    signer = Signer(Ed25519PrivateKey.generate())
    p = payload(kind)
    data = signer.sign_bytes(cbor2.dumps(compact.pack(p)))
    full = signer.sign(p)
    tally = Tally()
    line = tally.add_compact(data, keyring(signer.public_key))
    assert line["ok"] and line["bearer"] == "sms" and line["recs"] == p["recs"] and line["seq"] == 4711
    # the MQTT copy arriving after it is recognised as the same message
    again = tally.add(f"gridedge/v1/jm-harbour-01/up/{kind}", full, keyring(signer.public_key))
    assert again["duplicate"] and tally.duplicates == 1
    parts = -(-len(data) // (MAX_UD - 6)) if len(data) > MAX_UD else 1
    print(f"{kind}: compact {len(data)} bytes ({parts} SMS), MQTT envelope {len(full)} bytes")
    assert len(data) < len(full)
    # altered in transit: refused
    bad = bytearray(data)
    bad[-70] ^= 1
    assert not tally.add_compact(bytes(bad), keyring(signer.public_key))["ok"]


def test_compact_codes_it_does_not_know_are_refused_not_guessed() -> None:
    signer = Signer(Ed25519PrivateKey.generate())
    arr = compact.pack(payload("sos.alarm"))
    arr[4] = 99  # a kind code from the future
    line = Tally().add_compact(signer.sign_bytes(cbor2.dumps(arr)), keyring(signer.public_key))
    assert not line["ok"] and line["error"] == "bad_payload"


def decoded(part_hex: str) -> dict[str, Any]:
    return dict(SMSSubmit.decode(io.StringIO(part_hex)))


def test_pdus_read_back_with_an_independent_decoder() -> None:
    data = os.urandom(300)  # three parts
    parts = submit("+8613800138000", data, ref=0x5A)
    assert len(parts) == 3
    got = []
    for i, part in enumerate(parts, 1):
        d = decoded(part.hex)
        assert d["header"]["mti"] == "submit" and d["header"]["udhi"] is True
        assert d["recipient"]["number"] == "8613800138000" and d["recipient"]["toa"]["ton"] == "international"
        assert d["dcs"]["encoding"] == "binary" and d["validity-hours"] == 24
        (ie,) = d["user_data"]["header"]["elements"]
        assert ie["data"] == {"reference": 0x5A, "parts_count": 3, "part_number": i}
        got.append(d["user_data"]["data"])
        assert part.length == len(bytes.fromhex(part.hex)) - 1  # AT+CMGS=<TPDU octets>
    assert b"".join(got) == data
    assert reassemble([p.user_data for p in reversed(parts)]) == data
    (single,) = submit("10086", b"\x01\x02", ref=1)  # a national number, one part, no header
    d = decoded(single.hex)
    assert d["header"]["udhi"] is False and d["user_data"]["data"] == b"\x01\x02"
    assert d["recipient"]["number"] == "10086" and d["recipient"]["toa"]["ton"] == "unknown"
    for bad in ("", "+86-138", "12a"):
        with pytest.raises(PduError):
            submit(bad, b"x", ref=1)


def serve(sim: SimModem) -> tuple[PtyModem, str]:
    master, slave = os.openpty()
    tty.setraw(slave)
    return PtyModem(master, sim).start(), os.ttyname(slave)


async def with_modem(sim: SimModem, body: Any) -> Any:
    server, path = serve(sim)
    modem = Modem("sms", path, 115200, timeout_s=2.0)
    task = asyncio.get_running_loop().create_task(modem.run())
    try:
        async with asyncio.timeout(5):
            while modem.state == State.CLOSED and not task.done():  # noqa: ASYNC110 (an observer)
                await asyncio.sleep(0.02)
        return await body(modem)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        server.stop()


def test_the_modem_sends_and_counts_what_it_is_told() -> None:
    sim = SimModem(cmti_every=1, fail_sends=1)

    async def body(modem: Modem) -> None:
        assert modem.state == State.READY and modem.rssi_dbm == -113 + 2 * 21
        (part,) = submit("+8613800138000", b"hello", ref=1)
        with pytest.raises(ModemError) as refused:
            await modem.send(part)  # +CMS ERROR: 500
        assert refused.value.reason == Reason.CMS_ERROR
        assert await modem.send(part) == 1  # +CMGS: 1, then an unsolicited +CMTI
        assert await modem.send(part) == 2  # ...which did not confuse the next answer
        assert modem.errors[Reason.CMS_ERROR] == 1 and modem.unsolicited >= 1

    asyncio.run(with_modem(sim, body))
    assert sim.pdus and not sim.echo and "AT+CMGF=0" in sim.commands


@pytest.mark.parametrize(
    ("sim", "state"),
    [(SimModem(sim=False), State.NO_SIM), (SimModem(registered=False), State.NO_NETWORK)],
)
def test_no_sim_or_no_network_is_a_state_and_a_refusal(sim: SimModem, state: State) -> None:
    async def body(modem: Modem) -> None:
        assert modem.state == state and modem.errors[state.value] == 1
        (part,) = submit("+8613800138000", b"x", ref=1)
        with pytest.raises(ModemError) as refused:
            await modem.send(part)
        assert refused.value.reason == state.value

    asyncio.run(with_modem(sim, body))
    assert sim.pdus == []


# -- alarms in words, references, exactly once per number ------------------------------


def _shown(parts: list[Any]) -> tuple[list[str], str]:
    """What the independent decoder reads of text parts: their codings and the text."""
    codings, text = [], ""
    for part in parts:
        d = SMSSubmit.decode(io.StringIO(part.hex))
        codings.append(d["dcs"]["encoding"])
        text += d["user_data"]["data"]
    return codings, text.rstrip("\r")  # a <CR> pads seven spare bits (TS 23.038): a phone shows none


def _payload(kind: str, d: dict[str, Any]) -> dict[str, Any]:
    return {"kind": kind, "src": "sos-w042", "recs": [{"tb": 1, "tu": 1_796_000_000_000, "d": d}]}


@pytest.mark.parametrize(
    ("lang", "coding", "words"),
    [
        ("zh_CN", "ucs2", ("[紧急求救]", "人员 w-042 (李伟)", "网关 jm-01", "21.91234,112.81234")),
        ("en", "gsm", ("[SOS]", "worker w-042 (Li Wei)", "gateway jm-01", "21.91234,112.81234")),
    ],
)
def test_an_alarm_in_words_as_a_phone_shows_it(lang: str, coding: str, words: tuple[str, ...]) -> None:
    from edge.bearers.readable import Style, readable

    style = Style(lang=lang, timezone="Asia/Shanghai", names={"w-042": "李伟" if lang != "en" else "Li Wei"})
    text = readable(_payload("sos.alarm", SAMPLES["sos.alarm"]), "jm-01", style)
    parts = submit_text("+8613900139000", text, 7)
    codings, shown = _shown(parts)
    assert shown == text and set(codings) == {coding}
    for w in words:
        assert w in shown, shown
    assert "uri.amap.com/marker?position=112.81234,21.91234" in shown
    assert re.search(r" \d\d-\d\d \d\d:\d\d ", shown)  # the local time
    # without the map link it fits one SMS, in either language
    short = readable(_payload("sos.alarm", SAMPLES["sos.alarm"]), "jm-01", Style(lang=lang, map_link=""))
    assert len(submit_text("+8613900139000", short, 8)) == 1, short


def test_a_ships_distress_in_chinese() -> None:
    from edge.bearers.readable import Style, readable

    d = {"mmsi": 412440104, "call": "alert", "nature": "sinking", "lat": 21.86, "lon": 112.7}
    text = readable(_payload("dsc.distress", d), "jm-01", Style(map_link=""))
    codings, shown = _shown(submit_text("+8613900139000", text, 9))
    assert codings == ["ucs2"] and "DSC 遇险" in shown and "沉没" in shown and "MMSI 412440104" in shown


def test_a_boats_beidou_distress_in_chinese_says_what_the_boat_said() -> None:
    from edge.bearers.readable import Style, readable

    d = {"card": "300112", "text": "求救 船进水", "lat": 21.5, "lon": 112.5, "station": "bd"}
    text = readable(_payload("beidou.distress", d), "jm-01", Style(map_link=""))
    assert "[北斗遇险] “求救 船进水” 北斗卡 300112 21.50000,112.50000" in text, text
    mapped = readable(_payload("beidou.distress", d | {"mmsi": 412000001}), "jm-01", Style(map_link=""))
    assert "MMSI 412000001" in mapped and "北斗卡" not in mapped


def test_parts_are_keyed_by_sender_reference_and_count() -> None:
    """Two gateways whose references collide, a part the network delivered twice, and a
    sender spraying one part per reference: every whole message comes out once."""
    a = submit("+8613800138000", b"A" * 200, 0x0102)
    b = submit("+8613800138000", b"B" * 200, 0x0102)  # another gateway, the same reference
    r = Reassembly(per_sender=8)
    got = [
        r.feed("gw-a", a[0].user_data),
        r.feed("gw-b", b[1].user_data),
        r.feed("gw-a", a[0].user_data),  # delivered twice
        r.feed("gw-b", b[0].user_data),
    ]
    for ref in range(100):  # a hostile sender's orphan parts: bounded
        r.feed("spray", bytes([6, 8, 4, 0, ref, 2, 1]) + b"x")
    got.append(r.feed("gw-a", a[1].user_data))
    assert [g for g in got if g is not None] == [b"B" * 200, b"A" * 200]
    assert r.duplicates == 1 and r.waiting == 8 and r.dropped == 92  # the sprayer's, and only its
    assert concat_header(a[0].user_data) == (0x0102, 2, 1)  # a 16-bit reference


def _owed_run(sim: SimModem, tmp: Any, body: Any, **cfg: Any) -> Any:
    from drivers.modem import part as sms_part
    from drivers.modem.part import SmsBearer, SmsConfig

    server, path = serve(sim)

    class Host:
        state_dir = tmp

        def device(self, _dev_id: str) -> None:
            return None

        def signature(self, _data: bytes) -> bytes:
            return b""

    async def go() -> Any:
        bearer = SmsBearer(SmsConfig(port=path, timeout_s=2.0, **cfg), Host())
        task = asyncio.get_running_loop().create_task(bearer.run())
        try:
            async with asyncio.timeout(10):
                while not bearer.ready():  # noqa: ASYNC110 (an observer)
                    await asyncio.sleep(0.02)
            return await body(bearer)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    saved = sms_part.RETRY_S
    sms_part.RETRY_S = 0.2
    try:
        return asyncio.run(go())
    finally:
        sms_part.RETRY_S = saved
        server.stop()


NUMBER_A, NUMBER_B, DUTY = "+8613800138000", "+8613900139000", "+8613700137000"


def _received(sim: SimModem) -> dict[str, list[tuple[int, int]]]:
    """Per number, the (reference, part) of each SMS it received, in order."""
    out: dict[str, list[tuple[int, int]]] = {}
    for s in sim.sent:
        head = concat_header(s.user_data)
        out.setdefault(s.number, []).append((head[0], head[2]) if head else (0, 1))
    return out


def test_each_number_gets_each_part_once_when_one_number_or_one_part_fails(tmp_path: Any) -> None:
    # the 2nd SMS asked for (A's part 2) is refused once, and B refuses its first two
    sim = SimModem(fail_nth={2}, fail_numbers={NUMBER_B: 2}, fail_code=21, cmti_every=0)
    data = bytes(range(200))  # two parts

    async def body(bearer: Any) -> dict[str, Any]:
        with contextlib.suppress(BearerRefused):
            await bearer.send("1:7", data, "[SOS] worker w-1")
        async with asyncio.timeout(10):
            while bearer.journal.owed:  # noqa: ASYNC110 (retried by the bearer's own loop)
                await asyncio.sleep(0.05)
        await bearer.send("1:7", data, "[SOS] worker w-1")  # the same message again: nothing goes
        snap: dict[str, Any] = bearer.snapshot()
        return snap

    snap = _owed_run(sim, tmp_path, body, numbers=(NUMBER_A, NUMBER_B), duty_numbers=(DUTY,))
    got = _received(sim)
    assert sorted(got) == [DUTY, NUMBER_A, NUMBER_B]
    for number in (NUMBER_A, NUMBER_B):
        assert len({r for r, _ in got[number]}) == 1  # one message, one reference
        assert sorted(p for _, p in got[number]) == [1, 2], got  # each part once: no duplicate, no orphan
    refs = [got[n][0][0] for n in (NUMBER_A, NUMBER_B)]
    assert len(set(refs)) == 2  # a message to each number has its own reference
    assert snap["cause"] is None and snap["owed"] == 0 and snap["errors"]["cms_error"] == 3


def test_what_a_number_is_owed_survives_a_restart(tmp_path: Any) -> None:
    sim = SimModem(fail_numbers={NUMBER_B: 100}, fail_code=21, cmti_every=0)

    async def first(bearer: Any) -> dict[str, Any]:
        await bearer.send("1:9", bytes(150), None)  # A takes it, B does not
        snap: dict[str, Any] = bearer.snapshot()
        return snap

    snap = _owed_run(sim, tmp_path, first, numbers=(NUMBER_A, NUMBER_B))
    assert snap["state"] == "failing" and snap["cause"] == "no_credit" and snap["owed"] == 1
    sim.fail_numbers.clear()

    async def second(bearer: Any) -> None:
        async with asyncio.timeout(10):
            while bearer.journal.owed:  # noqa: ASYNC110
                await asyncio.sleep(0.05)

    _owed_run(sim, tmp_path, second, numbers=(NUMBER_A, NUMBER_B))  # restarted: B is owed it still
    got = _received(sim)
    assert sorted(p for _, p in got[NUMBER_A]) == [1, 2] and sorted(p for _, p in got[NUMBER_B]) == [1, 2]


VARIANTS = [
    ("sos.alarm", {"device": "b", "worker": "w-1", "counter": 1, "fix": FIX}, ("SOS", "紧急求救")),
    ("sos.cancel", {"device": "b", "worker": "w-1", "counter": 2}, ("SOS cancelled", "求救已取消")),
    ("worker.down", {"device": "t", "worker": "w-1", "event": "fall", "fix": FIX}, ("FALL", "人员摔倒")),
    (
        "worker.down",
        {"device": "t", "worker": "w-1", "event": "no_motion"},
        ("NO MOTION", "人员长时间无动作"),
    ),
    ("worker.down", {"device": "t", "worker": "w-1", "event": "ok", "cancel": True}, ("worker OK", "报平安")),
    ("worker.overdue", {"device": "t", "worker": "w-1", "state": "overdue"}, ("TAG SILENT", "定位牌失联")),
    (
        "ais.distress",
        {"mmsi": 970012345, "device": "sart", "lat": 21.8, "lon": 112.7},
        ("AIS DISTRESS", "搜救应答器"),
    ),
    (
        "ais.distress",
        {"mmsi": 972012345, "device": "mob", "lat": 21.8, "lon": 112.7},
        ("man overboard", "落水示位标"),
    ),
    (
        "dsc.distress",
        {"mmsi": 412440104, "call": "relay", "nature": "fire"},
        ("fire (relayed)", "火灾 (转发)"),
    ),
]


@pytest.mark.parametrize(
    ("kind", "d", "words"), VARIANTS, ids=[f"{k}-{i}" for i, (k, _d, _w) in enumerate(VARIANTS)]
)
def test_every_kind_of_alarm_in_words_in_both_languages(
    kind: str, d: dict[str, Any], words: tuple[str, str]
) -> None:
    from edge.bearers.readable import Style, readable

    for lang, word, coding in (("en", words[0], "gsm"), ("zh_CN", words[1], "ucs2")):
        text = readable(_payload(kind, d), "jm-01", Style(lang=lang, map_link=""))
        codings, shown = _shown(submit_text("+8613900139000", text, 3))
        assert shown == text and word in shown and set(codings) == {coding}, shown
        assert len(codings) == 1  # one SMS, without the map link
