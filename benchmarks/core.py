"""Core: what one command costs the store, counted, and how fast the core answers.

A Telegram update from a registered focal point goes the bot's own way in: kept in the inbox
(`Inbound.receive`), handled (`Core.handle`: the effect, the item marked handled and the reply
written to the outbox in one transaction), then sent (`Sender.flush`, here to a channel that
takes every message; a person's commands menu goes with a reply only when their set of
commands changed, decided in the handling transaction). SQL statements are counted with a
`before_cursor_execute` listener on the engine, transactions with its `begin` event; BEGIN and
COMMIT themselves are not counted as statements. Targets: a command (receipt + handling) takes
≤ 8 statements in ≤ 2 transactions.

Speed, as in `benchmarks/bench_core.py` (which still runs on its own): `/help` handled per
second by the core, against one read transaction on the same store (the baseline), rounds
interleaved, medians.
"""

from __future__ import annotations

import contextlib
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event, select

from benchmarks.bench_core import NullSender
from benchmarks.common import Figure, Options
from benchmarks.processes import BenchmarkFailed, progress
from benchmarks.stores import FIRST_CHAT, demo_store, sqlite_url
from bot.delivery import Inbound, Liveness, Sender
from handlers import COMMANDS, FORMS, FREE_TEXT
from handlers.clock import SystemClock
from handlers.dispatch import Core
from handlers.types import Incoming
from storage.db import Database
from storage.models import Identity

NAME = "core"
MAX_STATEMENTS = 8
MAX_TRANSACTIONS = 2
TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")


@dataclass
class Count:
    statements: int = 0
    transactions: int = 0
    kinds: Counter[str] = field(default_factory=Counter)  # "SELECT identity" -> how many

    def summary(self) -> str:
        return ", ".join(f"{kind} ×{n}" if n > 1 else kind for kind, n in self.kinds.items())


def kind(sql: str) -> str:
    """`SELECT identity`, `INSERT inbox_item`: what a statement does, and to which table."""
    verb = sql.split(None, 1)[0].upper() if sql.strip() else "?"
    table = re.search(r"\b(?:FROM|INTO|UPDATE)\s+\"?(\w+)", sql, re.IGNORECASE)
    return f"{verb} {table.group(1)}" if table else verb


@contextlib.contextmanager
def counting(db: Database) -> Iterator[Count]:
    """Count the statements and transactions `db` runs inside the block."""
    count = Count()

    def statement(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
        if not sql.lstrip().upper().startswith(TRANSACTION_CONTROL):
            count.statements += 1
            count.kinds[kind(sql)] += 1

    def begin(conn: Any) -> None:
        count.transactions += 1

    engine = db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", statement)
    event.listen(engine, "begin", begin)
    try:
        yield count
    finally:
        event.remove(engine, "before_cursor_execute", statement)
        event.remove(engine, "begin", begin)


class Bench:
    """The core wired as `fpbot` wires it, on one store, for one focal point on Telegram."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.clock = SystemClock()
        self.core = Core(db, COMMANDS, FORMS, clock=self.clock, free_text=FREE_TEXT)
        self.liveness = Liveness(db, self.clock)
        self.inbound = Inbound(self.core, self.liveness)
        self.sender = Sender(db, self.clock, self.liveness, {"telegram": NullSender()})
        self.user = str(FIRST_CHAT)
        self.n = 0

    async def command(self, text: str) -> Count:
        """Receive and handle one update; the statements and transactions it took."""
        self.n += 1
        inc = Incoming(platform="telegram", user_id=self.user, chat_id=self.user, text=text)
        with counting(self.db) as count:
            inbox_id = await self.inbound.receive("telegram", f"core-{self.n}", inc,
                                                  handle=False)
            if inbox_id is None:
                raise BenchmarkFailed(f"{text}: the update was taken for a redelivery")
            replies = await self.core.handle(inc, inbox_id)
        if len(replies) != 1:
            raise BenchmarkFailed(f"{text}: {len(replies)} replies instead of one")
        return count

    async def send(self) -> tuple[int, Count]:
        """Send what the outbox holds; rows sent and what it took."""
        with counting(self.db) as count:
            sent = await self.sender.flush()
        return sent, count

    async def baseline(self) -> None:
        async with self.db.transaction() as session:
            await session.scalar(select(Identity).where(Identity.user_id == self.user))

    async def help(self) -> None:
        self.n += 1
        await self.core.handle(Incoming(platform="telegram", user_id=self.user,
                                        chat_id=self.user, text="/help"))


async def _rate(n: int, step: Any) -> float:
    began = time.perf_counter()
    for _ in range(n):
        await step()
    return n / (time.perf_counter() - began)


async def measure(database: str, url: str, opts: Options) -> list[Figure]:
    await demo_store(url, datetime.now(UTC))
    db = Database(url)
    bench = Bench(db)
    await bench.liveness.start()
    try:
        for text in ("/help", "/whoami"):  # warm: first contact, caches, the menu
            await bench.command(text)
        await bench.send()
        figures: list[Figure] = []
        for text in ("/help", "/whoami"):
            counts = [await bench.command(text) for _ in range(5)]
            most = max(counts, key=lambda c: (c.statements, c.transactions))
            statements, transactions = most.statements, most.transactions
            figures += [
                Figure(NAME, f"SQL statements per {text} ({database})", statements,
                       unit="statements", target=f"≤ {MAX_STATEMENTS}",
                       met=statements <= MAX_STATEMENTS,
                       note=f"inbox receipt + handling: {most.summary()}"),
                Figure(NAME, f"transactions per {text} ({database})", transactions,
                       unit="transactions", target=f"≤ {MAX_TRANSACTIONS}",
                       met=transactions <= MAX_TRANSACTIONS),
            ]
        sent, count = await bench.send()
        if not sent:
            raise BenchmarkFailed("the sender sent nothing")
        figures.append(Figure(
            NAME, f"SQL statements per reply sent ({database})", count.statements / sent,
            unit="statements",
            note=f"{count.transactions / sent:.1f} transactions per reply ({sent} sent in one "
                 f"flush: {count.summary()})"))
        n = 20 if opts.quick else 100
        helps, reads = [], []
        for _ in range(max(opts.rounds, 1)):
            reads.append(await _rate(n, bench.baseline))
            helps.append(await _rate(n, bench.help))
        figures.append(Figure(NAME, f"/help handled per second, core only ({database})",
                              statistics.median(helps), statistics.median(reads), "/s",
                              note=f"baseline: one read transaction; {n} each, "
                                   f"{len(helps)} round(s), medians"))
        return figures
    finally:
        await bench.liveness.stop()
        await db.dispose()


async def run(opts: Options) -> list[Figure]:
    found: list[Figure] = []
    for database, url in (("SQLite", sqlite_url(opts.workdir / "core.db")),
                          ("PostgreSQL", opts.pg_url)):
        if url is None:
            found.append(Figure(NAME, f"SQL statements per /help ({database})", None,
                                note="no PostgreSQL to measure on"))
            continue
        progress(f"core ({database}): counting statements, timing /help")
        try:
            found += await measure(database, url, opts)
        except BenchmarkFailed as exc:
            print(f"core ({database}) FAILED: {exc}", file=sys.stderr)
            found.append(Figure(NAME, f"SQL statements per /help ({database})", None,
                                note=f"FAILED: {exc}"))
    return found
