"""Reminders: what is due, to whom, and queuing each one exactly once.

Nothing is planned ahead in memory: at any moment `due_reminders(at=...)` derives from the
deadlines, the roster and the reminders already recorded what should go out now. `sweep`
records each decision as a `reminder` row (unique per deadline, person and offset, inserted or
skipped) and, for a reminder to send, its outbox row in the same transaction; the outbox then
sends it once. A crash before the commit loses nothing (the next sweep derives the same rows);
a crash after it duplicates nothing (the rows exist, the outbox owns the sending).

Escalation for an obligation of a member: its focal points are reminded at every offset, its
alternates from the 2-day reminder on (or at every offset while no focal point can be reached
or all are away); on the last day each secretariat officer gets the list of members still
missing. Only the latest due offset is sent; older ones are recorded as superseded, and
nothing goes out after the deadline.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from handlers.types import Choice, Outgoing
from messages import Renderer
from storage.deadlines import (
    ALTERNATES_FROM,
    OBLIGATIONS,
    SECRETARIAT_FROM,
    claim_run,
    country_code,
    is_working,
    next_working,
    offset_delta,
    owes,
    owing,
    send_time,
    useful_offsets,
    zone,
)
from storage.models import (
    ActionPoint,
    Chair,
    Deadline,
    DeadlineKind,
    Member,
    OutboxItem,
    Person,
    Reminder,
    RoleName,
)
from storage.upsert import insert_ignore

STALE_AFTER = timedelta(days=7)  # deadlines this long past still get their misses recorded
MEMBER_ROLES = (RoleName.FOCAL_POINT, RoleName.ALTERNATE)


@dataclass
class Roster:
    """Who is who, loaded once per sweep with a fixed number of queries."""

    people: dict[int, Person]
    members: dict[int, Member]
    focal: dict[int, list[Person]]
    alternates: dict[int, list[Person]]
    by_role: dict[str, list[Person]]
    chairs: dict[int, int]
    home: dict[int, Member] = field(default_factory=dict)  # a person's first member

    def troika(self, year: int) -> list[int]:
        return [self.chairs[y] for y in (year - 1, year, year + 1) if y in self.chairs]


async def load_roster(session: AsyncSession) -> Roster:
    people = {p.id: p for p in await session.scalars(select(Person).order_by(Person.id))}
    members = {m.id: m for m in await session.scalars(select(Member))}
    return await _roster(session, people, members)


async def roster_of(session: AsyncSession, person: Person) -> Roster:
    """The roster as far as one person's own obligations go: them, the members they speak
    for, the chairs. Enough to tell which deadlines concern them (`member_targets` within
    their members, `person_targets` holding them or not) without reading the whole Network:
    at 2,000 people `load_roster` held the event loop 0.4 s for each Slack App Home built,
    and a Slack fan-out's App Home refreshes starved every other send of the process."""
    members = {r.member.id: r.member for r in person.roles if r.member is not None}
    return await _roster(session, {person.id: person}, members)


async def _roster(session: AsyncSession, people: dict[int, Person],
                  members: dict[int, Member]) -> Roster:
    chairs = {c.year: c.member_id for c in await session.scalars(select(Chair))}
    focal: dict[int, list[Person]] = defaultdict(list)
    alternates: dict[int, list[Person]] = defaultdict(list)
    by_role: dict[str, list[Person]] = defaultdict(list)
    home: dict[int, Member] = {}
    for person in people.values():
        for role in sorted(person.roles, key=lambda r: (r.role, r.member_id or 0)):
            if role.member_id is not None and role.role == RoleName.FOCAL_POINT:
                focal[role.member_id].append(person)
            elif role.member_id is not None and role.role == RoleName.ALTERNATE:
                alternates[role.member_id].append(person)
            if person not in by_role[role.role]:
                by_role[role.role].append(person)
            if role.member_id is not None and role.member_id in members:
                home.setdefault(person.id, members[role.member_id])
    return Roster(people, members, focal, alternates, by_role, chairs, home)


