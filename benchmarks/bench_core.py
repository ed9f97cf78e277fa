"""How fast the core answers, as ratios against a baseline measured in the same run.

    python benchmarks/bench_core.py [--rounds N]

Baseline: the cheapest thing a handled message must do anyway — one `BEGIN IMMEDIATE`
transaction on the same SQLite store reading one identity row. Each scenario prints its
rate and its cost as a multiple of that baseline, so the numbers compare across machines.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from sqlalchemy import select

from bot.delivery import Inbound, Liveness, Sender
from handlers import COMMANDS, FORMS, FREE_TEXT
from handlers.clock import SystemClock
from handlers.dispatch import Core
from handlers.types import Incoming, Outgoing
from storage.db import Database
from storage.demo import load_demo
from storage.migrate import upgrade
from storage.models import Identity

FP = "fp.chile@demo.invalid"


class NullSender:
    platform = "console"
    reads_back = False

    def reaches(self, chat_id: str) -> bool:
        return True

    async def deliver(self, chat_id: str, message: Outgoing, *, locale: str, tz: str,
                      extras: object, parts: object = None) -> None:
        return None


async def timed(n: int, step: Callable[[int], Awaitable[object]]) -> float:
    start = time.perf_counter()
    for i in range(n):
        await step(i)
    return time.perf_counter() - start


async def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="fpbot-bench-") as tmp:
        await measure(Path(tmp), rounds)


async def measure(folder: Path, rounds: int) -> None:
    db = Database(f"sqlite+aiosqlite:///{folder / 'bench.db'}")
    await upgrade(db)
    clock = SystemClock()
    async with db.transaction() as session:
        await load_demo(session, clock.now())
    core = Core(db, COMMANDS, FORMS, clock=clock, free_text=FREE_TEXT)
    await core.console_identity(FP)

    async def baseline(_: int) -> None:
        async with db.transaction() as session:
            await session.scalar(select(Identity).where(Identity.user_id == FP))

    def say(text: str) -> Callable[[int], Awaitable[object]]:
        inc = Incoming(platform="console", user_id=FP, chat_id=FP, text=text)
        return lambda _: core.handle(inc)

    liveness = Liveness(db, clock)
    await liveness.start()
    inbound = Inbound(core, liveness)

    async def inbox_round_trip(i: int) -> None:
        inc = Incoming(platform="telegram", user_id="42", chat_id="42", text="/help")
        inbox_id = await inbound.receive("telegram", f"u{i}", inc, handle=False)
        assert inbox_id is not None
        await core.handle(inc, inbox_id)  # handled, its reply written to the outbox

    async def membership_request(i: int) -> None:
        user = f"stranger-{i}"
        for text in ("/start", "Chile", "Ana", "Adviser", "MFA", f"a{i}@example.org"):
            await core.handle(Incoming(platform="telegram", user_id=user, chat_id=user, text=text))

    base = await timed(rounds, baseline)
    rows = [("baseline: one read transaction", rounds, base)]
    for label, n, step in [
        ("/help", rounds, say("/help")),
        ("/whoami", rounds, say("/whoami")),
        ("unknown command", rounds, say("/frobnicate")),
        ("inbox: receive + handle (+ reply row)", rounds, inbox_round_trip),
        ("membership request, 6 messages", max(rounds // 6, 1), membership_request),
    ]:
        rows.append((label, n, await timed(n, step)))
    sender = Sender(db, clock, liveness, {"console": NullSender(), "telegram": NullSender()})
    await core.console_identity("coordinator@demo.invalid")
    start = time.perf_counter()
    sent = await sender.flush()
    rows.append((f"outbox: send {sent} replies and notices", max(sent, 1),
                 time.perf_counter() - start))
    await liveness.stop()

    per_base = base / rounds
    print(f"{'scenario':45} {'n':>6} {'per second':>11} {'x baseline':>11}")
    for label, n, seconds in rows:
        per = seconds / n
        print(f"{label:45} {n:6d} {n / seconds:11.0f} {per / per_base:11.1f}")
    await db.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=300)
    asyncio.run(main(parser.parse_args().rounds))
