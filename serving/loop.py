"""Work scheduled a number of event-loop passes ahead (the batcher's gathers, the recorder's writes).

In one pass asyncio polls the sockets, then runs the callbacks that were ready, in the order they were
scheduled: what is scheduled ``n`` passes ahead runs after everything the next ``n - 1`` polls bring in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


def after_passes(loop: asyncio.AbstractEventLoop, passes: int, callback: Callable[[], None]) -> None:
    """Run ``callback`` ``passes`` passes of the event loop from now (1: the next pass)."""
    if passes <= 1:
        loop.call_soon(callback)
    else:
        loop.call_soon(after_passes, loop, passes - 1, callback)
