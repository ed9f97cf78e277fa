"""Deadlines: every dated obligation in one table, who still owes it, and working time.

A deadline is created or moved by the code that owns the obligation (an edition, a meeting, an
action point, or the secretariat's own `/deadline new`) through `sync_deadline`. Whether someone
still owes it is asked of a small registry, `OBLIGATIONS`, one entry per kind; a kind with no
entry yet is never reminded.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import holidays
from holidays.registry import COUNTRIES
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import (
    ActionOwner,
    ActionPoint,
    Deadline,
    DeadlineDone,
    DeadlineKind,
    JobRun,
    Member,
    RoleName,
)
from storage.upsert import insert_ignore

DEFAULT_OFFSETS = ("7d", "2d", "1d", "morning")
MORNING = "morning"
ALTERNATES_FROM = timedelta(days=2)  # alternates join at the 2-day reminder
SECRETARIAT_FROM = timedelta(days=1)  # the last day: the secretariat sees who is missing
QUIET_FROM, QUIET_UNTIL = time(21, 0), time(8, 0)
WORKING_MORNING = time(9, 0)
_OFFSET = re.compile(r"^(\d{1,3})([dh])$")

# -- offsets ------------------------------------------------------------------------------


def parse_offsets(text: str) -> list[str]:
    """`"7d 2d 12h morning"` -> the offsets, largest first; ValueError names a bad one."""
    found: list[str] = []
    for word in text.replace(",", " ").lower().split():
        if word in ("morning", "morning-of", "0d"):
            word = MORNING
        elif not _OFFSET.match(word) or int(word[:-1]) == 0:
            raise ValueError(word)
        if word not in found:
            found.append(word)
    return sorted(found, key=offset_delta, reverse=True)


def offset_delta(offset: str) -> timedelta:
    """How long before the deadline an offset is (the morning of counts as none)."""
    if offset == MORNING:
        return timedelta(0)
    m = _OFFSET.match(offset)
    if m is None:
        raise ValueError(offset)
    n = int(m.group(1))
    return timedelta(days=n) if m.group(2) == "d" else timedelta(hours=n)


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def scheduled_at(due_at: datetime, offset: str, tz: str) -> datetime:
    """When an offset falls for someone in `tz`: days count on their wall clock (DST-safe)."""
    local = due_at.astimezone(zone(tz))
    if offset == MORNING:
        when = datetime.combine(local.date(), WORKING_MORNING, tzinfo=local.tzinfo)
    elif offset.endswith("d"):
        when = local - offset_delta(offset)  # aware arithmetic on one zone: wall-clock days
    else:
        return due_at - offset_delta(offset)
    return when.astimezone(due_at.tzinfo)


# -- working time -------------------------------------------------------------------------

COUNTRY_OVERRIDES = {"uae": "AE"}


@lru_cache(maxsize=256)
def country_code(member_code: str) -> str | None:
    """The ISO code `holidays` knows a member State by; None for regional organizations."""
    if member_code in COUNTRY_OVERRIDES:
        return COUNTRY_OVERRIDES[member_code]
    entry = COUNTRIES.get(member_code.replace("-", "_"))
    return entry[1] if entry else None


@lru_cache(maxsize=1024)
def _holidays(country: str, year: int) -> holidays.HolidayBase:
    return holidays.country_holidays(country, years=year)


def is_holiday(day: date, country: str | None) -> bool:
    return bool(country) and day in _holidays(country or "", day.year)


def is_working(at: datetime, tz: str, country: str | None) -> bool:
    """Working hours for someone: 08:00-21:00 local, Monday to Friday, not a public holiday."""
    local = at.astimezone(zone(tz))
    return (QUIET_UNTIL <= local.time() < QUIET_FROM and local.weekday() < 5
            and not is_holiday(local.date(), country))


def next_working(at: datetime, tz: str, country: str | None) -> datetime:
    """`at` if it is working time for the person, else their next working morning (09:00)."""
    if is_working(at, tz, country):
        return at
    z = zone(tz)
    local = at.astimezone(z)
    day = local.date() if local.time() < QUIET_UNTIL else local.date() + timedelta(days=1)
    for _ in range(40):
        candidate = datetime.combine(day, WORKING_MORNING, tzinfo=z)
        if candidate >= local and is_working(candidate, tz, country):
            return candidate.astimezone(at.tzinfo)
        day += timedelta(days=1)
    return at  # no working day in 40 (cannot happen with real calendars): do not hold it


def send_time(due_at: datetime, offset: str, tz: str, country: str | None) -> datetime:
    """When a reminder goes out: its offset moved to working time, unless that passes the
    deadline (then it keeps its own time: late at night beats never)."""
    planned = scheduled_at(due_at, offset, tz)
    moved = next_working(planned, tz, country)
    return moved if moved < due_at else planned


# -- time zones ---------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _zones() -> dict[str, str]:
    return {z.casefold(): z for z in available_timezones() if "/" in z or z == "UTC"}


def find_timezone(text: str) -> tuple[str | None, list[str]]:
    """The IANA zone meant by `text` (any case), or None and the closest names."""
    import difflib

    wanted = text.strip().replace(" ", "_").casefold()
    zones = _zones()
    if wanted in zones:
        return zones[wanted], []
    close = difflib.get_close_matches(wanted, list(zones), n=3, cutoff=0.6)
    if not close:  # a city alone: "berlin" -> Europe/Berlin
        close = [k for k in zones if k.rsplit("/", 1)[-1] == wanted][:3]
    return None, [zones[c] for c in close]


# -- the deadlines themselves ---------------------------------------------------------------


def audience(*, roles: Sequence[str] = (), members: Sequence[int] = (),
             persons: Sequence[int] = (), troika: bool = False, chair: bool = False
             ) -> dict[str, Any]:
    """The JSON form of who a deadline is for."""
    return {"roles": sorted(set(roles)), "members": sorted(set(members)),
            "persons": sorted(set(persons)), "troika": troika, "chair": chair}


async def sync_deadline(
    session: AsyncSession,
    kind: str,
    ref_id: int | None,
    due_at: datetime,
    title: str,
    audience: dict[str, Any],
    *,
    now: datetime,
    offsets: Sequence[str] | None = None,
    asks: str = "",
    created_by: int | None = None,
    is_demo: bool = False,
) -> Deadline:
    """Create the deadline of an obligation, or move it (one per kind and ref_id).

    Reminders already recorded stay as they are (an offset is never repeated for a new date);
    a moved deadline's other offsets follow the new date.
    """
    row = None
    if ref_id is not None:
        row = await session.scalar(
            select(Deadline).where(Deadline.kind == kind, Deadline.ref_id == ref_id)
            .with_for_update())
    if row is None:
        row = Deadline(kind=kind, ref_id=ref_id, created_at=now, created_by=created_by,
                       is_demo=is_demo)
        session.add(row)
    row.due_at = due_at
    row.title = title
    row.asks = asks
    row.audience = audience
    row.offsets = list(offsets if offsets is not None else DEFAULT_OFFSETS)
    row.cancelled_at = None
    await session.flush()
    return row


async def cancel_deadline(session: AsyncSession, kind: str, ref_id: int, now: datetime) -> None:
    """No more reminders for this obligation (an edition dropped, a meeting cancelled)."""
    row = await session.scalar(
        select(Deadline).where(Deadline.kind == kind, Deadline.ref_id == ref_id))
    if row is not None and row.cancelled_at is None:
        row.cancelled_at = now


def useful_offsets(deadline: Deadline) -> list[str]:
    """Offsets that still lay ahead when the deadline was set (a 7-day reminder of a deadline
    set 3 days ahead is never sent)."""
    return [o for o in deadline.offsets
            if scheduled_at(deadline.due_at, o, "UTC") > deadline.created_at]


# -- who still owes it ------------------------------------------------------------------------

# (session, deadline, member_id, person_id) -> whether they still owe it. Exactly one of
# member_id (an obligation of a member) and person_id (of one person) is given.
Owes = Callable[[AsyncSession, Deadline, int | None, int | None], Awaitable[bool]]
# (session, deadlines) -> {deadline id: ids of the members that have done it}: the digest's
# "not submitted" list in one query, whatever the number of members.
DoneMembers = Callable[[AsyncSession, Sequence[Deadline]], Awaitable[dict[int, set[int]]]]
# (session, deadline, member ids, person ids) -> (those members, those persons) that still owe
# it: `owes` for a whole audience in a statement or two, whatever its size (the reminder sweep
# of a deadline of 2,000 focal points asked 2,000 times before).
Owing = Callable[[AsyncSession, Deadline, Collection[int], Collection[int]],
                 Awaitable[tuple[set[int], set[int]]]]


@dataclass(frozen=True)
class Obligation:
    owes: Owes
    done_members: DoneMembers | None = None
    owing: Owing | None = None


OBLIGATIONS: dict[str, Obligation] = {}


def register_obligation(kind: str, owes: Owes, done_members: DoneMembers | None = None,
                        owing: Owing | None = None) -> None:
    """Say how to tell who still owes a deadline of `kind` (editions, meetings plug in here);
    `owing`, when given, answers `owes` for many at once and must agree with it."""
    OBLIGATIONS[kind] = Obligation(owes, done_members, owing)


async def owes(session: AsyncSession, deadline: Deadline, member_id: int | None,
               person_id: int | None) -> bool:
    obligation = OBLIGATIONS.get(deadline.kind)
    if obligation is None:
        return False
    return await obligation.owes(session, deadline, member_id, person_id)


async def owing(session: AsyncSession, deadline: Deadline, member_ids: Collection[int],
                person_ids: Collection[int]) -> tuple[set[int], set[int]] | None:
    """The members and the persons among those given that still owe `deadline`, or None when
    its kind can only be asked one at a time (`owes`)."""
    obligation = OBLIGATIONS.get(deadline.kind)
    if obligation is None:
        return set(), set()
    if obligation.owing is None:
        return None
    return await obligation.owing(session, deadline, member_ids, person_ids)


async def _custom_owes(session: AsyncSession, deadline: Deadline, member_id: int | None,
                       person_id: int | None) -> bool:
    done = select(DeadlineDone.id).where(DeadlineDone.deadline_id == deadline.id)
    done = (done.where(DeadlineDone.member_id == member_id) if member_id is not None
            else done.where(DeadlineDone.person_id == person_id))
    return await session.scalar(done.limit(1)) is None


async def _custom_owing(session: AsyncSession, deadline: Deadline, member_ids: Collection[int],
                        person_ids: Collection[int]) -> tuple[set[int], set[int]]:
    done_members: set[int] = set()
    done_persons: set[int] = set()
    rows = await session.execute(select(DeadlineDone.member_id, DeadlineDone.person_id)
                                 .where(DeadlineDone.deadline_id == deadline.id))
    for member_id, person_id in rows:
        if member_id is not None:
            done_members.add(member_id)
        if person_id is not None:
            done_persons.add(person_id)
    return set(member_ids) - done_members, set(person_ids) - done_persons


async def _custom_done(session: AsyncSession,
                       deadlines: Sequence[Deadline]) -> dict[int, set[int]]:
    found: dict[int, set[int]] = {d.id: set() for d in deadlines}
    rows = await session.execute(
        select(DeadlineDone.deadline_id, DeadlineDone.member_id)
        .where(DeadlineDone.deadline_id.in_([d.id for d in deadlines]),
               DeadlineDone.member_id.is_not(None)))
    for deadline_id, member_id in rows:
        if member_id is not None:
            found[deadline_id].add(member_id)
    return found


async def _action_owes(session: AsyncSession, deadline: Deadline, member_id: int | None,
                       person_id: int | None) -> bool:
    status = await session.scalar(select(ActionPoint.status)
                                  .where(ActionPoint.id == deadline.ref_id))
    return status == "open"


async def _action_owing(session: AsyncSession, deadline: Deadline, member_ids: Collection[int],
                        person_ids: Collection[int]) -> tuple[set[int], set[int]]:
    """Everyone or nobody: the action point is open or it is not."""
    if await _action_owes(session, deadline, None, None):
        return set(member_ids), set(person_ids)
    return set(), set()


async def _action_done(session: AsyncSession,
                       deadlines: Sequence[Deadline]) -> dict[int, set[int]]:
    """An action point is done for everyone at once: every member, or none."""
    refs = {d.ref_id: d.id for d in deadlines}
    done = set(await session.scalars(select(ActionPoint.id).where(
        ActionPoint.id.in_([r for r in refs if r is not None]), ActionPoint.status == "done")))
    members = set(await session.scalars(select(Member.id))) if done else set()
    return {d.id: (members if d.ref_id in done else set()) for d in deadlines}


register_obligation(DeadlineKind.CUSTOM, _custom_owes, _custom_done, _custom_owing)
register_obligation(DeadlineKind.ACTION_POINT, _action_owes, _action_done, _action_owing)


async def mark_done(session: AsyncSession, deadline: Deadline, *, member_id: int | None,
                    person_id: int | None, by: int | None, now: datetime) -> bool:
    """Record that a member (or a person) did what a custom deadline asks; False if already."""
    if await _custom_owes(session, deadline, member_id, person_id) is False:
        return False
    session.add(DeadlineDone(deadline_id=deadline.id, member_id=member_id,
                             person_id=None if member_id is not None else person_id,
                             done_by=by, done_at=now))
    await session.flush()
    return True


def action_audience(owner: str, member_id: int | None) -> dict[str, Any]:
    """Who an action point's reminders go to, from its owner."""
    return {
        ActionOwner.SECRETARIAT: audience(roles=[RoleName.SECRETARIAT]),
        ActionOwner.TROIKA: audience(troika=True),
        ActionOwner.CHAIR: audience(chair=True),
        ActionOwner.FOCAL_POINTS: audience(roles=[RoleName.FOCAL_POINT]),
        ActionOwner.MEMBER: audience(members=[member_id] if member_id else []),
    }[ActionOwner(owner)]


