"""A pace that a platform's flood limit accepts however late our requests reach it.

Telegram and Slack count a request when it *arrives*, against a token bucket: `burst`
requests at once, then `rate` a second. A leaky bucket on our side (aiolimiter's, which PTB's
AIORateLimiter uses) counts a request when it is *let go*. Between the two lies whatever
delays the request: a garbage collection, a process the machine did not run for a moment, a
slow first connection. If that delay falls on a burst's first requests, the requests queued
behind them are let go on time, reach the platform right behind the delayed ones, and the
platform sees more than its burst at once: 429.

`Pace` counts a request the way the platform may: one in flight may arrive at any moment; one
answered arrived, at the latest, when its answer came. It lets a request go only if, for
every moment x before now, this request, those in flight and those answered since x fit in
`burst + rate * (now - x)`. Whatever each request's arrival (between its going and its
answer), no window of the platform's clock then holds more than its bucket allows, so a
bucket of that burst and rate (or a larger one) accepts all of them. The price: after a
full burst, the next request waits for the burst's first answer.

Each answer adds one bound: it is due `(answered since it + in flight + 1 - burst) / rate`
seconds after the answer. Stored as `answer time - its number / rate`, the bounds keep their
order as answers come, so an answer whose bound is later than an earlier one's replaces it
for good; the earliest remaining is the one that counts (a monotonic queue).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType

KEPT = 1024  # bounds kept; more are dropped oldest first (only a long run of early answers)


class Pace:
    """`async with pace:` around one request: waits for its turn, counts it until it ends."""

    def __init__(self, burst: float, rate: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if burst < 1 or rate <= 0:
            raise ValueError("a pace needs a burst of at least one and a positive rate")
        self.burst, self.rate, self._clock = burst, rate, clock
        self._in_flight = 0
        self._answered = 0
        self._bounds: deque[float] = deque()  # answer time - its number / rate, decreasing
        self._turns = asyncio.Lock()  # waiters go in the order they came
        self._wake: asyncio.Future[None] | None = None

    def delay(self) -> float:
        """Seconds until the next request may go: 0 now, `math.inf` until an answer comes."""
        if self._in_flight + 1 > self.burst:
            return math.inf
        if not self._bounds:
            return 0.0
        due = self._bounds[0] + (self._answered + self._in_flight + 2 - self.burst) / self.rate
        return max(0.0, due - self._clock())

    def rested(self) -> bool:
        """Whether a whole burst could go now: the pace may be forgotten."""
        if self._in_flight:
            return False
        return not self._bounds or self._bounds[0] + (self._answered + 1) / self.rate \
            <= self._clock()

    def take(self) -> None:
        """Count a request in flight (after `delay()` said 0)."""
        self._in_flight += 1

    def answered(self) -> None:
        """A request in flight has ended (answered, failed or given up)."""
        self._in_flight -= 1
        self._answered += 1
        bound = self._clock() - self._answered / self.rate
        while self._bounds and self._bounds[-1] <= bound:
            self._bounds.pop()
        self._bounds.append(bound)
        if len(self._bounds) > KEPT:
            self._bounds.popleft()
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def __aenter__(self) -> None:
        async with self._turns:
            while (delay := self.delay()) > 0:
                await self._nap(delay)
            self.take()

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        self.answered()

    async def _nap(self, delay: float) -> None:
        """Wait `delay` seconds, or until an answer comes (which can only bring the turn
        nearer)."""
        loop = asyncio.get_running_loop()
        wake = self._wake = loop.create_future()
        timer = None if math.isinf(delay) else loop.call_later(delay, _settle, wake)
        try:
            await wake
        finally:
            self._wake = None
            if timer is not None:
                timer.cancel()


def _settle(wake: asyncio.Future[None]) -> None:
    if not wake.done():
        wake.set_result(None)
