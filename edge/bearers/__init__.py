"""Life-safety by other bearers when the MQTT uplink is down (`fallback.py`). The bearers
themselves are parts (drivers/parts.py: `BearerPart`, SMS in drivers/modem/part.py)."""
