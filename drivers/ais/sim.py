"""A simulated harbour for the demo and benchmarks: a few fishing boats, one heading out."""

from __future__ import annotations

import math

import pyais

HARBOUR = ((21.90, 112.77), (21.94, 112.77), (21.94, 112.83), (21.90, 112.83))  # (lat, lon)
FLEET = {412440101: "YUE TAI YU 101", 412440102: "YUE TAI YU 102", 412440103: "YUE TAI YU 103"}


def sentences(msg: dict[str, str | int | float | bytes | bool]) -> list[bytes]:
    return [s.encode() + b"\r\n" for s in pyais.encode_dict(msg, talker_id="AI", sentence_type="VDM")]


def harbour_tick(t: int) -> bytes:
    """AIS traffic at second `t`: moored boats, one steaming out of the harbour after 8 s."""
    out: list[bytes] = []
    for i, (mmsi, name) in enumerate(FLEET.items()):
        lat, lon, sog, cog, status = 21.92 + 0.005 * i, 112.80, 0.0, 0.0, 5  # moored
        if i == 0 and t > 8:
            d = (t - 8) * 0.002  # leaving southwards at about 14 knots
            lat, sog, cog, status = 21.92 - d, 14.0, 180.0, 0
        out += sentences(
            {
                "type": 1,
                "mmsi": mmsi,
                "lat": lat,
                "lon": lon,
                "speed": sog,
                "course": cog,
                "status": status,
                "heading": int(cog),
            }
        )
        if t % 30 == 0:
            out += sentences(
                {
                    "type": 5,
                    "mmsi": mmsi,
                    "shipname": name,
                    "callsign": f"BZ{mmsi % 1000}",
                    "ship_type": 30,
                    "destination": "TAISHAN",
                }
            )
    return b"".join(out)


def sart_active(t: int) -> bytes:
    """An AIS-SART (MMSI 970xxxxxx) in active mode near the boat that left."""
    wobble = 0.0005 * math.sin(t)
    return b"".join(
        sentences(
            {
                "type": 1,
                "mmsi": 970440001,
                "lat": 21.86 + wobble,
                "lon": 112.80,
                "status": 14,
                "speed": 0.0,
                "course": 0.0,
            }
        )
    )