@dataclass(frozen=True)
class Candidate:
    """One reminder decision: send it now, or record why not."""

    deadline: Deadline
    person: Person
    member: Member | None
    offset: str
    send_at: datetime
    status: str  # "due" or "skipped"
    reason: str = ""
    role: str = "person"  # focal_point, alternate, person, secretariat
    handed_over: bool = False  # an alternate reminded in place of an away focal point
    missing: tuple[Member, ...] = ()

    @property
    def key(self) -> tuple[int, int, str]:
        return (self.deadline.id, self.person.id, self.offset)

    @property
    def dedupe_key(self) -> str:
        return f"reminder:{self.deadline.id}:{self.person.id}:{self.offset}"


def is_away(person: Person, at: datetime) -> bool:
    return person.away_until is not None and \
        at.astimezone(zone(person.timezone)).date() <= person.away_until


def member_targets(deadline: Deadline, roster: Roster, at: datetime) -> list[int]:
    """The members an obligation is owed by (each reached through its own people)."""
    aud = deadline.audience
    ids = set(aud.get("members", ()))
    if aud.get("troika"):
        ids |= set(roster.troika(at.year))
    if aud.get("chair") and at.year in roster.chairs:
        ids.add(roster.chairs[at.year])
    if set(aud.get("roles", ())) & set(MEMBER_ROLES):
        ids |= set(roster.focal) | set(roster.alternates)
    return sorted(i for i in ids if i in roster.members)


def person_targets(deadline: Deadline, roster: Roster) -> list[Person]:
    aud = deadline.audience
    found = {pid: roster.people[pid] for pid in aud.get("persons", ()) if pid in roster.people}
    for role in set(aud.get("roles", ())) - set(MEMBER_ROLES):
        for person in roster.by_role.get(role, ()):
            found.setdefault(person.id, person)
    return [found[k] for k in sorted(found)]


def one_a_day(times: list[tuple[str, datetime]], tz: str) -> list[tuple[str, datetime]]:
    """At most one reminder a local day: an offset moved onto the day of a later one (a 2-day
    reminder pushed from Sunday to Monday, beside Monday's 1-day one) gives way to it."""
    kept: list[tuple[str, datetime]] = []
    days: set[object] = set()
    for offset, when in sorted(times, key=lambda x: x[1], reverse=True):
        day = when.astimezone(zone(tz)).date()
        if day not in days:
            days.add(day)
            kept.append((offset, when))
    return kept


