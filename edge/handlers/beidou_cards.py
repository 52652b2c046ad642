"""`beidou.cards`: the platform replaces a BeiDou command terminal's card-to-MMSI table
(which boat each subordinate card is on); kept across restarts, so the harbour's recall
counts a boat by its card from the next report on."""

from __future__ import annotations

import asyncio
from typing import Any

from drivers.beidou.config import cards_problem
from drivers.beidou.terminal import BeidouTerminal
from edge.commands import Command, CommandError, Rejected
from edge.handlers.base import GatewayView

TYPE = "beidou.cards"


async def handle(gw: GatewayView, cmd: Command) -> dict[str, Any]:
    dev, cards = cmd.args.get("device"), cmd.args.get("cards")
    terminal = gw.drivers.get(dev) if isinstance(dev, str) else None
    if not isinstance(terminal, BeidouTerminal):
        raise Rejected(CommandError.UNKNOWN_DEVICE, cmd.id, f"{dev!r} is not a BeiDou terminal here")
    if (problem := cards_problem(cards)) is not None or not isinstance(cards, dict):
        raise Rejected(CommandError.BAD_ARGS, cmd.id, f"cards: {problem}")
    table = {str(k): int(v) for k, v in cards.items()}
    try:
        await asyncio.to_thread(terminal.set_cards, table)
    except OSError as exc:
        raise Rejected(
            CommandError.STATE_UNWRITABLE, cmd.id, f"cannot keep the table: {exc.strerror}"
        ) from None
    return {"device": dev, "cards": len(table)}
