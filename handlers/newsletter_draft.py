"""Compile an edition into a draft: its sections, spotlight and NAP figures, in three formats.

`compile_draft` reads the store once and records the draft (the same draft again when nothing
changed); `as_html`, `as_markdown` and `as_docx` turn it into the files the secretariat gets.
Every heading comes from `messages/locales/<language>/newsletter.toml`.

Attribution: an item is attributed to its member (or, for a civil society voice, to its
organisation), except under the Chatham House Rule: then it carries no member, person or
region, and is placed after the attributed items of its section, sorted by title, so that its
position gives nothing away either.

Upcoming events: besides the event updates, the meetings of the store that are scheduled (not
cancelled) and start on or after the edition's planned publication date (in the venue's time
zone; never one that has started by the time the draft is compiled, and for a published
edition none that started before it went out), soonest first, ahead of the event updates.
The registration window is told as it stands on the publication date, and nothing that moves
with every registration (seats left) is shown, so the same meetings make the same draft. A
meeting under the Chatham House Rule is listed like any other: the meeting itself is public,
the rule covers what is said there.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Row, and_, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from handlers.meetings import ELIGIBLE
from messages import Renderer
from messages.newsletter import DraftTemplates
from storage import editions as store
from storage.editions import DraftItem
from storage.models import (
    Edition,
    Member,
    NapStatus,
    Person,
    Role,
    RoleName,
    Spotlight,
    UpdateCategory,
    Visibility,
)

# The draft's sections, in the order the newsletter runs.
SECTIONS = ("proceedings", "spotlight", "member_action", "innovation", "lessons", "nap_progress",
            "knowledge", "funding", "civil_society", "events")
FORMATS = {
    "html": ("text/html", "html"),
    "md": ("text/markdown", "md"),
    "docx": ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", "docx"),
}
SAFE_SCHEMES = ("http://", "https://")

_templates = DraftTemplates()


@dataclass(frozen=True)
class Item:
    update_id: int
    version: int
    title: str
    paragraphs: list[list[str]]
    source: str  # "" under the Chatham House Rule
    chatham: bool
    links: list[str]
    files: list[str]

    def entry(self) -> dict[str, Any]:
        """What a template reads of the item: its fields (`dataclasses.asdict` copied every
        list deeply, a third of a 2,000-item compile)."""
        return {"update_id": self.update_id, "version": self.version, "title": self.title,
                "paragraphs": self.paragraphs, "source": self.source, "chatham": self.chatham,
                "links": self.links, "files": self.files}


@dataclass(frozen=True)
class Event:
    """A meeting of the store as the events section lists it (every text already worded)."""

    meeting_id: int
    sequence: int
    title: str
    lead: str  # its kind, and who hosts it
    when: str  # start and end in the venue's time zone
    venue: str
    online_url: str
    agenda_url: str
    registration: str
    eligible: str
    chatham: bool


@dataclass
class Section:
    key: str
    heading: str
    items: list[Item] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.items)


@dataclass
class Draft:
    """Everything a draft shows, ready for any format."""

    edition: Edition
    number: int
    created: datetime
    is_new: bool
    sections: list[Section]
    spotlight: dict[str, Any] | None
    nap: dict[str, Any]
    t: Callable[..., str]
    events: list[Event] = field(default_factory=list)

    @property
    def items(self) -> list[Item]:
        return [i for s in self.sections for i in s.items]

    def context(self) -> dict[str, Any]:
        """What the templates are given: the contents, and this draft's number and date."""
        return {**self.contents, "draft": self.number, "created": self.created.date()}

    @functools.cached_property
    def contents(self) -> dict[str, Any]:
        """The edition's contents as the templates read them; what the fingerprint covers.
        Built once per draft (every format of it, and its fingerprint, share it)."""
        e = self.edition
        return {
            "lang": e.language, "number": e.number, "title": e.title, "start": e.period_start,
            "end": e.period_end, "count": len(self.items),
            "sections": [{"key": s.key, "heading": s.heading, "count": self._count(s),
                          "entries": [i.entry() for i in s.items]} for s in self.sections],
            "spotlight": self.spotlight, "nap": self.nap,
            "events": [asdict(m) for m in self.events],
        }

    def _count(self, section: Section) -> int | str:
        """What the contents show beside a section: its entries, or the spotlight's member."""
        if section.key == "spotlight":
            return str((self.spotlight or {}).get("member", ""))
        if section.key == "events":
            return section.count + len(self.events)
        return section.count

    def file_name(self, fmt: str) -> str:
        return f"newsletter-edition-{self.edition.number}-draft-{self.number}.{FORMATS[fmt][1]}"


