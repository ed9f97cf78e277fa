"""App Home refreshes, kept off the send path.

A notice changes something of the person's, so their App Home is published again. Publishing
(`views.publish`, Tier 4: about 100 a minute) must never hold back a message: the message is
sent and marked sent first, and the refresh queues here. Refreshes of one person coalesce
(the one that runs reads the store as it is then), a few lanes publish at once, and on stop
the queue is dropped: App Home is rebuilt from the store whenever the person opens it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

LANES = 2
STOP_GRACE = 5.0

Whose = tuple[str, str]  # ("account", account id) or ("chat", a chat the store can name)
Publish = Callable[[Whose], Awaitable[None]]


class HomeRefresh:
    """A queue of accounts whose App Home is due, published by a few lanes."""

    def __init__(self, publish: Publish, lanes: int = LANES) -> None:
        self._publish = publish
        self._lanes = lanes
        self._due: dict[Whose, None] = {}  # insertion-ordered, one entry per person
        self._workers: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False

    def want(self, whose: Whose) -> None:
        """Queue a refresh of one person's App Home (once, however often it is asked)."""
        if self._closed:
            return
        self._due[whose] = None
        self._idle.clear()
        if len(self._workers) < self._lanes:
            worker = asyncio.create_task(self._work(), name="slack-app-home")
            self._workers.add(worker)
            worker.add_done_callback(self._done)

    @property
    def due(self) -> int:
        return len(self._due)

    async def drained(self) -> None:
        """Wait until every refresh asked for so far has been published (or failed)."""
        await self._idle.wait()

    async def close(self, grace: float = STOP_GRACE) -> None:
        """Drop what is queued; let the publishes under way finish within `grace`."""
        self._closed = True
        self._due.clear()
        if self._workers:
            await asyncio.wait(list(self._workers), timeout=grace)
        for worker in list(self._workers):
            worker.cancel()

    async def _work(self) -> None:
        while self._due:
            whose = next(iter(self._due))
            del self._due[whose]
            try:
                await self._publish(whose)
            except Exception as exc:  # the publisher logs its own; this is the last guard
                log.warning("App Home refresh failed: %s", type(exc).__name__)

    def _done(self, worker: asyncio.Task[None]) -> None:
        self._workers.discard(worker)
        if self._due and not self._closed:  # asked for while this lane was ending
            self.want(next(iter(self._due)))
        elif not self._workers:
            self._idle.set()
