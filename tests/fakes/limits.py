"""The rate limits the fakes enforce when asked to: a token bucket per key."""

from __future__ import annotations


class TokenBucket:
    """`burst` tokens, refilled at `rate` a second; one call takes one."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.tokens, self.at = rate, burst, burst, now

    def wait(self, now: float) -> float:
        """Seconds until a token is there (0: one is there now)."""
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    def take(self) -> None:
        self.tokens -= 1
