"""What a driver may call: the gateway hands each driver an `Emit` and nothing more."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Protocol

from edge.clock import Stamp


class Emit(Protocol):
    """Accept one reading; unbatched kinds get a future resolving with the committed seq."""

    def __call__(
        self, kind: str, src: str, data: Mapping[str, Any], *, stamp: Stamp | None = None
    ) -> asyncio.Future[int] | None: ...
