"""The floor everything stands on: config, errors, the clock, message kinds and
priorities, the envelope codec and the compact form, retry and backoff, atomic files,
the wearable registry, and the MQTT message type. It imports nothing of this project
above it (tests/unit/test_layers.py holds it to that): what it knows of the parts, it
is handed (floor.config.PartCatalog)."""
