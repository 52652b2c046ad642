"""After a config.apply: reload on the new config, keep it once healthy, roll back by
itself when not (edge/reconfig.py writes and restores the files)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from edge.reconfig import confirm, pending_deadline_tb, read_pending, rollback
from floor.clock import boottime_ms
from floor.config import Config

log = logging.getLogger(__name__)


class ReloadRequested(Exception):
    """Stop this gateway's tasks and start again on `cfg` (same process, no restart)."""

    def __init__(self, cfg: Config) -> None:
        super().__init__("reload")
        self.cfg = cfg


class ConfigWatch:
    """The reload a config.apply asks for, and the health check of a pending one."""

    def __init__(
        self, cfg: Config, healthy: Callable[[], bool], report: Callable[[dict[str, Any]], None]
    ) -> None:
        self.cfg = cfg
        self._healthy = healthy
        self._report = report
        self._reload: asyncio.Future[Config] | None = None

    def reload_soon(self, cfg: Config) -> None:
        if self._reload is not None and not self._reload.done():
            self._reload.set_result(cfg)

    async def await_reload(self) -> None:
        self._reload = asyncio.get_running_loop().create_future()
        cfg = await self._reload
        await asyncio.sleep(0.2)  # let the command's result be committed first
        raise ReloadRequested(cfg)

    async def confirm(self) -> None:
        """Keep a pending config once healthy, else roll back (then reload on the previous)."""
        state_dir = self.cfg.gateway.state_dir
        pending = read_pending(state_dir)
        if pending is None:
            return
        deadline_tb = pending_deadline_tb(pending)
        while boottime_ms() < deadline_tb:
            if self._healthy():
                confirm(state_dir)
                log.info("config: %s is healthy; keeping it", self.cfg.applied or self.cfg.file)
                self._report({"state": "ok", "reason": "config applied", "command": pending.get("id")})
                return
            await asyncio.sleep(0.5)
        log.error("config: not healthy within the rollback window; rolling back")
        previous = await asyncio.to_thread(rollback, state_dir, self.cfg.file, parts=self.cfg.parts)
        if previous is not None:
            self._report({"state": "degraded", "reason": "config rolled back", "command": pending.get("id")})
            raise ReloadRequested(previous)