def _paragraphs(body: str) -> list[list[str]]:
    """Blank lines separate paragraphs; single line breaks are kept inside one."""
    paras: list[list[str]] = []
    current: list[str] = []
    for line in body.splitlines():
        if line.strip():
            current.append(line.strip())
        elif current:
            paras.append(current)
            current = []
    if current:
        paras.append(current)
    return paras


def _item(row: DraftItem, renderer: Renderer, language: str) -> Item:
    chatham = row.visibility == Visibility.CHATHAM
    if chatham:
        source = ""
    elif row.member_id is None and row.category == UpdateCategory.CIVIL_SOCIETY:
        source = _once(renderer, "newsletter.civil_society_source", language,
                       organisation=row.organisation)
    else:
        source = row.source
    return Item(update_id=row.id, version=row.version, title=row.title,
                paragraphs=_paragraphs(row.body), source=source, chatham=chatham,
                links=[u for u in row.links if str(u).lower().startswith(SAFE_SCHEMES)],
                files=row.files)


def _section_of(row: DraftItem) -> str:
    return row.section if row.section in SECTIONS else "member_action"


def _ordered(rows: list[DraftItem]) -> list[DraftItem]:
    """Attributed items by member (alphabetically), then Chatham House items by title.

    `rows` come in the order they were submitted (then by id), and sorting keeps that order
    among equal keys: attributed items go by member, then when submitted; Chatham House ones
    by title, then by id.
    """
    attributed = [r for r in rows if r.visibility != Visibility.CHATHAM]
    chatham = sorted((r for r in rows if r.visibility == Visibility.CHATHAM),
                     key=lambda r: r.id)
    attributed.sort(key=lambda r: r.source.casefold())
    chatham.sort(key=lambda r: r.title.casefold())
    return attributed + chatham


def labeller(renderer: Renderer, language: str) -> Callable[..., str]:
    """`t(key, **context)`: a sentence of newsletter.toml in the edition's language, plain."""
    def t(key: str, **context: Any) -> str:
        return renderer.render(f"newsletter.{key}", language, "plain", **context)
    return t


_worded: weakref.WeakKeyDictionary[Renderer, dict[tuple[Any, ...], str]]
_worded = weakref.WeakKeyDictionary()


def _once(renderer: Renderer, key: str, language: str, **context: Any) -> str:
    """`renderer.render(key, language, "plain", **context)`, rendered once per renderer and
    context (of hashable values): for the sentences a compile words from what it reads (a NAP's
    stage, a civil society voice's source, a meeting's lead, dates and registration), the same
    text in every compile while the store stays as it is. A render is 10-40 µs, and a
    compile had dozens; their contexts are as many as the store's plans, voices and meetings."""
    worded = _worded.setdefault(renderer, {})
    memo = (key, language, *context.items())
    text = worded.get(memo)
    if text is None:
        text = worded[memo] = renderer.render(key, language, "plain", **context)
    return text


def _stage(renderer: Renderer, language: str, stage: str, plan: int | None,
           year: int | None) -> str:
    """A NAP's stage in words: "2nd NAP (adopted 2017)"."""
    plan_label = _once(renderer, "nap.ordinal", language, n=plan) if plan else ""
    return _once(renderer, "nap.stage", language, stage=stage, plan=plan_label, year=year or "")


def _featured(members: Any) -> Any:
    """What the spotlight shows of a member (of `members`, a FROM clause with the member
    table), in one statement: its id, name and region, its NAP's stage, plan and year (None
    without one), and its focal points and alternates: a row for each (one, with None, without
    any). Was three: the spotlight with its ORM member, the NAP, the people."""
    member, nap, role, person = (Member.__table__, NapStatus.__table__, Role.__table__,
                                 Person.__table__)
    return (select(member.c.id, member.c.name, member.c.region, nap.c.stage, nap.c.plan_number,
                   nap.c.year_adopted, person.c.id, person.c.name, person.c.title,
                   person.c.ministry, role.c.role)
            .select_from(members
                         .outerjoin(nap, nap.c.member_id == member.c.id)
                         .outerjoin(role, and_(role.c.member_id == member.c.id,
                                               role.c.role.in_([RoleName.FOCAL_POINT,
                                                                RoleName.ALTERNATE])))
                         .outerjoin(person, person.c.id == role.c.person_id)))


