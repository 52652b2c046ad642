"""The floor everything stands on: config, errors, the clock, message kinds and
priorities, the envelope codec, retry and backoff, atomic files, the wearable registry,
and the MQTT message type. Drivers and the firmware bridge import from here and
nowhere else in `edge` (tests/unit/test_layers.py holds them to it)."""
