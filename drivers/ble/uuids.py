"""The GATT UUIDs every wearable shares, and those of the first two kinds (docs/ble-profiles.md
is the contract); a kind added later keeps its own in its module (drivers/ble/kinds)."""

from __future__ import annotations

# Bluetooth SIG assigned numbers (Assigned Numbers, section 3.4 and 3.8).
BATTERY_SERVICE = "0000180f-0000-1000-8000-00805f9b34fb"
BATTERY_LEVEL = "00002a19-0000-1000-8000-00805f9b34fb"
DEVICE_INFORMATION = "0000180a-0000-1000-8000-00805f9b34fb"
MANUFACTURER_NAME = "00002a29-0000-1000-8000-00805f9b34fb"
MODEL_NUMBER = "00002a24-0000-1000-8000-00805f9b34fb"
SERIAL_NUMBER = "00002a25-0000-1000-8000-00805f9b34fb"
FIRMWARE_REVISION = "00002a26-0000-1000-8000-00805f9b34fb"

# gridedge vendor UUIDs: one random 128-bit base, the 16 bits after "6a1e" name the item.
_BASE = "6a1e{:04x}-7d1c-4e0a-9a8f-3c2b1d0e5f60"


def vendor(item: int) -> str:
    """The gridedge vendor UUID `6a1eXXXX-...` of a wearable kind's service or characteristic."""
    return _BASE.format(item)


SOS_SERVICE = _BASE.format(0x0100)
SOS_EVENT = _BASE.format(0x0101)  # notify, read: the latest event (8 bytes)
SOS_FEEDBACK = _BASE.format(0x0102)  # write with response: LED/vibration pattern (4 bytes)

CAMERA_SERVICE = _BASE.format(0x0200)
CAMERA_STATE = _BASE.format(0x0201)  # notify, read: recording state and storage (4 bytes)
CAMERA_MARK = _BASE.format(0x0202)  # notify: a clip mark with its SHA-256 (44 bytes)
CAMERA_CONTROL = _BASE.format(0x0203)  # write with response: start/stop recording, mark (2 bytes)
CAMERA_TEXT = _BASE.format(0x0204)  # optional, write with response: an alert's level and text (screen)

# MCUmgr SMP over BLE (Zephyr's and MCUboot's SMP transport): firmware updates.
SMP_SERVICE = "8d53dc1d-1db7-4cd3-868b-8a527460aa84"
SMP_CHARACTERISTIC = "da2e7828-fbce-4e01-ae9e-261174997c48"  # write without response, notify
