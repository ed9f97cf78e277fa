"""The draft's "Upcoming events": the meetings of the store, beside the event updates.

Listed: scheduled meetings that start on or after the edition's planned publication date (in the
venue's time zone), soonest first, with their kind, host, dates in the venue's time zone, venue,
online and agenda links and registration window as it stands on the publication date. Never a
cancelled or past meeting, nor one that is over before the edition reaches its readers. The demo
edition (planned publication 22 March 2018; the clock is at 1 March 2018) already lists the
demo's Berlin annual meeting (26-27 April) and New York follow-up (19 July).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import html5lib
import pytest
from markdown_it import MarkdownIt
from sqlalchemy import select

from handlers.clock import FrozenClock
from handlers.newsletter_draft import render
from storage import editions
from storage.db import Database
from storage.edition_demo import load_demo_edition
from storage.meetings import ALL_ROLES, new_uid
from storage.models import Meeting, MeetingStatus, Member, RoleName
from tests.test_newsletter import all_formats, compiled, docx_text, visible_text

BERLIN = "Annual meeting of the Focal Points Network, Berlin"
NEW_YORK = "Follow-up meeting on the margins of the General Assembly"
PAST = ("First meeting of the Focal Points Network, Alicante",
        "Follow-up meeting on the margins of the General Assembly (72nd session)")


@pytest.fixture
async def edition_db(demo_db: Database, clock: FrozenClock) -> Database:
    async with demo_db.transaction() as session:
        assert await load_demo_edition(session, clock.now()) is not None
    return demo_db


def local(tz: str, *args: int) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(tz))  # type: ignore[misc]


async def add_meeting(db: Database, clock: FrozenClock, *, title: str, tz: str,
                      start: datetime, hours: int = 3, host: str = "", **extra: Any) -> int:
    """A meeting straight in the store (registration open since yesterday unless told)."""
    async with db.transaction() as session:
        member = await session.scalar(select(Member).where(Member.code == host)) if host \
            else None
        values: dict[str, Any] = dict(
            venue="", online_url="", agenda_url="", capacity=50, delegation_limit=2,
            eligible_roles=[str(r) for r in ALL_ROLES], needs_approval=False,
            chatham_house=False, status=MeetingStatus.SCHEDULED,
            registration_opens_at=clock.now() - timedelta(days=1),
            registration_closes_at=start - timedelta(days=7))
        values.update(extra)
        row = Meeting(uid=new_uid(), title=title, kind=values.pop("kind", "webinar"),
                      host_member_id=member.id if member else None, timezone=tz,
                      starts_at=start, ends_at=start + timedelta(hours=hours),
                      created_at=clock.now(), updated_at=clock.now(), **values)
        session.add(row)
        await session.flush()
        return row.id


def readable(fmt: str, text: str) -> str:
    """What a person reads: the HTML's (or the rendered Markdown's) visible text; the docx's."""
    if fmt == "md":
        return visible_text(MarkdownIt("commonmark").render(text))
    return visible_text(text) if fmt == "html" else text


