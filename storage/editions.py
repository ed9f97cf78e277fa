"""Newsletter editions: which approved update versions each holds, its spotlight, its drafts.

What may enter an edition is decided here, once: approved (or, once the edition is out,
published) updates assigned to it. Network-only items never enter a public edition; nothing
submitted, withdrawn or rejected ever does.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    Row,
    Text,
    and_,
    bindparam,
    case,
    cast,
    func,
    null,
    select,
    union_all,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import (
    Edition,
    EditionStatus,
    Meeting,
    MeetingStatus,
    Member,
    NapHistory,
    NapStage,
    NapStatus,
    NationalUpdate,
    NewsletterDraft,
    Spotlight,
    UpdateAttachment,
    UpdateStatus,
    Visibility,
)

IN_EDITION = (UpdateStatus.APPROVED, UpdateStatus.PUBLISHED)
PENDING = (UpdateStatus.SUBMITTED, UpdateStatus.CHANGES_REQUESTED)


async def by_number(session: AsyncSession, number: int) -> Edition | None:
    return await session.scalar(select(Edition).where(Edition.number == number))


async def collecting(session: AsyncSession) -> Edition | None:
    """The edition approved updates go to: the collecting one that closes first."""
    return await session.scalar(
        select(Edition).where(Edition.status == EditionStatus.COLLECTING)
        .order_by(Edition.submission_deadline, Edition.number).limit(1))


async def current(session: AsyncSession) -> Edition | None:
    """The edition `/newsletter` means without a number: collecting, else the latest unpublished."""
    found = await collecting(session)
    if found is not None:
        return found
    return await session.scalar(
        select(Edition).where(Edition.status != EditionStatus.PUBLISHED)
        .order_by(Edition.number.desc()).limit(1))


async def all_editions(session: AsyncSession, *, published: bool | None = None) -> list[Edition]:
    stmt = select(Edition).order_by(Edition.number.desc())
    if published is True:
        stmt = stmt.where(Edition.status == EditionStatus.PUBLISHED)
    elif published is False:
        stmt = stmt.where(Edition.status != EditionStatus.PUBLISHED)
    return list(await session.scalars(stmt))


async def next_number(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.coalesce(func.max(Edition.number), 0))) or 0) + 1


async def create(session: AsyncSession, *, title: str, period_start: date, period_end: date,
                 language: str, submission_deadline: datetime, planned_publication: date,
                 now: datetime, by: int | None) -> Edition:
    edition = Edition(number=await next_number(session), title=title,
                      period_start=period_start, period_end=period_end, language=language,
                      submission_deadline=submission_deadline,
                      planned_publication=planned_publication,
                      status=EditionStatus.COLLECTING, created_at=now, created_by=by)
    session.add(edition)
    await session.flush()
    return edition


def _held(edition_id: Any, *, public: bool = True) -> Any:
    """What an edition holds: its approved (or published) updates; `public` leaves out the
    network-only ones. `edition_id`: a value or a bound parameter."""
    u = NationalUpdate.__table__.c
    held = and_(u.edition_id == edition_id, u.status.in_([s.value for s in IN_EDITION]))
    return and_(held, u.visibility != Visibility.NETWORK) if public else held


async def items(session: AsyncSession, edition_id: int, *, public: bool = True
                ) -> list[NationalUpdate]:
    """The updates an edition holds; `public` leaves out network-only ones."""
    return list(await session.scalars(
        select(NationalUpdate).where(_held(edition_id, public=public))
        .order_by(NationalUpdate.id)))


@dataclass(slots=True)
class DraftItem:
    """An update as a draft shows it: its fields and its member's name, no ORM object. Not
    frozen: a frozen dataclass sets each field through `object.__setattr__` (1.3 µs an item
    against 0.2, a fifth of `draft_items`' own work), and its lists are filled after it is
    made anyway."""

    id: int
    version: int
    title: str
    body: str
    links: list[Any]
    visibility: str
    category: str
    organisation: str
    member_id: int | None
    source: str  # its member's name, or the organisation of a civil society voice
    section: str
    files: list[str]


@contextlib.contextmanager
def building() -> Iterator[None]:
    """A stretch of code that builds many objects that all live on (a draft's items): run
    without the cyclic garbage collector, which otherwise walked them again and again as they
    piled up (a 20,000-item compile spent 44% of its time collecting, and grew faster than
    its items). Only around code that never awaits: nothing else runs meanwhile, and garbage
    made here is collected at the next collection after."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _draft_rows() -> Any:
    """The statement `draft_items` runs, built once: every public item of an edition with its
    member's name and its attachments' names (a row per attachment, one for an item without),
    in the order the items were submitted. Its links come as their JSON text, for
    `draft_items` to decode."""
    u, a, m = NationalUpdate.__table__.c, UpdateAttachment.__table__.c, Member.__table__.c
    joined = (NationalUpdate.__table__
              .outerjoin(Member.__table__, m.id == u.member_id)
              .outerjoin(UpdateAttachment.__table__, a.update_id == u.id))
    return (select(u.id, u.version, u.title, u.body, cast(u.links, Text), u.visibility, u.category,
                   u.organisation, u.member_id, m.name, u.section, a.name)
            .select_from(joined).where(_held(bindparam("edition_id")))
            .order_by(u.submitted_at, u.id, a.id))


_DRAFT_ROWS = _draft_rows()


async def draft_items(session: AsyncSession, edition_id: int) -> list[DraftItem]:
    """The public items of an edition, as plain values, in one statement whatever its size,
    in the order they were submitted. A draft of 20,000 items reads no ORM object (Core
    columns, plain rows): building those was most of a compile's time. The items' links are
    decoded in one `json.loads` for them all (the JSON column's type decoded each row's on its
    own: a fifth of the statement's time)."""
    items: list[DraftItem] = []
    links: list[str] = []
    last: DraftItem | None = None
    rows = await session.execute(_DRAFT_ROWS, {"edition_id": edition_id})
    with building():
        for (id_, version, title, body, links_json, visibility, category, organisation,
             member_id, member_name, section, file_name) in rows:
            if last is None or last.id != id_:
                last = DraftItem(id_, version, title, body, [], visibility, category,
                                 organisation, member_id,
                                 organisation if member_id is None else member_name, section,
                                 [])
                items.append(last)
                links.append(links_json)
            if file_name is not None:
                last.files.append(file_name)
        for item, its_links in zip(items, json.loads(f"[{','.join(links)}]"), strict=True):
            item.links.extend(its_links)
    return items


async def members_with_material(session: AsyncSession, edition_id: int) -> list[Member]:
    """The members with an attributed (not Chatham House) public item in the edition."""
    return list(await session.scalars(
        select(Member).where(Member.id.in_(
            select(NationalUpdate.__table__.c.member_id)
            .where(_held(edition_id), NationalUpdate.member_id.is_not(None),
                   NationalUpdate.visibility != Visibility.CHATHAM)))
        .order_by(Member.name, Member.id)))


async def counts(session: AsyncSession, edition_ids: list[int], *,
                 network: bool = False) -> dict[int, int]:
    """How many public items each edition holds; `network`: how many network-only ones."""
    if not edition_ids:
        return {}
    shown = (NationalUpdate.visibility == Visibility.NETWORK if network
             else NationalUpdate.visibility != Visibility.NETWORK)
    rows = await session.execute(
        select(NationalUpdate.edition_id, func.count())
        .where(NationalUpdate.edition_id.in_(edition_ids),
               NationalUpdate.status.in_([s.value for s in IN_EDITION]), shown)
        .group_by(NationalUpdate.edition_id))
    return {int(e): int(n) for e, n in rows if e is not None}


async def has_submitted(session: AsyncSession, edition_id: int, member_id: int) -> bool:
    """Whether a member has sent something for this edition (for the deadline reminders).

    True when an update of the member is in the edition, or is still waiting for review and
    was filed before the edition's submission deadline (it goes in once approved).
    """
    edition = await session.get(Edition, edition_id)
    if edition is None:
        return False
    in_it = (NationalUpdate.edition_id == edition_id) & NationalUpdate.status.in_(
        [s.value for s in IN_EDITION])
    waiting = (NationalUpdate.status.in_([s.value for s in PENDING])
               & (NationalUpdate.submitted_at <= edition.submission_deadline))
    found = await session.scalar(
        select(NationalUpdate.id).where(NationalUpdate.member_id == member_id, in_it | waiting)
        .limit(1))
    return found is not None


async def assign(session: AsyncSession, update_id: int, edition_id: int | None) -> None:
    """Put an update in an edition (None: take it out)."""
    await session.execute(update(NationalUpdate).where(NationalUpdate.id == update_id)
                          .values(edition_id=edition_id))


async def set_section(session: AsyncSession, update_id: int, section: str) -> None:
    await session.execute(update(NationalUpdate).where(NationalUpdate.id == update_id)
                          .values(section=section))


# -- spotlight ------------------------------------------------------------------------------
_SPOTLIGHT = select(Spotlight).where(Spotlight.edition_id == bindparam("edition_id"))


async def spotlight_of(session: AsyncSession, edition_id: int) -> Spotlight | None:
    return await session.scalar(_SPOTLIGHT, {"edition_id": edition_id})


async def choose_spotlight(session: AsyncSession, edition_id: int, member_id: int, *,
                           now: datetime, by: int | None) -> Spotlight:
    row = await spotlight_of(session, edition_id)
    if row is None:
        row = Spotlight(edition_id=edition_id, member_id=member_id, chosen_by=by, chosen_at=now)
        session.add(row)
    else:
        row.member_id, row.chosen_by, row.chosen_at = member_id, by, now
    await session.flush()
    await session.refresh(row, ["member"])
    return row


async def featured(session: AsyncSession) -> list[tuple[Member, datetime]]:
    """Every published spotlight: who was featured when, oldest first."""
    rows = await session.execute(
        select(Member, Spotlight.featured_at).join(Spotlight, Spotlight.member_id == Member.id)
        .where(Spotlight.featured_at.is_not(None)).order_by(Spotlight.featured_at))
    return [(m, at) for m, at in rows if at is not None]


async def default_spotlight(session: AsyncSession, candidates: list[Member]) -> Member | None:
    """The member longest without a spotlight, from the region longest without one.

    Candidates are the members with attributed material in the edition. Never featured counts
    as longest; ties go alphabetically, so the choice is stable from draft to draft.
    """
    if not candidates:
        return None
    last_member: dict[int, datetime] = {}
    last_region: dict[str, datetime] = {}
    for member, at in await featured(session):
        last_member[member.id] = at
        last_region[member.region] = at
    never = datetime.min

    def key(m: Member) -> tuple[bool, datetime, bool, datetime, str]:
        region_at, member_at = last_region.get(m.region), last_member.get(m.id)
        return (region_at is not None, region_at or never,
                member_at is not None, member_at or never, m.name)

    return min(candidates, key=key)


# -- NAP progress ---------------------------------------------------------------------------
@dataclass(frozen=True, order=True)
class RegionTotal:
    region: str
    members: int
    adopted: int
    developing: int


@dataclass(frozen=True, slots=True)
class NapChange:
    """A member's NAP as a change recorded it: the member's name, when, and the plan's stage."""

    member: str
    changed_at: datetime
    stage: str
    plan_number: int | None
    year_adopted: int | None


def _nap_progress() -> Any:
    """The statement `nap_progress` runs, built once: the changes recorded in a period and the
    totals per region, in one trip to the database (there were two). A change's row: its
    member's name and id, the plan's number and year, its stage, when, its id. A region's:
    its name, members, adopted and in-development NAPs, and NULL for the rest."""
    m, s, h = Member.__table__.c, NapStatus.__table__.c, NapHistory.__table__.c
    changes = (select(m.name, h.member_id, h.plan_number, h.year_adopted, h.stage, h.changed_at,
                      h.id)
               .join_from(NapHistory.__table__, Member.__table__, m.id == h.member_id)
               .where(h.changed_at >= bindparam("start", type_=h.changed_at.type),
                      h.changed_at < bindparam("end", type_=h.changed_at.type)))
    totals = (select(m.region, func.count(), func.count(case((s.stage == NapStage.ADOPTED, 1))),
                     func.count(case((s.stage == NapStage.IN_DEVELOPMENT, 1))), null(), null(),
                     null())
              .select_from(Member.__table__.outerjoin(NapStatus.__table__,
                                                      s.member_id == m.id))
              .group_by(m.region))
    return union_all(changes, totals)


_NAP_PROGRESS = _nap_progress()


async def nap_progress(session: AsyncSession, start: datetime, end: datetime
                       ) -> tuple[list[NapChange], list[RegionTotal]]:
    """NAP status changes recorded in [start, end), the last one per member, by member name;
    and members, adopted and in-development NAPs per region, regions alphabetically (counted
    by the database: a row per region, not per member; sorted here, as PostgreSQL's collation
    would sort them otherwise)."""
    changes: list[Any] = []
    totals: list[Any] = []
    for row in await session.execute(_NAP_PROGRESS, {"start": start, "end": end}):
        if row.changed_at is None:
            totals.append(row)
        else:
            changes.append(row)
    last: dict[int, NapChange] = {}
    for name, member_id, plan, year, stage, changed_at, _ in sorted(
            changes, key=lambda c: (c.changed_at, c.id)):
        last[member_id] = NapChange(name, changed_at, stage, plan, year)
    return (sorted(last.values(), key=lambda c: c.member),
            sorted(RegionTotal(region, int(members), int(adopted), int(developing))
                   for region, members, adopted, developing, *_ in totals))


# -- upcoming events ------------------------------------------------------------------------
def _meetings_after() -> Any:
    """The statement `meetings_starting_after` runs, built once: what a newsletter shows of a
    meeting, and its host's name (columns, not the ORM meeting with its member joined)."""
    m, host = Meeting.__table__.c, Member.__table__.c
    return (select(m.id, m.sequence, m.title, m.kind, m.timezone, m.starts_at, m.ends_at,
                   m.registration_opens_at, m.registration_closes_at, m.eligible_roles,
                   m.needs_approval, m.venue, m.online_url, m.agenda_url, m.chatham_house,
                   host.name.label("host"))
            .join_from(Meeting.__table__, Member.__table__, host.id == m.host_member_id,
                       isouter=True)
            .where(m.status == MeetingStatus.SCHEDULED,
                   m.starts_at > bindparam("after", type_=m.starts_at.type))
            .order_by(m.starts_at, m.id))


_MEETINGS_AFTER = _meetings_after()


async def meetings_starting_after(session: AsyncSession, after: datetime) -> list[Row[Any]]:
    """Scheduled (not cancelled) meetings that start after `after`, soonest first: the
    columns a newsletter shows, `host` its host's name (None without one)."""
    return list(await session.execute(_MEETINGS_AFTER, {"after": after}))


# -- drafts ---------------------------------------------------------------------------------
def fingerprint(content: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


_LATEST_DRAFT = (select(NewsletterDraft)
                 .where(NewsletterDraft.edition_id == bindparam("edition_id"))
                 .order_by(NewsletterDraft.number.desc()).limit(1))


async def latest_draft(session: AsyncSession, edition_id: int) -> NewsletterDraft | None:
    return await session.scalar(_LATEST_DRAFT, {"edition_id": edition_id})


class LastDraft(NamedTuple):
    """What a compile needs of an edition's latest draft."""

    number: int
    fingerprint: str
    created_at: datetime


def _last_draft() -> Any:
    """The statement `last_draft` runs, built once."""
    d = NewsletterDraft.__table__.c
    return (select(d.number, d.fingerprint, d.created_at)
            .where(d.edition_id == bindparam("edition_id")).order_by(d.number.desc()).limit(1))


_LAST_DRAFT = _last_draft()


async def last_draft(session: AsyncSession, edition_id: int) -> LastDraft | None:
    """The number, fingerprint and date of an edition's latest draft, not the whole row
    (`latest_draft`): not the update versions it lists nor, once published, its HTML, a whole
    newsletter kept for the archive."""
    row = (await session.execute(_LAST_DRAFT, {"edition_id": edition_id})).first()
    return None if row is None else LastDraft(*row)


async def record_draft(session: AsyncSession, edition_id: int, *, versions: list[list[int]],
                       spotlight_member_id: int | None, print_: str, now: datetime,
                       by: int | None) -> tuple[int, datetime, bool]:
    """The draft of these contents: the latest one when nothing changed, else a new one.

    Returns the draft's number and date, and whether it is new. `print_` is a fingerprint of
    everything the draft shows, so a change to any item, the spotlight or the NAP figures makes
    a new draft.
    """
    last = await last_draft(session, edition_id)
    if last is not None and last.fingerprint == print_:
        return last.number, last.created_at, False
    draft = NewsletterDraft(edition_id=edition_id, number=last.number + 1 if last else 1,
                            fingerprint=print_, items=versions,
                            spotlight_member_id=spotlight_member_id, created_at=now,
                            created_by=by)
    session.add(draft)
    await session.flush()
    return draft.number, draft.created_at, True


async def drafts(session: AsyncSession, edition_id: int) -> list[NewsletterDraft]:
    return list(await session.scalars(
        select(NewsletterDraft).where(NewsletterDraft.edition_id == edition_id)
        .order_by(NewsletterDraft.number)))
