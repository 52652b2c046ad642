"""State records keyed by a message's seq (edge/outbox's `Pending.seq_state`)."""

from __future__ import annotations


def seq_key(prefix: str, seq: int) -> str:
    """A state key that sorts as its seq does."""
    return f"{prefix}{seq:020d}"