async def test_a_meeting_is_in_the_events_section_in_every_format(
        edition_db: Database, clock: FrozenClock) -> None:
    oslo = await add_meeting(
        edition_db, clock, title="Expert group meeting on women mediators", tz="Europe/Oslo",
        start=local("Europe/Oslo", 2018, 5, 3, 10, 0), hours=6, host="norway",
        kind="expert_group", venue="Oslo City Hall",
        online_url="https://meet.example.org/wps?id=1&x=2",
        agenda_url="https://example.org/agenda.pdf", needs_approval=True,
        eligible_roles=[str(RoleName.FOCAL_POINT)],
        registration_closes_at=local("Europe/Oslo", 2018, 4, 20, 17, 0))
    draft = await compiled(edition_db, clock)
    assert [e.title for e in draft.events] == [
        BERLIN, "Expert group meeting on women mediators", NEW_YORK]  # soonest first
    events = next(s for s in draft.context()["sections"] if s["key"] == "events")
    assert events["count"] == 3 + 2  # three meetings, two event updates
    expected = [
        "Expert group meeting on women mediators",
        "Expert group meeting · hosted by Norway",
        "When: 3 May 2018, 10:00–16:00 (Europe/Oslo)",  # 08:00-14:00 UTC, told at the venue
        "Where: Oslo City Hall",
        "Online: https://meet.example.org/wps?id=1&x=2",
        "Agenda: https://example.org/agenda.pdf",
        "Registration: open until 20 April 2018, 17:00 (Europe/Oslo), places confirmed by the "
        f"secretariat. Members of the Network register with the Focal Points Bot: /register {oslo}.",
        "Who may register: Focal points only",
        # The demo's annual meeting, over two days, under the Chatham House Rule: listed
        # with its host (the meeting is public; the rule covers what is said there).
        "When: 26 April 2018, 09:00 – 27 April 2018, 17:00 (Europe/Berlin)",
        "Annual meeting · hosted by Germany",
        "Discussions at this meeting are held under the Chatham House Rule.",
        "When: 19 July 2018, 15:00–18:00 (America/New_York)",
    ]
    out = {"html": render(draft, "html").decode(), "md": render(draft, "md").decode(),
           "docx": docx_text(render(draft, "docx"))}
    for fmt, text in out.items():
        shown = readable(fmt, text)
        section = shown[shown.rindex("Upcoming events"):]
        for line in expected:
            assert line in section, (fmt, line)
        # Meetings first, then the members' event updates.
        assert section.index(NEW_YORK) < section.index("Regional meeting on the national")
    tree = html5lib.parse(out["html"], namespaceHTMLElements=False)
    hrefs = [a.get("href") for a in tree.iter("a")]
    assert "https://meet.example.org/wps?id=1&x=2" in hrefs
    assert "https://example.org/agenda.pdf" in hrefs
    assert "<https://example.org/agenda.pdf>" in out["md"]
    assert "[List Bullet] Agenda: https://example.org/agenda.pdf" in out["docx"]
    assert "[Heading 2] Expert group meeting on women mediators" in out["docx"]


async def test_cancelled_and_past_meetings_are_not_listed(edition_db: Database,
                                                          clock: FrozenClock) -> None:
    await add_meeting(edition_db, clock, title="Cancelled webinar on NAP budgets",
                      tz="Europe/Paris", start=local("Europe/Paris", 2018, 6, 1, 14, 0),
                      status=MeetingStatus.CANCELLED)
    # Still ahead when the draft is compiled, but over before the edition is published.
    await add_meeting(edition_db, clock, title="Webinar before the edition is out",
                      tz="Europe/Paris", start=local("Europe/Paris", 2018, 3, 10, 14, 0))
    # The evening before publication in New York (already 22 March in UTC): not listed.
    await add_meeting(edition_db, clock, title="Reception the evening before",
                      tz="America/New_York", start=local("America/New_York", 2018, 3, 21, 20, 0))
    # On the publication day where it is held (22 March in Tokyo, 21 March in UTC): listed.
    await add_meeting(edition_db, clock, title="Tokyo breakfast on the publication day",
                      tz="Asia/Tokyo", start=local("Asia/Tokyo", 2018, 3, 22, 8, 0))
    draft = await compiled(edition_db, clock)
    assert [e.title for e in draft.events] == [
        "Tokyo breakfast on the publication day", BERLIN, NEW_YORK]
    for fmt, text in (await all_formats(edition_db, clock)).items():
        shown = readable(fmt, text)
        for title in ("Cancelled webinar on NAP budgets", "Webinar before the edition is out",
                      "Reception the evening before", *PAST):
            assert title not in shown, (fmt, title)
        assert "22 March 2018, 08:00–11:00 (Asia/Tokyo)" in shown, fmt


