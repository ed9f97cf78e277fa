"""Turns: how many kept requests are handled at once, and who goes first.

Keeping a request (the inbox write a webhook waits for before it answers) is cheap; handling
one (the core: forms, queries, replies) costs ten times more CPU. On one event loop a burst
of handling would keep every webhook waiting behind it: answered late, and Telegram or Slack
count a slow answer as a failure and deliver again. So handling takes turns:

- up to `slots` items at once when nothing is arriving (the store's connections are shared
  with the sender and the scheduler: handling never takes all of them);
- while requests are being received, one item at a time, and a new one only once `every`
  requests have been answered since the last one began. Answering comes first, so each
  answer waits for its own inbox write and not for the handling of others; handling never
  stops (it goes on at a fixed share of the answers), and the rest follow the moment the
  burst is in.

Nothing here waits on a clock: a turn is given when one is returned or a receipt ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Iterator


class Turns:
    """`async with turns.turn():` handles one item; `with turns.arrival():` receives one."""

    def __init__(self, slots: int, every: int = 1) -> None:
        if slots < 1 or every < 1:
            raise ValueError("at least one item must be handled at a time, after at least "
                             "one answer")
        self.slots = slots
        self.every = every
        self.active = 0  # items being handled
        self.arriving = 0  # requests being received
        self.answered = every  # requests answered since a turn began while others arrived
        self._waiting: deque[asyncio.Future[None]] = deque()

    def _may_start(self) -> bool:
        if not self.arriving:
            return self.active < self.slots
        return self.active == 0 and self.answered >= self.every

    def _start(self) -> None:
        self.active += 1
        if self.arriving:
            self.answered = 0

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        await self._acquire()
        try:
            yield
        finally:
            self.active -= 1
            self._give()

    @contextlib.contextmanager
    def arrival(self) -> Iterator[None]:
        self.arriving += 1
        try:
            yield
        finally:
            self.arriving -= 1
            self.answered += 1
            self._give()

    async def _acquire(self) -> None:
        if not self._waiting and self._may_start():
            self._start()
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(granted)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():  # given, then cancelled: hand it on
                self.active -= 1
                self._give()
            else:
                with contextlib.suppress(ValueError):
                    self._waiting.remove(granted)
            raise

    def _give(self) -> None:
        while self._waiting and self._may_start():
            granted = self._waiting.popleft()
            if not granted.done():
                self._start()
                granted.set_result(None)
