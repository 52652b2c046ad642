"""Restart and retry: drivers never reconnect themselves, `supervise` does; a bounded
operation that may fail on a flaky link is `retry`ed. Both wait a jittered backoff."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from floor.errors import PermanentError, TransientError

log = logging.getLogger(__name__)

HEALTHY_RUN_S = 30.0  # a run this long resets the backoff
T = TypeVar("T")


class Backoff:
    """Full-jitter exponential backoff (so a fleet does not reconnect in lockstep)."""

    def __init__(self, min_s: float = 0.5, max_s: float = 30.0, *, rng: random.Random | None = None) -> None:
        self.min_s = min_s
        self.max_s = max_s
        self._attempt = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        cap = min(self.max_s, self.min_s * (2**self._attempt))
        self._attempt = min(self._attempt + 1, 32)
        return self.min_s / 2 + self._rng.uniform(0, cap)

    def longest(self) -> float:
        """For permanent errors: wait the maximum, with jitter."""
        self._attempt = 32
        return self.max_s * self._rng.uniform(0.8, 1.0)

    def reset(self) -> None:
        self._attempt = 0


def _log_failure(logger: logging.Logger, name: str, exc: BaseException, delay: float, repeats: int) -> None:
    """A failure logged when it is new; the same one again only at debug: what lasts is
    counted (the status's `failures`, the reconnection's "after N failures")."""
    if repeats == 1:
        logger.warning("%s: %s; retrying in %.1f s", name, exc, delay)
    else:
        logger.debug("%s: %s (%d times); retrying in %.1f s", name, exc, repeats, delay)


async def supervise(
    name: str,
    run: Callable[[], Awaitable[None]],
    backoff: Backoff,
    *,
    on_error: Callable[[BaseException], None] | None = None,
    logger: logging.Logger = log,
    quiet_repeats: bool = False,
) -> None:
    """Run `run` forever; restart it after failures with jittered backoff (the longest after
    a permanent error or a bug). With `quiet_repeats`, a failure identical to the one
    before (type and arguments: a broker down for days) is logged at debug, not again
    as a warning."""
    loop = asyncio.get_running_loop()
    last: tuple[type[BaseException], tuple[object, ...]] | None = None
    repeats = 0
    while True:
        started = loop.time()
        try:
            await run()
            delay = backoff.next()
            logger.info("%s: ended, restarting in %.1f s", name, delay)
            last = None
        except TransientError as exc:
            if loop.time() - started >= HEALTHY_RUN_S:
                backoff.reset()
            delay = backoff.next()
            same = quiet_repeats and last == (type(exc), exc.args)
            last = (type(exc), exc.args)
            repeats = repeats + 1 if same else 1
            _log_failure(logger, name, exc, delay, repeats)
            if on_error is not None:
                on_error(exc)
        except PermanentError as exc:
            delay = backoff.longest()
            last = None
            logger.error("%s: %s; retrying in %.0f s", name, exc, delay)
            if on_error is not None:
                on_error(exc)
        except Exception as exc:  # a bug in one driver must not take the gateway down
            delay = backoff.longest()
            last = None
            logger.exception("%s: crashed; restarting in %.0f s", name, delay)
            if on_error is not None:
                on_error(exc)
        await asyncio.sleep(delay)


async def retry(
    op: Callable[[], Awaitable[T]],
    *,
    attempts: int,
    backoff: Backoff,
    retry_on: tuple[type[BaseException], ...],
    on_retry: Callable[[int, BaseException], None] | None = None,
) -> T:
    """`op()` until it returns; after a `retry_on` failure wait the backoff and try again, at
    most `attempts` times in all (the last failure is raised). Anything else is raised at once."""
    for attempt in range(1, attempts + 1):
        try:
            return await op()
        except retry_on as exc:
            if attempt == attempts:
                raise
            if on_retry is not None:
                on_retry(attempt, exc)
            await asyncio.sleep(backoff.next())
    raise ValueError("attempts must be 1 or more")
