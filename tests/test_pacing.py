"""`Pace`: whatever the delay between letting a request go and its arrival, a token bucket of
the pace's burst and rate accepts every request; and the pace loses no time when there is
no delay. Simulated on a clock of our own: nothing here waits."""

from __future__ import annotations

import asyncio
import heapq
import math
import random

import pytest

from bot.adapters.pacing import Pace
from tests.fakes.limits import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run(pace: Pace, clock: Clock, count: int, trip: random.Random | None,
        stall_every: int = 0) -> list[tuple[float, float, float]]:
    """Let `count` requests go as soon as `pace` allows; each is answered `trip` seconds
    after it goes (now and then a stall of up to a second) and arrives at a random moment in
    between. (went, arrived, answered) for each, in the order they went."""
    answers: list[float] = []  # answer times of the requests in flight
    requests: list[tuple[float, float, float]] = []
    while len(requests) < count:
        if (delay := pace.delay()) > 0:
            clock.now = min(clock.now + delay, answers[0]) if answers else clock.now + delay
            while answers and answers[0] <= clock.now:
                heapq.heappop(answers)
                pace.answered()
            continue
        pace.take()
        went = clock.now
        length = 0.0 if trip is None else trip.uniform(0.001, 0.08)
        if trip is not None and stall_every and trip.randrange(stall_every) == 0:
            length += trip.uniform(0.2, 1.0)
        arrived = went + (0.0 if trip is None else trip.random() * length)
        heapq.heappush(answers, went + length)
        requests.append((went, arrived, went + length))
    return requests


def refused(arrivals: list[float], burst: float, rate: float) -> int:
    """How many of `arrivals` a token bucket (full when the first arrives) refuses."""
    arrivals = sorted(arrivals)
    bucket, count = TokenBucket(rate, burst + 1e-9, arrivals[0]), 0  # + the clock's rounding
    for at in arrivals:
        if bucket.wait(at) > 0:
            count += 1
        else:
            bucket.take()
    return count


@pytest.mark.parametrize("seed", range(40))
def test_a_token_bucket_of_the_pace_accepts_every_request_however_late_it_arrives(
        seed: int) -> None:
    burst, rate = (24, 30.0) if seed % 2 else (2, 1.0)
    clock = Clock()
    requests = run(Pace(burst, rate, clock), clock, 300, random.Random(seed), stall_every=7)
    assert refused([arrived for _, arrived, _ in requests], burst, rate) == 0
    assert refused([went for went, _, _ in requests], burst, rate) == 0


def test_without_delays_the_pace_is_the_bucket_s_own() -> None:
    """Answered at once, 1,000 requests go in (1,000 - burst) / rate seconds, as a token bucket
    lets them: the pace holds nothing back that the platform would accept."""
    clock = Clock()
    requests = run(Pace(24, 30.0, clock), clock, 1000, None)
    went = [w for w, _, _ in requests]
    assert went[:24] == [0.0] * 24
    assert went[-1] == pytest.approx((1000 - 24) / 30.0)
    assert refused(went, 24, 30.0) == 0


def test_a_full_burst_waits_for_its_first_answer() -> None:
    clock = Clock()
    pace = Pace(3, 1.0, clock)
    for _ in range(3):
        assert pace.delay() == 0
        pace.take()
    assert pace.delay() == math.inf  # three in flight: the next might arrive with them
    clock.now = 5.0
    pace.answered()  # the first answer, long after: the bucket refilled while they travelled
    assert pace.delay() == pytest.approx(1.0)
    assert not pace.rested()
    clock.now = 7.0
    pace.answered()
    pace.answered()
    assert pace.delay() == 0
    assert not pace.rested()  # the two answered now may have just arrived: not a whole burst
    clock.now = 9.0
    assert pace.rested()


async def test_waiters_go_in_turn_and_an_answer_wakes_the_next() -> None:
    pace = Pace(1, 1000.0)
    order: list[int] = []
    release = asyncio.Event()

    async def request(n: int) -> None:
        async with pace:
            order.append(n)
            if n == 0:
                await release.wait()

    tasks = [asyncio.create_task(request(n)) for n in range(3)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert order == [0]  # one in flight: the others wait for its answer, not for a clock
    release.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert order == [0, 1, 2]


async def test_a_waiter_cancelled_leaves_the_turn_to_the_next() -> None:
    pace = Pace(1, 1000.0)
    release = asyncio.Event()

    async def first() -> None:
        async with pace:
            await release.wait()

    holder = asyncio.create_task(first())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(pace.__aenter__())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    release.set()
    await holder
    await asyncio.wait_for(pace.__aenter__(), 5)  # the turn was not lost with the waiter
    await pace.__aexit__(None, None, None)


def test_a_pace_needs_a_burst_and_a_rate() -> None:
    with pytest.raises(ValueError):
        Pace(0, 1.0)
    with pytest.raises(ValueError):
        Pace(1, 0.0)
