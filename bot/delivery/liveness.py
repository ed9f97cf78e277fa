"""Instance liveness: who is running, so that claims die with their holder.

Every running process (an *instance*) has a row in `instance` that it renews every `beat`
seconds (its `beats` counter goes up) and deletes on a clean stop. A claim on an inbox item or
an outbox row names its instance and counts only while that row exists.

An instance is found dead, and its row deleted (freeing its claims), when

- it ran on this host and its process is gone, or had our pid without being one of ours (a
  `kill -9` then a restart, even in a container, is taken over at once), or
- its `beats` counter has not moved for `stale` seconds of *our* monotonic clock.

Wall-clock time is never compared, so a clock jump on any machine kills nobody. An instance
whose row was deleted while it still runs (its heartbeat stalled) notices at its next beat and
carries on under a new id: the claims of its old id are no longer its own, and the sender
checks its claim right before each send.

For the scheduler (issue 12): `is_leader()` is true in exactly one live instance (the oldest)
once the instances agree on who is alive; a cron job runs where it is true, and writes its
outbox rows under a `dedupe_key` of the job and its time slot, so that even two leaders during
a hand-over send each message once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import delete, insert, select, update

from bot.delivery.stopping import finish
from handlers.clock import Clock
from handlers.dispatch import STORE_ERRORS
from storage.db import Database
from storage.models import Instance

log = logging.getLogger(__name__)

BEAT = 5.0  # seconds between heartbeats
STALE = 15.0  # seconds without a heartbeat after which an instance is dead


# Instances alive in this very process (several run side by side in tests).
_HERE: set[str] = set()


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@dataclass
class _Seen:
    beats: int
    since: float  # our monotonic time when `beats` last changed


@dataclass
class Liveness:
    """This process's heartbeat, and its view of which other instances are alive."""

    db: Database
    clock: Clock
    beat: float = BEAT
    stale: float = STALE
    polls: str = ""
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    host: str = field(default_factory=socket.gethostname)

    def __post_init__(self) -> None:
        self.pid = os.getpid()
        # The real time, not the (possibly frozen) injected clock: it orders the instances.
        self.started = datetime.now(UTC)
        self.last_beat = 0.0  # monotonic time of our last heartbeat that reached the store
        self._seen: dict[str, _Seen] = {}
        self._task: asyncio.Task[None] | None = None
        self._checking: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._paused = False
        self.registered = False
        # Called after each heartbeat (the app checks that the store is still its own).
        self.on_beat: list[Callable[[], Awaitable[object]]] = []

    # -- our own row ----------------------------------------------------------------------
    async def start(self) -> None:
        """Register this instance and keep its heartbeat going."""
        await self.register()
        self._stop.clear()
        self._task = asyncio.create_task(self._heartbeat(), name="heartbeat")

    async def register(self) -> None:
        now = self.clock.now()
        async with self.db.transaction() as session:
            await session.execute(insert(Instance).values(
                id=self.id, host=self.host[:255], pid=self.pid, started_at=self.started,
                heartbeat_at=now, beats=0, polls=self.polls))
        self.registered = True
        _HERE.add(self.id)
        self.last_beat = time.monotonic()

    async def stop(self, grace: float = 10.0) -> None:
        """Stop the heartbeat (after the beat in hand) and remove our row: our claims are
        free at once."""
        self._stop.set()
        await finish([self._task, self._checking], grace)
        self._task = self._checking = None
        if self.registered:
            with contextlib.suppress(*STORE_ERRORS):
                async with self.db.transaction() as session:
                    await session.execute(delete(Instance).where(Instance.id == self.id))
            self.registered = False
        _HERE.discard(self.id)

    def pause(self, paused: bool = True) -> None:
        """Stop (or resume) renewing the heartbeat while running (tests of a stalled holder)."""
        self._paused = paused

    async def beat_once(self) -> None:
        """Renew our row; if another instance found us dead, carry on under a new id."""
        async with self.db.transaction() as session:
            result = await session.execute(
                update(Instance).where(Instance.id == self.id)
                .values(beats=Instance.beats + 1, heartbeat_at=self.clock.now()))
        if not getattr(result, "rowcount", 0):
            old = self.id
            _HERE.discard(old)
            self.id = uuid.uuid4().hex
            log.warning("this instance was taken for dead (heartbeat stalled); its claims went "
                        "to others; carrying on as a new instance (%s, was %s)", self.id[:8],
                        old[:8])
            await self.register()
            return
        self.last_beat = time.monotonic()

    async def _heartbeat(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.beat):  # not wait_for: see storage/db.py
                    await self._stop.wait()
            if self._stop.is_set():
                return
            if self._paused:
                continue
            try:
                await self.beat_once()
                await self.reap()
            except STORE_ERRORS as exc:
                log.warning("heartbeat not recorded (store unavailable: %s)", type(exc).__name__)
            except Exception:
                log.exception("heartbeat failed")
            if self.on_beat and (self._checking is None or self._checking.done()):
                # beside the beat, never in its way: a check waits on the busy store
                self._checking = asyncio.create_task(self._checks(), name="heartbeat-checks")

    async def _checks(self) -> None:
        for check in self.on_beat:
            try:
                await check()
            except Exception:
                log.exception("a check after the heartbeat failed")

    def fresh(self) -> bool:
        """Whether our own claims still hold: our last heartbeat is recent enough that nobody
        may have found us dead (with a margin for the send that follows)."""
        return self.registered and not self._paused and (
            time.monotonic() - self.last_beat < self.stale - self.beat)

    # -- the others ----------------------------------------------------------------------
    async def reap(self) -> list[str]:
        """Delete the rows of instances found dead; returns their ids."""
        now = time.monotonic()
        async with self.db.transaction() as session:
            rows = (await session.execute(
                select(Instance.id, Instance.host, Instance.pid, Instance.beats))).all()
        dead: list[str] = []
        present = set()
        for row in rows:
            present.add(row.id)
            if row.id == self.id:
                continue
            here = row.host == self.host
            if here and ((row.pid == self.pid and row.id not in _HERE) or _process_gone(row.pid)):
                dead.append(row.id)
                continue
            seen = self._seen.get(row.id)
            if seen is None or seen.beats != row.beats:
                self._seen[row.id] = _Seen(row.beats, now)
            elif now - seen.since >= self.stale:
                dead.append(row.id)
        for gone in set(self._seen) - present:
            del self._seen[gone]
        if dead:
            async with self.db.transaction() as session:
                await session.execute(delete(Instance).where(Instance.id.in_(dead)))
            for d in dead:
                self._seen.pop(d, None)
            log.info("%d instance(s) found dead; their work is taken over", len(dead))
        return dead

    async def others_alive(self, polls: str) -> bool:
        """Whether another live instance does `polls`: one whose heartbeat moves while we
        watch (a dead one is found dead, at once on this host, else within `stale` s)."""
        first: dict[str, int] | None = None
        while True:
            await self.reap()
            async with self.db.transaction() as session:
                rows = {r.id: r.beats for r in (await session.execute(
                    select(Instance.id, Instance.beats)
                    .where(Instance.polls == polls, Instance.id != self.id))).all()}
            if not rows:
                return False
            if first is None:
                first = rows
            elif any(first.get(i, b) != b for i, b in rows.items()):
                return True
            await asyncio.sleep(min(self.beat / 2, 1.0))

    async def claim_polling(self, polls: str) -> bool:
        """Become the one instance doing `polls`; False if another live instance does it."""
        if await self.others_alive(polls):
            return False
        self.polls = polls
        async with self.db.transaction() as session:
            await session.execute(update(Instance).where(Instance.id == self.id)
                                  .values(polls=polls))
        return True

    async def is_leader(self) -> bool:
        """True in the oldest live instance: the one that runs the cron jobs (issue 12)."""
        async with self.db.transaction() as session:
            first = await session.scalar(
                select(Instance.id).order_by(Instance.started_at, Instance.id).limit(1))
        return first == self.id