_CHOSEN = _featured(Spotlight.__table__.join(
    Member.__table__, Member.__table__.c.id == Spotlight.__table__.c.member_id)).where(
    Spotlight.__table__.c.edition_id == bindparam("edition_id"))
_MEMBER = _featured(Member.__table__).where(Member.__table__.c.id == bindparam("member_id"))


def _focal_points(rows: list[Any]) -> list[dict[str, str]]:
    """The member's focal points, then its alternates, each by name (as the spotlight shows
    them: name, title and ministry), from `_featured`'s rows."""
    rank = {RoleName.FOCAL_POINT: 0, RoleName.ALTERNATE: 1}
    best: dict[int, tuple[int, dict[str, str]]] = {}
    for *_, person_id, name, title, ministry, role in rows:
        if person_id is None:
            continue
        r = rank[RoleName(role)]
        if person_id not in best or r < best[person_id][0]:
            best[person_id] = (r, {"name": name, "title": title, "ministry": ministry})
    return [p for _, p in sorted(best.values(), key=lambda rp: (rp[0], rp[1]["name"]))]


async def _spotlight(session: AsyncSession, edition: Edition, rows: list[DraftItem],
                     renderer: Renderer) -> tuple[int | None, dict[str, Any] | None]:
    """The spotlight's member id and what the section shows: the member chosen for the
    edition, else `store.default_spotlight` of those with material in it."""
    featured = list(await session.execute(_CHOSEN, {"edition_id": edition.id}))
    if not featured:
        member = await store.default_spotlight(
            session, await store.members_with_material(session, edition.id))
        if member is None:
            return None, None
        featured = list(await session.execute(_MEMBER, {"member_id": member.id}))
    member_id, name, region, stage, plan, year = featured[0][:6]
    return member_id, {
        "member": name, "region": region,
        "nap": "" if stage is None else _stage(renderer, edition.language, stage, plan, year),
        "people": _focal_points(featured),
        "material": [r.title for r in _ordered([r for r in rows if r.member_id == member_id
                                                and r.visibility != Visibility.CHATHAM])],
    }


async def _nap(session: AsyncSession, edition: Edition, renderer: Renderer) -> dict[str, Any]:
    start = datetime.combine(edition.period_start, time.min, tzinfo=UTC)
    end = datetime.combine(edition.period_end + timedelta(days=1), time.min, tzinfo=UTC)
    changed, regions = await store.nap_progress(session, start, end)
    changes = [{"member": c.member, "date": f"{c.changed_at.day} {c.changed_at:%B %Y}",
                "stage": _stage(renderer, edition.language, c.stage, c.plan_number,
                                c.year_adopted)}
               for c in changed]
    totals = [{"region": r.region, "members": r.members, "adopted": r.adopted,
               "developing": r.developing,
               "pct": round(100 * r.adopted / r.members) if r.members else 0}
              for r in regions]
    return {"changes": changes, "totals": totals,
            "members": sum(r["members"] for r in totals),
            "adopted": sum(r["adopted"] for r in totals),
            "developing": sum(r["developing"] for r in totals)}


def _venue_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):  # refused when a meeting is made; just in case
        return ZoneInfo("UTC")


def _safe_url(url: str) -> str:
    return url if url.lower().startswith(SAFE_SCHEMES) else ""


def _eligible_key(roles: list[Any]) -> str:
    found = [key for key, wanted in ELIGIBLE.items() if sorted(wanted) == sorted(roles)]
    return found[0] if found else "everyone"


def _event(meeting: Row[Any], moment: datetime, renderer: Renderer, language: str) -> Event:
    """One meeting, worded for a newsletter reader, its registration as it stands at `moment`."""
    tz = meeting.timezone
    zone = _venue_zone(tz)
    starts, ends = meeting.starts_at.astimezone(zone), meeting.ends_at.astimezone(zone)
    if moment < meeting.registration_opens_at:
        state = "not_open"
    elif moment < meeting.registration_closes_at:
        state = "open"
    else:
        state = "closed"
    kind = renderer.render(f"meetings.kind_{meeting.kind}", language, "plain")
    eligible = renderer.render(f"meetings.eligible_{_eligible_key(meeting.eligible_roles)}",
                               language, "plain")
    return Event(
        meeting_id=meeting.id, sequence=meeting.sequence, title=meeting.title,
        lead=_once(renderer, "newsletter.event_lead", language, kind=kind,
                   host=meeting.host or ""),
        when=_once(renderer, "newsletter.event_when", language, starts=starts, ends=ends,
                   start_time=f"{starts:%H:%M}", end_time=f"{ends:%H:%M}",
                   same_day=starts.date() == ends.date(), tz=tz),
        venue=meeting.venue, online_url=_safe_url(meeting.online_url),
        agenda_url=_safe_url(meeting.agenda_url),
        registration=_once(renderer, "newsletter.event_registration", language, state=state,
                           id=meeting.id, tz=tz, opens=meeting.registration_opens_at,
                           closes=meeting.registration_closes_at,
                           approval=meeting.needs_approval),
        eligible=eligible, chatham=meeting.chatham_house)


