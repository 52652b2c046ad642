"""Threat: a hostile client of the broker (or a hostile broker) sends the gateway, or the
platform's `gridedge verify`, bytes that are not what they claim. Nothing unverified may
be expanded, formatted or walked beyond what the check needs: verified, or a typed
rejection, fast."""

from __future__ import annotations

import io
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.parts import load_config as load
from floor.cbor_guard import CborRefused, check
from floor.envelope import COSE_SIGN1_TAG, Signer, keyring, public_pem, verify
from floor.errors import ConfigError, EnvelopeError, EnvelopeReason
from tests.integration.test_firmware_update import CHUNK, GW
from tests.integration.test_firmware_update import Rig as FwRig
from tests.integration.test_firmware_update import image as fw_image
from tests.support.broker import Mosquitto
from tools.verify import Tally, load_keys

KEY = Ed25519PrivateKey.generate()
KEYS = keyring(KEY.public_key())


def shared_reference_bomb(levels: int = 6, width: int = 10) -> bytes:
    """A list named `width` times at each of `levels` levels: width**levels leaves when
    expanded, a few hundred bytes with CBOR's shared references (tags 28 and 29)."""
    node: list[object] = [1]
    for _ in range(levels):
        node = [node] * width
    return cbor2.dumps({1: node, 4: b"k" * 8}, value_sharing=True)


def test_a_shared_reference_bomb_in_the_protected_header_is_refused_unexpanded() -> None:
    protected = shared_reference_bomb()
    assert len(protected) < 1000  # a million leaves in under a kilobyte
    msg = cbor2.dumps(cbor2.CBORTag(COSE_SIGN1_TAG, [protected, {}, b"", b"\0" * 64]))
    try:
        verify(msg, KEYS)
    except EnvelopeError as exc:
        assert exc.reason == EnvelopeReason.CBOR
        assert len(str(exc)) < 200  # nothing of the header in the message
    else:
        raise AssertionError("verified")


def test_the_guard_refuses_other_tags_indefinite_lengths_and_depth() -> None:
    for bad in (
        cbor2.dumps(cbor2.CBORTag(28, [1])),  # a shareable value
        b"\x9f\x01\xff",  # an indefinite-length array
        b"\x81" * 40 + b"\x01",  # 40 levels of arrays
        b"\x9b" + b"\xff" * 8,  # an array that claims 2**64 - 1 items
        b"\x01\x01",  # two items, not one
    ):
        try:
            check(bad)
        except CborRefused:
            continue
        raise AssertionError(bad.hex())
    check(cbor2.dumps({"v": 1, "recs": [{"d": {"lat": 1.5}}], "b": b"x"}))  # what we do send


def test_a_genuine_message_still_verifies() -> None:
    signed = Signer(KEY).sign({"v": 1, "id": "x"})
    assert verify(signed, KEYS).payload == {"v": 1, "id": "x"}


cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.integers() | st.text(), inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, deadline=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_any_bytes_verify_or_are_refused_with_a_reason(data: bytes) -> None:
    try:
        verify(data, KEYS)
    except EnvelopeError as exc:
        assert isinstance(exc.reason, EnvelopeReason)


@settings(max_examples=300, deadline=200)
@given(cbor_values, cbor_values, st.binary(max_size=80))
def test_any_cose_shaped_message_verifies_or_is_refused_with_a_reason(
    header: object, payload: object, signature: bytes
) -> None:
    protected = cbor2.dumps(header)
    msg = cbor2.dumps(cbor2.CBORTag(COSE_SIGN1_TAG, [protected, {}, cbor2.dumps(payload), signature]))
    try:
        verify(msg, KEYS)
    except EnvelopeError as exc:
        assert isinstance(exc.reason, EnvelopeReason)
    else:
        raise AssertionError("an unsigned message verified")


def _gateway_msg(
    signer: Signer, gw: str, seq: int, kind: str = "gnss.fix", d: dict[str, object] | None = None
) -> bytes:
    return signer.sign(
        {
            "v": 1,
            "gw": gw,
            "ep": [1, b"\0" * 8],
            "seq": seq,
            "kind": kind,
            "src": "x",
            "prio": 2,
            "tq": "none",
            "recs": [{"tb": 0, "tu": None, "d": d or {}}],
        }
    )


