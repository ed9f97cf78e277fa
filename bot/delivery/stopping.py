"""Stopping background work between two pieces of store work, never inside one.

Cancelling a task while it awaits the SQLite driver does not stop the statement: it goes on in
the driver's thread, and the connection (inside its `BEGIN IMMEDIATE`) is left in a garbage
cycle with the cancelled task's traceback, holding the write lock until the garbage collector
happens to run. The next process on the file then meets "database is locked". So a loop is
told to stop (an event it checks between two pieces of work), left to finish the piece in
hand, and cancelled only when it has not finished after the grace period (a hung store).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

log = logging.getLogger(__name__)


async def finish(tasks: Iterable[asyncio.Task[object] | asyncio.Task[None] | None],
                 grace: float) -> None:
    """Wait up to `grace` seconds for `tasks` (already told to stop) to end; cancel the rest."""
    pending = [t for t in tasks if t is not None and t is not asyncio.current_task()]
    if not pending:
        return
    _, late = await asyncio.wait(pending, timeout=grace)
    for task in late:
        log.warning("%s did not stop within %.0f s; cancelled", task.get_name(), grace)
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