async def _events(session: AsyncSession, edition: Edition, renderer: Renderer, now: datetime
                  ) -> list[Event]:
    """The meetings the events section lists: upcoming for the edition's readers.

    An edition not yet out lists the scheduled meetings that start on or after its planned
    publication date, in the venue's time zone (and after `now`, should publication be late);
    a published one those that started after it went out.
    """
    day: date | None = None
    if edition.published_at is not None:
        floor = edition.published_at
    else:
        day, floor = edition.planned_publication, now
        # A day earlier in UTC than the date anywhere: the venue's date is checked below.
        floor = max(floor, datetime.combine(day - timedelta(days=1), time.min, UTC))
    events = []
    for meeting in await store.meetings_starting_after(session, floor):
        zone = _venue_zone(meeting.timezone)
        moment = floor
        if day is not None:
            if meeting.starts_at.astimezone(zone).date() < day:
                continue
            moment = max(now, datetime.combine(day, time.min, zone))
        events.append(_event(meeting, moment, renderer, edition.language))
    return events


async def compile_draft(session: AsyncSession, edition: Edition, renderer: Renderer, *,
                        now: datetime, by: int | None, record: bool = True) -> Draft:
    """The edition's draft as it stands; recorded, and the same record when nothing changed.

    With `record=False` (a published edition, whose drafts are closed) nothing is written and
    the draft carries the number of the edition's last draft.
    """
    t = labeller(renderer, edition.language)
    rows = await store.draft_items(session, edition.id)
    member_id, spotlight = await _spotlight(session, edition, rows, renderer)
    nap = await _nap(session, edition, renderer)
    events = await _events(session, edition, renderer, now)
    # Read first, then built in one stretch: the collector, on while the reads await, would
    # walk the items built before them at every collection.
    by_section: dict[str, list[DraftItem]] = {}
    with store.building():
        for row in rows:
            by_section.setdefault(_section_of(row), []).append(row)
        sections = [Section(key, t(f"heading_{key}"),
                            [_item(r, renderer, edition.language)
                             for r in _ordered(by_section.get(key, []))])
                    for key in SECTIONS]
        draft = Draft(edition=edition, number=0, created=now, is_new=False, sections=sections,
                      spotlight=spotlight, nap=nap, t=t, events=events)
        shown = draft.contents
        versions = [[i.update_id, i.version] for i in draft.items]
    if not record:
        last = await store.last_draft(session, edition.id)
        if last is not None:
            draft.number, draft.created = last.number, last.created_at
        return draft
    draft.number, draft.created, draft.is_new = await store.record_draft(
        session, edition.id, versions=versions, spotlight_member_id=member_id,
        print_=store.fingerprint(shown), now=now, by=by)
    return draft


# -- formats --------------------------------------------------------------------------------
def as_html(draft: Draft) -> str:
    """E-mail-safe HTML: tables, every style inlined, no script, no external resource."""
    return _templates.html(draft.t, **draft.context())


def as_markdown(draft: Draft) -> str:
    return _templates.markdown(draft.t, **draft.context())


def as_docx(draft: Draft) -> bytes:
    """A Word document with real headings, lists and tables, for the secretariat to edit.
    (python-docx and lxml, ~8 MiB, are loaded only when a Word file is asked for.)"""
    from handlers.newsletter_docx import as_docx as word

    return word(draft)


def render(draft: Draft, fmt: str) -> bytes:
    """The draft as the bytes of one file format."""
    if fmt == "html":
        return as_html(draft).encode("utf-8")
    if fmt == "md":
        return as_markdown(draft).encode("utf-8")
    if fmt == "docx":
        return as_docx(draft)
    raise ValueError(f"unknown newsletter format {fmt!r}")
