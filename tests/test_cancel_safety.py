"""A task cancelled just as what it waits for happens stays cancelled.

On Python 3.11 `asyncio.wait_for` returns normally when the awaited thing completes in the
same turn of the loop as the cancellation: the cancel is lost and the task carries on (a
stopping bot waited on a lane that went on sending). The delivery parts wait with
`asyncio.timeout` instead; these tests set the event and cancel the waiter before it runs
again, the exact interleaving that `wait_for` swallows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from bot.delivery import Inbound, Liveness
from handlers.dispatch import Core


async def _cancelled_as_it_ends(wait: Awaitable[object], end: Callable[[], None]) -> bool:
    """Start `wait`, make it end and cancel it in the same turn; True if it stayed cancelled."""
    task = asyncio.ensure_future(wait)
    await asyncio.sleep(0)  # it is waiting now
    end()
    task.cancel()  # before it runs again
    try:
        await task
    except asyncio.CancelledError:
        return True
    return False


async def test_waiting_for_the_inbox_to_go_idle_can_be_cancelled(core: Core) -> None:
    inbound = Inbound(core, Liveness(core.db, core.clock))
    inbound._idle.clear()  # an item in hand
    assert await _cancelled_as_it_ends(inbound.wait_idle(5.0), inbound._idle.set)


async def test_the_heartbeat_cancelled_as_it_is_stopped_stays_cancelled(core: Core) -> None:
    liveness = Liveness(core.db, core.clock, beat=30.0)
    assert await _cancelled_as_it_ends(liveness._heartbeat(), liveness._stop.set)
