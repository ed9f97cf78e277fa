"""The weekly digest at 78, 1,000 and 10,000 members: its time and its SQL statements.

The store is the demo (78 members) grown by bulk inserts to each size, every member with a
focal point and every seventh with an update waiting for review, and a collection deadline
of every focal point, so each section has rows to show. The digest is what the scheduler
sends: `build_digest` (every section), the chat message rendered as Telegram HTML and the
e-mail page (`digest_messages`), in one transaction. Its statements are counted with a
SQLAlchemy `before_cursor_execute` listener; the target is the same count at the smallest and
the largest size (no query per member).

Baseline, in the same rounds: the floor of reading what grows with the members, in the same
kind of transaction: every member's id, name and region, and every update waiting for review
with its member's name (two statements).

On SQLite (a file in `opts.workdir`) and, with `opts.pg_url`, on PostgreSQL (emptied first).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from benchmarks._fanout_seed import DEMO_MEMBERS, add_members, demo_store
from benchmarks.common import Figure, Options
from handlers.digest import EXTRA_SECTIONS, build_digest, digest_messages
from messages import Renderer
from storage.db import Database
from storage.deadlines import audience, sync_deadline
from storage.models import DeadlineKind, Member, NationalUpdate, RoleName, UpdateStatus
from tests.statements import counting

BENCHMARK = "digest"
SIZES, QUICK_SIZES = (DEMO_MEMBERS, 1_000, 10_000), (DEMO_MEMBERS, 1_000)
SUBMITTED_EVERY = 7  # one member in seven has an update waiting for review


@dataclass
class Size:
    """The rounds at one number of members."""

    members: int
    project: list[float] = field(default_factory=list)  # seconds
    baseline: list[float] = field(default_factory=list)
    statements: list[int] = field(default_factory=list)
    baseline_statements: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


async def the_digest(session: AsyncSession, renderer: Renderer, now: datetime) -> dict[str, Any]:
    """The digest as the scheduler builds and renders it; returns its context."""
    context = await build_digest(session, now)
    chat, page = digest_messages(context, renderer, f"{now:%Y-%m-%d}", "UTC")
    renderer.render(chat.key, "en", "html", **chat.context)  # what Telegram shows
    assert page.file is not None and page.file.content
    return context


async def floor_reads(session: AsyncSession) -> int:
    """What any digest must read that grows with the members; returns the rows read."""
    members = (await session.execute(select(Member.id, Member.name, Member.region))).all()
    waiting = (await session.execute(
        select(NationalUpdate.id, NationalUpdate.title, NationalUpdate.submitted_at, Member.name)
        .join(Member, Member.id == NationalUpdate.member_id)
        .where(NationalUpdate.status == UpdateStatus.SUBMITTED))).all()
    return len(members) + len(waiting)


async def timed(db: Database, step: Callable[[AsyncSession], Awaitable[Any]]
                ) -> tuple[float, int, Any]:
    """Seconds, statements and result of `step` in one transaction."""
    async with db.transaction() as session:
        with counting(db) as statements:
            began = time.perf_counter()
            result = await step(session)
            seconds = time.perf_counter() - began
    return seconds, len(statements), result


def check(context: dict[str, Any], members: int, waiting: int) -> str:
    """Why the digest is not what the store holds ("" when it is)."""
    collection = context.get("collection") or {}
    if collection.get("expected") != members:
        return f"collection expects {collection.get('expected')} members, not {members}"
    if sum(r["count"] for r in collection.get("regions", [])) + collection.get("done", 0) \
            != members:
        return "the collection's regions do not add up to the members"
    if len(context.get("awaiting", [])) != waiting:
        return f"{len(context.get('awaiting', []))} awaiting review listed, {waiting} in the store"
    return ""


async def measure(db: Database, sizes: tuple[int, ...], rounds: int, now: datetime
                  ) -> list[Size]:
    renderer = Renderer()
    async with db.transaction() as session:
        await sync_deadline(session, DeadlineKind.CUSTOM, None, now + timedelta(days=5),
                            "Collection", audience(roles=[RoleName.FOCAL_POINT]), now=now)
    await timed(db, lambda s: the_digest(s, renderer, now))  # warm-up: templates compiled
    await timed(db, floor_reads)
    results = []
    members = DEMO_MEMBERS
    for size in sizes:
        await add_members(db, size - members, now, submitted_every=SUBMITTED_EVERY)
        async with db.transaction() as session:
            members = int(await session.scalar(select(func.count()).select_from(Member)) or 0)
            waiting = int(await session.scalar(
                select(func.count()).select_from(NationalUpdate)
                .where(NationalUpdate.status == UpdateStatus.SUBMITTED)) or 0)
        got = Size(members)
        if members != size:
            got.problems.append(f"the store holds {members} members, not {size}")
        for r in range(rounds):
            for which in ("project", "baseline") if r % 2 == 0 else ("baseline", "project"):
                if which == "project":
                    seconds, count, context = await timed(
                        db, lambda s: the_digest(s, renderer, now))
                    got.project.append(seconds)
                    got.statements.append(count)
                    if problem := check(context, members, waiting):
                        got.problems.append(problem)
                else:
                    seconds, count, rows = await timed(db, floor_reads)
                    got.baseline.append(seconds)
                    got.baseline_statements.append(count)
                    if rows != members + waiting:
                        got.problems.append(f"the floor read {rows} rows, not "
                                            f"{members + waiting}")
        results.append(got)
    return results


def figures(backend: str, sizes: list[Size]) -> list[Figure]:
    out = []
    smallest = sizes[0]
    for size in sizes:
        trouble = "; ".join(sorted(set(size.problems)))
        steady = len(set(size.statements)) == 1
        statements = float(max(size.statements)) if size.statements and not trouble else None
        ms = statistics.median(size.project) * 1000 if size.project and not trouble else None
        base_ms = statistics.median(size.baseline) * 1000 if size.baseline else None
        per_member = f"; {ms / size.members * 1000:.0f} µs per member" if ms else ""
        out.append(Figure(
            BENCHMARK, f"weekly digest, {size.members:,} members ({backend}): time", ms,
            base_ms, "ms", "", None,
            f"median of {len(size.project)}; build_digest + the chat message (Telegram HTML) "
            f"+ the e-mail page, one transaction{per_member}; baseline: reading every member "
            f"and every update awaiting review (2 statements)"
            + (f"; FAILED: {trouble}" if trouble else "")))
        wanted = max(smallest.statements) if smallest.statements else None
        out.append(Figure(
            BENCHMARK, f"weekly digest, {size.members:,} members ({backend}): SQL statements",
            statements, None if wanted is None else float(wanted), "statements",
            f"= the count at {smallest.members:,} members",
            False if trouble else None if statements is None or wanted is None
            else statements == wanted and steady,
            f"before_cursor_execute count (on SQLite it includes the transaction's BEGIN "
            f"IMMEDIATE); the same in every round: {steady} "
            f"({sorted(set(size.statements))}); baseline: the count at {smallest.members:,}"
            + (f"; FAILED: {trouble}" if trouble else "")))
    return out


async def run(opts: Options) -> list[Figure]:
    sizes = QUICK_SIZES if opts.quick else SIZES
    assert "meetings" in EXTRA_SECTIONS  # importing `handlers` plugged the meetings section in
    rounds = max(opts.rounds, 1)
    now = datetime.now(UTC)
    out: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="digest-", dir=opts.workdir) as tmp:
        stores = [("SQLite", f"sqlite+aiosqlite:///{Path(tmp) / 'digest.db'}")]
        if opts.pg_url:
            stores.append(("PostgreSQL", opts.pg_url))
        for backend, url in stores:
            db = await demo_store(url, now)
            try:
                out += figures(backend, await measure(db, sizes, rounds, now))
            finally:
                await db.dispose()
    return out