async def add_action_point(session: AsyncSession, *, text: str, owner: str, member_id: int | None,
                           due_at: datetime | None, meeting: str, now: datetime,
                           created_by: int | None = None, is_demo: bool = False,
                           status: str = "open") -> ActionPoint:
    """Record an action point and, when it has a due date, its deadline."""
    a = ActionPoint(text=text, meeting=meeting, owner=owner, owner_member_id=member_id,
                    due_at=due_at, status=status, created_by=created_by, created_at=now,
                    is_demo=is_demo)
    session.add(a)
    await session.flush()
    if due_at is not None:
        title = text if len(text) <= 200 else text[:197] + "..."
        await sync_deadline(session, DeadlineKind.ACTION_POINT, a.id, due_at, title,
                            action_audience(owner, member_id), now=now, is_demo=is_demo,
                            created_by=created_by)
    return a



# -- one run per period ---------------------------------------------------------------------


async def claim_run(session: AsyncSession, job: str, period: str, *, by: str,
                    now: datetime) -> bool:
    """Insert-or-skip the run of `job` for `period`: True for the one caller that inserted it."""
    inserted = await insert_ignore(session, JobRun, [
        {"job": job, "period": period, "claimed_by": by, "claimed_at": now}])
    return bool(inserted)


# -- demo data ------------------------------------------------------------------------------

