"""Slack's rate limits kept on our side, so that a fan-out meets no `ratelimited` past its burst.

Slack limits each Web API method per workspace by tier (PLATFORM-LIMITS.md §2: Tier 3 50+ and
Tier 4 100+ calls a minute, "occasional bursts" tolerated) and chat.postMessage by its own
rule: one a second per channel with short bursts, and "several hundred a minute" across the
workspace (300 here, the working assumption). A 429 is still ridden out (`RetryAfterHandler`);
pacing makes it the exception. Each limit is a `Pace` (which counts a call until its answer
comes, so that a call that reaches Slack late does not bunch the next ones behind it) holding
`BURST_SECONDS` of its quota, less a fifth (at least one call): Slack publishes only floors
and "occasional bursts".
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping

from bot.adapters.pacing import Pace

TIER_3, TIER_4 = 50.0, 100.0  # calls a minute: the published floor of each tier
METHOD_TIERS: Mapping[str, float] = {
    "conversations.open": TIER_3, "conversations.history": TIER_3, "chat.update": TIER_3,
    "users.info": TIER_4,
    "views.open": TIER_4, "views.publish": TIER_4, "files.getUploadURLExternal": TIER_4,
    "files.completeUploadExternal": TIER_4,
}
POSTS_PER_MINUTE = 300.0  # chat.postMessage, the whole workspace
POSTS_PER_CHANNEL = 1.0  # chat.postMessage a second, one channel...
CHANNEL_BURST = 3.0  # ...after a short burst
BURST_SECONDS = 10.0  # a bucket holds this many seconds of its quota
CHANNELS_KEPT = 10_000  # per-channel buckets remembered (the least recent are forgotten)


def _bucket(per_minute: float, burst: float | None = None) -> Pace:
    """A pace of `per_minute`, holding `burst` calls (default: `BURST_SECONDS`' worth),
    less the margin held back."""
    if burst is None:
        burst = round(per_minute * BURST_SECONDS / 60)
    held = max(1.0, burst - max(1, round(burst / 5)))
    return Pace(held, per_minute / 60)


class SlackPacing:
    """One bucket per method, plus one per channel for chat.postMessage."""

    def __init__(self, tiers: Mapping[str, float] = METHOD_TIERS) -> None:
        self._methods = {method: _bucket(per_minute) for method, per_minute in tiers.items()}
        self._posts = _bucket(POSTS_PER_MINUTE)
        self._channels: OrderedDict[str, Pace] = OrderedDict()

    @contextlib.asynccontextmanager
    async def call(self, method: str, channel: str = "") -> AsyncIterator[None]:
        """Wait until `method` (to `channel`, for chat.postMessage) may be called."""
        async with contextlib.AsyncExitStack() as held:
            if method == "chat.postMessage":
                await held.enter_async_context(self._channel(channel))
                await held.enter_async_context(self._posts)
            elif method in self._methods:
                await held.enter_async_context(self._methods[method])
            yield

    def _channel(self, channel: str) -> Pace:
        bucket = self._channels.get(channel)
        if bucket is None:
            bucket = self._channels[channel] = _bucket(POSTS_PER_CHANNEL * 60, CHANNEL_BURST)
            while len(self._channels) > CHANNELS_KEPT:
                self._channels.popitem(last=False)
        else:
            self._channels.move_to_end(channel)
        return bucket