class _Planner:
    def __init__(self, session: AsyncSession, roster: Roster, at: datetime,
                 recorded: set[tuple[int, int, str]]) -> None:
        self.session = session
        self.roster = roster
        self.at = at
        self.recorded = recorded
        self.out: list[Candidate] = []
        self._owes: dict[tuple[int, int | None, int | None], bool] = {}
        # deadline id -> its audience (members, persons), until the first question about it
        self._audiences: dict[int, tuple[list[int], list[int]]] = {}

    async def still_owes(self, deadline: Deadline, member_id: int | None,
                         person_id: int | None) -> bool:
        key = (deadline.id, member_id, person_id)
        audience = self._audiences.pop(deadline.id, None) if key not in self._owes else None
        if audience is not None:
            # The first reminder due for a deadline asks for its whole audience at once.
            members, persons = audience
            found = await owing(self.session, deadline, members, persons)
            if found is not None:
                self._owes.update({(deadline.id, m, None): m in found[0] for m in members})
                self._owes.update({(deadline.id, None, p): p in found[1] for p in persons})
        if key not in self._owes:
            self._owes[key] = await owes(self.session, deadline, member_id, person_id)
        return self._owes[key]

    def country(self, person: Person, member: Member | None) -> str | None:
        home = member or self.roster.home.get(person.id)
        return country_code(home.code) if home is not None and home.kind == "state" else None

    def latest_due(self, deadline: Deadline, person: Person, member: Member | None,
                   offsets: Sequence[str], prefix: str = ""
                   ) -> tuple[str, datetime] | None:
        """The latest offset due now for this person (older due ones are recorded superseded);
        None if nothing is due, or the person is in quiet time and can still be reached in
        working time before the deadline."""
        tz, country = person.timezone, self.country(person, member)
        times = one_a_day([(o, send_time(deadline.due_at, o, tz, country)) for o in offsets],
                          tz)
        due = [(o, t) for o, t in sorted(times, key=lambda x: x[1]) if t <= self.at]
        if not due:
            return None
        *older, (offset, when) = due
        for o, t in older:
            self.skip(deadline, person, member, prefix + o, t, "superseded")
        if (deadline.id, person.id, prefix + offset) in self.recorded:
            return None
        if self.at >= deadline.due_at:
            self.skip(deadline, person, member, prefix + offset, when, "deadline_passed")
            return None
        if not is_working(self.at, tz, country) and \
                next_working(self.at, tz, country) < deadline.due_at:
            return None  # caught up at night: it goes out in their next working morning
        return offset, when

    def skip(self, deadline: Deadline, person: Person, member: Member | None, offset: str,
             when: datetime, reason: str) -> None:
        if (deadline.id, person.id, offset) in self.recorded:
            return
        self.recorded.add((deadline.id, person.id, offset))
        self.out.append(Candidate(deadline, person, member, offset, when, "skipped", reason))

    async def remind(self, deadline: Deadline, person: Person, member: Member | None,
                     offsets: Sequence[str], role: str, handed_over: bool = False) -> None:
        if not offsets:
            return
        found = self.latest_due(deadline, person, member, offsets)
        if found is None:
            return
        offset, when = found
        if not await self.still_owes(deadline, member.id if member else None,
                                     None if member else person.id):
            self.skip(deadline, person, member, offset, when, "done")
            return
        self.recorded.add((deadline.id, person.id, offset))
        self.out.append(Candidate(deadline, person, member, offset, when, "due", role=role,
                                  handed_over=handed_over))

    def unavailable(self, deadline: Deadline, person: Person, member: Member | None,
                    offsets: Sequence[str], reason: str) -> None:
        found = self.latest_due(deadline, person, member, offsets)
        if found is not None:
            self.skip(deadline, person, member, found[0], found[1], reason)

    async def plan(self, deadline: Deadline) -> None:
        offsets = useful_offsets(deadline)
        late = [o for o in offsets if offset_delta(o) <= ALTERNATES_FROM]
        seen: set[int] = set()
        members = member_targets(deadline, self.roster, self.at)
        persons = person_targets(deadline, self.roster)
        self._audiences[deadline.id] = (members, [p.id for p in persons])
        # A meeting's roles say who may register: alternates are not told to register for a
        # meeting that only focal points may attend (they could not).
        alternates_act = (deadline.kind != DeadlineKind.MEETING_REGISTRATION
                          or RoleName.ALTERNATE in deadline.audience.get("roles", ()))
        for member_id in members:
            member = self.roster.members[member_id]
            fps = self.roster.focal.get(member_id, [])
            alts = [p for p in self.roster.alternates.get(member_id, [])
                    if p not in fps and alternates_act]
            # A focal point with no account yet is still reminded: the outbox keeps the
            # message until they link one (issue 9 hands unreachable people to alternates).
            present = [p for p in fps if not is_away(p, self.at)]
            for p in fps:
                if p not in present:
                    self.unavailable(deadline, p, member, offsets, "away")
                else:
                    await self.remind(deadline, p, member, offsets, "focal_point")
                seen.add(p.id)
            for p in alts:
                mine = late if present else offsets
                if is_away(p, self.at):
                    self.unavailable(deadline, p, member, mine, "away")
                else:
                    await self.remind(deadline, p, member, mine, "alternate",
                                      handed_over=not present and bool(fps))
                seen.add(p.id)
        for p in persons:
            if p.id in seen:
                continue
            if is_away(p, self.at):
                self.unavailable(deadline, p, None, offsets, "away")
            else:
                await self.remind(deadline, p, None, offsets, "person")
        if members:
            await self.still_missing(deadline, members, offsets)

    async def still_missing(self, deadline: Deadline, members: Sequence[int],
                            offsets: Sequence[str]) -> None:
        last_day = [o for o in offsets if offset_delta(o) <= SECRETARIAT_FROM]
        for person in self.roster.by_role.get(RoleName.SECRETARIAT, ()):
            found = self.latest_due(deadline, person, None, last_day, prefix="missing-")
            if found is None:
                continue
            offset, when = found
            missing: tuple[Member, ...] = ()
            for m in members:
                if await self.still_owes(deadline, m, None):
                    missing += (self.roster.members[m],)
            if not missing:
                self.skip(deadline, person, None, "missing-" + offset, when, "none_missing")
                continue
            self.recorded.add((deadline.id, person.id, "missing-" + offset))
            self.out.append(Candidate(deadline, person, None, "missing-" + offset, when, "due",
                                      role="secretariat", missing=missing))