SUMMARY_2017_09_21 = "Second meeting of the Network, New York, 21 September 2017"
# The key action points of the Chair's summary of 21 September 2017 (A/72/548-S/2017/893):
# (text, owner, due, done). Owners as the summary names them; "Network to ..." and "Secretariat
# and focal points to ..." are the secretariat's to drive.
SUMMARY_ACTION_POINTS: tuple[tuple[str, str, date | None, bool], ...] = (
    ("Increase efforts to nominate gender focal points among national police services, to "
     "share best practices and deploy female police officers to peacekeeping operations",
     "focal_points", None, False),
    ("Nominate a minimum of 20 per cent female police officers", "focal_points", None, False),
    ("Review deployment processes and revise criteria and procedures that may have negative "
     "effects on women", "focal_points", None, False),
    ("Produce and disseminate a regular newsletter", "secretariat", None, False),
    ("Draft, in coordination with the Chair and the other two members of the Presidency, "
     "operational guidelines on the functioning of the Network", "secretariat",
     date(2017, 12, 31), True),
    ("Serve as an observatory and information hub for members to access data, policies, laws "
     "and best practices of other countries", "secretariat", None, False),
    ("Disseminate information about upcoming events (senior-level military network in "
     "Vancouver; regional meeting on NAPs of Western Balkan countries; launch of the Global "
     "Women, Peace and Security Index)", "secretariat", None, False),
    ("Disseminate knowledge products to the Network (gender equality in peacekeeping training "
     "and peace processes; Global Women, Peace and Security Index)", "secretariat", None, False),
    ("Include civil society organizations among the Network's members", "secretariat", None,
     False),
    ("Facilitate the participation of non-governmental organizations in the next meeting of "
     "the Network in Berlin (secretariat and focal points)", "secretariat", None, False),
    ("Facilitate the participation of grassroots-level women leaders in the next meeting of "
     "the Network in Berlin (secretariat and focal points)", "secretariat", None, False),
    ("Explore innovative funding models for civil society organizations working on the "
     "frontline of conflict prevention and countering violent extremism (secretariat and "
     "focal points)", "secretariat", None, False),
    ("Liaise with other national and regional initiatives", "secretariat", None, False),
    ("Establish links with other civil society initiatives (NGO Working Group on Women, Peace "
     "and Security; Pan-African Women's Organization)", "secretariat", None, False),
    ("Plan the creation of a network of female peacekeepers", "troika", None, False),
)
DEMO_CHAIRS = ("namibia", "chile", "germany")  # year before, year of and year after loading
DEMO_DEADLINE = "Contributions to the next newsletter (demo)"