def test_verify_binds_each_key_to_its_gateway_and_topics_exactly(tmp_path: Path) -> None:
    """Gateway A (its own key, its own certificate) publishing as gateway B."""
    a, b = Signer(Ed25519PrivateKey.generate()), Signer(Ed25519PrivateKey.generate())
    for name, s in (("a", a), ("b", b)):
        (tmp_path / f"{name}.pub").write_bytes(public_pem(s.public_key))
    keys, gateways = load_keys([f"gw-a={tmp_path / 'a.pub'}", f"gw-b={tmp_path / 'b.pub'}"])
    t = Tally(gateways=gateways)
    assert t.add("gridedge/v1/gw-a/up/gnss.fix", _gateway_msg(a, "gw-a", 1), keys)["ok"]  # the control
    assert (
        t.add("gridedge/v1/gw-b/up/gnss.fix", _gateway_msg(a, "gw-b", 1), keys)["error"]
        == "key_not_for_gateway"
    )
    # substrings are not topics
    for topic in (
        "gridedge/v1/gw-a/up/gnss.fix/x",
        "x/gridedge/v1/gw-a/up/gnss.fix",
        "gridedge/v1/gw-a/up/other",
    ):
        assert t.add(topic, _gateway_msg(a, "gw-a", 2), keys)["error"] == "topic_mismatch", topic
    with pytest.raises(ConfigError):
        load_keys([str(tmp_path / "a.pub"), str(tmp_path / "b.pub")])  # several keys, none bound


def test_verify_summary_is_bounded_by_what_it_received() -> None:
    """A signed hw of 2**62 and a drop range as wide: two numbers, not four quintillion."""
    s = Signer(Ed25519PrivateKey.generate())
    keys = keyring(s.public_key)
    t = Tally()
    for seq in (1, 2, 5):
        t.add("gridedge/v1/g/up/gnss.fix", _gateway_msg(s, "g", seq), keys)
    t.add(
        "gridedge/v1/g/up/outbox.dropped",
        _gateway_msg(s, "g", 6, "outbox.dropped", {"ranges": [[7, 2**61]]}),
        keys,
    )
    t.add(
        "gridedge/v1/g/status",
        _gateway_msg(s, "g", 0, "gateway.status", {"state": "online", "hw": 2**62}),
        keys,
    )
    g = t.summary()["gateways"]["g"]
    assert g["missing_seqs"][:2] == [3, 4] and g["missing_seqs"][2] == 2**61 + 1
    assert g["missing"] == 2 + (2**62 - 2**61)


def test_one_wrong_size_chunk_is_refused_and_the_job_goes_on(broker: Mosquitto, tmp_path: Path) -> None:
    """A chunk of the wrong size (a hostile client on the fw topic, or a broken resend)
    is refused and counted; the platform sends it again and the update completes."""
    rig = FwRig(broker, tmp_path)
    rig.start()
    try:
        data = fw_image("1.5.0")
        assert rig.update(rig.platform.manifest(data), "img-150")["ok"]
        rig.platform.chunks(GW, "img-150", data, CHUNK, stop=3)
        bad = rig.platform.client.publish(
            f"{rig.platform.prefix}/{GW}/fw/img-150/3", data[3 * CHUNK : 3 * CHUNK + 100], qos=1
        )
        bad.wait_for_publish(10)
        rig.gw.wait_status(lambda d: d["firmware"]["rejected_chunks"] >= 1)
        rig.platform.chunks(GW, "img-150", data, CHUNK, start=3)  # the platform resends from there
        result = rig.result("img-150")
    finally:
        rig.stop()
    assert result["ok"] is True and rig.device.slots[0].version == "1.5.0", result


def test_firmware_push_flashes_the_bytes_it_checked_not_the_file_again(tmp_path: Path) -> None:
    """The image file is swapped after `firmware push` checked it against its manifest
    (a race with another writer): what reaches the device is what was checked."""
    from firmware_bridge.push import push as fw_push
    from tests.integration.test_firmware_push import manifest, setup

    cfg_path, signer, dev = setup(tmp_path)
    good = b"VER=1.5.0;" + bytes(20_000)
    evil = b"VER=6.6.6;" + bytes(20_000)

    class Racing(type(Path())):  # type: ignore[misc]
        reads = 0

        def read_bytes(self) -> bytes:
            Racing.reads += 1
            return good if Racing.reads == 1 else evil

    (tmp_path / "m.cose").write_bytes(manifest(signer, good))
    (tmp_path / "fw.bin").write_bytes(good)
    try:
        rc = fw_push(
            load(cfg_path), tmp_path / "m.cose", Racing(tmp_path / "fw.bin"), "btn-9", out=io.StringIO()
        )
    finally:
        dev.stop()
    assert rc == 0 and Racing.reads == 1
    assert dev.slots[0].version == "1.5.0"  # not the 6.6.6 swapped in after the check
