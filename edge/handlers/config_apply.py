"""`config.apply`: a signed config bundle applied in place, rolled back when unhealthy
(edge/reconfig.py); the gateway reloads once this result is committed."""

from __future__ import annotations

import asyncio
from typing import Any

from edge.commands import Command, CommandError, Rejected
from edge.handlers.base import GatewayView
from edge.reconfig import DEFAULT_ROLLBACK_S, BundleError, apply_bundle, open_bundle
from floor.errors import ConfigError

TYPE = "config.apply"


async def handle(gw: GatewayView, cmd: Command) -> dict[str, Any]:
    trust = gw.commands.trust if gw.commands is not None else None
    if trust is None:
        raise Rejected(CommandError.UNSUPPORTED, cmd.id)
    after = cmd.args.get("rollback_after_s", DEFAULT_ROLLBACK_S)
    if not isinstance(after, int | float) or isinstance(after, bool) or not 1 <= after <= 3600:
        raise Rejected(CommandError.BAD_ARGS, cmd.id, "rollback_after_s")
    try:
        bundle = open_bundle(cmd.args.get("bundle"), trust, gw.cfg)
        new_cfg = await asyncio.to_thread(apply_bundle, bundle, gw.cfg, cmd.id, float(after))
    except BundleError as exc:
        raise Rejected(exc.code, cmd.id, exc.detail) from None
    except (ConfigError, OSError) as exc:
        raise Rejected(CommandError.BAD_CONFIG, cmd.id, str(exc)) from None
    # Reload once the result is committed (the handler reports it, then we go).
    asyncio.get_running_loop().call_soon(gw.reload_soon, new_cfg)
    return {"applied": True, "rollback_after_s": after}