async def test_the_registration_window_is_told_as_it_stands_on_publication(
        edition_db: Database, clock: FrozenClock) -> None:
    later = await add_meeting(
        edition_db, clock, title="Webinar with a late registration", tz="Europe/Paris",
        start=local("Europe/Paris", 2018, 6, 1, 14, 0),
        registration_opens_at=local("Europe/Paris", 2018, 4, 1, 9, 0),
        registration_closes_at=local("Europe/Paris", 2018, 5, 25, 18, 0))
    closed = await add_meeting(
        edition_db, clock, title="Webinar whose registration closes early", tz="Europe/Paris",
        start=local("Europe/Paris", 2018, 6, 2, 14, 0),
        registration_closes_at=local("Europe/Paris", 2018, 3, 20, 18, 0))
    md = readable("md", (await all_formats(edition_db, clock))["md"])
    assert ("Registration: opens 1 April 2018, 09:00 (Europe/Paris) and closes 25 May 2018, "
            "18:00 (Europe/Paris). Members of the Network register with the Focal Points Bot: "
            f"/register {later}.") in md
    assert "Registration: closed on 20 March 2018, 18:00 (Europe/Paris). Who may" in md
    assert f"/register {closed}" not in md


async def test_a_moved_or_cancelled_meeting_makes_a_new_draft(edition_db: Database,
                                                            clock: FrozenClock) -> None:
    first = await compiled(edition_db, clock)
    clock.advance(days=2)  # compiled again later: the draft does not depend on when
    again = await compiled(edition_db, clock)
    assert (first.number, first.is_new, again.number, again.is_new) == (1, True, 1, False)
    async with edition_db.transaction() as session:
        berlin = await session.scalar(select(Meeting).where(Meeting.title == BERLIN))
        assert berlin is not None
        berlin.starts_at += timedelta(days=7)
        berlin.ends_at += timedelta(days=7)
        berlin.sequence += 1
    moved = await compiled(edition_db, clock)
    assert (moved.number, moved.is_new) == (2, True)
    md = render(moved, "md").decode()
    assert "3 May 2018, 09:00 – 4 May 2018, 17:00 (Europe/Berlin)" in md
    assert "26 April 2018" not in md
    assert (await compiled(edition_db, clock)).is_new is False
    async with edition_db.transaction() as session:
        berlin = await session.scalar(select(Meeting).where(Meeting.title == BERLIN))
        assert berlin is not None
        berlin.status = MeetingStatus.CANCELLED
    cancelled = await compiled(edition_db, clock)
    assert (cancelled.number, cancelled.is_new) == (3, True)
    assert BERLIN not in render(cancelled, "md").decode()
    async with edition_db.transaction() as session:
        drafts = await editions.drafts(session, first.edition.id)
        assert [d.number for d in drafts] == [1, 2, 3]


async def test_a_hostile_meeting_is_shown_as_written_and_injects_nothing(
        edition_db: Database, clock: FrozenClock) -> None:
    await add_meeting(edition_db, clock, title='<script>alert(1)</script> *x* {{ 7*7 }}',
                      tz="Europe/Paris", start=local("Europe/Paris", 2018, 6, 1, 14, 0),
                      venue='"><img src=x onerror=alert(2)> _v_', agenda_url="javascript:alert(3)",
                      online_url="https://ok.example/?a=<b>")
    out = await all_formats(edition_db, clock)
    parser = html5lib.HTMLParser(strict=True)
    parser.parse(out["html"])  # strict: the first parse error raises
    assert parser.errors == []
    tree = html5lib.parse(out["html"], namespaceHTMLElements=False)
    assert tree.findall(".//script") == [] and tree.findall(".//img") == []
    assert not any((a.get("href") or "").startswith("javascript") for a in tree.iter("a"))
    text = visible_text(out["html"])
    assert "<script>alert(1)</script> *x* {{ 7*7 }}" in text and "49" not in text
    assert 'Where: "><img src=x onerror=alert(2)> _v_' in text
    assert "Online: https://ok.example/?a=<b>" in text
    md_tree = html5lib.parse(MarkdownIt("commonmark").render(out["md"]),
                             namespaceHTMLElements=False)
    assert [e for e in md_tree.iter() if e.tag in ("script", "img")] == []
    marked = {"".join(e.itertext()) for e in md_tree.iter() if e.tag in ("em", "strong")}
    assert not marked & {"x", "v"}, marked
    md_text = " ".join(" ".join(md_tree.find("body").itertext()).split())
    assert "<script>alert(1)</script> *x* {{ 7*7 }}" in md_text
    assert "javascript" not in out["md"] + out["html"] + out["docx"]
    assert "[Heading 2] <script>alert(1)</script> *x* {{ 7*7 }}" in out["docx"]