async def due_reminders(session: AsyncSession, *, at: datetime,
                        roster: Roster | None = None) -> list[Candidate]:
    """Every reminder decision to take at `at` that is not recorded yet (reads only)."""
    roster = roster or await load_roster(session)
    deadlines = [d for d in await session.scalars(
        select(Deadline).where(Deadline.cancelled_at.is_(None),
                               Deadline.due_at > at - STALE_AFTER)
        .order_by(Deadline.due_at, Deadline.id)) if d.kind in OBLIGATIONS]
    recorded: set[tuple[int, int, str]] = set()
    if deadlines:
        recorded = {tuple(r) for r in await session.execute(  # type: ignore[misc]
            select(Reminder.deadline_id, Reminder.person_id, Reminder.offset)
            .where(Reminder.deadline_id.in_([d.id for d in deadlines])))}
    planner = _Planner(session, roster, at, recorded)
    for deadline in deadlines:
        await planner.plan(deadline)
    return planner.out


# kind -> the reminder a person reads, when a kind needs more than the generic one (a
# meeting's: venue or link, and the calendar file). Called in the sweep's transaction.
MessageFn = Callable[[AsyncSession, Candidate, Renderer], Awaitable[Outgoing]]
REMINDER_MESSAGES: dict[str, MessageFn] = {}


