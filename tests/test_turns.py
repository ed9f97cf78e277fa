"""Turns: handling takes turns, one at a time while requests arrive (`bot/delivery/turns.py`)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from bot.delivery.turns import Turns


async def _hold(turns: Turns, entered: list[str], name: str, release: asyncio.Event) -> None:
    async with turns.turn():
        entered.append(name)
        await release.wait()


async def _settle() -> None:
    """Let every task that can run, run (no clock involved)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_no_more_than_the_slots_are_handled_at_once() -> None:
    turns, entered, release = Turns(2), [], asyncio.Event()
    tasks = [asyncio.create_task(_hold(turns, entered, n, release)) for n in "abc"]
    await _settle()
    assert entered == ["a", "b"] and turns.active == 2
    release.set()
    await asyncio.gather(*tasks)
    assert entered == ["a", "b", "c"] and turns.active == 0


async def test_while_a_request_arrives_one_item_is_handled_at_a_time() -> None:
    turns, entered, release = Turns(4), [], asyncio.Event()
    with turns.arrival():
        tasks = [asyncio.create_task(_hold(turns, entered, n, release)) for n in "abcd"]
        await _settle()
        assert entered == ["a"]  # handling never stops: one goes on
    await _settle()  # the request is in: the others follow at once
    assert entered == ["a", "b", "c", "d"]
    release.set()
    await asyncio.gather(*tasks)


async def test_while_requests_arrive_a_new_item_waits_for_that_many_answers() -> None:
    turns, entered, release = Turns(4, every=3), [], asyncio.Event()
    with turns.arrival():  # the burst: requests keep arriving throughout
        tasks = [asyncio.create_task(_hold(turns, entered, n, release)) for n in "abc"]
        await _settle()
        assert entered == ["a"]  # the first goes at once
        release.set()
        await _settle()
        assert entered == ["a"]  # a is done, but no request has been answered since it began
        for answered in (1, 2):
            with turns.arrival():
                pass
            await _settle()
            assert entered == ["a"], f"b began after {answered} answer(s) of 3"
        with turns.arrival():
            pass
        await _settle()
        assert entered == ["a", "b"]  # the third answer gives the next turn
        for _ in range(3):
            with turns.arrival():
                pass
        await _settle()
        assert entered == ["a", "b", "c"]
    await asyncio.gather(*tasks)
    assert turns.active == 0 and turns.arriving == 0


async def test_items_already_in_hand_finish_and_the_next_waits_for_the_burst() -> None:
    turns, entered = Turns(3), []
    first, later = asyncio.Event(), asyncio.Event()
    held = [asyncio.create_task(_hold(turns, entered, n, first)) for n in "ab"]
    await _settle()
    with turns.arrival():
        waiting = [asyncio.create_task(_hold(turns, entered, n, later)) for n in "cd"]
        await _settle()
        assert entered == ["a", "b"]  # two in hand: no third while the request arrives
        first.set()
        await asyncio.gather(*held)
        await _settle()
        assert entered == ["a", "b", "c"]  # back to one at a time
    await _settle()
    assert entered == ["a", "b", "c", "d"]
    later.set()
    await asyncio.gather(*waiting)
    assert turns.active == 0 and turns.arriving == 0


async def test_a_waiter_cancelled_leaves_no_turn_behind() -> None:
    turns, entered, release = Turns(1), [], asyncio.Event()
    a = asyncio.create_task(_hold(turns, entered, "a", release))
    b = asyncio.create_task(_hold(turns, entered, "b", release))
    c = asyncio.create_task(_hold(turns, entered, "c", release))
    await _settle()
    b.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await b
    release.set()
    await asyncio.gather(a, c)
    assert entered == ["a", "c"] and turns.active == 0


async def test_a_turn_given_to_a_task_cancelled_before_it_ran_is_handed_on() -> None:
    turns, entered, release = Turns(1), [], asyncio.Event()
    async with turns.turn():  # the one turn, held here
        b = asyncio.create_task(_hold(turns, entered, "b", release))
        c = asyncio.create_task(_hold(turns, entered, "c", release))
        await _settle()
    b.cancel()  # the turn was given to b on the way out above; b has not run since
    with contextlib.suppress(asyncio.CancelledError):
        await b
    release.set()
    await asyncio.wait_for(c, 5)  # a turn lost with b would keep c waiting for ever
    assert entered == ["c"] and turns.active == 0


def test_zero_slots_is_refused() -> None:
    with pytest.raises(ValueError):
        Turns(0)