def _at_five(day: date) -> datetime:
    return datetime.combine(day, time(17, 0), tzinfo=ZoneInfo("UTC"))


async def load_demo_chairs(session: AsyncSession, now: datetime) -> None:
    """Demo chairs (marked demo) for last year, this year and next year where no real chair
    is recorded, so a newcomer sees a current troika; safe to run again."""
    from storage.models import Chair

    codes = {m.code: m for m in await session.scalars(select(Member))}
    chairs = set(await session.scalars(select(Chair.year)))
    for year, code in zip((now.year - 1, now.year, now.year + 1), DEMO_CHAIRS, strict=True):
        if year not in chairs and code in codes:
            session.add(Chair(year=year, member_id=codes[code].id, is_demo=True))
    await session.flush()


async def load_demo_deadlines(session: AsyncSession, now: datetime) -> None:
    """The 2017 action points and demo deadlines in the coming weeks, so a newcomer sees the
    troika's reminders; safe to run again."""
    codes = {m.code: m for m in await session.scalars(select(Member))}
    if await session.scalar(select(ActionPoint.id).where(
            ActionPoint.meeting == SUMMARY_2017_09_21).limit(1)) is None:
        for text, owner, due, done in SUMMARY_ACTION_POINTS:
            await add_action_point(session, text=text, owner=owner, member_id=None,
                                   due_at=_at_five(due) if due else None,
                                   meeting=SUMMARY_2017_09_21, now=now,
                                   status="done" if done else "open")
    # The demo's newsletter deadline is edition 1's own (storage/edition_demo.py); a custom
    # one stands in only when the demo has no edition (the tests' smaller demo).
    edition_due = await session.scalar(select(Deadline.id).where(
        Deadline.kind == DeadlineKind.EDITION_SUBMISSION).limit(1))
    if await session.scalar(select(Deadline.id).where(Deadline.title == DEMO_DEADLINE)) is None \
            and edition_due is None:
        d = await sync_deadline(
            session, DeadlineKind.CUSTOM, None, _at_five(now.date() + timedelta(days=10)),
            DEMO_DEADLINE, audience(roles=[RoleName.FOCAL_POINT]), now=now, is_demo=True,
            asks="Send your national updates for the next edition with /update, then "
                 "/deadline done with this deadline's number.")
        if "spain" in codes:
            await mark_done(session, d, member_id=codes["spain"].id, person_id=None, by=None,
                            now=now)
    if await session.scalar(select(ActionPoint.id).where(
            ActionPoint.meeting == "Troika call (demo)").limit(1)) is None:
        today = now.date()
        for text, owner, days in (
            ("Share the draft agenda of the next annual meeting with the troika (demo)",
             "secretariat", 6),
            ("Confirm the venue and dates of the next annual meeting (demo)", "chair", 12),
            ("Send the secretariat a short update on your national action plan (demo)",
             "focal_points", 20),
        ):
            await add_action_point(session, text=text, owner=owner, member_id=None,
                                   due_at=_at_five(today + timedelta(days=days)),
                                   meeting="Troika call (demo)", now=now, is_demo=True)


# -- the obligations other modules own: imported here so that whoever sweeps knows them -------
import storage.edition_deadlines  # noqa: E402, F401
import storage.meeting_deadlines  # noqa: E402, F401