def reminder_message(c: Candidate, renderer: Renderer) -> Outgoing:
    """The reminder a person reads."""
    d = c.deadline
    done = renderer.render("deadlines.done_button", c.person.locale, "plain")
    if c.missing:
        return Outgoing("deadlines.still_missing", {
            "title": d.title, "due": d.due_at, "count": len(c.missing),
            "missing": [{"member": m.name, "region": m.region}
                        for m in sorted(c.missing, key=lambda m: (m.region, m.name))],
        }, private=True)
    choices: tuple[Choice, ...] = ()
    if d.kind == DeadlineKind.CUSTOM:
        choices = (Choice(f"/deadline done {d.id}", done),)
    elif d.kind == DeadlineKind.ACTION_POINT and d.ref_id is not None:
        choices = (Choice(f"/action done {d.ref_id}", done),)
    left = d.due_at - c.send_at
    return Outgoing("deadlines.reminder", {
        "title": d.title, "asks": d.asks, "due": d.due_at, "id": d.id, "kind": d.kind,
        "member": c.member.name if c.member else "", "role": c.role,
        "handed_over": c.handed_over, "days_left": max(left.days, 0),
        "hours_left": max(int(left.total_seconds() // 3600), 0),
        "offset": c.offset,
    }, choices=choices, private=True)


def _row(c: Candidate, now: datetime) -> dict[str, Any]:
    return {"deadline_id": c.deadline.id, "person_id": c.person.id,
            "member_id": c.member.id if c.member else None, "offset": c.offset,
            "status": "queued" if c.status == "due" else "skipped", "reason": c.reason,
            "send_at": c.send_at, "created_at": now,
            "dedupe_key": c.dedupe_key if c.status == "due" else None}


async def queue_outgoing(session: AsyncSession, items: Iterable[tuple[int, str, Outgoing]],
                         now: datetime) -> int:
    """Outbox rows (person id, dedupe key, message), as `ctx.notify` writes them (each in its
    person's lane: one unreachable person holds back nobody else); one per key."""
    rows = [{"person_id": pid, "dedupe_key": key, "message": msg.to_dict(), "created_at": now,
             "not_before": now, "attempts": 0, "last_error": "", "lane": f"person:{pid}"}
            for pid, key, msg in items]
    return len(await insert_ignore(session, OutboxItem, rows))


async def sweep(session: AsyncSession, *, at: datetime,
                renderer: Renderer | None = None) -> list[Candidate]:
    """Record every decision due at `at` and queue the reminders to send, in this transaction.

    Rows another instance recorded first (the unique constraint) are left to it.
    """
    candidates = await due_reminders(session, at=at)
    if not candidates:
        return []
    renderer = renderer or Renderer()
    by_key = {c.key: c for c in candidates}
    mine = await insert_ignore(session, Reminder, [_row(c, at) for c in candidates],
                               returning=("deadline_id", "person_id", "offset"))
    won = [by_key[(int(d), int(p), str(o))] for d, p, o in mine]
    items = []
    for c in won:
        if c.status == "due":
            build = REMINDER_MESSAGES.get(c.deadline.kind)
            message = (await build(session, c, renderer) if build and not c.missing
                       else reminder_message(c, renderer))
            items.append((c.person.id, c.dedupe_key, message))
    await queue_outgoing(session, items, at)
    return won


# -- the troika changes on 1 January ------------------------------------------------------

HEADS_UP_UNTIL_DAY = 15  # a heads-up missed while down still goes out in the first half of January


async def troika_heads_up(session: AsyncSession, *, at: datetime, by: str) -> int:
    """Tell the outgoing and incoming troika and the secretariat who leaves, who joins and
    what is open; once a year whichever instance gets there first. Returns messages queued."""
    year = at.year
    if at.month != 1 or at.day > HEADS_UP_UNTIL_DAY:
        return 0
    roster = await load_roster(session)
    old, new = roster.troika(year - 1), roster.troika(year)
    if not new or not await claim_run(session, "troika-heads-up", str(year), by=by, now=at):
        return 0
    open_points = list(await session.scalars(
        select(ActionPoint).where(ActionPoint.status == "open",
                                  ActionPoint.owner.in_(("troika", "chair")))
        .order_by(ActionPoint.due_at, ActionPoint.id)))
    name = roster.members
    message = Outgoing("deadlines.troika_heads_up", {
        "year": year,
        "leaving": [name[m].name for m in old if m not in new],
        "joining": [name[m].name for m in new if m not in old],
        "troika": [name[m].name for m in new],
        "open": [{"id": a.id, "text": a.text, "due": a.due_at} for a in open_points],
    })
    people: dict[int, Person] = {}
    for member_id in {*old, *new}:
        for person in roster.focal.get(member_id, []):
            people.setdefault(person.id, person)
    for person in roster.by_role.get(RoleName.SECRETARIAT, ()):
        people.setdefault(person.id, person)
    return await queue_outgoing(
        session, [(pid, f"troika-heads-up:{year}:{pid}", message) for pid in sorted(people)], at)


async def reminders_sent(session: AsyncSession, since: datetime) -> list[tuple[Reminder, Person,
                                                                               Deadline]]:
    """Reminder decisions recorded since `since`, oldest first."""
    rows = await session.execute(
        select(Reminder, Person, Deadline)
        .join(Person, Person.id == Reminder.person_id)
        .join(Deadline, Deadline.id == Reminder.deadline_id)
        .where(Reminder.created_at >= since)
        .order_by(Reminder.created_at, Reminder.id))
    return [(r, p, d) for r, p, d in rows]
